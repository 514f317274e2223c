"""Runs one task at one seed end to end and writes its run record.

The runner is the one place that knows every stage: it resolves the run's plan (`tff_rec.plan`:
data, partition, sampler, privacy, model, evaluation), drives the trainer the plan names (a loop
that yields metrics rows, `tff_rec.training`), evaluates the result on the test items, and writes
the record (results/runs/<task-hash>/seed-<n>/: with the trained model's weights and every test
user's ranks, `tff_rec.saved`). With `evaluation.select = "best"` the test users are ranked by the
model of the validated round with the best validation ndcg@K (`training.context.Selection`), and
summary.json says which round (`selected_round`). Bad input fails before any file is written; a run
that fails later leaves its checkpoints but never a summary.json, so it never looks finished.
A study writes its manifest (results/<study>/study.json) and runs what is missing, one run at a
time or `jobs` at once in separate processes.

Watching a run. While a run goes, its record folder already holds metrics.csv, rewritten with
every new row (round; centralized: epoch) to a temporary name and renamed, so a reader always
finds whole rows and can plot them, and tensorboard/<label>/ with the same rows as TensorBoard
scalars (`tff_rec.board`). Neither makes it a record: summary.json, written last, still marks a
complete one. When the run completes, metrics.csv is written once more from the same rows (with
an fsync). A run resumed from a checkpoint first reports the checkpoint's rows: metrics.csv is
rewritten from them at its first new round, and the event files are started again (the old ones
removed, every row so far written anew), so the live files always hold exactly the rows the run
has; columns come in one fixed order (`record.metrics_columns`: a checkpoint's rows.json has its
keys sorted), so a resumed run ends with the very bytes of an uninterrupted one's metrics.csv but
the timing and memory columns (`seconds`, `rss_mb`, `worker_rss_mb`). An interrupted or failed
run keeps them (what it reached; the next attempt replaces them); a full disk removes them with the
rest of the record, as it leaves nothing half-written. Progress on stderr: `tff_rec.progress`.
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
from typing import Any, Callable, Iterator, Optional

from tff_rec import board, evaluation, faults, record, runtime, saved, stale, threads, usage
from tff_rec.plan import RunPlan
from tff_rec.plan import resolve as resolve_plan
from tff_rec.progress import Mode, RunProgress, StudyProgress
from tff_rec.progress import resolve as resolve_progress
from tff_rec.spec import StudySpec, TaskSpec
from tff_rec.training import TRAINERS
from tff_rec.training.context import Outcome, Resumed, RunContext, Training


@dataclasses.dataclass(frozen=True)
class RunResult:
    path: Path
    summary: dict[str, Any]
    skipped: bool  # True when the record was already complete
    error: Optional[str] = None  # set when the run failed (its record then holds failed.json)
    stale: bool = False  # a reused record made by other code than this (`tff_rec.stale`)


_held_locks: set[Path] = set()  # lock files this process holds (a SIGTERMed job removes them)


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold a lock file: two processes never run one task at one seed at the same time.

    The file is removed when the lock is released (no lock files pile up, nor stay behind a full
    disk); a process that opened it before then and gets the lock next finds the path gone or
    another file, and locks the path anew.
    """
    with faults.writing(lock):
        lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with faults.writing(lock):
            handle = open(lock, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                held = os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                held = False
        except BaseException:
            handle.close()
            raise
        if held:
            break
        handle.close()
    _held_locks.add(lock)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # before the unlock: a waiter then sees the path gone
        _held_locks.discard(lock)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def run_task(task: TaskSpec, seed: int, out: Path, progress: Mode = True,
             cache_dir: Optional[Path] = None, rerun_stale: bool = False) -> RunResult:
    """Run `task` at `seed` unless its record is already complete (and not stale, with
    `rerun_stale`); return the record's summary. `progress`: "bar", "lines", "none", or
    "auto"/True (a bar on a terminal, else lines), False ("none"): `tff_rec.progress`."""
    directory = record.run_dir(out, task.hash, seed)
    done = _already_complete(directory)
    if done is not None and not (rerun_stale and done.stale):
        return done
    # bad input fails here, before any folder exists; so does what the data cannot satisfy
    return run_plan(resolve_plan(task, seed), out, progress, cache_dir, rerun_stale)


def run_plan(plan: RunPlan, out: Path, progress: Mode = True, cache_dir: Optional[Path] = None,
             rerun_stale: bool = False) -> RunResult:
    """Run a resolved plan (`tff_rec.plan`; it may come pickled from another process) into its
    record under `out`, unless the record is already complete: `run_task` after resolving."""
    directory = record.run_dir(out, plan.task.hash, plan.seed)
    damage = record.damage(directory) if (directory / record.SUMMARY).is_file() else None
    if damage is not None:
        faults.warn(f"{damage}: the record is incomplete; making it again")
    cache_dir = Path(cache_dir or Path(out) / ".cache")
    with _exclusive(cache_dir / f"run-{plan.task.hash}-seed-{plan.seed}.lock"):
        # another process may have finished it while we waited
        return _reusable(directory, rerun_stale) or _run(plan, directory, cache_dir, progress)


def _already_complete(directory: Path) -> Optional[RunResult]:
    """The skipped result of a complete record, or None when the run still has to be made."""
    if not record.is_complete(directory):
        return None
    summary = json.loads((directory / record.SUMMARY).read_text())
    return RunResult(directory, summary, True, stale=stale.is_stale(directory))


def _reusable(directory: Path, rerun_stale: bool) -> Optional[RunResult]:
    """`_already_complete`, except that a stale record is deleted (to be re-made) with `rerun_stale`."""
    done = _already_complete(directory)
    if done is None or not (rerun_stale and done.stale):
        return done
    shutil.rmtree(directory)
    return None


class _LiveOutputs:
    """A run's metrics.csv and TensorBoard events while it goes (module docstring, Watching a run)."""

    def __init__(self, directory: Path, label: str):
        self._directory, self._label = directory, label
        self._events: Optional[board.EventLog] = None
        self._written = 0  # rows in the event file

    def update(self, rows: list[dict[str, Any]]) -> None:
        """Every row so far, the last one new: rewrite metrics.csv, add the rows not yet logged."""
        if self._events is None:
            self._start()
        record.write_csv(self._directory / record.METRICS, rows, sync=False,
                         columns=record.metrics_columns(rows))
        self._log(rows)

    def finish(self, rows: list[dict[str, Any]]) -> None:
        """Log the rows not yet logged (a run resumed at its last round has no new one); close."""
        if rows and self._written < len(rows):
            if self._events is None:
                self._start()
            self._log(rows)
        self.close()

    def close(self) -> None:
        events, self._events = self._events, None
        if events is not None:
            events.close()

    def remove(self) -> None:
        """Close and delete the live files (a full disk: nothing half-written stays)."""
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the files go anyway
            pass
        (self._directory / record.METRICS).unlink(missing_ok=True)
        shutil.rmtree(self._directory / record.TENSORBOARD, ignore_errors=True)

    def _start(self) -> None:
        """Start afresh: a killed attempt's temporary metrics.csv and its event files go."""
        for leftover in self._directory.glob(f".{record.METRICS}.*.tmp"):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(self._directory / record.TENSORBOARD, ignore_errors=True)
        self._events, self._written = board.EventLog(board.folder(self._directory, self._label)), 0

    def _log(self, rows: list[dict[str, Any]]) -> None:
        assert self._events is not None
        self._events.write(rows[self._written:])
        self._written = len(rows)


def _run(plan: RunPlan, directory: Path, cache_dir: Path, progress: Mode) -> RunResult:
    task, seed = plan.task, plan.seed
    started = datetime.datetime.now(datetime.timezone.utc)
    environment = record.environment()  # the code and packages as the run starts
    environment["intra_op_threads"] = threads.check()  # results depend on it
    wall, cpu = time.perf_counter(), time.process_time()
    usage.reset_peak()
    rows: list[dict[str, Any]] = []
    live = _LiveOutputs(directory, task.name)
    unit = "epoch" if plan.trainer == "centralized" else "round"
    with RunProgress(plan.label, plan.rounds, enabled=progress, unit=unit) as bar:

        resumed_rounds: list[int] = []

        def report(row: dict[str, Any], resumed: bool = False) -> None:
            if resumed:
                resumed_rounds.append(row["round"])
            else:  # memory after the round: a long run's growth shows here
                row.update(rss_mb=usage.rss_mb(), worker_rss_mb=runtime.worker_rss_mb())
            rows.append(row)
            if not resumed:  # a checkpoint's rows are written with the first new one
                live.update(rows)
            bar.update(row, resumed=resumed)

        context = RunContext(plan=plan, run_dir=directory, cache_dir=cache_dir)
        data = context.data
        worker = {"worker_cpu_seconds": 0.0, "worker_peak_rss_mb": 0.0}
        try:
            try:
                outcome = _train(TRAINERS[plan.trainer](context), report)
            finally:
                # The TFF worker keeps what every computation it ran left behind (a study of 33
                # runs grew it to 9 GB): each run gets a fresh one, started on its first TFF call.
                worker = runtime.worker_usage()
                environment["workers"] = runtime.remote_workers()  # [] = the local TFF worker
                runtime.stop_workers()
            # the final weights kept, and with evaluation.select = "best" the best round's set
            kept = saved.keep_model(task, data, seed, outcome.model, context.selection, rows)
            test, ranks = context.evaluate(outcome.score_fn, "test", 0, with_ranks=True)
            live.finish(rows)
        except BaseException as error:
            if faults.is_disk_full(error):
                live.remove()
            else:  # interrupted or failed: the live files show how far it got
                with contextlib.suppress(Exception):
                    live.close()
            raise
    selected = saved.selected_round(context.selection, rows)
    chosen = next((row for row in rows if row["round"] == selected), {})  # its validation chose it
    validation = {k[4:]: v for k, v in chosen.items() if k.startswith("val_")}
    cpu_seconds = round(time.process_time() - cpu, 3)
    privacy, partition = plan.privacy_record(), plan.partition_record()
    summary = {
        "label": task.name, "task_hash": task.hash, "seed": seed,
        "dataset": task["data"]["dataset"], "algorithm": task["algorithm"]["name"],
        "partition": task["partition"]["scheme"], "privacy": task["privacy"]["mechanism"],
        "model": task["model"]["name"],
        "rounds": plan.rounds, "resumed_from_round": max(resumed_rounds, default=0),
        # the model whose validation and test metrics these are: the last round's, or the best
        # validated round's (evaluation.select; chosen by validation full-ranking selection_metric)
        "selection": context.selection.mode, "selected_round": selected,
        **({"selection_metric": context.selection.metric}
           if context.selection.mode == "best" else {}),
        "validation": validation, "test": test,
        "epsilon": privacy["epsilon"] if privacy else None,
        "delta": privacy["delta"] if privacy else None,
        "privacy_unit": partition["privacy_unit"] if partition else None,
        # noise and ε of a nominal cohort (privacy/nominal.py); the key exists only then
        **({"privacy_simulated": privacy["simulated"]}
           if privacy and privacy.get("simulated") else {}),
        "heterogeneity": partition,
        "excluded_from_ranking": "the user's history items (all input items except the target)",
        # evaluated: test users (all with held-out items); validated: the users validation ranks
        # (a seeded sample of them with `evaluation.validation_users`).
        "users": {"train": int(len(data.split.train)), "evaluated": int(test.get("users", 0)),
                  "validated": int(len(plan.evaluation.validation_users))},
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
    _write_record(directory, task, rows, summary, privacy, environment, kept, ranks)
    bar.done(test, summary["wall_seconds"])  # lines: one line saying the run is done
    return RunResult(directory, summary, False)


def _train(training: Training, report: Callable[..., None]) -> Outcome:
    """Drive a trainer's loop (`tff_rec.training`): report each row it yields, as it comes
    (before the trainer goes on, so a checkpoint holds the row as reported); return its outcome."""
    try:
        while True:
            try:
                row = next(training)
            except StopIteration as finished:
                return finished.value
            if isinstance(row, Resumed):
                report(row.row, resumed=True)
            else:
                report(row)
    finally:
        training.close()  # a report that raised leaves the trainer suspended: end it now


def _write_record(directory: Path, task: TaskSpec, rows: list[dict[str, Any]], summary: dict[str, Any],
                  privacy: Optional[dict[str, Any]], environment: dict[str, Any],
                  kept: Optional[saved.KeptModel] = None,
                  ranks: Optional[evaluation.Ranks] = None) -> None:
    """Write every file of the record (with the kept model and test ranks, `tff_rec.saved`);
    summary.json last, then drop the checkpoints.

    If a write fails (a full disk), the files written before it are removed again: no
    half-written record, and the checkpoints stay for the next attempt.
    """
    try:
        saved.remove(directory)  # what a killed attempt left of them
        record.write_atomic(directory / record.CONFIG, record.to_toml(task.to_dict()))
        record.write_csv(directory / record.METRICS, rows, columns=record.metrics_columns(rows))
        if privacy is not None:
            record.write_json(directory / record.PRIVACY, privacy)
        record.write_json(directory / record.ENV, environment)
        if ranks is not None:
            saved.write_ranks(directory, ranks)
        if kept is not None:
            kept.write(directory)
        record.write_json(directory / record.SUMMARY, summary)
    except BaseException:
        for name in (record.CONFIG, record.METRICS, record.PRIVACY, record.ENV):
            (directory / name).unlink(missing_ok=True)
        saved.remove(directory)
        shutil.rmtree(directory / record.TENSORBOARD, ignore_errors=True)
        raise
    shutil.rmtree(directory / record.CHECKPOINTS, ignore_errors=True)


def manifest_entries(study: StudySpec) -> list[dict[str, Any]]:
    """The study's variants as manifest entries: label, task hash, grid axes, overrides."""
    return [
        {"label": v.label, "task_hash": t.hash, "axes": dict(v.axes), "overrides": dict(v.overrides)}
        for v, t in zip(study.variants, study.tasks)
    ]


def run_study(study: StudySpec, out: Path, progress: Mode = True,
              retry_failed: bool = False, jobs: int = 1, rerun_stale: bool = False,
              engine: Optional[Engine] = None) -> list[RunResult]:
    """Run every variant at every seed, skipping complete runs (but stale ones with
    `rerun_stale`); `jobs` runs at once, on `engine` (default: `run_locally`, this machine;
    `tff_rec.engines` has the others, e.g. Ray).

    A run that fails is recorded (failed.json in its folder, with the error) and the study goes
    on; a recorded failure is retried only with `retry_failed` (it then resumes from its last
    checkpoint, if it has one). Variants with the same task share its runs. `progress`: as for
    `run_task`; with `jobs`, a bar is one bar over the runs, and lines come from every job.
    """
    record.write_manifest(out, record.study_manifest(
        study.name, study.source, study.seeds, study.metrics, manifest_entries(study)))
    results: dict[tuple[str, int], RunResult] = {}
    pending: dict[tuple[str, int], TaskSpec] = {}
    for task in study.tasks:
        for seed in study.seeds:
            directory = record.run_dir(out, task.hash, seed)
            error = None if retry_failed else _recorded_failure(directory / record.FAILED)
            if error is not None:
                results[task.hash, seed] = RunResult(directory, {}, True, error)
            elif (done := _already_complete(directory)) and not (rerun_stale and done.stale):
                results[task.hash, seed] = done
            else:
                pending[task.hash, seed] = task
    if pending:
        results.update((engine or run_locally)(pending, Path(out), jobs, progress, rerun_stale))
    return [results[task.hash, seed] for task in study.tasks for seed in study.seeds]


# An engine runs a study's pending runs, (task hash, seed) → task, with `jobs` at once, and
# returns their results: `run_recorded`'s, the records written under `out` (`tff_rec.engines`).
Engine = Callable[[dict[tuple[str, int], TaskSpec], Path, int, Mode, bool],
                  dict[tuple[str, int], RunResult]]


def run_locally(pending: dict[tuple[str, int], TaskSpec], out: Path, jobs: int, progress: Mode,
                rerun_stale: bool = False) -> dict[tuple[str, int], RunResult]:
    """The local engine: the runs one after another in this process, or `jobs` (at most the
    cores) at once in separate processes (`_run_parallel`)."""
    jobs = usable_jobs(jobs)
    if jobs == 1 or len(pending) <= 1:
        return {(task_hash, seed): run_recorded(task, seed, out, progress, rerun_stale)
                for (task_hash, seed), task in pending.items()}
    return _run_parallel(pending, out, jobs, progress, rerun_stale)


def _recorded_failure(path: Path) -> Optional[str]:
    """The error a failed.json records; None without one (an unreadable one: the run is retried)."""
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text())["error"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        faults.warn(f"{path}: unreadable ({error}); running the run again")
        return None


def run_recorded(task: TaskSpec, seed: int, out: Path, progress: Mode = False,
                 rerun_stale: bool = False) -> RunResult:
    """`run_task`, with a failure recorded in the run's failed.json instead of raised.

    A full disk is not the run's failure: it is raised (every later run would fail alike).
    """
    directory = record.run_dir(out, task.hash, seed)
    (directory / record.FAILED).unlink(missing_ok=True)
    try:
        return run_task(task, seed, out, progress=progress, rerun_stale=rerun_stale)
    except faults.DiskFull:
        raise
    except Exception as error:  # noqa: BLE001 - recorded, reported, and the study goes on
        if faults.is_disk_full(error):
            raise faults.DiskFull(getattr(error, "filename", None) or directory) from error
        message = f"{type(error).__name__}: {error}"
        record.write_json(directory / record.FAILED, {"label": task.name, "seed": seed, "error": message})
        return RunResult(directory, {}, False, message)


def _init_job(share: int) -> None:
    """Set up a study job process: quiet logs, the driver's fixed thread count, its share of the
    cores for TFF's worker, and a SIGTERM when the study process dies (else a killed study would
    leave its jobs running). The intra-op thread count is the same as without jobs
    (`threads.INTRA_OP_THREADS`): results depend on it."""
    from tff_rec.quiet import silence

    _terminate_with_parent()
    silence(False)  # before TensorFlow is imported: its C++ logging reads the environment then
    threads.fix()
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    runtime.set_concurrency(share)


def usable_jobs(jobs: int) -> int:
    """`jobs`, capped at the number of cores: each job needs at least one core of its own."""
    return max(1, min(jobs, len(os.sched_getaffinity(0))))


def _terminate_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent exits (prctl PR_SET_PDEATHSIG);
    leave Ctrl-C to the study process, which terminates its jobs (`_run_parallel`)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:  # not Linux/glibc: jobs then outlive a killed study, as they would anyway
        pass
    signal.signal(signal.SIGTERM, _stop_job)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the study process stops its jobs


def _stop_job(signum: int, frame: object) -> None:
    """End a job process now, with its TFF worker and its lock file (SystemExit would be taken
    for a run's error)."""
    runtime.stop_workers()
    for lock in list(_held_locks):
        lock.unlink(missing_ok=True)  # the exit releases the lock itself
    try:  # release this process's semaphores (tqdm's lock), or multiprocessing's resource
        multiprocessing.util._run_finalizers(0)  # tracker warns of "leaked semaphore objects"
    except Exception:  # noqa: BLE001 - a private API: exiting matters more
        pass
    os._exit(128 + signum)


def _run_parallel(pending: dict[tuple[str, int], TaskSpec], out: Path, jobs: int,
                  progress: Mode, rerun_stale: bool = False) -> dict[tuple[str, int], RunResult]:
    """Run tasks in `jobs` separate processes, each given cores // jobs concurrent TFF computations.

    The TFF computations of all jobs together stay within the cores (each runs on one thread);
    the drivers keep their fixed thread count (`threads`), so a centralized run beside another
    job may briefly share a core. Processes are reused across runs (learning processes are cached
    per process); each run still gets its own TFF worker.
    """
    share = len(os.sched_getaffinity(0)) // jobs
    results = {}
    # lines: every job writes its runs' lines to the shared stderr (whole lines, each naming its
    # run); a bar: only this process's bar over the runs
    progress = resolve_progress(progress)
    per_run = "lines" if progress == "lines" else "none"
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_job, initargs=(share,),
    ) as pool, StudyProgress(len(pending), enabled=progress) as bar:
        futures = {
            pool.submit(run_recorded, task, key[1], Path(out), per_run, rerun_stale): (key, task)
            for key, task in pending.items()
        }
        try:
            for future in concurrent.futures.as_completed(futures):
                key, task = futures[future]
                results[key] = future.result()
                bar.finished(f"{task.name} seed {key[1]}", results[key].error is None)
        except BaseException:  # Ctrl-C, a full disk: stop every job now, with its worker
            _stop_jobs(pool)
            raise
    return results


def _stop_jobs(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Cancel the runs not started and SIGTERM the job processes (each stops its TFF worker and
    removes its lock file, `_stop_job`). Python 3.11's pool has no public way to end its processes."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=30)


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    label: str
    task_hash: str
    seed: int
    state: str  # done | stale | damaged (re-made when run) | failed | partial (has checkpoints) | to do
    client_updates: int  # the cohort sizes the run's sampler draws, summed over its rounds
    epsilon: Optional[float] = None  # the privacy plan's final ε (None: no DP, or not accounted)


def record_state(directory: Path) -> str:
    """What a run's record folder holds: done, stale, damaged, failed, partial or to do."""
    if record.is_complete(directory):
        return "stale" if stale.is_stale(directory) else "done"
    if (directory / record.SUMMARY).is_file():  # unreadable: re-made when run
        return "damaged"
    if (directory / record.FAILED).is_file():
        return "failed"
    if (directory / record.CHECKPOINTS).is_dir():
        return "partial"
    return "to do"


def record_states(study: StudySpec, out: Path) -> list[str]:
    """`record_state` of every run of the study, variants in order, seeds within."""
    return [record_state(record.run_dir(out, task.hash, seed))
            for task in study.tasks for seed in study.seeds]


def plan_study(study: StudySpec, out: Path) -> list[PlannedRun]:
    """Every run of the study resolved to its plan (`tff_rec.plan`; bad input fails here, as it
    would when run), with its record's state: what `study --dry-run` lists."""
    planned = []
    for task in study.tasks:
        for seed in study.seeds:
            plan = resolve_plan(task, seed)
            ledger = plan.privacy.ledger if plan.privacy is not None else ()
            planned.append(PlannedRun(
                task.name, task.hash, seed, record_state(record.run_dir(out, task.hash, seed)),
                plan.client_updates(), ledger[-1] if ledger else None))
    return planned
