"""Keeping results: a record keeps its model's weights and every test user's ranks (`tff_rec.saved`),
and `evaluation.select = "best"` reports the best validated round's model.

Tiny runs of the `test_end_to_end` task, made in-process: centralized and FedAvg runs with "best",
each made twice, once interrupted after a checkpoint and resumed (the same bytes: also two runs of
one task and seed), a centralized run with "last", and a popularity run (no model).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_end_to_end import task_text
from tff_rec import record, runner, saved, spec
from tff_rec.spec import SpecError
from tff_rec.training import checkpoints

EPOCHS = 5
# lr 0.01, 5 epochs: validation ndcg@10 peaks at epoch 3 (the best is not the last)
BEST = {"algorithm.name": "centralized", "algorithm.centralized.epochs": EPOCHS,
        "algorithm.centralized.learning_rate": 0.01, "evaluation.every": 1,
        "evaluation.select": "best", "evaluation.test_curve": True}
FULL = ("hr@10", "ndcg@10", "mrr")  # full-ranking metrics: no sampled negatives, no rng
KEPT = ("model/final.npz", "model/best.npz", "model/model.json", record.RANKS)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("task") / "task.toml"
    path.write_text(task_text(rounds="3"))
    return path


def run(task_file: Path, out: Path, overrides: dict) -> Path:
    result = runner.run_task(spec.load_task(task_file, overrides), 0, out, progress=False)
    assert result.error is None and not result.skipped
    return result.path


@pytest.fixture(scope="module")
def best_run(task_file, tmp_path_factory) -> Path:
    return run(task_file, tmp_path_factory.mktemp("best"), BEST)


def summary_of(path: Path) -> dict:
    return json.loads((path / record.SUMMARY).read_text())


def without_users(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "users"}


def test_select_is_a_new_evaluation_key_that_keeps_existing_hashes(task_file):
    default = spec.load_task(task_file)
    assert default["evaluation"]["select"] == "last"
    assert spec.load_task(task_file, {"evaluation.select": "last"}).hash == default.hash
    assert spec.load_task(task_file, {"evaluation.select": "best"}).hash != default.hash
    with pytest.raises(SpecError, match="evaluation.select"):
        spec.load_task(task_file, {"evaluation.select": "first"})


def test_best_selects_the_best_validated_epoch_and_reports_its_test_metrics(best_run):
    summary = summary_of(best_run)
    rows = record.read_csv(best_run / record.METRICS)
    values = [row["val_ndcg@10"] for row in rows]
    chosen = rows[int(np.argmax(values))]  # argmax: the earliest of equal values
    assert summary["selection"] == "best" and summary["selection_metric"] == "ndcg@10"
    assert summary["selected_round"] == chosen["round"] < EPOCHS  # the case this test is about
    assert summary["validation"] == {k[4:]: v for k, v in chosen.items() if k.startswith("val_")}
    # the test curve ranked the test users with every epoch's model: the selected one's agrees
    assert {m: summary["test"][m] for m in FULL} == {m: chosen[f"test_{m}"] for m in FULL}
    info = json.loads((best_run / record.MODEL / saved.MODEL_INFO).read_text())
    assert info["selected_round"] == chosen["round"] and info["final_round"] == EPOCHS
    assert set(info["files"]) == {"final", "best"}


def test_loaded_models_score_as_at_the_end_of_the_run(best_run):
    summary = summary_of(best_run)
    task, seed = saved.load_task(best_run)
    assert (task.hash, seed) == (summary["task_hash"], 0)
    selected = saved.load_model(best_run, "selected")
    assert selected[1].num_items == summary["items"]
    assert saved.evaluate_model(best_run, loaded=selected) == summary["test"]  # every metric
    final = saved.load_model(best_run, "final", data=selected[1])
    last = record.read_csv(best_run / record.METRICS)[-1]
    metrics = saved.evaluate_model(best_run, loaded=final)
    assert {m: metrics[m] for m in FULL} == {m: last[f"test_{m}"] for m in FULL}
    for got, kept in zip(selected[0].get_weights(), saved.load_weights(best_run, "best")):
        np.testing.assert_array_equal(got, kept)


def test_test_ranks_give_the_summary_metrics(best_run):
    summary = summary_of(best_run)
    ranks = saved.load_ranks(best_run)
    assert set(ranks) == {"user", "item", "rank", "sampled_rank"}
    assert all(array.dtype == np.int32 and len(array) == summary["users"]["evaluated"]
               for array in ranks.values())
    assert saved.metrics_from_saved_ranks(best_run) == without_users(summary["test"])
    hr = float(np.mean(ranks["rank"] <= 10))
    ndcg = float(np.mean(np.where(ranks["rank"] <= 10, 1 / np.log2(ranks["rank"] + 1), 0)))
    assert (hr, ndcg) == (summary["test"]["hr@10"], summary["test"]["ndcg@10"])
    # the ranks are the loaded model's, user by user
    _, again = saved.evaluate_model(best_run, with_ranks=True)
    np.testing.assert_array_equal(again.full, ranks["rank"])
    np.testing.assert_array_equal(again.users, ranks["user"])


def interrupted_then_resumed(task_file: Path, out: Path, overrides: dict, stop: int,
                             monkeypatch) -> Path:
    """The run interrupted (as by Ctrl-C) right after saving the checkpoint of round `stop`,
    then run again: it resumes from that checkpoint."""
    save = checkpoints.Checkpoints.save

    def save_then_stop(self, state, number, rows):
        save(self, state, number, rows)
        if number == stop:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.Checkpoints, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(task_file, out, overrides)
    [interrupted] = out.glob("runs/*/seed-0")
    assert not record.is_complete(interrupted) and not (interrupted / record.MODEL).exists()
    checkpoint = interrupted / record.CHECKPOINTS / f"{checkpoints.PREFIX}{stop}"
    assert (checkpoint / "best.npz").is_file() == (overrides.get("evaluation.select") == "best")
    monkeypatch.setattr(checkpoints.Checkpoints, "save", save)
    resumed = run(task_file, out, overrides)
    assert summary_of(resumed)["resumed_from_round"] == stop
    return resumed


def same_kept_files(first: Path, second: Path) -> None:
    """Every kept file byte for byte, and the summary's selection and metrics."""
    names = [name for name in KEPT if (first / name).exists()]
    assert sorted(names) == sorted(name for name in KEPT if (second / name).exists())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    for key in ("selection", "selected_round", "validation", "test"):
        assert summary_of(first)[key] == summary_of(second)[key]


def test_an_interrupted_and_resumed_run_keeps_the_same_bytes(best_run, task_file, tmp_path, monkeypatch):
    """Interrupted after the checkpoint of epoch 4, past the best epoch: the resumed run cannot
    train the best epoch again, its weights come from the checkpoint. Every kept file has the
    bytes of the uninterrupted run's (two runs of one task and seed: identical files)."""
    stop = EPOCHS - 1
    assert summary_of(best_run)["selected_round"] < stop
    resumed = interrupted_then_resumed(task_file, tmp_path, BEST, stop, monkeypatch)
    same_kept_files(resumed, best_run)


def test_a_federated_run_keeps_its_models_and_resumes_to_the_same_bytes(task_file, tmp_path, monkeypatch):
    overrides = {"evaluation.every": 1, "evaluation.select": "best"}
    path = run(task_file, tmp_path / "fresh", overrides)
    summary = summary_of(path)
    rows = record.read_csv(path / record.METRICS)
    assert summary["selected_round"] == rows[int(np.argmax([r["val_ndcg@10"] for r in rows]))]["round"]
    assert saved.evaluate_model(path) == summary["test"]
    assert saved.metrics_from_saved_ranks(path) == without_users(summary["test"])
    resumed = interrupted_then_resumed(task_file, tmp_path / "resumed", overrides, 2, monkeypatch)
    same_kept_files(resumed, path)


def test_a_last_run_keeps_only_its_final_model(task_file, tmp_path):
    path = run(task_file, tmp_path, {"algorithm.name": "centralized", "algorithm.centralized.epochs": 2})
    summary = summary_of(path)
    assert summary["selection"] == "last" and summary["selected_round"] == 2
    assert "selection_metric" not in summary
    assert sorted(p.name for p in (path / record.MODEL).iterdir()) == ["final.npz", "model.json"]
    assert saved.evaluate_model(path, "final") == summary["test"]
    with pytest.raises(ValueError, match="no 'best' model"):
        saved.load_model(path, "best")


def test_a_popularity_run_keeps_ranks_and_has_no_model(task_file, tmp_path):
    path = run(task_file, tmp_path, {"algorithm.name": "popularity", "evaluation.select": "best"})
    summary = summary_of(path)
    assert summary["selected_round"] == 0
    assert not (path / record.MODEL).exists()
    with pytest.raises(saved.NoModel, match="popularity run has no model"):
        saved.load_model(path)
    assert saved.metrics_from_saved_ranks(path) == without_users(summary["test"])
