"""The Ray engine: a study's pending runs as Ray tasks across a cluster (`study --engine ray`).

What the cluster needs (README, Scaling out):

- **The same code and environment on every node**: this repository installed from the same
  commit with `uv sync --locked --extra ray`, and Ray started from that environment (`uv run ray
  start ...`), so that Ray's workers import this package. Every record keeps the code hash of the
  node that made it (env.json, `stale.code_sha256`): after the study the driver warns when some
  differ from its own (`compare` then marks those rows stale). A warning, not a refusal: in a
  checkout being edited while a study runs, the local engine's jobs mix code in the same way.
- **A filesystem shared by every node that holds `--out`** (NFS, a cluster file system): a run
  writes its record, checkpoints and lock file there from whichever node runs it, exactly as the
  local engine writes them. A node that does not see the driver's `--out` (a marker file the
  driver leaves in `<out>/.cache/`) refuses the run, and the study stops with an error. Shipping
  records back to the driver would have worked too, but a retried run could not then resume from
  its checkpoint: with a shared `--out` it does.

How runs map to tasks:

- One run per Ray task (`_execute`: `runner.run_recorded` on the node, as a local study job runs
  it), declaring `num_cpus` = the CPU share a run gets locally with the same `--jobs` (cores of
  this machine // jobs, at least 1; at most the largest node's CPUs); that share is also its TFF
  worker's concurrency (`runtime.set_concurrency`). At most `--jobs` tasks are in flight; Ray
  spreads them over the nodes (SPREAD).
- A task lost with its Ray worker or node (killed, out of memory, the node died) is run again,
  up to `RETRIES` times (Ray's `max_retries`): the retried run resumes from its last checkpoint in
  `--out`. A run's own failure is not retried: it is recorded in failed.json, as locally. Two
  attempts never make one record at once: the run's lock file (`runner._exclusive`, an flock on
  the shared `--out`) is released when a killed attempt's process dies.
- What a task receives (`RunRequest`) is small and picklable: the resolved task, the seed, the
  out folder and what the node checks. The run plan of issue 16 (one frozen, picklable object
  per task and seed) will be that object.
- Without `--address`, a Ray instance is started on this machine for the study and stopped after
  it; with one, the study connects to that cluster and leaves it running.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # imported where they run: TensorFlow must not load before the node's setup
    from tff_rec.runner import RunResult
    from tff_rec.spec import TaskSpec

RETRIES = 3  # attempts after the first of a run whose Ray worker or node was lost
# The driver's environment that a run depends on, given to every Ray worker of the study (a node's
# Ray processes have the environment of its `ray start`): every TFF_REC_* variable (the data
# folder, `--workers`' TFF worker services), quiet TensorFlow logs, and the driver's fixed
# intra-op thread count (`threads`; results depend on it).
FORWARDED_PREFIX = "TFF_REC_"
FORWARDED = ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND", "TF_NUM_INTRAOP_THREADS")
MISSING = ("--engine ray needs Ray, an optional extra of tff-rec: install it with `uv sync "
           "--extra ray` (add the extras you use, e.g. `--extra test`; pip: `pip install "
           "'tff-rec[ray]'`)")


class ClusterMismatch(RuntimeError):
    """A node cannot make a run where the driver expects its record: it does not share --out."""


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """What a Ray task receives: one run, and what its node checks before making it.

    Issue 16's run plan (the frozen, picklable plan of a task at a seed) will take the place of
    `task` and `seed`.
    """

    task: "TaskSpec"  # the resolved task (validated by the driver)
    seed: int
    out: str  # absolute, on the filesystem every node shares
    rerun_stale: bool
    progress: str  # "lines" (forwarded to the driver's stderr by Ray) or "none"
    cpus: int  # the run's CPU share: its TFF worker's concurrency
    marker: str  # a file the driver wrote under `out`: the node sees the same folder
    cwd: str  # the driver's working folder (relative paths in the task), if the node has it


class RayEngine:
    """A study engine (`runner.Engine`) that runs each pending run as a Ray task."""

    def __init__(self, address: Optional[str] = None):
        try:
            import ray
        except ImportError:  # before anything is written: --engine ray is then bad usage
            raise ValueError(MISSING) from None
        self._ray = ray
        self.address = address

    def __call__(self, pending: dict[tuple[str, int], "TaskSpec"], out: Path, jobs: int,
                 progress: Any, rerun_stale: bool = False) -> dict[tuple[str, int], "RunResult"]:
        from tff_rec import stale
        from tff_rec.progress import resolve

        progress = resolve(progress)
        per_run = "lines" if progress == "lines" else "none"
        out = Path(out).resolve()
        cores = len(os.sched_getaffinity(0))
        self._connect(cores, log_to_driver=per_run == "lines")
        try:
            cpus = min(max(1, cores // min(jobs, cores)), self._largest_node_cpus())
            marker = out / ".cache" / f"ray-study-{uuid.uuid4().hex}"
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            try:
                stale.code_sha256()  # this command's code, as it starts (cached)
                requests = {
                    key: RunRequest(task, key[1], str(out), rerun_stale, per_run, cpus,
                                    str(marker.relative_to(out)), os.getcwd())
                    for key, task in pending.items()
                }
                results = self._run(requests, out, jobs, progress)
            finally:
                marker.unlink(missing_ok=True)
        finally:
            self._ray.shutdown()  # a started instance stops; a cluster is only disconnected from
        made = [r for r in results.values() if not r.skipped and r.error is None]
        other = sum(stale.is_stale(r.path) for r in made)
        if other:
            from tff_rec import faults

            faults.warn(f"{other} of the {len(made)} runs made on Ray ran other code than this "
                        "command (their env.json code_sha256): every node needs the same checkout "
                        "and `uv sync --locked --extra ray` (README, Scaling out); `compare` marks "
                        "them stale")
        return results

    def _connect(self, cores: int, log_to_driver: bool) -> None:
        ray = self._ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no prompt, no upload
        options = dict(log_to_driver=log_to_driver, logging_level=logging.WARNING,
                       runtime_env={"env_vars": {
                           name: value for name, value in os.environ.items()
                           if name in FORWARDED or name.startswith(FORWARDED_PREFIX)}})
        if self.address is None:  # "local": a new instance, even if another one runs here
            ray.init(address="local", num_cpus=cores, include_dashboard=False, **options)
            return
        try:
            ray.init(address=self.address, **options)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise ValueError(f"--address {self.address}: no Ray cluster to connect to ({error}); "
                             "start one with `ray start --head` (README, Scaling out)") from None

    def _largest_node_cpus(self) -> int:
        cpus = max((node["Resources"].get("CPU", 0) for node in self._ray.nodes() if node["Alive"]),
                   default=0)
        if cpus < 1:
            raise ValueError(f"the Ray cluster at {self.address or 'this machine'} has no node "
                             "with a CPU to run on")
        return int(cpus)

    def _run(self, requests: dict[tuple[str, int], RunRequest], out: Path, jobs: int,
             progress: Any) -> dict[tuple[str, int], "RunResult"]:
        """Submit the runs, at most `jobs` in flight; collect their results as they finish."""
        from tff_rec.progress import StudyProgress

        ray = self._ray
        remote = ray.remote(_execute)
        queue = list(requests.items())
        running: dict[Any, tuple[tuple[str, int], RunRequest]] = {}
        results = {}
        with StudyProgress(len(requests), enabled=progress) as bar:
            try:
                while queue or running:
                    while queue and len(running) < jobs:
                        key, request = queue.pop(0)
                        reference = remote.options(
                            num_cpus=request.cpus, max_retries=RETRIES, retry_exceptions=False,
                            scheduling_strategy="SPREAD", name=f"{request.task.name} seed {key[1]}",
                        ).remote(request)
                        running[reference] = key, request
                    done, _ = ray.wait(list(running), num_returns=1)
                    for reference in done:
                        key, request = running.pop(reference)
                        results[key] = self._result(reference, request, out)
                        bar.finished(f"{request.task.name} seed {key[1]}", results[key].error is None)
            except BaseException:  # Ctrl-C, a full disk, a mismatched node: stop the other runs
                for reference in running:  # their Ray workers die, and with them their TFF workers
                    with contextlib.suppress(Exception):
                        ray.cancel(reference, force=True)
                raise
        return results

    def _result(self, reference: Any, request: RunRequest, out: Path) -> "RunResult":
        """The run's result; a run lost more than RETRIES times is recorded as failed."""
        from tff_rec import faults, record
        from tff_rec.runner import RunResult

        ray = self._ray
        try:
            return ray.get(reference)
        except ray.exceptions.RayTaskError as error:  # raised by `_execute` itself
            cause = getattr(error, "cause", None)
            if isinstance(cause, ClusterMismatch):
                raise ValueError(str(cause)) from None
            if isinstance(cause, faults.DiskFull):
                raise cause from None
            message = f"{type(cause).__name__}: {cause}" if cause is not None else str(error)
        except ray.exceptions.RayError as error:  # the worker or node was lost, every attempt
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            message = (f"{type(error).__name__}: its Ray worker or node was lost "
                       f"{RETRIES + 1} times ({first})")
        directory = record.run_dir(out, request.task.hash, request.seed)
        record.write_json(directory / record.FAILED,
                          {"label": request.task.name, "seed": request.seed, "error": message})
        return RunResult(directory, {}, False, message)


_process_ready = False  # whether this Ray worker process is set up for runs (`_setup`)


def _setup() -> None:
    """Set up this Ray worker process for runs, once (as a local study job, `runner._init_job`):
    quiet logs, the driver's fixed intra-op thread count, one inter-op thread."""
    global _process_ready
    if _process_ready:
        return
    from tff_rec import threads
    from tff_rec.quiet import silence

    silence(False)
    threads.fix()
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # TensorFlow already running in this process
        tf.config.threading.set_inter_op_parallelism_threads(1)
    _process_ready = True


def _check_node(request: RunRequest) -> None:
    """ClusterMismatch unless this node sees the driver's --out."""
    if not (Path(request.out) / request.marker).is_file():
        raise ClusterMismatch(
            f"Ray node {socket.gethostname()} does not see the driver's --out {request.out}: it must be a folder "
            "on a filesystem every node shares (README, Scaling out)")


def _execute(request: RunRequest) -> "RunResult":
    """One run on a Ray node: `runner.run_recorded`, with the node's share of the cores."""
    _setup()
    _check_node(request)
    if os.path.isdir(request.cwd):
        os.chdir(request.cwd)
    from tff_rec import runner, runtime

    runtime.set_concurrency(request.cpus)
    return runner.run_recorded(request.task, request.seed, Path(request.out), request.progress,
                               request.rerun_stale)
