"""The committed quickstart reference: a re-run reproduces it, and the check catches differences."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from tff_rec import cli, reference, results, usage

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART_REFERENCE = ROOT / "results" / "reference" / "quickstart.json"


def as_runs(snapshot: dict) -> pd.DataFrame:
    """The reference's own runs as a `load_runs` table (what a perfect re-run gives)."""
    return pd.DataFrame([
        {"label": r["label"], "seed": r["seed"], "task_hash": r["task_hash"], "epsilon": r["epsilon"],
         **{f"test_{m}": v for m, v in r["test"].items()}}
        for r in snapshot["runs"]
    ])


def test_check_flags_metric_drift_stale_tasks_and_missing_runs():
    snapshot = json.loads(QUICKSTART_REFERENCE.read_text())
    assert reference.check(as_runs(snapshot), snapshot) == []
    runs = as_runs(snapshot)
    runs.loc[0, "test_ndcg@10"] += 1.5 * snapshot["tolerance"]
    runs.loc[1, "task_hash"] = "0" * 12
    problems = reference.check(runs.drop(index=2), snapshot)
    assert len(problems) == 3
    assert "ndcg@10" in problems[0] and "stale" in problems[1] and "no record" in problems[2]
    within = as_runs(snapshot)
    within.loc[0, "test_hr@10"] += 0.5 * snapshot["tolerance"]
    assert reference.check(within, snapshot) == []
    largest = reference.largest_differences(within, snapshot)
    assert largest["hr@10"][0] == pytest.approx(0.5 * snapshot["tolerance"])
    assert largest["hr@10"][1] == f"{snapshot['runs'][0]['label']} (seed {snapshot['runs'][0]['seed']})"
    assert largest["ndcg@10"] == (0.0, largest["ndcg@10"][1])
    private = next(i for i, r in enumerate(snapshot["runs"]) if r["epsilon"] is not None)
    changed = copy.deepcopy(snapshot)
    changed["runs"][private]["epsilon"] *= 1.01
    assert "ε" in reference.check(as_runs(snapshot), changed)[0]


def test_quickstart_reproduces_the_committed_reference(tmp_path, capsys):
    """Re-run seed 0 of every quickstart variant (the full study takes twice as long) and compare."""
    study = tmp_path / "quickstart.toml"
    study.write_text((ROOT / "tasks" / "quickstart.toml").read_text().replace("seeds = [0, 1]", "seeds = [0]"))
    out = tmp_path / "results"
    assert cli.main(["study", str(study), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    code = cli.main(["reference", "check", str(out / "quickstart"), str(QUICKSTART_REFERENCE), "--seeds", "0"])
    output = capsys.readouterr().out
    assert code == 0, output
    snapshot = json.loads(QUICKSTART_REFERENCE.read_text())
    runs = results.load_runs([out / "quickstart"])
    assert len(runs) == sum(r["seed"] == 0 for r in snapshot["runs"]) == 4
    assert "all 4 runs reproduce" in output
    largest = {line.split()[2].rstrip(":"): float(line.split()[3])
               for line in output.splitlines() if line.startswith("largest |Δ|")}
    assert sorted(largest) == ["hr@10", "mrr", "ndcg@10"]
    made_with = json.loads(QUICKSTART_REFERENCE.read_text())["made_with"]
    if (made_with["cpu_model"], made_with["cpu_features"]) == (usage.cpu_model(), usage.cpu_features()):
        # the same CPU (and the packages uv.lock pins): the same numbers, to the bit
        assert set(largest.values()) == {0.0}, output
    # the reference is a real result, not a placeholder: FedAvg beats popularity by a margin
    by_label = {(r["label"], r["seed"]): r["test"]["ndcg@10"] for r in snapshot["runs"]}
    assert by_label["fedavg", 0] > 2 * by_label["popularity", 0]
    # saving the re-run gives a reference of the same runs, which the re-run reproduces exactly
    saved = tmp_path / "saved.json"
    assert cli.main(["reference", "save", str(out / "quickstart"), str(saved)]) == 0
    again = json.loads(saved.read_text())
    assert [(r["label"], r["task_hash"]) for r in again["runs"]] == [
        (r["label"], r["task_hash"]) for r in snapshot["runs"] if r["seed"] == 0]
    assert reference.check(runs, {**again, "tolerance": 0.0}) == []

