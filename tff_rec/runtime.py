"""The TFF local runtime: configure it for speed, and stop its worker process when we are done.

TFF's local C++ runtime starts a `worker_binary` child process that outlives Python unless it is
stopped, and that holds our stdout/stderr open (a pipe reading our output would never close).
`configure()` registers `shutdown()` to run at exit and on SIGTERM.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import time
from pathlib import Path

WORKER_NAME = "worker_binary"
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
# Read by the worker when it starts, so set just around its start:
WORKER_ENVIRONMENT = {
    # one intra- and one inter-op thread per computation (DESIGN.md, Performance notes)
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    # one glibc malloc arena: with the default (8 per core) the worker's freed memory stayed
    # resident in up to 15 extra arenas, +23-45% RSS between rounds 50 and 500; with one, +0.5-3.5%
    # at unchanged speed and bit-identical results (README, Performance)
    "MALLOC_ARENA_MAX": "1",
}
_configured = False
_concurrency: int | None = None  # computations at once in the worker; None = one per core


def set_concurrency(calls: int) -> None:
    """Cap the worker's concurrent computations (a study job's share of the cores)."""
    global _concurrency
    if calls < 1:
        raise ValueError(f"concurrency must be positive. Found {calls}.")
    _concurrency = calls


def _children_named(name: str) -> list[int]:
    """PIDs of our own child processes with the given command name (Linux /proc)."""
    me = os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if comm == name and int(ppid) == me and state != "Z":  # a zombie holds no pipes
            pids.append(int(entry.name))
    return pids


def worker_pids() -> list[int]:
    """PIDs of TFF worker processes started by this process."""
    return _children_named(WORKER_NAME)


def worker_usage() -> dict[str, float]:
    """CPU seconds and peak resident memory (MB) of this process's live TFF workers (0 if none)."""
    from tff_rec import usage

    pids = worker_pids()
    return {
        "worker_cpu_seconds": round(sum(usage.cpu_seconds(p) or 0.0 for p in pids), 3),
        "worker_peak_rss_mb": max((usage.peak_rss_mb(p) or 0.0 for p in pids), default=0.0),
    }


def worker_rss_mb() -> float:
    """Resident memory (MB) of this process's live TFF workers now (0 if none)."""
    from tff_rec import usage

    return round(sum(usage.rss_mb(p) or 0.0 for p in worker_pids()), 1)


def stop_workers() -> None:
    """Kill every TFF worker this process started; the next `configure()` starts a new one.

    The worker is not reaped here: TFF's own ServiceManager reaps it when it is collected (it
    signals the pid first, which must still exist, as a zombie, or it raises at exit).
    """
    global _configured
    killed = worker_pids()
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while killed and set(killed) & set(worker_pids()) and time.monotonic() < deadline:
        time.sleep(0.01)  # SIGKILL is asynchronous: wait until they are gone (or zombies)
    _configured = False


def shutdown() -> None:
    """At exit: stop the workers, then drop TFF's contexts while the interpreter is intact.

    TFF's ServiceManager signals its worker in `__del__`; left to interpreter teardown, that runs
    after the modules it needs are gone and prints an "Exception ignored" traceback.
    """
    import gc
    import sys

    stop_workers()
    if "tensorflow_federated" not in sys.modules:
        return
    from tensorflow_federated.python.core.impl.context_stack import (
        context_stack_impl,
        runtime_error_context,
    )

    context_stack_impl.context_stack.set_default_context(runtime_error_context.RuntimeErrorContext())
    gc.collect()


_terminated_by: int | None = None  # the signal that asked this process to end, once one did


def _exit_on_sigterm(signum: int, frame: object) -> None:
    global _terminated_by
    _terminated_by = signum
    raise SystemExit(128 + signum)


def exit_if_terminated() -> None:
    """Raise again the SystemExit of a SIGTERM whose handler ran where Python swallows
    exceptions — inside a garbage-collection callback (jax registers one) or a `__del__`, where
    it is only printed as "Exception ignored". Long loops call this at each step."""
    if _terminated_by is not None:
        raise SystemExit(128 + _terminated_by)


def configure(max_concurrent_computation_calls: int | None = None) -> None:
    """Install the sync local C++ context with the settings measured in DESIGN.md (once).

    The worker reads its thread and malloc settings (`WORKER_ENVIRONMENT`) from the environment
    when it starts, so they are set just around its start; concurrency is capped at the number of
    cores (an unlimited value doubled wall time in measurements).
    """
    global _configured
    if _configured:
        return
    import tensorflow_federated as tff

    cores = max_concurrent_computation_calls or _concurrency or len(os.sched_getaffinity(0))
    _fix_mmap_threshold()
    atexit.unregister(shutdown)
    atexit.register(shutdown)
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    saved = {k: os.environ.get(k) for k in WORKER_ENVIRONMENT}
    os.environ.update(WORKER_ENVIRONMENT)
    try:
        # TFF's test context is the native sync local C++ context plus one compiler pass that
        # replaces secure-sum intrinsics (which the local runtime cannot run) by their insecure
        # TensorFlow bodies: simulated secure aggregation for `aggregation.method = "secure"` and
        # `privacy.mechanism = "ddp"`. Computations without secure intrinsics are unchanged.
        tff.backends.test.set_sync_test_cpp_execution_context(
            max_concurrent_computation_calls=cores
        )
        _start_worker(tff)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    _configured = True


def _fix_mmap_threshold() -> None:
    """Fix the driver's malloc mmap threshold at 128 KB: blocks from that size up (tensors) are
    mapped and returned on free, instead of glibc raising the threshold and carving them from a
    fragmenting heap. The driver's resident memory grew 1.5-2.2% between rounds 50 and 300 of a
    run, 0.3-0.6% with it, at unchanged round times. (In the worker it slowed rounds by ~12%;
    one malloc arena slowed the driver's rounds by a third: see `WORKER_ENVIRONMENT`.)"""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def _start_worker(tff) -> None:
    """Run a trivial computation so that the worker starts while the thread settings are set.

    TFF hands the worker our sys.stdout/sys.stderr; it gets /dev/null instead (unless TF logging
    is wanted), so it never holds a pipe that a reader of our output waits on.
    """
    import contextlib

    import tensorflow as tf

    @tff.tensorflow.computation
    def one():
        return tf.constant(1)

    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "0":  # --verbose: keep the worker's logs
        one()
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        one()
