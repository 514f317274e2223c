"""Rounds of varying cohort size at a few fixed CLIENTS cardinalities, results unchanged bit for bit.

TFF 0.87's worker builds a whole executor stack for every CLIENTS cardinality it is asked for (its
`ExecutorService` keys executors by their cardinalities; each stack has its own
`TensorFlowExecutor`, whose sessions hold every TensorFlow computation of the round) and keeps it
until the worker ends. TFF's driver keeps its executors in an LRU cache of 10
(`ResourceManagingExecutorFactory`) and drops the oldest without disposing of it on the worker, so
the values it had not yet disposed of (it sends disposals in batches of 20) stay there too. Under
Poisson sampling the cohort size changes every round, and both grew the worker without end: on
SASRec (d = 50, 1,680 items, cohorts of ~32 out of 942) each new size cost ~35 MB (and ~0.1-0.35 s
once, mostly Grappler on the fresh sessions' function graphs), and a size that came back after
more than 10 others cost a few MB of stranded values; over 500 rounds (31 sizes) the worker grew
from 873 MB at round 50 to 3,223 MB at round 500 (README, "Memory over a long run").

So a run whose cohort sizes vary runs each round at one of at most `MOST` cardinalities: the
smallest one at least its cohort size, chosen from the run's whole schedule of sizes (the sampler
is seeded, so it is known before round 1) to minimize padding. A cohort smaller than its
cardinality is padded with empty clients and runs `masked_next`: the learning process with every
`federated_aggregate` masked, so that a padding client's accumulate step returns the accumulator
unchanged. TFF's federating executor folds `accumulate` over the clients one after another, in
order (the `merge` function is unused), so the real clients are summed exactly as before and the
padding clients add nothing, not even a -0.0: state, metrics and DP noise are bit-identical
(tests/test_cardinality.py). A padding client still runs its (empty) local training, at about
the cost of a one-example client; a cohort that fills its cardinality runs `process.next`. Fixed
and shuffled cohorts have one size: their rounds run `process.next` as before.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.mapreduce import compiler as mapreduce_compiler
from tensorflow_federated.python.core.backends.test import compiler as test_compiler
from tensorflow_federated.python.core.environments.tensorflow_backend import (
    tensorflow_tree_transformations,
)
from tensorflow_federated.python.core.impl.compiler import (
    building_block_factory,
    building_blocks,
    intrinsic_defs,
    transformations,
)
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
from tensorflow_federated.python.core.impl.types import computation_types, placements

from tff_rec.training import subcohort

MOST = 6  # cardinalities (worker executor stacks) a run uses at most
# With the one of the computations without clients (CLIENTS = 0), they must fit in TFF's driver-side
# cache of executors, or evicted ones would strand values on the worker again.
assert MOST + 1 <= python_executor_stacks._EXECUTOR_CACHE_SIZE
SETTLED_BY = 20  # a cardinality first needed after this round is merged into the next larger one

# Intrinsics a maskable round may contain besides federated_aggregate: none of them reduces over
# clients, so none can see a padding client's value (the result is SERVER-placed).
_PASSIVE = frozenset(d.uri for d in (
    intrinsic_defs.FEDERATED_APPLY, intrinsic_defs.FEDERATED_BROADCAST,
    intrinsic_defs.FEDERATED_EVAL_AT_CLIENTS, intrinsic_defs.FEDERATED_EVAL_AT_SERVER,
    intrinsic_defs.FEDERATED_MAP, intrinsic_defs.FEDERATED_MAP_ALL_EQUAL,
    intrinsic_defs.FEDERATED_VALUE_AT_CLIENTS, intrinsic_defs.FEDERATED_VALUE_AT_SERVER,
    intrinsic_defs.FEDERATED_ZIP_AT_CLIENTS, intrinsic_defs.FEDERATED_ZIP_AT_SERVER,
))


def plan(sizes: Sequence[int], most: int = MOST, settled_by: int = SETTLED_BY) -> dict[int, int]:
    """Cohort size → the CLIENTS cardinality its rounds run at, for a run whose rounds draw
    `sizes` (round 1 first; 0 = a round without clients, which runs nothing).

    The distinct sizes are split into at most `most` ranges of consecutive sizes with the fewest
    padding clients in total (dynamic programming over the sorted sizes, weighted by how often
    each occurs); a range runs at its largest size. A range first needed after round `settled_by`
    is merged into the next larger one, so that every cardinality's executor exists from the
    first rounds on and the worker's memory stays flat after them. One size: no padding.
    """
    drawn = [int(s) for s in sizes if s > 0]
    values, counts = np.unique(np.asarray(drawn, dtype=np.int64), return_counts=True)
    if len(values) <= 1:
        return {int(v): int(v) for v in values}
    tops = _fewest_pads(values, counts, most)
    first = {}
    for round_number, size in enumerate(drawn, start=1):
        top = tops[int(np.searchsorted(tops, size))]
        first.setdefault(top, round_number)
    # the largest cardinality stays (it is the only one that fits the largest cohort)
    tops = [t for t in tops[:-1] if first[t] <= settled_by] + [tops[-1]]
    return {int(v): int(tops[int(np.searchsorted(tops, v))]) for v in values}


def _fewest_pads(values: np.ndarray, counts: np.ndarray, most: int) -> list[int]:
    """The largest sizes of at most `most` ranges of `values` (sorted, with `counts`) that need
    the fewest padding clients (ties: the fewer ranges, then the earlier cut)."""
    n = len(values)
    count = np.concatenate([[0], np.cumsum(counts)])
    total = np.concatenate([[0], np.cumsum(counts * values)])
    # pads[i, j]: the sizes values[i..j] padded to values[j] (i <= j)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    pads = (count[j + 1] - count[i]) * values[j] - (total[j + 1] - total[i])
    best = pads[0].copy()  # best[j]: the fewest pads for the sizes up to values[j], ranges so far
    cuts: list[list[int]] = [[k] for k in range(n)]
    for _ in range(min(most, n) - 1):
        # one more range, values[k + 1..j], after the best split of values[..k]
        options = np.where(i < j, best[:, None] + np.roll(pads, -1, axis=0), np.iinfo(np.int64).max)
        previous = np.argmin(options, axis=0)
        better = options[previous, np.arange(n)] < best
        cuts = [cuts[previous[k]] + [k] if better[k] else cuts[k] for k in range(n)]
        best = np.where(better, options[previous, np.arange(n)], best)
    return [int(values[k]) for k in cuts[n - 1]]


_MASKED: "weakref.WeakKeyDictionary[Any, Optional[computation_impl.ConcreteComputation]]" = (
    weakref.WeakKeyDictionary()
)


def padded_next(process: tff.learning.templates.LearningProcess,
                sizes: Sequence[int], subcohort_size: int = 0,
                source: str = "<memory>") -> Callable[[Any, list], Any]:
    """`process.next` for a run whose rounds draw cohorts of `sizes`: `(state, arguments)` with one
    argument per client, run at the cardinality `plan(sizes)` gives, padded with empty clients.
    `process.next` itself when every round has the same size, or if the round cannot be masked.

    `subcohort_size` > 0: a round of more clients runs as sub-cohorts of at most that many, in turn
    (`subcohort.invoke_in_parts`), all of one size: the cohort is padded to the nearest multiple
    of its number of sub-cohorts (one worker executor stack for all of them). Refusals name the
    task file `source` and the key."""
    cardinalities = plan(sizes, MOST, SETTLED_BY)
    if subcohort_size:
        # refused before round 1: with --workers, or a round TFF cannot split
        subcohort.check_context(subcohort_size, source)
        if max(cardinalities.values(), default=0) > subcohort_size:
            subcohort.mergeable_form(process.next, subcohort_size, source)
        return _split_next(process, cardinalities, subcohort_size, source)
    if all(c == n for n, c in cardinalities.items()):
        return process.next
    masked = _masked(process)
    if masked is None:
        return process.next

    def run(state: Any, arguments: list) -> Any:
        real = len(arguments)
        cardinality = cardinalities.get(real, real)  # (a size off the schedule runs as it is)
        if cardinality == real:  # nothing to mask: the same executor, without the masking
            return process.next(state, arguments)
        padding = [_empty_like(arguments[0])] * (cardinality - real)
        return masked(state, list(arguments) + padding, [True] * real + [False] * len(padding))

    return run


def _masked(process: tff.learning.templates.LearningProcess) -> Optional[computation_impl.ConcreteComputation]:
    """`masked_next(process.next)`, built once per process (None: the round cannot be masked)."""
    if process not in _MASKED:
        _MASKED[process] = masked_next(process.next)
    return _MASKED[process]


def _split_next(process: tff.learning.templates.LearningProcess, cardinalities: dict[int, int],
                size: int, source: str) -> Callable[[Any, list], Any]:
    """`padded_next` with rounds of more than `size` clients in sub-cohorts of one size each."""

    def run(state: Any, arguments: list) -> Any:
        real = len(arguments)
        target = cardinalities.get(real, real)
        k = subcohort.parts(target, size)
        total = subcohort.equal_total(target, size)
        masked = _masked(process) if total > real else None
        if total > real and masked is not None:
            padding = [_empty_like(arguments[0])] * (total - real)
            args = (state, list(arguments) + padding, [True] * real + [False] * len(padding))
            comp = masked
        else:  # exact, or unmaskable: sub-cohorts as equal as they go, unpadded
            args, comp = (state, arguments), process.next
        if k == 1:
            return comp(*args)
        return subcohort.invoke_in_parts(comp, args, k, size, source)

    return run


def _empty_like(argument: Any) -> Any:
    """A client argument with no examples: its arrays with 0 rows, its scalars as they are."""
    return tf.nest.map_structure(
        lambda x: np.zeros((0,) + x.shape[1:], x.dtype) if np.ndim(x) >= 1 else x, argument
    )


def masked_next(next_fn: tff.Computation) -> Optional[computation_impl.ConcreteComputation]:
    """`next_fn(state, client_data)` as `(state, client_data, keep)`, `keep` a bool per client: the
    clients with `keep` False are left out of every aggregation, so the result is `next_fn`'s on
    the kept clients alone, bit for bit. None if `next_fn` has a form this cannot mask (a client
    reduction other than federated_aggregate, or a client-placed result).

    It takes TFF's own compilation up to the point where every reduction over clients is a
    `federated_aggregate` (secure sums replaced as the test context does, intrinsics desugared,
    call-dominant form); the execution context then compiles the result as it compiles `next_fn`
    (Grappler runs once on each TensorFlow graph, as before).
    """
    comp = test_compiler.replace_secure_intrinsics_with_bodies(next_fn)
    desugared, _ = tensorflow_tree_transformations.replace_intrinsics_with_bodies(
        comp.to_building_block()
    )
    cdf = transformations.to_call_dominant(desugared)
    parameter = next_fn.type_signature.parameter
    if (not isinstance(cdf, building_blocks.Lambda) or not isinstance(cdf.result, building_blocks.Block)
            or not isinstance(parameter, computation_types.StructType) or len(parameter) != 2
            or _has_clients(next_fn.type_signature.result)):
        return None
    names = [name for name, _ in tff.structure.iter_elements(parameter)]
    keep_type = computation_types.FederatedType(np.bool_, placements.CLIENTS)
    new_parameter = computation_types.StructType(
        [*tff.structure.iter_elements(parameter), ("keep", keep_type)]
    )
    argument = building_blocks.Reference("padded_round_argument", new_parameter)
    keep = building_blocks.Selection(argument, index=2)
    bindings = [(cdf.parameter_name, building_blocks.Struct(
        [(name, building_blocks.Selection(argument, index=i)) for i, name in enumerate(names)]
    ))]
    masked = 0
    for name, value in cdf.result.locals:
        if _calls(value, intrinsic_defs.FEDERATED_AGGREGATE.uri):
            client_values, zero, accumulate, merge, report = value.argument
            if isinstance(accumulate, building_blocks.Lambda):  # e.g. in the compression uplink
                try:
                    accumulate = mapreduce_compiler.compile_local_computation_to_tensorflow(accumulate)
                except (TypeError, ValueError):
                    return None
            if not isinstance(accumulate, building_blocks.CompiledComputation):
                return None
            value = building_block_factory.create_federated_aggregate(
                building_block_factory.create_federated_zip(building_blocks.Struct([client_values, keep])),
                zero, _masked_accumulate(accumulate), merge, report,
            )
            masked += 1
        bindings.append((name, value))
    body = building_blocks.Lambda(
        argument.name, new_parameter, building_blocks.Block(bindings, cdf.result.result)
    )
    if _intrinsics(body) - _PASSIVE != {intrinsic_defs.FEDERATED_AGGREGATE.uri} or (
            _count(body, intrinsic_defs.FEDERATED_AGGREGATE.uri) != masked):
        return None  # a reduction over clients that is not one of the masked aggregates
    return computation_impl.ConcreteComputation(
        computation_proto=body.proto, context_stack=context_stack_impl.context_stack,
        annotated_type=computation_types.FunctionType(
            new_parameter, next_fn.type_signature.result  # keeps the Python containers of results
        ),
    )


def _masked_accumulate(
        accumulate: building_blocks.CompiledComputation) -> building_blocks.ComputationBuildingBlock:
    """`(a, (v, keep)) -> accumulate(a, v) if keep else a`, one TensorFlow computation that runs
    `accumulate`'s own graph and passes on its result or `a` through a `tf.cond`, which forwards
    the tensors as they are (a select per leaf copied them: ~4% of a round's CPU time; the cond
    costs ~0.4%)."""
    inner = computation_impl.ConcreteComputation(
        computation_proto=accumulate.proto, context_stack=context_stack_impl.context_stack
    )
    accumulator_type, value_type = accumulate.type_signature.parameter
    parameter = computation_types.StructType(
        [accumulator_type, computation_types.StructType([value_type, np.bool_])]
    )

    @tff.tensorflow.computation(parameter)
    def masked(arg):
        accumulator, (value, keep) = arg[0], (arg[1][0], arg[1][1])
        summed = inner(accumulator, value)
        if not isinstance(accumulator, tff.structure.Struct):
            return tf.cond(keep, lambda: tf.identity(summed), lambda: tf.identity(accumulator))
        new = tff.structure.flatten(tff.structure.from_container(summed, recursive=True))
        old = tff.structure.flatten(accumulator)
        leaves = tf.cond(keep, lambda: [tf.identity(x) for x in new], lambda: [tf.identity(x) for x in old])
        return tff.structure.pack_sequence_as(accumulator, leaves)

    return masked.to_building_block()


def _calls(value: building_blocks.ComputationBuildingBlock, uri: str) -> bool:
    return (isinstance(value, building_blocks.Call) and isinstance(value.function, building_blocks.Intrinsic)
            and value.function.uri == uri)


def _walk(comp: building_blocks.ComputationBuildingBlock):
    yield comp
    for child in comp.children():
        yield from _walk(child)


def _intrinsics(comp: building_blocks.ComputationBuildingBlock) -> set[str]:
    return {c.uri for c in _walk(comp) if isinstance(c, building_blocks.Intrinsic)}


def _count(comp: building_blocks.ComputationBuildingBlock, uri: str) -> int:
    return sum(1 for c in _walk(comp) if isinstance(c, building_blocks.Intrinsic) and c.uri == uri)


def _has_clients(type_spec: computation_types.Type) -> bool:
    if isinstance(type_spec, computation_types.FederatedType):
        return type_spec.placement is placements.CLIENTS
    if isinstance(type_spec, computation_types.StructType):
        return any(_has_clients(t) for _, t in tff.structure.iter_elements(type_spec))
    return False
