"""Runs one task at one seed end to end and writes its run record.

The runner is the one place that knows every stage: it prepares the data, hands a RunContext to
the trainer the task names, evaluates the result on validation and test items, and writes the
record (results/runs/<task-hash>/seed-<n>/). Bad input fails before any file is written; a run
that fails later leaves its checkpoints but never a summary.json, so it never looks finished.
A study writes its manifest (results/<study>/study.json) and runs what is missing, one run at a
time or `jobs` at once in separate processes.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import dataclasses
import datetime
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from tff_rec import evaluation, record, runtime, seeds, usage
from tff_rec.prepare import PreparedData, prepare
from tff_rec.progress import RunProgress, StudyProgress
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
            history_inputs=data.history_inputs,
            num_negatives=section["num_negatives"],
            negative_sampling=section["negative_sampling"], rng=rng,
            item_popularity=data.item_popularity,
        )

    return evaluate


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold a lock file: two processes never run one task at one seed at the same time."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_task(task: TaskSpec, seed: int, out: Path, progress: bool = True,
             cache_dir: Optional[Path] = None) -> RunResult:
    """Run `task` at `seed` unless its record is already complete; return the record's summary."""
    directory = record.run_dir(out, task.hash, seed)
    done = _already_complete(directory)
    if done is not None:
        return done
    data = prepare(task, seed)  # bad input fails here, before any folder exists
    cache_dir = Path(cache_dir or Path(out) / ".cache")
    with _exclusive(cache_dir / f"run-{task.hash}-seed-{seed}.lock"):
        # another process may have finished it while we waited
        return _already_complete(directory) or _run(task, seed, data, directory, cache_dir, progress)


def _already_complete(directory: Path) -> Optional[RunResult]:
    """The skipped result of a complete record, or None when the run still has to be made."""
    if not record.is_complete(directory):
        return None
    return RunResult(directory, json.loads((directory / record.SUMMARY).read_text()), True)


def _run(task: TaskSpec, seed: int, data: PreparedData, directory: Path, cache_dir: Path,
         progress: bool) -> RunResult:
    started = datetime.datetime.now(datetime.timezone.utc)
    environment = record.environment()  # the code and packages as the run starts
    wall, cpu = time.perf_counter(), time.process_time()
    usage.reset_peak()
    rows: list[dict[str, Any]] = []
    total_rounds = _planned_rounds(task)
    with RunProgress(f"{task.name} · seed {seed}", total_rounds, enabled=progress) as bar:

        resumed_rounds: list[int] = []

        def report(row: dict[str, Any], resumed: bool = False) -> None:
            if resumed:
                resumed_rounds.append(row["round"])
            else:  # memory after the round: a long run's growth shows here
                row.update(rss_mb=usage.rss_mb(), worker_rss_mb=runtime.worker_rss_mb())
            rows.append(row)
            bar.update(row, resumed=resumed)

        context = RunContext(
            task=task, seed=seed, data=data, run_dir=directory, cache_dir=cache_dir,
            evaluate=_evaluator(task, seed, data), report=report, completed_rows=rows,
        )
        worker = {"worker_cpu_seconds": 0.0, "worker_peak_rss_mb": 0.0}
        try:
            outcome = TRAINERS[task["algorithm"]["name"]](context)
        finally:
            # The TFF worker keeps what every computation it ran left behind (a study of 33 runs
            # grew it to 9 GB): each run gets a fresh one, started on its first TFF call.
            worker = runtime.worker_usage()
            runtime.stop_workers()
        test = context.evaluate(outcome.score_fn, "test", 0)
    validation = {k[4:]: v for k, v in rows[-1].items() if k.startswith("val_")} if rows else {}
    cpu_seconds = round(time.process_time() - cpu, 3)
    summary = {
        "label": task.name, "task_hash": task.hash, "seed": seed,
        "dataset": task["data"]["dataset"], "algorithm": task["algorithm"]["name"],
        "partition": task["partition"]["scheme"], "privacy": task["privacy"]["mechanism"],
        "model": task["model"]["name"],
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
        # CPU time of this process and of the run's TFF worker (a child process).
        "cpu_seconds": round(cpu_seconds + worker["worker_cpu_seconds"], 3),
        "driver_cpu_seconds": cpu_seconds,
        "worker_cpu_seconds": worker["worker_cpu_seconds"],
        # Peak resident memory of this process during the run, and of the run's TFF worker.
        "peak_rss_mb": usage.peak_rss_mb(),
        "worker_peak_rss_mb": worker["worker_peak_rss_mb"],
        **outcome.summary,
    }
    _write_record(directory, task, rows, summary, outcome.privacy, environment)
    return RunResult(directory, summary, False)


def _planned_rounds(task: TaskSpec) -> int:
    name = task["algorithm"]["name"]
    if name == "centralized":
        return task["algorithm.centralized"]["epochs"]
    return 0 if name == "popularity" else task["algorithm"]["rounds"]


def _write_record(directory: Path, task: TaskSpec, rows: list[dict[str, Any]], summary: dict[str, Any],
                  privacy: Optional[dict[str, Any]], environment: dict[str, Any]) -> None:
    """Write every file of the record; summary.json last, then drop the checkpoints."""
    record.write_atomic(directory / record.CONFIG, record.to_toml(task.to_dict()))
    record.write_csv(directory / record.METRICS, rows)
    if privacy is not None:
        record.write_json(directory / record.PRIVACY, privacy)
    record.write_json(directory / record.ENV, environment)
    record.write_json(directory / record.SUMMARY, summary)
    shutil.rmtree(directory / record.CHECKPOINTS, ignore_errors=True)


def manifest_entries(study: StudySpec) -> list[dict[str, Any]]:
    """The study's variants as manifest entries: label, task hash, grid axes, overrides."""
    return [
        {"label": v.label, "task_hash": t.hash, "axes": dict(v.axes), "overrides": dict(v.overrides)}
        for v, t in zip(study.variants, study.tasks)
    ]


def run_study(study: StudySpec, out: Path, progress: bool = True,
              retry_failed: bool = False, jobs: int = 1) -> list[RunResult]:
    """Run every variant at every seed, skipping complete runs; `jobs` runs at once.

    A run that fails is recorded (failed.json in its folder, with the error) and the study goes
    on; a recorded failure is retried only with `retry_failed` (it then resumes from its last
    checkpoint, if it has one). Variants with the same task share its runs.
    """
    record.write_manifest(out, record.study_manifest(
        study.name, study.source, study.seeds, study.metrics, manifest_entries(study)))
    results: dict[tuple[str, int], RunResult] = {}
    pending: dict[tuple[str, int], TaskSpec] = {}
    for task in study.tasks:
        for seed in study.seeds:
            directory = record.run_dir(out, task.hash, seed)
            failure = directory / record.FAILED
            if failure.is_file() and not retry_failed:
                error = json.loads(failure.read_text())["error"]
                results[task.hash, seed] = RunResult(directory, {}, True, error)
            elif record.is_complete(directory):
                results[task.hash, seed] = _already_complete(directory)
            else:
                pending[task.hash, seed] = task
    jobs = usable_jobs(jobs)
    if jobs == 1 or len(pending) <= 1:
        for (task_hash, seed), task in pending.items():
            results[task_hash, seed] = run_recorded(task, seed, out, progress)
    else:
        results.update(_run_parallel(pending, out, jobs, progress))
    return [results[task.hash, seed] for task in study.tasks for seed in study.seeds]


def run_recorded(task: TaskSpec, seed: int, out: Path, progress: bool = False) -> RunResult:
    """`run_task`, with a failure recorded in the run's failed.json instead of raised."""
    directory = record.run_dir(out, task.hash, seed)
    (directory / record.FAILED).unlink(missing_ok=True)
    try:
        return run_task(task, seed, out, progress=progress)
    except Exception as error:  # noqa: BLE001 - recorded, reported, and the study goes on
        message = f"{type(error).__name__}: {error}"
        record.write_json(directory / record.FAILED, {"label": task.name, "seed": seed, "error": message})
        return RunResult(directory, {}, False, message)


def _init_job(threads: int) -> None:
    """Set up a study job process: quiet logs, its share of the cores for TF and TFF, and a
    SIGTERM when the study process dies (else a killed study would leave its jobs running)."""
    from tff_rec.quiet import silence

    _terminate_with_parent()
    silence(False)  # before TensorFlow is imported: its C++ logging reads the environment then
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    runtime.set_concurrency(threads)


def usable_jobs(jobs: int) -> int:
    """`jobs`, capped at the number of cores: each job needs at least one core of its own."""
    return max(1, min(jobs, len(os.sched_getaffinity(0))))


def _terminate_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent exits (prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:  # not Linux/glibc: jobs then outlive a killed study, as they would anyway
        pass
    signal.signal(signal.SIGTERM, _stop_job)


def _stop_job(signum: int, frame: object) -> None:
    """End a job process now, with its TFF worker (SystemExit would be taken for a run's error)."""
    runtime.stop_workers()
    os._exit(128 + signum)


def _run_parallel(pending: dict[tuple[str, int], TaskSpec], out: Path, jobs: int,
                  progress: bool) -> dict[tuple[str, int], RunResult]:
    """Run tasks in `jobs` separate processes, each given cores // jobs threads.

    Threads × concurrent TFF computations per job stay within its share of the cores, so the jobs
    together never oversubscribe them. Processes are reused across runs (learning processes are
    cached per process); each run still gets its own TFF worker.
    """
    threads = len(os.sched_getaffinity(0)) // jobs
    results = {}
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_job, initargs=(threads,),
    ) as pool, StudyProgress(len(pending), enabled=progress) as bar:
        futures = {
            pool.submit(run_recorded, task, key[1], Path(out)): (key, task)
            for key, task in pending.items()
        }
        for future in concurrent.futures.as_completed(futures):
            key, task = futures[future]
            results[key] = future.result()
            bar.finished(f"{task.name} · seed {key[1]}", results[key].error is None)
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
            directory = record.run_dir(out, task.hash, seed)
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
