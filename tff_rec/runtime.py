"""The TFF local runtime: configure it for speed, and stop its worker process when we are done.

TFF's local C++ runtime runs computations in a `worker_binary` child process. TFF 0.87 starts it
from its event-loop thread and, when it dies, silently starts another one (without our settings)
and re-runs the computation; left alone it outlives Python, holding our stdout/stderr open (a
pipe reading our output would never close). So `configure()` installs TFF's own test context
(`tff.backends.test`, whose compiler pass simulates secure sums) around an executor factory whose
worker we start ourselves (`_WorkerService`):

- the worker is killed with its driver however the driver dies (PR_SET_PDEATHSIG = SIGKILL), runs
  in its own process group (a Ctrl-C reaches the driver, which stops it), and writes to
  /dev/null unless TF logging is wanted;
- a worker that dies under a run is an error of that run (`WorkerDied`), never restarted behind
  its back; one stopped on purpose (`stop_workers()`) is started afresh by the next computation.

`configure()` also registers `shutdown()` to run at exit (as the CLI does for every command:
importing TFF is enough to need it) and turns SIGTERM into SystemExit.

With `--workers` (`using_workers`, or `TFF_REC_WORKERS` in the environment) `configure()` starts
no worker: it installs `composing.ComposingContext` over TFF worker services started elsewhere
(`tff-rec worker`), which splits each round's cohort across them (ARCHITECTURE.md, Several
workers); `check_worker` then names a worker that stopped answering by its address.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import threading
import time
import weakref
from pathlib import Path
from typing import Optional, Sequence

from tff_rec.worker_process import (  # noqa: F401 - runtime.WorkerDied & co. as before
    WORKER_NAME,
    WorkerDied,
    describe_exit,
)
from tff_rec.worker_process import START_SECONDS as _WORKER_START_SECONDS
from tff_rec.worker_process import die_with as _die_with
from tff_rec.worker_process import worker_environment

MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_configured = False
_concurrency: int | None = None  # computations at once in the worker; None = one per core


class _WorkerService:
    """One TFF worker_binary for one execution context, started by us in place of the
    `ServiceManager` of TFF's `local_cpp_executor_factory` (same binary, flags and gRPC channel).

    `start()` runs in the thread that calls `configure()` (the main thread): PR_SET_PDEATHSIG fires
    when the thread that forked the child ends. `stub()` is what TFF's executor stack asks for
    before each computation (from TFF's event-loop thread): the live worker's stub; `WorkerDied`
    if the worker has exited since it started (TFF would quietly start another one and run the
    computation again); a new worker if `stop()` stopped the last one on purpose (unless this
    process is ending: after Ctrl-C or SIGTERM, or `close`).
    """

    def __init__(self, max_concurrent_computation_calls: int):
        self._calls = max_concurrent_computation_calls
        self._lock = threading.RLock()  # stop() may run in a signal handler amid start()
        self._process: subprocess.Popen | None = None
        self._stub = None
        self._channel = None
        self._closed = False
        self.executors = None  # TFF's ResourceManagingExecutorFactory of this worker's context

    def start(self) -> None:
        with self._lock:
            if self._process is None:
                self._start()

    def stub(self):
        with self._lock:
            if self._closed or (self._process is None and _terminated_by is not None):
                # a computation still retrying after Ctrl-C or SIGTERM stopped the worker
                raise WorkerDied("the TFF runtime was shut down")
            if self._process is None:
                self._start()
            elif self._process.poll() is not None:
                raise WorkerDied(describe_exit(self._process.pid, self._process.returncode))
            return self._stub

    def died(self, during: str = "") -> str | None:
        """How the worker ended, if it ended without being stopped; None while it runs."""
        process = self._process
        if process is None or process.poll() is None:
            return None
        return describe_exit(process.pid, process.returncode, during)

    def stop(self, close: bool = False) -> None:
        """Kill the worker and reap it; `close`: never start another one."""
        with self._lock:
            self._closed = self._closed or close
            process, self._process, self._stub = self._process, None, None
            channel, self._channel = self._channel, None
            if self.executors is not None:  # they hold the stopped worker's stub and executor ids
                self.executors._executors.clear()
        if channel is not None:
            channel.close()
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # stuck in the kernel: leave it, it was SIGKILLed
                pass

    def _start(self) -> None:
        import grpc
        import portpicker
        from tensorflow_federated.python.core.impl.executor_stacks import executor_factory
        from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub

        binary = Path(executor_factory.__file__).parent.parent.parent.parent.parent / "data" / WORKER_NAME
        verbose = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "0"  # --verbose: keep its logs
        output = None if verbose else subprocess.DEVNULL
        for _ in range(3):  # the port picked can be taken before the worker binds it
            port = portpicker.pick_unused_port()
            process = subprocess.Popen(
                [str(binary), f"--port={port}", f"--max_concurrent_computation_calls={self._calls}"],
                stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                env={**os.environ, **worker_environment(self._calls)}, preexec_fn=_die_with(os.getpid()),
                process_group=0,  # a terminal's Ctrl-C goes to the driver, which stops the worker
            )
            channel = grpc.insecure_channel(f"localhost:{port}", executor_factory._GRPC_CHANNEL_OPTIONS)
            stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)
            deadline = time.monotonic() + _WORKER_START_SECONDS
            while not stub.is_ready and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)  # TFF polls every second; a run waited ~1 s for its worker
            if stub.is_ready:
                self._process, self._stub, self._channel = process, stub, channel
                return
            channel.close()
            if process.poll() is None:
                process.kill()
                process.wait()
                raise WorkerDied(f"TFF worker (pid {process.pid}) did not start serving on port "
                                 f"{port} within {_WORKER_START_SECONDS} s")
            process.wait()
        raise WorkerDied(f"the TFF worker did not start: {describe_exit(process.pid, process.returncode)}")


_services: "weakref.WeakSet[_WorkerService]" = weakref.WeakSet()  # every context's worker
_service: _WorkerService | None = None  # the configured context's


_remote: list = []  # the configured context's remote workers (`composing.RemoteWorker`), if any


def check_worker(during: str = "") -> None:
    """Raise WorkerDied if the configured context's worker has died (after a failed computation:
    the cause to report, rather than the gRPC error it surfaced as); with remote workers, the
    first one that stopped answering, by address."""
    for service in [_service] if _service is not None else _remote:
        died = service.died(during)
        if died is not None:
            raise WorkerDied(died)


def remote_workers() -> list[str]:
    """The addresses of the remote TFF workers the configured context runs on ([]: the local
    worker); what a run's record names."""
    return [worker.address for worker in _remote] if _configured else []


_before_remote = None  # TFF's default context before `configure()` installed a remote one


def _drop_remote_context() -> None:
    """Put back the context that was TFF's default before the remote one (whose workers may be
    gone): computations after `using_workers` run as they did before it."""
    global _before_remote
    if _before_remote is None:
        return
    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

    context_stack_impl.context_stack.set_default_context(_before_remote)
    _before_remote = None


def check_splittable(comp, source: str) -> None:
    """With remote workers: SpecError (bad input; before the run's first round) if TFF cannot
    split `comp` (a round) at one aggregation, so that its cohort cannot be spread over the
    workers and their sums merged (`composing`); compiles it once for the rounds to reuse."""
    if not (_configured and _remote):
        return
    from tff_rec import composing
    from tff_rec.spec import SpecError

    try:
        composing.check_splittable(comp)
    except composing.Unsplittable as error:
        raise SpecError(
            f"{source}: --workers {','.join(w.address for w in _remote)}: a round of this task "
            f"cannot be split across workers: TFF finds no single aggregation to merge the "
            f"workers' partial results at ({error}); run it without --workers"
        ) from None


@contextlib.contextmanager
def using_workers(addresses: Optional[Sequence[str]]):
    """Within it, `configure()` runs computations on the TFF worker services at `addresses`
    (`tff-rec ... --workers`; None: as outside). They travel in `workers.ENVIRONMENT_VARIABLE`,
    which a study's job processes inherit."""
    from tff_rec import workers

    if addresses is None:
        yield
        return
    previous = os.environ.get(workers.ENVIRONMENT_VARIABLE)
    os.environ[workers.ENVIRONMENT_VARIABLE] = ",".join(addresses)
    stop_workers()  # a context configured for other workers goes
    try:
        yield
    finally:
        stop_workers()
        _drop_remote_context()
        if previous is None:
            os.environ.pop(workers.ENVIRONMENT_VARIABLE, None)
        else:
            os.environ[workers.ENVIRONMENT_VARIABLE] = previous


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


def stop_workers(close: bool = False) -> None:
    """Kill every TFF worker this process started; the next `configure()` starts a new one (as
    does the next computation of the context already configured, unless `close`).

    Workers of TFF's own ServiceManager (computations run without `configure()`) are not reaped
    here: it reaps them when it is collected (it signals the pid first, which must still exist,
    as a zombie, or it raises at exit).
    """
    global _configured
    for service in list(_services):
        service.stop(close=close)
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

    global _before_remote
    stop_workers(close=True)  # a computation still retrying in TFF's thread starts no new one
    _before_remote = None  # (TFF's import-time context, kept while remote workers ran: it goes too)
    if "tensorflow_federated" not in sys.modules:
        return
    from tensorflow_federated.python.core.impl.context_stack import (
        context_stack_impl,
        runtime_error_context,
    )

    context_stack_impl.context_stack.set_default_context(runtime_error_context.RuntimeErrorContext())
    gc.collect()


def shutdown_at_exit() -> None:
    """Run `shutdown` at exit (once, whatever the calls). Importing TFF alone makes a context whose
    ServiceManager raises in `__del__` at interpreter teardown, so any process that may import it
    registers this, not only those that start a worker."""
    atexit.unregister(shutdown)
    atexit.register(shutdown)


_terminated_by: int | None = None  # the signal that asked this process to end, once one did
_interrupt_raised = False  # whether that SIGINT's KeyboardInterrupt has been raised


def _exit_on_sigterm(signum: int, frame: object) -> None:
    global _terminated_by
    _terminated_by = signum
    if not _swallowed_in(frame):
        raise SystemExit(128 + signum)


def _interrupt(signum: int, frame: object) -> None:
    """SIGINT (Ctrl-C): KeyboardInterrupt, as Python's own handler, remembered for
    `exit_if_terminated`; raised once only (`uv run` passes the terminal's Ctrl-C on, so the
    process gets two, and the second would interrupt the clean-up)."""
    global _terminated_by, _interrupt_raised
    _terminated_by = signum
    if not _interrupt_raised and not _swallowed_in(frame):
        _interrupt_raised = True
        raise KeyboardInterrupt


def _swallowed_in(frame) -> bool:
    """Whether an exception raised in `frame` would only be printed ("Exception ignored in ...",
    a traceback) and dropped: it runs inside a garbage-collection callback or a `__del__`. The
    signal is then left to `exit_if_terminated`."""
    import gc

    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code.co_name == "__del__" or frame.f_code in callbacks:
            return True
        frame = frame.f_back
    return False


def exit_if_terminated() -> None:
    """Raise the SystemExit of a SIGTERM (the KeyboardInterrupt of a SIGINT) that arrived where
    Python swallows exceptions — inside a garbage-collection callback (jax registers one) or a
    `__del__`, where it would only be printed as "Exception ignored" — and was left for later,
    or raised there all the same. Long loops call this at each step."""
    global _interrupt_raised
    if _terminated_by == signal.SIGINT:
        if not _interrupt_raised:
            _interrupt_raised = True
            raise KeyboardInterrupt
        return
    if _terminated_by is not None:
        raise SystemExit(128 + _terminated_by)


def configure(max_concurrent_computation_calls: int | None = None) -> None:
    """Install the sync local C++ context with the settings measured in ARCHITECTURE.md, Performance notes (once), and
    start its worker.

    The worker gets its thread and malloc settings (`worker_environment`) in its environment;
    concurrency is capped at the number of cores (an unlimited value doubled wall time in
    measurements). Call it from the main thread: the worker dies with the thread that starts it.
    """
    global _configured, _service, _remote, _before_remote
    if _configured:
        return
    import tensorflow_federated as tff
    from tensorflow_federated.python.core.impl.executor_stacks import executor_factory

    from tff_rec import workers

    cores = max_concurrent_computation_calls or _concurrency or len(os.sched_getaffinity(0))
    _fix_mmap_threshold()
    shutdown_at_exit()
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _interrupt)
    addresses = workers.from_environment()
    if addresses:  # several worker services, started elsewhere (`tff_rec.composing`): none here
        from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

        from tff_rec import composing

        if _before_remote is None:
            _before_remote = context_stack_impl.context_stack.current
        _remote = composing.install(addresses)
        _services.update(_remote)
        _service = None
        _configured = True
        return
    _remote = []
    service = _WorkerService(cores)
    tff_factory = executor_factory.local_cpp_executor_factory
    executor_factory.local_cpp_executor_factory = functools.partial(_executor_factory, service)
    try:
        # TFF's test context is the native sync local C++ context plus one compiler pass that
        # replaces secure-sum intrinsics (which the local runtime cannot run) by their insecure
        # TensorFlow bodies: simulated secure aggregation for `aggregation.method = "secure"` and
        # `privacy.mechanism = "ddp"`. Computations without secure intrinsics are unchanged.
        # It is built here around `_executor_factory` (TFF's, with our worker).
        tff.backends.test.set_sync_test_cpp_execution_context(
            max_concurrent_computation_calls=cores
        )
    finally:
        executor_factory.local_cpp_executor_factory = tff_factory
    _services.add(service)
    _service = service
    service.start()
    _configured = True


def _executor_factory(service: _WorkerService, *, default_num_clients: int = 0,
                      max_concurrent_computation_calls: int = -1, stream_structs: bool = False):
    """TFF 0.87's `local_cpp_executor_factory`, with the worker of `service` in place of the
    one its ServiceManager starts (and restarts)."""
    from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
    from tensorflow_federated.python.core.impl.executors import remote_executor
    from tensorflow_federated.python.core.impl.types import placements

    def stack_fn(cardinalities):
        if cardinalities.get(placements.CLIENTS) is None:
            cardinalities[placements.CLIENTS] = default_num_clients
        executor = remote_executor.RemoteExecutor(service.stub(), stream_structs=stream_structs)
        executor.set_cardinalities(cardinalities)
        return executor

    service.executors = python_executor_stacks.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)
    return service.executors


def _fix_mmap_threshold() -> None:
    """Fix the driver's malloc mmap threshold at 128 KB: blocks from that size up (tensors) are
    mapped and returned on free, instead of glibc raising the threshold and carving them from a
    fragmenting heap. The driver's resident memory grew 1.5-2.2% between rounds 50 and 300 of a
    run, 0.3-0.6% with it, at unchanged round times. (In the worker it slowed rounds by ~12%;
    one malloc arena slowed the driver's rounds by a third: see `worker_environment`.)"""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)

