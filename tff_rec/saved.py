"""What a run record keeps besides its metrics: the trained model and every test user's ranks.

<record>/model/ (runs with a Keras model; popularity runs have none, and no folder):
  final.npz   the weights of the model after the last round (epoch), `model.get_weights()` in
              order as w0000, w0001, ...
  best.npz    with `evaluation.select = "best"`: the weights of the selected round's model (the
              validated round with the best validation ndcg@K, `training.context.Selection`)
  model.json  the architecture (model name, its resolved hyperparameters, num_items, max_len),
              the init seed, each weight's shape and dtype, the selection and the selected round
<record>/test_ranks.npz: one entry per test user, in the evaluation's order: `user` (index in
  the split), `item` (the held-out test item), `rank` (its full-ranking rank, 1 = first) and
  `sampled_rank` (its rank among the sampled negatives), all int32; the ranks of the model whose
  test metrics summary.json reports. `metrics_from_ranks` of them gives those metrics.

Both .npz files are written with fixed member order and timestamps (`record.write_arrays`): the
same task and seed give the same bytes. They belong to the record: written before summary.json,
removed again if writing the record fails.

Loading (`load_model`, `load_ranks`, `evaluate_model`) rebuilds the model from the record's
config.toml with the model registry (the same builder as the run, so keras-nlp layers need no
serialization) and sets the saved weights; the data are prepared again from the task and seed.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tff_rec import record

MODEL_INFO = "model.json"
FINAL = "final.npz"
BEST = "best.npz"
WHICH = ("selected", "final", "best")


class NoModel(ValueError):
    """The record keeps no model (a popularity run, or a record made before models were kept)."""


@dataclasses.dataclass
class KeptModel:
    """The model files of a record, in memory until the record is written."""

    info: dict[str, Any]
    weights: dict[str, list[np.ndarray]]  # file name → weights

    def write(self, directory: Path) -> None:
        folder = Path(directory) / record.MODEL
        for name, weights in self.weights.items():
            record.write_arrays(folder / name, weight_arrays(weights))
        record.write_json(folder / MODEL_INFO, self.info)


def weight_arrays(weights: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Named arrays of a model's `get_weights()`, in order (w0000, w0001, ...)."""
    from tff_rec.training.context import weight_arrays as named

    return named(weights)


def keep_model(task, data, seed: int, model, selection, rows: list[dict[str, Any]]) -> Optional[KeptModel]:
    """The record's model files of a finished run; with `evaluation.select = "best"`, `model`
    gets the selected round's weights (to score the test users). None without a model."""
    if model is None:
        return None
    from tff_rec import seeds

    final = [np.array(w) for w in model.get_weights()]
    files = {FINAL: final}
    if selection.mode == "best":
        if selection.weights is None:
            raise RuntimeError("evaluation.select = 'best' but no validated round was kept")
        files[BEST] = selection.weights
        model.set_weights(selection.weights)
    section = task["model"]
    info = {
        "model": section["name"], "params": section["params"], "num_items": data.num_items,
        "max_len": data.max_len,
        "init_seed": seeds.derive(seed, "init") + section["seed_offset"],
        "weights": [f"{w.dtype}[{','.join(map(str, w.shape))}]" for w in final],  # w0000, ...
        "files": {"final": FINAL, **({"best": BEST} if BEST in files else {})},
        "selection": selection.mode, "selected_round": selected_round(selection, rows),
        "final_round": rows[-1]["round"] if rows else None,
    }
    return KeptModel(info, files)


def selected_round(selection, rows: list[dict[str, Any]]) -> Optional[int]:
    """The round whose model the record reports: the best one, or the last."""
    if selection.mode == "best":
        return selection.round
    return rows[-1]["round"] if rows else None


def rank_arrays(ranks) -> dict[str, np.ndarray]:
    """test_ranks.npz's arrays of an `evaluation.Ranks`."""
    arrays = {"user": ranks.users, "item": ranks.targets, "rank": ranks.full}
    if ranks.sampled is not None:
        arrays["sampled_rank"] = ranks.sampled
    return {name: np.asarray(values).astype(np.int32) for name, values in arrays.items()}


def write_ranks(directory: Path, ranks) -> None:
    record.write_arrays(Path(directory) / record.RANKS, rank_arrays(ranks))


def remove(directory: Path) -> None:
    """The kept files of a record being written (a failed write leaves none), and the temporary
    files of an attempt killed while writing them."""
    import shutil

    shutil.rmtree(Path(directory) / record.MODEL, ignore_errors=True)
    (Path(directory) / record.RANKS).unlink(missing_ok=True)
    for leftover in Path(directory).glob(f".{record.RANKS}.*.tmp"):
        leftover.unlink(missing_ok=True)


# ---------------------------------------------------------------- loading


def _complete(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not record.is_complete(run_dir):
        raise FileNotFoundError(f"{run_dir}: not a complete run record (no readable {record.SUMMARY})")
    return json.loads((run_dir / record.SUMMARY).read_text())


def load_task(run_dir: Path):
    """(TaskSpec, seed) of a complete record, from its config.toml and summary.json."""
    from tff_rec.spec import load_task as load

    summary = _complete(run_dir)
    return load(Path(run_dir) / record.CONFIG), int(summary["seed"])


def model_info(run_dir: Path) -> dict[str, Any]:
    """model/model.json of a record; `NoModel` when the record keeps no model."""
    summary = _complete(run_dir)
    path = Path(run_dir) / record.MODEL / MODEL_INFO
    if not path.is_file():
        if summary.get("algorithm") == "popularity":
            raise NoModel(f"{run_dir}: a popularity run has no model to load (it ranks items by "
                          "training-set counts); its test ranks are in test_ranks.npz")
        raise NoModel(f"{run_dir}: the record keeps no model ({record.MODEL}/{MODEL_INFO} is "
                      "missing: made before models were kept; run it again to keep one)")
    return json.loads(path.read_text())


def weights_file(run_dir: Path, which: str = "selected") -> Path:
    """The weights file of `which`: "final", "best" (with `evaluation.select = "best"`) or
    "selected" (the model whose test metrics summary.json reports)."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {', '.join(WHICH)}. Found {which!r}.")
    info = model_info(run_dir)
    if which == "selected":
        which = "best" if info["selection"] == "best" else "final"
    if which not in info["files"]:
        raise ValueError(f"{run_dir}: no {which!r} model (evaluation.select = {info['selection']!r}; "
                         "the final model is 'final')")
    return Path(run_dir) / record.MODEL / info["files"][which]


def load_weights(run_dir: Path, which: str = "selected") -> list[np.ndarray]:
    """The saved weights of `which` (`weights_file`), in `model.get_weights()` order."""
    from tff_rec.training.context import read_weight_arrays

    return read_weight_arrays(weights_file(run_dir, which))


def load_model(run_dir: Path, which: str = "selected", data=None):
    """(Keras model, PreparedData) of a complete record: the model rebuilt from config.toml with
    the saved weights of `which` ("selected": the model summary.json's test metrics are of;
    "final"; "best"), the data prepared again from the task and seed (pass `data` to reuse it).
    Building the model reseeds Keras's, NumPy's and Python's global RNGs (`models.build_model`).
    Raises `NoModel` for a popularity run."""
    from tff_rec import models
    from tff_rec.prepare import prepare

    info = model_info(run_dir)
    path = weights_file(run_dir, which)
    task, seed = load_task(run_dir)
    data = prepare(task, seed) if data is None else data
    if data.num_items != info["num_items"]:
        raise ValueError(f"{run_dir}: the data have {data.num_items} items, the model "
                         f"{info['num_items']}")
    model = models.build_model(info["model"], info["num_items"], seed=info["init_seed"],
                               **task["model"]["params"])
    from tff_rec.training.context import read_weight_arrays

    model.set_weights(read_weight_arrays(path))
    return model, data


def score_fn(model, task):
    """The run's scorer of `model`: last-position logits in `evaluation.batch_size` batches."""
    from tff_rec.evaluation import score_last_position

    return lambda batch: score_last_position(model, batch, task["evaluation"]["batch_size"])


def evaluate_model(run_dir: Path, which: str = "selected", stage: str = "test",
                   with_ranks: bool = False, loaded=None):
    """The metrics of a saved model, computed exactly as the run computed them (the same users,
    negatives and seeds; test: summary.json's `test` for which="selected"). `loaded`: a
    `load_model` result to reuse. With `with_ranks`, (metrics, `evaluation.Ranks`)."""
    from tff_rec import protocol

    task, seed = load_task(run_dir)
    model, data = loaded if loaded is not None else load_model(run_dir, which)
    evaluate = protocol.evaluator(task, seed, data, protocol.validation_users(task, seed, data))
    return evaluate(score_fn(model, task), stage, 0, with_ranks=with_ranks)


def load_ranks(run_dir: Path) -> dict[str, np.ndarray]:
    """test_ranks.npz of a complete record: user, item, rank, sampled_rank (int32, per test user)."""
    _complete(run_dir)
    path = Path(run_dir) / record.RANKS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (a record made before ranks were kept)")
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def metrics_from_saved_ranks(run_dir: Path, ks=None) -> dict[str, float]:
    """summary.json's test metrics (without `users`) recomputed from test_ranks.npz; `ks`:
    the cut-offs (default: the task's `evaluation.ks`)."""
    from tff_rec.evaluation import metrics_from_ranks

    ranks = load_ranks(run_dir)
    if ks is None:
        ks = load_task(run_dir)[0]["evaluation"]["ks"]
    metrics = metrics_from_ranks(ranks["rank"], ks)
    if "sampled_rank" in ranks:
        metrics.update(metrics_from_ranks(ranks["sampled_rank"], ks, prefix="sampled_"))
    return metrics
