"""Runs one task at one seed end to end and writes its run record.

The runner is the one place that knows every stage: it prepares the data, hands a RunContext to
the trainer the task names, evaluates the result on validation and test items, and writes the
record (results/<study>/<task-hash>/seed-<n>/). Bad input fails before any file is written; a run
that fails later leaves its checkpoints but never a summary.json, so it never looks finished.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tff_rec import evaluation, record, runtime, seeds
from tff_rec.prepare import PreparedData, prepare
from tff_rec.progress import RunProgress
from tff_rec.spec import FEDERATED_ALGORITHMS, StudySpec, TaskSpec
from tff_rec.training import TRAINERS
from tff_rec.training.context import RunContext, ScoreFn

EVALUATION_STAGES = {"validation": 0, "test": 1}


@dataclasses.dataclass(frozen=True)
class RunResult:
    path: Path
    summary: dict[str, Any]
    skipped: bool  # True when the record was already complete
    error: Optional[str] = None  # set when the run failed (its record then holds failed.json)


def _evaluator(task: TaskSpec, seed: int, data: PreparedData):
    section = task["evaluation"]

    def evaluate(score_fn: ScoreFn, stage: str, round_number: int) -> dict[str, float]:
        rng = np.random.default_rng(
            [seeds.derive(seed, "evaluation"), EVALUATION_STAGES[stage], round_number]
        )
        return evaluation.evaluate(
            score_fn, data.split, stage, max_len=data.max_len, ks=tuple(section["ks"]),
            num_negatives=section["num_negatives"],
            negative_sampling=section["negative_sampling"], rng=rng,
            item_popularity=data.item_popularity,
        )

    return evaluate


def run_task(task: TaskSpec, seed: int, out: Path, study: Optional[str] = None,
             progress: bool = True, cache_dir: Optional[Path] = None) -> RunResult:
    """Run `task` at `seed` unless its record is already complete; return the record's summary."""
    study = study or task.name
    directory = record.run_dir(out, study, task.hash, seed)
    if record.is_complete(directory):
        return RunResult(directory, json.loads((directory / record.SUMMARY).read_text()), True)
    started = datetime.datetime.now(datetime.timezone.utc)
    wall, cpu = time.perf_counter(), time.process_time()
    data = prepare(task)
    rows: list[dict[str, Any]] = []
    total_rounds = _planned_rounds(task)
    with RunProgress(f"{task.name} · seed {seed}", total_rounds, enabled=progress) as bar:

        resumed_rounds: list[int] = []

        def report(row: dict[str, Any], resumed: bool = False) -> None:
            rows.append(row)
            if resumed:
                resumed_rounds.append(row["round"])
            bar.update(row, resumed=resumed)

        context = RunContext(
            task=task, seed=seed, data=data, run_dir=directory,
            cache_dir=Path(cache_dir or Path(out) / ".cache"),
            evaluate=_evaluator(task, seed, data), report=report, completed_rows=rows,
        )
        try:
            outcome = TRAINERS[task["algorithm"]["name"]](context)
        finally:
            # The TFF worker keeps what every computation it ran left behind (a study of 33 runs
            # grew it to 9 GB): each run gets a fresh one, started on its first TFF call.
            runtime.stop_workers()
        test = context.evaluate(outcome.score_fn, "test", 0)
    validation = {k[4:]: v for k, v in rows[-1].items() if k.startswith("val_")} if rows else {}
    summary = {
        "study": study, "label": task.name, "task_hash": task.hash, "seed": seed,
        "dataset": task["data"]["dataset"], "algorithm": task["algorithm"]["name"],
        "partition": task["partition"]["scheme"], "privacy": task["privacy"]["mechanism"],
        "rounds": total_rounds, "resumed_from_round": max(resumed_rounds, default=0),
        "validation": validation, "test": test,
        "epsilon": outcome.privacy["epsilon"] if outcome.privacy else None,
        "delta": outcome.privacy["delta"] if outcome.privacy else None,
        "privacy_unit": outcome.partition["privacy_unit"] if outcome.partition else None,
        "heterogeneity": outcome.partition,
        "excluded_from_ranking": "the user's history items (all input items except the target)",
        "users": {"train": int(len(data.split.train)), "evaluated": int(test.get("users", 0))},
        "items": data.num_items,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - wall, 3),
        "cpu_seconds": round(time.process_time() - cpu, 3),  # this process; not the TFF worker
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **outcome.summary,  # trainer-specific entries (federated: `communication`)
    }
    _write_record(directory, task, rows, summary, outcome.privacy)
    return RunResult(directory, summary, False)


def _planned_rounds(task: TaskSpec) -> int:
    name = task["algorithm"]["name"]
    if name == "centralized":
        return task["algorithm.centralized"]["epochs"]
    return 0 if name == "popularity" else task["algorithm"]["rounds"]


def _write_record(directory: Path, task: TaskSpec, rows: list[dict[str, Any]],
                  summary: dict[str, Any], privacy: Optional[dict[str, Any]]) -> None:
    """Write every file of the record; summary.json last, then drop the checkpoints."""
    record.write_atomic(directory / record.CONFIG, record.to_toml(task.to_dict()))
    record.write_csv(directory / record.METRICS, rows)
    if privacy is not None:
        record.write_json(directory / record.PRIVACY, privacy)
    record.write_json(directory / record.ENV, record.environment())
    record.write_json(directory / record.SUMMARY, summary)
    shutil.rmtree(directory / record.CHECKPOINTS, ignore_errors=True)


def run_study(study: StudySpec, out: Path, progress: bool = True,
              retry_failed: bool = False) -> list[RunResult]:
    """Run every variant at every seed, skipping complete runs.

    A run that fails is recorded (failed.json in its folder, with the error) and the study goes
    on; a recorded failure is retried only with `retry_failed` (it then resumes from its last
    checkpoint, if it has one).
    """
    results = []
    for task in study.tasks:
        for seed in study.seeds:
            directory = record.run_dir(out, study.name, task.hash, seed)
            failure = directory / record.FAILED
            if failure.is_file() and not retry_failed:
                error = json.loads(failure.read_text())["error"]
                results.append(RunResult(directory, {}, True, error))
                continue
            failure.unlink(missing_ok=True)
            try:
                results.append(run_task(task, seed, out, study=study.name, progress=progress))
            except Exception as error:  # noqa: BLE001 - recorded, reported, and the study goes on
                message = f"{type(error).__name__}: {error}"
                record.write_json(failure, {"label": task.name, "seed": seed, "error": message})
                results.append(RunResult(directory, {}, False, message))
    return results


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    label: str
    task_hash: str
    seed: int
    state: str  # done | failed | partial (has checkpoints) | to do
    client_updates: int  # rounds × clients per round (expected, for Poisson sampling)


def plan_study(study: StudySpec, out: Path) -> list[PlannedRun]:
    """Every run of the study, with whether its record is done, and the client updates it needs."""
    planned = []
    for task in study.tasks:
        algorithm = task["algorithm"]
        federated = algorithm["name"] in FEDERATED_ALGORITHMS
        updates = algorithm["rounds"] * algorithm["clients_per_round"] if federated else 0
        for seed in study.seeds:
            directory = record.run_dir(out, study.name, task.hash, seed)
            if record.is_complete(directory):
                state = "done"
            elif (directory / record.FAILED).is_file():
                state = "failed"
            elif (directory / record.CHECKPOINTS).is_dir():
                state = "partial"
            else:
                state = "to do"
            planned.append(PlannedRun(task.name, task.hash, seed, state, updates))
    return planned
