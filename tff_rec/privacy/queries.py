"""tensorflow-privacy DPQueries whose Gaussian noise is seeded, fresh every round and reproducible.

Why this module exists: `tfp.GaussianSumQuery` draws its noise from an unseeded
`tf.random_normal_initializer`, so two runs of the same task give different noise and results
cannot be re-run. Fixing a TF op seed instead is worse: TFF re-instantiates the graph of a
computation for each call, so an op-seeded draw can repeat the *same* noise every round, which
breaks the privacy guarantee.

Here the noise is a pure function of (noise_seed, stream, round, tensor index): Philox stateless
draws, as `tf.random.stateless_normal` makes them on CPU and GPU. The round counter lives in the
query's global state, which TFF carries on the server from one round to the next, and
`get_noised_result` returns it incremented: round r draws with counter r, round r+1 with r+1.

These are plain DPQueries (pure TensorFlow, usable and testable without TFF); `mechanisms.py` wraps
them in a TFF aggregator (`aggregator.QueryAggregatorFactory`).
"""
from __future__ import annotations

import collections
from typing import Any

import dp_accounting
import tensorflow as tf
import tensorflow_privacy as tfp

# Noise streams: independent noise sequences derived from one noise seed.
VALUE_STREAM = 0  # noise added to the clipped sum of client updates
COUNT_STREAM = 1  # noise added to the clipped-count estimate of adaptive clipping

_ALG = tf.random.Algorithm.PHILOX  # fixed, not the device's choice


def seeded_gaussian_noise(
    template: Any, stddev: tf.Tensor, key: tf.Tensor, round_num: tf.Tensor
) -> Any:
    """Gaussian noise shaped like `template` (a nest of tensors), for one round.

    Args:
      template: nest of tensors; the noise has the same structure, shapes and dtypes.
      stddev: scalar standard deviation of every coordinate.
      key: int64 tensor of shape [2]: (noise_seed, stream).
      round_num: int64 scalar, the round counter.

    Returns:
      A nest like `template`. Tensor i of round r uses the stateless seed
      fold_in(fold_in(key, r), i): a distinct, statistically independent draw per (round, tensor).
    """
    round_key = tf.random.experimental.stateless_fold_in(key, round_num, alg=_ALG)
    # Built for a small graph, since TFF ships and runs it every round: per tensor, fold_in and
    # stateless_normal's Python-side Philox seed scrambling take ~100 graph nodes (3,700 for
    # SASRec's 36 tensors, 3-5 ms a round). Here: fold_in(k, i) is [draw(k), i] with draw(k)
    # independent of i, so one draw serves every tensor, and the scrambling is the one-node
    # kernel (identical to Philox's on CPU). tests/test_privacy_mechanisms.py pins the equality.
    shared = tf.random.experimental.stateless_fold_in(round_key, tf.constant(0, tf.int64), alg=_ALG)[0]
    noise = []
    for index, value in enumerate(tf.nest.flatten(template)):
        key_i, counter_i = tf.raw_ops.StatelessRandomGetKeyCounter(
            seed=tf.stack([shared, tf.constant(index, tf.int64)]))
        draw = tf.raw_ops.StatelessRandomNormalV2(
            shape=tf.shape(value), key=key_i, counter=counter_i, alg=_ALG.value, dtype=value.dtype)
        noise.append(draw * tf.cast(stddev, value.dtype))
    return tf.nest.pack_sequence_as(template, noise)


def noise_key(noise_seed: int, stream: int) -> tf.Tensor:
    """The int64 [2] stateless key of one noise stream."""
    return tf.constant([noise_seed, stream], dtype=tf.int64)


class SeededGaussianSumQuery(tfp.GaussianSumQuery):
    """`tfp.GaussianSumQuery` with seeded, per-round-fresh noise.

    Clipping, sample state and the returned `GaussianDpEvent(stddev / l2_norm_clip)` are those of
    the parent class; only the noise source differs. The global state carries the noise key and a
    round counter, incremented by every `get_noised_result`.
    """

    _GlobalState = collections.namedtuple(
        "_GlobalState", ["l2_norm_clip", "stddev", "noise_key", "round_num"]
    )

    def __init__(
        self, l2_norm_clip: float, stddev: float, noise_seed: int, stream: int = VALUE_STREAM
    ):
        super().__init__(l2_norm_clip, stddev)
        self._noise_seed = noise_seed
        self._stream = stream

    def initial_global_state(self):
        """Implements `DPQuery.initial_global_state`: round counter 0."""
        return self._GlobalState(
            tf.cast(self._l2_norm_clip, tf.float32),
            tf.cast(self._stddev, tf.float32),
            noise_key(self._noise_seed, self._stream),
            tf.constant(0, dtype=tf.int64),
        )

    def get_noised_result(self, sample_state, global_state):
        """Implements `DPQuery.get_noised_result`: sum + seeded noise; counter + 1."""
        noise = seeded_gaussian_noise(
            sample_state, global_state.stddev, global_state.noise_key, global_state.round_num
        )
        result = tf.nest.map_structure(tf.add, sample_state, noise)
        new_global_state = global_state._replace(round_num=global_state.round_num + 1)
        event = dp_accounting.GaussianDpEvent(global_state.stddev / global_state.l2_norm_clip)
        return result, new_global_state, event


class SeededQuantileEstimatorQuery(tfp.QuantileEstimatorQuery):
    """`tfp.QuantileEstimatorQuery` whose noised clipped count uses `SeededGaussianSumQuery`."""

    def __init__(
        self,
        initial_estimate: float,
        target_quantile: float,
        learning_rate: float,
        below_estimate_stddev: float,
        expected_num_records: float,
        geometric_update: bool,
        noise_seed: int,
    ):
        self._noise_seed = noise_seed  # read by _construct_below_estimate_query during __init__
        super().__init__(
            initial_estimate,
            target_quantile,
            learning_rate,
            below_estimate_stddev,
            expected_num_records,
            geometric_update,
        )

    def _construct_below_estimate_query(self, below_estimate_stddev, expected_num_records):
        # As in the parent: records are +/-0.5 indicators, hence clip 0.5 (never binding).
        return tfp.NormalizedQuery(
            SeededGaussianSumQuery(
                l2_norm_clip=0.5,
                stddev=below_estimate_stddev,
                noise_seed=self._noise_seed,
                stream=COUNT_STREAM,
            ),
            denominator=expected_num_records,
        )


class SeededQuantileAdaptiveClipSumQuery(tfp.QuantileAdaptiveClipSumQuery):
    """`tfp.QuantileAdaptiveClipSumQuery` (Andrew et al. 2021) with seeded noise in both parts.

    The value sum draws from stream `VALUE_STREAM`, the clipped count from `COUNT_STREAM` of the
    same noise seed. The returned event is the parent's
    `ComposedDpEvent([Gaussian(value), Gaussian(count)])`.
    """

    def __init__(
        self,
        initial_l2_norm_clip: float,
        noise_multiplier: float,
        target_unclipped_quantile: float,
        learning_rate: float,
        clipped_count_stddev: float,
        expected_num_records: float,
        noise_seed: int,
        geometric_update: bool = True,
    ):
        super().__init__(
            initial_l2_norm_clip,
            noise_multiplier,
            target_unclipped_quantile,
            learning_rate,
            clipped_count_stddev,
            expected_num_records,
            geometric_update,
        )
        self._quantile_estimator_query = SeededQuantileEstimatorQuery(
            initial_l2_norm_clip,
            target_unclipped_quantile,
            learning_rate,
            clipped_count_stddev,
            expected_num_records,
            geometric_update,
            noise_seed,
        )
        self._sum_query = SeededGaussianSumQuery(
            initial_l2_norm_clip,
            noise_multiplier * initial_l2_norm_clip,
            noise_seed=noise_seed,
            stream=VALUE_STREAM,
        )

    def get_noised_result(self, sample_state, global_state):
        """Implements `DPQuery.get_noised_result` as the parent, keeping the noise counter.

        The parent rebuilds the sum query's state from the new clip only, which would drop the
        noise key and round counter; here they are carried over from the sum query's new state.
        """
        noised_vectors, sum_state, sum_event = self._sum_query.get_noised_result(
            sample_state.sum_state, global_state.sum_state
        )
        new_l2_norm_clip, new_quantile_estimator_state, quantile_event = (
            self._quantile_estimator_query.get_noised_result(
                sample_state.quantile_estimator_state, global_state.quantile_estimator_state
            )
        )
        new_l2_norm_clip = tf.maximum(new_l2_norm_clip, 0.0)
        new_sum_state = sum_state._replace(
            l2_norm_clip=new_l2_norm_clip,
            stddev=new_l2_norm_clip * global_state.noise_multiplier,
        )
        new_global_state = self._GlobalState(
            global_state.noise_multiplier, new_sum_state, new_quantile_estimator_state
        )
        event = dp_accounting.ComposedDpEvent(events=[sum_event, quantile_event])
        return noised_vectors, new_global_state, event
