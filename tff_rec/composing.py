"""One run's TFF computations across several TFF worker services (`--workers HOST:PORT,...`).

TFF 0.87's pip package has no composing executor in Python (the C++ `executor_bindings` are not
shipped) and its `worker_binary` only runs computations itself. What it has is the mergeable form
(`tff.backends.native.create_mergeable_comp_execution_context`): a computation with one aggregation
level compiles to `up_to_merge` (everything up to the aggregation, the clients' part folded into
one partial accumulator), `merge` (two partial accumulators into one) and `after_merge` (the
`report` of the aggregation and everything placed after it). `ComposingContext` runs it as follows:

- the clients of a round are cut into consecutive slices, one per worker, in the order the runner
  gave them (TFF's `_split_value_into_subrounds`); every worker runs `up_to_merge` on its slice at
  the same time (one thread each: TFF's `RemoteExecutor` blocks its event loop in every gRPC call,
  so TFF's own mergeable context runs the slices one after another);
- the partial accumulators are merged in worker order, on the first worker (TFF merges them in the
  order they finish; the fixed order makes a run's numbers the same every time);
- `after_merge` runs once, on the first worker, with the merged value and the round's
  server-placed arguments (its result is server-placed: it cannot depend on the clients' values,
  which go as an empty slice instead of being sent again).

DP noise (ARCHITECTURE.md, "Several workers"): the DP aggregators add their noise in a
server-placed `federated_map` applied to the `federated_sum` of the clipped records
(`privacy/aggregator.py` `release`; TFF's `DifferentiallyPrivateFactory` the same way), i.e. in the
`report` and after it: in `after_merge`, once per round, after the merge. The clipping runs in
`up_to_merge`, per client. So the mechanism, its sensitivity and its ε are those of a
single-worker run; `ddp`'s noise is added by each client and is unchanged by the split.

A round whose aggregations depend on each other cannot be split at one aggregation; TFF's compiler
says so and the run is refused before its first round (`check_splittable`). Computations without
clients-placed arguments (initialize, weights in and out of the state) run whole on the first
worker. Sums are associative only up to rounding: a run on k workers adds the clients' values in k
partial sums instead of one, so its numbers differ from a single-worker run's in the last bits,
and that difference grows over rounds like any rounding difference (README, "Scaling out").
"""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Optional, Sequence

import grpc
from tensorflow_federated.python.common_libs import async_utils, structure
from tensorflow_federated.python.core.backends.native import compiler as native_compiler
from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler
from tensorflow_federated.python.core.backends.test import compiler as test_compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.context_stack import context_base, context_stack_impl
from tensorflow_federated.python.core.impl.execution_contexts import (
    async_execution_context,
    compiler_pipeline,
)
from tensorflow_federated.python.core.impl.execution_contexts import (
    mergeable_comp_execution_context as mergeable,
)
from tensorflow_federated.python.core.impl.executor_stacks import executor_factory, python_executor_stacks
from tensorflow_federated.python.core.impl.executors import remote_executor, remote_executor_grpc_stub
from tensorflow_federated.python.core.impl.types import (
    computation_types,
    placements,
    type_analysis,
    type_conversions,
)

from tff_rec.worker_process import WorkerDied

CONNECT_SECONDS = 30  # a worker not reachable by then fails the run, naming it
RECONNECT_SECONDS = 5  # after a failed call: a worker that does not answer again by then is gone


class RemoteWorker:
    """A TFF worker service at `address`, started by someone else (`tff-rec worker`): the same
    interface as the local worker's `runtime._WorkerService` (`stub`, `died`, `stop`), with the address in every
    error. Nothing here starts or kills a process."""

    def __init__(self, address: str):
        self.address = address
        self._lock = threading.RLock()
        self._channel = None
        self._stub = None
        self._closed = False
        self._lost: Optional[str] = None
        self.executors = None  # TFF's ResourceManagingExecutorFactory of this worker

    def connect(self, seconds: Optional[float] = None) -> None:
        """Open the channel and wait until the worker answers (WorkerDied after `seconds`,
        default `CONNECT_SECONDS`)."""
        seconds = CONNECT_SECONDS if seconds is None else seconds
        with self._lock:
            if self._stub is not None:
                return
            channel = grpc.insecure_channel(self.address, executor_factory._GRPC_CHANNEL_OPTIONS)
            try:
                grpc.channel_ready_future(channel).result(timeout=seconds)
            except grpc.FutureTimeoutError:
                channel.close()
                raise WorkerDied(f"TFF worker at {self.address} is not reachable (no answer within "
                            f"{seconds:g} s; is `tff-rec worker --port PORT` running there?)") from None
            self._channel = channel
            self._stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)

    def stub(self):
        """The live worker's stub; WorkerDied naming the address if it stopped answering (TFF
        would retry the call against it for ever)."""
        with self._lock:
            if self._closed:
                raise WorkerDied("the TFF runtime was shut down")
            if self._lost is not None:
                raise WorkerDied(self._lost)
            if self._stub is None:
                self.connect()
            if not self._stub.is_ready and not self._answers(RECONNECT_SECONDS):
                self._lost = f"TFF worker at {self.address} stopped answering"
                raise WorkerDied(self._lost)
            return self._stub

    def _answers(self, seconds: float) -> bool:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=seconds)
            return True
        except grpc.FutureTimeoutError:
            return False

    def died(self, during: str = "") -> Optional[str]:
        """How the worker was lost (it stopped answering), or None if it still answers."""
        if self._stub is None or self._closed:
            return None
        if self._lost is None and not self._stub.is_ready and not self._answers(RECONNECT_SECONDS):
            self._lost = f"TFF worker at {self.address} stopped answering"
        if self._lost is None:
            return None
        return f"{self._lost}{' ' + during if during else ''}"

    def stop(self, close: bool = False) -> None:
        """Dispose of this process's executors on the worker (their values with them) and close
        the channel; `close`: never connect again. The worker service goes on serving."""
        with self._lock:
            self._closed = self._closed or close
            if self.executors is not None:  # DisposeExecutor on the worker (TFF ignores its errors)
                executors = self.executors._executors  # (TFF's factory has no public clean-up of all)
                for executor in list(executors.values()):
                    if self._lost is None and self._stub is not None:
                        executor.close()
                executors.clear()
            channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()


def _executor_factory(worker: RemoteWorker):
    """TFF's `ResourceManagingExecutorFactory` of `RemoteExecutor`s on `worker`, as the local
    cpp factory builds it (`runtime._executor_factory`)."""

    def stack_fn(cardinalities):
        if cardinalities.get(placements.CLIENTS) is None:
            cardinalities[placements.CLIENTS] = 0
        executor = remote_executor.RemoteExecutor(worker.stub())
        executor.set_cardinalities(cardinalities)
        return executor

    worker.executors = python_executor_stacks.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)
    return worker.executors


def _compile_for_worker(comp):
    """What TFF's test context compiles (`tff.backends.test`, as `runtime.configure` installs):
    secure sums replaced by their insecure bodies, then the native backend's compilation."""
    return native_compiler.desugar_and_transform_to_native(
        test_compiler.replace_secure_intrinsics_with_bodies(comp))


def _compile_mergeable(comp):
    """`comp` split at its aggregation (TFF's mergeable form), secure sums first replaced as the
    test context does (TFF's mergeable compiler does not lower them)."""
    return mergeable_comp_compiler.compile_to_mergeable_comp_form(
        test_compiler.replace_secure_intrinsics_with_bodies(comp))


def _has_clients(type_spec, all_equal_too: bool = True) -> bool:
    if type_spec is None:
        return False
    return type_analysis.contains(type_spec, lambda t: (
        isinstance(t, computation_types.FederatedType) and t.placement is placements.CLIENTS
        and (all_equal_too or not t.all_equal)))


class Unsplittable(ValueError):
    """A computation TFF cannot split at one aggregation (the message says why)."""


class ComposingContext(context_base.SyncContext):
    """A synchronous TFF context over remote workers (see the module docstring)."""

    def __init__(self, workers: Sequence[RemoteWorker]):
        self.workers = list(workers)
        self._contexts = [
            async_execution_context.AsyncExecutionContext(
                executor_fn=_executor_factory(worker), compiler_fn=_compile_for_worker,
                transform_args=tensorflow_computation.transform_args,
                transform_result=tensorflow_computation.transform_result,
            )
            for worker in self.workers
        ]
        # one event loop per worker: RemoteExecutor's gRPC calls block the loop they run on
        self._runners = [async_utils.AsyncThreadRunner() for _ in self.workers]
        self._threads = concurrent.futures.ThreadPoolExecutor(len(self.workers), "tff-rec-worker")
        self._mergeable = compiler_pipeline.CompilerPipeline(_compile_mergeable)
        self._transform_result = tensorflow_computation.transform_result

    def mergeable_form(self, comp):
        """`comp` in TFF's mergeable form (compiled once per computation); Unsplittable if TFF
        cannot split it at one aggregation."""
        try:
            return self._mergeable.compile(comp)
        except (ValueError, TypeError) as error:  # TFF's compiler: dependent aggregations and the like
            raise Unsplittable(f"{type(error).__name__}: {error}") from error

    def invoke(self, comp, arg):
        parameter = comp.type_signature.parameter
        if arg is None or not _has_clients(parameter, all_equal_too=False):
            return self._run(0, comp, arg)  # nothing to split: whole, on the first worker
        form = self.mergeable_form(comp)
        parts = mergeable._split_value_into_subrounds(
            arg, form.up_to_merge.type_signature.parameter, len(self.workers))
        partials = self._map(form.up_to_merge, parts)
        merged = partials[0]
        for partial in partials[1:]:  # worker order, whatever order they finished in
            merged = self._run(0, form.merge, structure.Struct.unnamed(merged, partial))
        result_type = form.after_merge.type_signature.result
        if not _has_clients(result_type):
            # A server-placed result cannot depend on clients' values (after_merge has no
            # aggregation): the first slice goes without its clients.
            no_clients = mergeable._partition_value(
                mergeable._PartitioningValue(parts[0], 0, 1, 0), form.up_to_merge.type_signature.parameter
            ).payload
            result = self._run(0, form.after_merge, structure.Struct.unnamed(no_clients, merged))
        else:
            results = self._map(form.after_merge, [structure.Struct.unnamed(part, merged) for part in parts])
            result = mergeable._repackage_partitioned_values(results, result_type)
        # the Python containers of `comp`'s own result type (the compiled form has lost them)
        return self._transform_result(type_conversions.type_to_py_container(
            structure.from_container(result, recursive=True), comp.type_signature.result))

    def _run(self, index: int, comp, arg):
        try:
            return self._runners[index].run_coro_and_return_result(self._contexts[index].invoke(comp, arg))
        except Exception as error:
            self._raise_lost(error)
            raise

    def _map(self, comp, args: list) -> list:
        """`comp` on args[i] at worker i, all at once; the first failure is raised (a lost
        worker's, naming it, before any other)."""
        futures = [self._threads.submit(self._run, i, comp, a) for i, a in enumerate(args)]
        concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        failed = [f.exception() for f in futures if f.done() and f.exception() is not None]
        if failed:
            lost = [e for e in failed if isinstance(e, WorkerDied)]
            raise (lost or failed)[0]
        return [f.result() for f in futures]

    def _raise_lost(self, error: BaseException) -> None:
        """Raise WorkerDied naming the first worker that stopped answering, if one did (the
        cause of `error`, which came out of TFF as a gRPC error)."""
        if isinstance(error, WorkerDied):
            return
        for worker in self.workers:
            lost = worker.died()
            if lost is not None:
                raise WorkerDied(lost) from error

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


def install(addresses: Sequence[str]) -> list[RemoteWorker]:
    """Connect to every worker (in parallel; WorkerDied naming one that does not answer) and make
    the composing context over them TFF's default context."""
    previous = context_stack_impl.context_stack.current
    if isinstance(previous, ComposingContext):  # an earlier run's: its threads go
        previous.close()
    workers = [RemoteWorker(address) for address in addresses]
    with concurrent.futures.ThreadPoolExecutor(len(workers)) as pool:
        for future in [pool.submit(worker.connect) for worker in workers]:
            future.result()
    context_stack_impl.context_stack.set_default_context(ComposingContext(workers))
    return workers


def check_splittable(comp) -> None:
    """Unsplittable (with TFF's reason) if the installed context is a composing one and cannot
    split `comp`; compiles it once, for the rounds to reuse."""
    context = context_stack_impl.context_stack.current
    if isinstance(context, ComposingContext) and _has_clients(comp.type_signature.parameter, False):
        context.mergeable_form(comp)


