"""A round's cohort aggregated in sub-cohorts, one after another, on the installed TFF context
(`[run] subcohort_size`).

TFF's worker keeps every client's value of a round until the round's aggregation, so its memory
grows with the cohort (SASRec d = 32: peak 0.5 GB at 1,000 clients, 2.1 GB at 5,000;
benchmarks/README.md). A round of more than `subcohort_size` clients runs instead in TFF's
mergeable form (as `composing` runs one across workers, here on the one context, in turn):
`up_to_merge` on each consecutive sub-cohort returns a partial accumulator, `merge` folds them in
order, and `after_merge` (the aggregation's `report` and the server step) runs once. The worker
then holds one sub-cohort's clients at a time.

DP: clipping is per client (in `up_to_merge`); the noise is added in `after_merge`, once per round,
after the merge (ARCHITECTURE.md, "Several workers"), so mechanism, sensitivity and ε are those of
the unsplit round. Numbers: k partial sums merged instead of one fold over the clients, so a split
run's numbers differ from an unsplit one's in the last bits (the key is hashed when set).
"""
from __future__ import annotations

from typing import Any

from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.execution_contexts import compiler_pipeline
from tensorflow_federated.python.core.impl.execution_contexts import (
    mergeable_comp_execution_context as mergeable,
)
from tensorflow_federated.python.core.impl.types import type_conversions

from tff_rec import composing
from tff_rec.errors import SpecError

# every round computation's mergeable form, compiled once (keyed by the computation)
_FORMS = compiler_pipeline.CompilerPipeline(composing._compile_mergeable)


def parts(cohort: int, size: int) -> int:
    """Sub-cohorts of at most `size` clients a round of `cohort` clients runs as (1: unsplit)."""
    return max(1, -(-cohort // size))


def equal_total(cohort: int, size: int) -> int:
    """The smallest number of clients ≥ `cohort` that `parts(cohort, size)` sub-cohorts of one
    size hold: padding a round to it gives one CLIENTS cardinality (one worker executor stack)
    for all its sub-cohorts."""
    k = parts(cohort, size)
    return k * -(-cohort // k)


def check_context(size: int, source: str) -> None:
    """SpecError naming the task file `source` if the installed context spreads rounds across
    workers (`--workers`): its rounds are already split at the aggregation, and its context
    cannot run the parts."""
    if isinstance(context_stack_impl.context_stack.current, composing.ComposingContext):
        raise SpecError(f"{source}: key 'run.subcohort_size' ({size}) cannot be combined with "
                        f"--workers (each worker already aggregates its slice of the cohort); "
                        f"leave one of them out")


def mergeable_form(comp, size: int, source: str):
    """`comp` in TFF's mergeable form (compiled once per computation); SpecError naming the task
    file `source`, with TFF's reason, if it cannot be split at one aggregation."""
    try:
        return _FORMS.compile(comp)
    except (ValueError, TypeError) as error:  # TFF's compiler: dependent aggregations and the like
        raise SpecError(
            f"{source}: key 'run.subcohort_size' ({size}): a round of this task cannot be split "
            f"at one aggregation ({type(error).__name__}: {error}); leave the key out") from error


def invoke_in_parts(comp, args: tuple, k: int, size: int, source: str) -> Any:
    """`comp(*args)` with its clients-placed arguments cut into `k` consecutive sub-cohorts (equal
    sizes, or as near as they go), run in turn on the installed context and merged in order."""
    check_context(size, source)
    context = context_stack_impl.context_stack.current
    form = mergeable_form(comp, size, source)
    parameter = form.up_to_merge.type_signature.parameter
    slices = mergeable._split_value_into_subrounds(structure.Struct.unnamed(*args), parameter, k)
    merged = None
    for part in slices:  # one after another: the worker holds one sub-cohort's values at a time
        partial = context.invoke(form.up_to_merge, part)
        merged = partial if merged is None else context.invoke(
            form.merge, structure.Struct.unnamed(merged, partial))
    # after_merge's result is server-placed: it gets the round's other arguments, no clients
    no_clients = mergeable._partition_value(
        mergeable._PartitioningValue(slices[0], 0, 1, 0), parameter).payload
    result = context.invoke(form.after_merge, structure.Struct.unnamed(no_clients, merged))
    # the Python containers of `comp`'s own result type (the compiled form has lost them)
    return tensorflow_computation.transform_result(type_conversions.type_to_py_container(
        structure.from_container(result, recursive=True), comp.type_signature.result))
