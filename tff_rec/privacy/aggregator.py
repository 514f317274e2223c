"""A tensorflow-privacy sum query as a TFF aggregator, in as few computations per round as it needs.

`QueryAggregatorFactory(query)` aggregates exactly as `tff.aggregators.DifferentiallyPrivateFactory
(query)` with its default record sum, bit for bit (tests/test_privacy_mechanisms.py compares the
two), but a round runs two server computations instead of five:

    server  derive_sample_params(query state)           -> broadcast to the clients
    clients preprocess_record(params, update)           (clip)
            federated_sum of the records
    server  get_noised_result + derive_metrics          -> result, new query state, metrics

and the state is the query's global state alone. TFF's factory also converts and stores each
round's DpEvent in its state (tff-rec's accountant computes ε from the task, not from these
events) and runs metrics and event conversion as computations of their own. Every computation
and state type is part of the learning process that TFF ships to its worker and parses every
round, and every computation is a TF call there: at cohort 10 TFF's factory cost 3-6 ms more a
round than this one (README, Performance).
"""
from __future__ import annotations

import collections

import tensorflow_federated as tff
import tensorflow_privacy as tfp


class QueryAggregatorFactory(tff.aggregators.UnweightedAggregationFactory):
    """Aggregates client values with a `tfp.SumAggregationDPQuery` (clip, sum, noise, normalize)."""

    def __init__(self, query: tfp.SumAggregationDPQuery):
        if not isinstance(query, tfp.SumAggregationDPQuery):
            raise TypeError(  # records are summed, which only a sum-aggregation query allows
                f"QueryAggregatorFactory needs a tfp.SumAggregationDPQuery. "
                f"Found {type(query).__name__}."
            )
        self._query = query

    def create(self, value_type) -> tff.templates.AggregationProcess:
        query = self._query
        initial_state = tff.tensorflow.computation(query.initial_global_state)
        query_state_type = initial_state.type_signature.result
        derive_params = tff.tensorflow.computation(query.derive_sample_params, query_state_type)
        preprocess = tff.tensorflow.computation(
            query.preprocess_record, derive_params.type_signature.result, value_type
        )

        @tff.tensorflow.computation(preprocess.type_signature.result, query_state_type)
        def release(record_sum, query_state):
            result, new_state, _ = query.get_noised_result(record_sum, query_state)
            return result, new_state, query.derive_metrics(new_state)

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
