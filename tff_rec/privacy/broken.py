"""Deliberately broken DP aggregators: the negative controls of the privacy audit (`audit.py`).

Each is the `gaussian` mechanism (`mechanisms._gaussian_query`: tensorflow-privacy's Gaussian sum
query with the seeded noise of `queries.py`, normalized by the fixed cohort size and run through
`aggregator.QueryAggregatorFactory`, exactly as training aggregates) with ONE fault introduced:

  no_noise           the noise is dropped (stddev 0); the clip is applied.
  unclipped          the clip is not applied (records are summed as sent); the noise is clip·z.
  noise_before_clip  every client adds its share N(0, (clip·z)²/C) of the noise to its update and
                     THEN clips it; the server adds nothing. Clipping a large update scales its
                     noise down with it, so the noise the release was accounted for is gone.

They are registered here only, not in `mechanisms.MECHANISMS`: a task file cannot select them
(`privacy.mechanism` is checked against that registry). The audit injects one with
`privacy.audit.fault`, keeping the task's claim (its accounted ε) for the mechanism as intended.
"""
from __future__ import annotations

import math
from typing import Any

import dp_accounting
import tensorflow as tf
import tensorflow_privacy as tfp

from tff_rec.privacy.aggregator import QueryAggregatorFactory
from tff_rec.privacy.queries import SeededGaussianSumQuery

FAULTS = ("none", "no_noise", "unclipped", "noise_before_clip", "weighted_average")
# Faults whose records carry the client's example weight as a last coordinate (`audit.play`).
WEIGHTED_FAULTS = ("weighted_average",)
# The mechanisms a fault can be injected into: the faults rebuild the gaussian query.
FAULTY_MECHANISMS = ("gaussian",)


class UnclippedGaussianSumQuery(SeededGaussianSumQuery):
    """The seeded Gaussian sum query with its clip skipped (noise still clip·z)."""

    def preprocess_record(self, params, record):
        del params
        return tf.nest.map_structure(tf.convert_to_tensor, record)


class NoiseBeforeClipGaussianSumQuery(SeededGaussianSumQuery):
    """Noise added by each client before its clip, none at the server.

    Each record gets N(0, stddev² / clients_per_round) per coordinate (so an unclipped cohort of
    clients_per_round would carry the intended total stddev), then is clipped as usual. The
    clients' noise is TensorFlow's unseeded normal: these controls are not bit-reproducible.
    """

    def __init__(self, l2_norm_clip: float, stddev: float, noise_seed: int,
                 clients_per_round: int):
        super().__init__(l2_norm_clip, stddev, noise_seed)
        self._share = stddev / math.sqrt(clients_per_round)

    def preprocess_record(self, params, record):
        noisy = tf.nest.map_structure(
            lambda x: x + tf.random.normal(tf.shape(x), stddev=self._share, dtype=x.dtype), record
        )
        return super().preprocess_record(params, noisy)

    def get_noised_result(self, sample_state, global_state):
        new_global_state = global_state._replace(round_num=global_state.round_num + 1)
        event = dp_accounting.GaussianDpEvent(global_state.stddev / global_state.l2_norm_clip)
        return sample_state, new_global_state, event


class WeightedAverageGaussianSumQuery(SeededGaussianSumQuery):
    """Clipped updates weighted by example counts, noise for weight 1, divided by the weight sum.

    A record is [update..., weight]; the result is [Σ wᵢ·clip(xᵢ) + noise) / Σ wᵢ..., Σ wᵢ] (the
    weight sum is released unnoised, as a weighted mean's denominator is).
    """

    def preprocess_record(self, params, record):
        update, weight = record[:-1], record[-1]
        clipped = super().preprocess_record(params, update)
        return tf.concat([clipped * weight, weight[tf.newaxis]], axis=0)

    def get_noised_result(self, sample_state, global_state):
        total, weights = sample_state[:-1], sample_state[-1]
        noised, new_global_state, event = super().get_noised_result(total, global_state)
        return tf.concat([noised / weights, weights[tf.newaxis]], axis=0), new_global_state, event


def _sum_query(fault: str, *, clip: float, stddev: float, noise_seed: int,
               clients_per_round: int) -> tfp.SumAggregationDPQuery:
    if fault == "no_noise":
        return SeededGaussianSumQuery(clip, 0.0, noise_seed=noise_seed)
    if fault == "unclipped":
        return UnclippedGaussianSumQuery(clip, stddev, noise_seed=noise_seed)
    if fault == "noise_before_clip":
        return NoiseBeforeClipGaussianSumQuery(clip, stddev, noise_seed, clients_per_round)
    if fault == "weighted_average":
        return WeightedAverageGaussianSumQuery(clip, stddev, noise_seed=noise_seed)
    raise ValueError(f"privacy.audit.fault must be one of {', '.join(FAULTS)}. Found {fault!r}.")


def build_faulty_aggregator(fault: str, mechanism: str, *, clients_per_round: int,
                            noise_seed: int, params: dict[str, Any]) -> QueryAggregatorFactory:
    """The aggregator of `mechanism` (validated `params`) with `fault` introduced."""
    if mechanism not in FAULTY_MECHANISMS:
        raise ValueError(
            f"privacy.audit.fault = {fault!r} can be injected into privacy.mechanism = "
            f"{' | '.join(FAULTY_MECHANISMS)} only. Found {mechanism!r}."
        )
    clip, z = params["clip"], params["noise_multiplier"]
    query = _sum_query(fault, clip=clip, stddev=clip * z, noise_seed=noise_seed,
                       clients_per_round=clients_per_round)
    if fault in WEIGHTED_FAULTS:  # normalized by its own weight sum
        return QueryAggregatorFactory(query)
    return QueryAggregatorFactory(tfp.NormalizedQuery(query, denominator=float(clients_per_round)))

