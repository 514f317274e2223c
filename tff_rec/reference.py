"""Reference results: a study's per-run test metrics in a committed file, and a reproduction check.

`snapshot` reads a study's records into a small JSON-ready dict (per label and seed: task hash,
test metrics, ε; plus the machine and packages that made them). `check` compares a re-run with it:
every referenced run must exist with the same task hash (else the task changed and the reference
is stale), and each metric must match within an absolute tolerance. On one machine and package set
re-runs are bit-identical; the tolerance allows for floating-point differences across CPUs.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from tff_rec import record, results

TOLERANCE = 0.01  # absolute, per metric and run (NDCG, HR and MRR lie in [0, 1])


def snapshot(study_dir: Path, metrics: Sequence[str], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """The reference of a study folder: its runs' test metrics and ε, and the provenance of the
    records (machine, packages, git commit)."""
    runs = results.load_runs([study_dir])
    # the provenance of the records (their first run), not of the process saving them
    environment = json.loads((Path(runs["path"].iloc[0]) / record.ENV).read_text())
    return {
        "study": record.read_manifest(study_dir)["name"],
        "metrics": list(metrics),
        "tolerance": tolerance,
        "made_with": {k: environment.get(k) for k in (
            "cpu_model", "cpu_features", "cpu_count", "packages", "git", "uv_lock_sha256")},
        "runs": [
            {"label": run["label"], "seed": int(run["seed"]), "task_hash": run["task_hash"],
             "test": {m: float(run[f"test_{m}"]) for m in metrics},
             "epsilon": None if pd.isna(run["epsilon"]) else float(run["epsilon"])}
            for _, run in runs.sort_values(["order", "seed"]).iterrows()
        ],
    }


def _pairs(runs: pd.DataFrame, reference: dict[str, Any],
           seeds: Sequence[int] | None) -> list[tuple[dict[str, Any], pd.Series | None]]:
    """Each referenced run (of `seeds`, default all) with the re-run's record of it (or None)."""
    found = {(run["label"], int(run["seed"])): run for _, run in runs.iterrows()}
    return [(expected, found.get((expected["label"], expected["seed"])))
            for expected in reference["runs"] if seeds is None or expected["seed"] in seeds]


def check(runs: pd.DataFrame, reference: dict[str, Any], seeds: Sequence[int] | None = None) -> list[str]:
    """Differences between re-run records and a reference, as sentences (empty: reproduced).

    seeds: compare only these seeds of the reference (a partial re-run); default all.
    """
    tolerance = reference["tolerance"]
    problems = []
    for expected, run in _pairs(runs, reference, seeds):
        where = f"{expected['label']} (seed {expected['seed']})"
        if run is None:
            problems.append(f"{where}: no record to compare")
            continue
        if run["task_hash"] != expected["task_hash"]:
            problems.append(f"{where}: task {run['task_hash']} differs from the reference's "
                            f"{expected['task_hash']}: the task changed, the reference is stale")
            continue
        for metric, value in expected["test"].items():
            got = float(run[f"test_{metric}"])
            if not abs(got - value) <= tolerance:
                problems.append(f"{where}: {metric} {got:.4f}, reference {value:.4f} "
                                f"(|Δ| {abs(got - value):.4f} > {tolerance})")
        epsilon = None if pd.isna(run["epsilon"]) else float(run["epsilon"])
        if (epsilon is None) != (expected["epsilon"] is None) or (
                epsilon is not None and not math.isclose(epsilon, expected["epsilon"], rel_tol=1e-6)):
            problems.append(f"{where}: ε {epsilon}, reference {expected['epsilon']}")
    return problems


def largest_differences(runs: pd.DataFrame, reference: dict[str, Any],
                        seeds: Sequence[int] | None = None) -> dict[str, tuple[float, str]]:
    """Per metric, the largest |re-run − reference| over the runs compared (same task hash) and
    where it is: metric → (difference, "label (seed n)"). 0.0 everywhere means bit-identical."""
    largest: dict[str, tuple[float, str]] = {}
    for expected, run in _pairs(runs, reference, seeds):
        if run is None or run["task_hash"] != expected["task_hash"]:
            continue
        for metric, value in expected["test"].items():
            difference = abs(float(run[f"test_{metric}"]) - value)
            if metric not in largest or difference > largest[metric][0]:
                largest[metric] = (difference, f"{expected['label']} (seed {expected['seed']})")
    return largest
