"""A tensorflow-privacy sum query as a TFF aggregator, in as few computations per round as it needs.

`QueryAggregatorFactory(query)` aggregates exactly as `tff.aggregators.DifferentiallyPrivateFactory
(query)` with its default record sum, bit for bit (tests/test_privacy_mechanisms.py compares the
two), but a round runs two server computations instead of five:

    server  derive_sample_params(query state)           -> broadcast to the clients
    clients preprocess_record(params, update)           (clip)
            federated_sum of the records
    server  get_noised_result + derive_metrics          -> result, new query state, metrics

and the state is the query's global state alone, packed into one vector per dtype
(`StateLayout`). TFF's factory also converts and stores each round's DpEvent in its state
(tff-rec's accountant computes ε from the task, not from these events) and runs metrics and event
conversion as computations of their own. Every computation and state type is part of the learning
process that TFF ships to its worker and parses every round, every computation is a TF call
there, and every leaf of the state crosses between driver and worker twice a round (in an
aggregation process alone, nine more scalar leaves cost ~4 ms a round). At cohort 10, TFF's
factory cost 3-6 ms a round more than this one before packing, which saved ~3 ms more for
`adaptive` (README, Performance).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """How a query's global state (a nest of tensors) packs into one 1-D tensor per dtype.

    `pack` and `unpack` are TensorFlow ops (graph or eager); leaves keep their order within each
    dtype's vector, and dtypes are ordered by name.
    """

    structure: Any  # the nest, leaves replaced by their `tf.TensorSpec`

    @classmethod
    def of(cls, state: Any) -> "StateLayout":
        return cls(tf.nest.map_structure(lambda leaf: tf.TensorSpec.from_tensor(tf.convert_to_tensor(leaf)), state))

    def _groups(self) -> list[tuple[tf.DType, list[int], list[int]]]:
        """Per dtype, ordered by name: (dtype, indices of its leaves in flatten order, their sizes)."""
        specs = tf.nest.flatten(self.structure)
        return [
            (dtype, members, [int(np.prod(specs[i].shape)) for i in members])
            for dtype in sorted({spec.dtype for spec in specs}, key=lambda d: d.name)
            for members in [[i for i, spec in enumerate(specs) if spec.dtype == dtype]]
        ]

    def pack(self, state: Any) -> tuple[tf.Tensor, ...]:
        tf.nest.assert_same_structure(self.structure, state)
        leaves = [tf.convert_to_tensor(leaf) for leaf in tf.nest.flatten(state)]
        return tuple(
            tf.concat([tf.reshape(leaves[i], [-1]) for i in members], axis=0)
            for _, members, _ in self._groups()
        )

    def unpack(self, packed: Any) -> Any:
        specs = tf.nest.flatten(self.structure)
        leaves: list[Any] = [None] * len(specs)
        for (_, members, sizes), vector in zip(self._groups(), packed):
            for i, part in zip(members, tf.split(tf.convert_to_tensor(vector), sizes)):
                leaves[i] = tf.reshape(part, specs[i].shape)
        return tf.nest.pack_sequence_as(self.structure, leaves)

    def check(self, packed: Any) -> None:
        """Raise ValueError unless `packed` (numpy or tensors) has this layout's dtypes and sizes."""
        expected = [(dtype.name, sum(sizes)) for dtype, _, sizes in self._groups()]
        found = [(tf.as_dtype(np.asarray(v).dtype).name, int(np.asarray(v).size)) for v in packed]
        if found != expected:
            raise ValueError(
                f"a packed DP query state must hold (dtype, size) {expected}. Found {found}."
            )


def with_query_state(aggregator_state: Any, query_state: Any) -> tuple[np.ndarray, ...]:
    """A `QueryAggregatorFactory` state that holds `query_state` (a nest, as
    `mechanisms.initial_query_state` returns it) instead of `aggregator_state`'s.

    The queries here read noise seed, clip, noise and denominator only from this state, so a
    learning process built once for other values runs exactly as one built for these.

    Raises:
      ValueError: `aggregator_state` is not a packed state of `query_state`'s layout.
    """
    layout = StateLayout.of(query_state)
    layout.check(aggregator_state)
    return tuple(np.asarray(vector) for vector in layout.pack(query_state))


class QueryAggregatorFactory(tff.aggregators.UnweightedAggregationFactory):
    """Aggregates client values with a `tfp.SumAggregationDPQuery` (clip, sum, noise, normalize)."""

    def __init__(self, query: tfp.SumAggregationDPQuery):
        if not isinstance(query, tfp.SumAggregationDPQuery):
            raise TypeError(  # records are summed, which only a sum-aggregation query allows
                f"QueryAggregatorFactory needs a tfp.SumAggregationDPQuery. "
                f"Found {type(query).__name__}."
            )
        self._query = query
        self.layout = StateLayout.of(query.initial_global_state())

    def create(self, value_type) -> tff.templates.AggregationProcess:
        query, layout = self._query, self.layout
        initial_state = tff.tensorflow.computation(lambda: layout.pack(query.initial_global_state()))
        state_type = initial_state.type_signature.result

        @tff.tensorflow.computation(state_type)
        def derive_params(packed):
            return query.derive_sample_params(layout.unpack(packed))

        preprocess = tff.tensorflow.computation(
            query.preprocess_record, derive_params.type_signature.result, value_type
        )

        @tff.tensorflow.computation(preprocess.type_signature.result, state_type)
        def release(record_sum, packed):
            result, new_state, _ = query.get_noised_result(record_sum, layout.unpack(packed))
            return result, layout.pack(new_state), query.derive_metrics(new_state)

        @tff.federated_computation()
        def init_fn():
            return tff.federated_eval(initial_state, tff.SERVER)

        @tff.federated_computation(
            init_fn.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS)
        )
        def next_fn(state, value):
            params = tff.federated_broadcast(tff.federated_map(derive_params, state))
            records = tff.federated_map(preprocess, (params, value))
            result, new_state, metrics = tff.federated_map(
                release, (tff.federated_sum(records), state)
            )
            measurements = tff.federated_zip(collections.OrderedDict(dp_query_metrics=metrics))
            return tff.templates.MeasuredProcessOutput(new_state, result, measurements)

        return tff.templates.AggregationProcess(init_fn, next_fn)
