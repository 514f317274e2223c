"""The paper-reproduction settings: no second k-core on pre-filtered files, SASRec's `paper`
preset (feed-forward width d, items × √d), and the test learning curve (`evaluation.test_curve`)."""
from __future__ import annotations

import csv
import tomllib
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import tensorflow as tf

from tff_rec import models, runner, runtime, spec
from tff_rec.data import info

REPRODUCE = Path(__file__).resolve().parents[1] / "tasks" / "reproduce" / "sasrec_games.toml"


@pytest.fixture(scope="module", autouse=True)
def _stop_tff_worker() -> Iterator[None]:
    yield
    runtime.stop_workers()


def _sequence_file(path: Path, users: int = 60, items: int = 40, seed: int = 0) -> Path:
    """A SASRec-format file ('user item' lines in time order) in which some users and items have
    fewer than 5 interactions, so a 5/5 k-core would change it."""
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(1, users + 1):
        length = int(rng.integers(3, 12))
        lines += [f"{user} {int(item)}" for item in rng.integers(1, items + 1, size=length)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _resolve(text: str) -> spec.TaskSpec:
    return spec.resolve_task(tomllib.loads(text), "<test>")


# ------------------------------------------------------------------ k-core defaults per dataset


@pytest.mark.parametrize(
    ("dataset", "expected"), [("synthetic", (5, 5)), ("sequences", (0, 0))]
)
def test_kcore_default_is_the_datasets_own(dataset: str, expected: tuple[int, int]) -> None:
    data = _resolve(f'[data]\ndataset = "{dataset}"\n')["data"]
    assert (data["min_user_interactions"], data["min_item_interactions"]) == expected


def test_explicit_kcore_wins_and_defaults_keep_old_hashes() -> None:
    data = _resolve('[data]\ndataset = "sequences"\nmin_user_interactions = 5\n')["data"]
    assert (data["min_user_interactions"], data["min_item_interactions"]) == (5, 0)
    # A task that spells out the old default hashes as one that leaves it unset.
    assert _resolve("[data]\nmin_user_interactions = 5\n").hash == _resolve("").hash


def test_prefiltered_file_is_used_as_it_is(tmp_path: Path) -> None:
    path = _sequence_file(tmp_path / "seq.txt")
    summary = info.info("sequences", path, None)
    assert summary["raw"] == summary["filtered"]
    assert (summary["min_user_interactions"], summary["min_item_interactions"]) == (0, 0)
    assert "not filtered" in info.format_info(summary)
    filtered = info.info("sequences", path, None, 5, 5)
    assert filtered["filtered"]["interactions"] < filtered["raw"]["interactions"]


# ------------------------------------------------------------------ SASRec's paper preset


def test_paper_preset_is_the_papers_architecture() -> None:
    paper = models.resolve_hparams("sasrec", size="paper")
    assert (paper.embedding_dim, paper.num_blocks, paper.num_heads, paper.intermediate_dim) == (
        50, 2, 1, 50
    )
    assert paper.scale_embeddings is True
    base = models.resolve_hparams("sasrec", size="base")
    assert (base.intermediate_dim, base.scale_embeddings) == (100, False)
    with pytest.raises(ValueError, match="model.scale_embeddings must be true or false"):
        models.resolve_hparams("sasrec", scale_embeddings=1)


def test_scaled_embeddings_are_items_times_sqrt_d_plus_positions() -> None:
    scaled = models.build_model("sasrec", 30, seed=3, size="tiny", max_len=6, dropout=0.0,
                                scale_embeddings=True)
    plain = models.build_model("sasrec", 30, seed=3, size="tiny", max_len=6, dropout=0.0)
    assert [w.shape for w in scaled.weights] == [w.shape for w in plain.weights]
    inputs = tf.constant([[0, 0, 3, 7, 7, 1]], tf.int32)
    items = scaled.embedding.token_embedding(inputs)
    positions = scaled.embedding.position_embedding(items)
    first_block_input = items * 16 ** 0.5 + positions
    np.testing.assert_allclose(
        first_block_input.numpy(), (scaled.embedding(inputs) + 3 * items).numpy(), rtol=1e-5, atol=1e-6
    )
    plain.set_weights(scaled.get_weights())
    assert not np.allclose(scaled(inputs).numpy(), plain(inputs).numpy())


def test_reproduction_task_holds_the_papers_settings() -> None:
    task = spec.load_task(REPRODUCE)
    model = models.resolve_hparams(task["model"]["name"], **task["model"]["params"])
    assert (model.embedding_dim, model.num_blocks, model.num_heads, model.intermediate_dim,
            model.scale_embeddings, model.dropout, model.max_len, model.loss,
            model.num_negatives) == (50, 2, 1, 50, True, 0.5, 50, "bce", 1)
    central = task["algorithm.centralized"]
    assert (central["optimizer"], central["learning_rate"], central["beta_2"],
            central["batch_size"]) == ("adam", 0.001, 0.98, 128)
    evaluation = task["evaluation"]
    assert (evaluation["num_negatives"], evaluation["negative_sampling"], evaluation["ks"]) == (
        100, "uniform", [10]
    )
    assert (task["data"]["dataset"], task["data"]["min_user_interactions"],
            task["data"]["min_item_interactions"]) == ("sasrec-games", 0, 0)


# ------------------------------------------------------------------ the test learning curve


def test_test_curve_adds_test_columns_at_each_validation(tmp_path: Path) -> None:
    path = _sequence_file(tmp_path / "seq.txt", users=80)
    raw = tomllib.loads(REPRODUCE.read_text())
    raw["data"]["path"] = str(path)
    raw["model"]["max_len"] = 8
    raw["algorithm"]["centralized"].update(epochs=2, batch_size=32)
    raw["evaluation"].update(every=1, num_negatives=5)
    task = spec.resolve_task(raw, "<test>")
    result = runner.run_task(task, 0, tmp_path / "out", progress=False)
    with open(result.path / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["round"] for row in rows] == ["1", "2"]
    for row in rows:
        assert 0 <= float(row["test_sampled_hr@10"]) <= 1
        assert int(row["test_users"]) == result.summary["test"]["users"]
    # The final model's test rank uses other negatives than the curve's, the full ranking not.
    assert float(rows[-1]["test_hr@10"]) == pytest.approx(result.summary["test"]["hr@10"])
    # Off by default, and then not in the hash: existing records keep their names.
    raw["evaluation"].pop("test_curve")
    assert spec.resolve_task(raw, "<test>")["evaluation"]["test_curve"] is False
    hashed = spec._hashed_sections(spec.resolve_task(raw, "<test>").sections)
    assert "test_curve" not in hashed["evaluation"]
