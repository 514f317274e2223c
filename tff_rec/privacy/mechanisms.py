"""DP aggregation mechanisms, chosen by name: a registry of TFF aggregator builders.

Every mechanism returns a `tff.aggregators.UnweightedAggregationFactory` (or `None` for no DP) that
averages client model updates as  (sum of clipped updates + noise) / clients_per_round,  the
fixed-denominator average of DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private
Recurrent Language Models"). The denominator is the *expected* cohort size, a public constant, so
the noise scale does not depend on who was sampled.

Noise is seeded (see `queries.py`): it is fresh every round and a pure function of `noise_seed`, so
the same task seed reproduces the same noise sequence.

Mechanisms:
  none      no clipping, no noise (`None`: the learning process uses its default mean).
  clip      fixed L2 clipping, no noise: the clipping ablation; not differentially private.
  gaussian  fixed L2 clipping + Gaussian noise (DP-FedAvg).
  adaptive  L2 clip adapted towards a target quantile of update norms + Gaussian noise
            (Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping").
  tree      DP-FTRL tree-aggregated noise (Kairouz et al. 2021, "Practical and Private (Deep)
            Learning without Sampling or Shuffling"); to be paired with a server SGD optimizer.
  ddp       distributed DP with (simulated) secure aggregation, `tff.learning.ddp_secure_aggregator`
            (Kairouz et al. 2021, "The Distributed Discrete Gaussian Mechanism for Federated
            Learning with Secure Aggregation"; Agarwal et al. 2021, "The Skellam Mechanism"):
            clients rotate, scale, round and noise their updates with Skellam noise, and the server
            sees only the `bits`-bit modular secure sum. Its noise comes from TFF's own seeds (not
            the task seed), and ε is not reported: see its `accounting_note`. Task files cannot
            select it yet: `mechanism_registry.DDP_UNAVAILABLE` says why.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_rec.privacy.mechanism_registry import (  # noqa: F401  (MECHANISMS, validate_params: re-exported)
    MAX_NOISE_SEED, MECHANISMS, _is_int, adaptive_noise_split, get_mechanism, noise_scale,
    nominal_mechanisms, nominal_refusal, validate_params,
)
from tff_rec.privacy.queries import SeededGaussianSumQuery, SeededQuantileAdaptiveClipSumQuery

Aggregator = Optional[tff.aggregators.UnweightedAggregationFactory]


# ---------------------------------------------------------------- builders


def _build_none(*, clients_per_round: int, noise_seed: int) -> Aggregator:
    """No DP: the learning process keeps its default aggregation."""
    del clients_per_round, noise_seed
    return None


def _gaussian_query(
    *, clients_per_round: int, noise_seed: int, clip: float, noise_multiplier: float,
    noise_cohort_size: Optional[int] = None,
) -> tfp.DPQuery:
    """DP-FedAvg: clip to `clip`, sum, add N(0, (clip*z)^2), divide by clients_per_round.

    With `noise_cohort_size` C_nom, the sum's noise is N(0, (clip·z·C/C_nom)^2), so the average
    carries the noise clip·z/C_nom of a C_nom cohort (`nominal.py`).
    As an aggregator, this is `DifferentiallyPrivateFactory.gaussian_fixed` with the seeded query.
    """
    scale = noise_scale(clients_per_round, noise_cohort_size)
    return tfp.NormalizedQuery(
        SeededGaussianSumQuery(clip, clip * noise_multiplier * scale, noise_seed=noise_seed),
        denominator=float(clients_per_round),
    )


def _clip_query(*, clients_per_round: int, noise_seed: int, clip: float) -> tfp.DPQuery:
    """Clipping only: the gaussian mechanism with noise multiplier 0 (same normalization)."""
    return _gaussian_query(
        clients_per_round=clients_per_round, noise_seed=noise_seed, clip=clip, noise_multiplier=0.0
    )


def _adaptive_query(
    *,
    clients_per_round: int,
    noise_seed: int,
    noise_multiplier: float,
    initial_clip: float,
    target_unclipped_quantile: float,
    clip_learning_rate: float,
    clipped_count_stddev: Optional[float],
    noise_cohort_size: Optional[int] = None,
) -> tfp.DPQuery:
    """Quantile-adaptive clipping with geometric updates; `noise_multiplier` is the total z.

    With `noise_cohort_size` C_nom, z is split for the nominal cohort (count stddev default
    0.05·C_nom) and both sums' noise is scaled by C/C_nom (`nominal.py`).
    As an aggregator, this is `DifferentiallyPrivateFactory.gaussian_adaptive` with the seeded
    query.
    """
    scale = noise_scale(clients_per_round, noise_cohort_size)
    value_noise_multiplier, count_stddev = adaptive_noise_split(
        noise_multiplier, noise_cohort_size or clients_per_round, clipped_count_stddev
    )
    value_noise_multiplier, count_stddev = value_noise_multiplier * scale, count_stddev * scale
    query = SeededQuantileAdaptiveClipSumQuery(
        initial_l2_norm_clip=initial_clip,
        noise_multiplier=value_noise_multiplier,
        target_unclipped_quantile=target_unclipped_quantile,
        learning_rate=clip_learning_rate,
        clipped_count_stddev=count_stddev,
        expected_num_records=float(clients_per_round),
        noise_seed=noise_seed,
        geometric_update=True,
    )
    return tfp.NormalizedQuery(query, denominator=float(clients_per_round))


def mix_seed(seed: int) -> int:
    """A well-spread 62-bit seed from `seed` (SplitMix64 finalizer).

    tensorflow-privacy's tree noise generator uses seeds [s + k, s + k] for its k-th draw, so
    nearby task seeds would replay each other's noise shifted by a few rounds; mixing first puts
    distinct seeds' streams far apart.
    """
    z = (seed + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 2


class TreeAggregationFactory(tff.aggregators.UnweightedAggregationFactory):
    """`DifferentiallyPrivateFactory.tree_aggregation`, built when the value type is known.

    The tree query needs the update's tensor specs up front; TFF only supplies them at
    `create(value_type)`, so construction is deferred to that call.
    """

    def __init__(
        self,
        *,
        clients_per_round: int,
        noise_seed: int,
        clip: float,
        noise_multiplier: float,
        efficient: bool,
    ):
        self._clients_per_round = float(clients_per_round)
        self._noise_seed = mix_seed(noise_seed)
        self._clip = clip
        self._noise_multiplier = noise_multiplier
        self._efficient = efficient

    def create(self, value_type):
        """Builds the tree-aggregation process for `value_type`."""
        factory = tff.aggregators.DifferentiallyPrivateFactory.tree_aggregation(
            noise_multiplier=self._noise_multiplier,
            clients_per_round=self._clients_per_round,
            l2_norm_clip=self._clip,
            record_specs=tff.types.type_to_tf_tensor_specs(value_type),
            noise_seed=self._noise_seed,
            use_efficient=self._efficient,
        )
        return factory.create(value_type)


def _build_tree(
    *,
    clients_per_round: int,
    noise_seed: int,
    clip: float,
    noise_multiplier: float,
    efficient: bool,
    noise_cohort_size: Optional[int] = None,
) -> Aggregator:
    """DP-FTRL: per-round residuals of tree-aggregated noisy prefix sums (one tree, no restarts).

    With `noise_cohort_size` C_nom, every tree node's noise is scaled by C/C_nom (`nominal.py`)."""
    return TreeAggregationFactory(
        clients_per_round=clients_per_round,
        noise_seed=noise_seed,
        clip=clip,
        noise_multiplier=noise_multiplier * noise_scale(clients_per_round, noise_cohort_size),
        efficient=efficient,
    )


def _build_ddp(
    *, clients_per_round: int, noise_seed: int, noise_multiplier: float, bits: int
) -> Aggregator:
    """`tff.learning.ddp_secure_aggregator`: distributed Skellam noise, adaptive clip, SecAgg.

    `noise_seed` is not used: TFF seeds the clients' noise itself. Without adaptive zeroing: with
    it (TFF's default) TFF 0.87 fails to build the aggregator (protobuf DecodeError).
    """
    del noise_seed
    adaptive_noise_split(noise_multiplier, clients_per_round, None)  # TFF's own feasibility rule
    return tff.learning.ddp_secure_aggregator(
        noise_multiplier=noise_multiplier, expected_clients_per_round=clients_per_round,
        bits=bits, zeroing=False,
    )


def _nominal_argument(mechanism: str, noise_cohort_size: Optional[int]) -> dict:
    """{'noise_cohort_size': C_nom} for a mechanism that can take it, {} without one."""
    if noise_cohort_size is None:
        return {}
    why = nominal_refusal(mechanism)  # the mechanism's declaration (`Mechanism.nominal_cohort`)
    if why is not None:
        raise ValueError(
            f"privacy.noise_cohort_size cannot be used with {mechanism!r}: {why}. Allowed: "
            f"privacy.mechanism = {' | '.join(nominal_mechanisms())}."
        )
    return {"noise_cohort_size": noise_cohort_size}


def initial_query_state(
    mechanism: str, *, clients_per_round: int, noise_seed: int,
    noise_cohort_size: Optional[int] = None, **params: Any
) -> Any:
    """The global state a query mechanism's aggregator starts from (a nest of numpy values).

    `aggregator.with_query_state` puts it into a learning process built for other parameters.
    `noise_cohort_size`: the nominal cohort the noise is calibrated for (`nominal.py`).
    """
    _check_build_inputs(clients_per_round, noise_seed)
    chosen = get_mechanism(mechanism)
    if chosen.query_builder is None:
        raise ValueError(f"privacy.mechanism {mechanism!r} is not a DP query: its state cannot be swapped.")
    query = chosen.query_builder(
        clients_per_round=clients_per_round, noise_seed=noise_seed,
        **_nominal_argument(mechanism, noise_cohort_size),
        **validate_params(mechanism, params),
    )
    return tf.nest.map_structure(np.asarray, query.initial_global_state())


def _check_build_inputs(clients_per_round: Any, noise_seed: Any) -> None:
    if not _is_int(clients_per_round) or clients_per_round < 1:
        raise ValueError(
            f"clients_per_round must be a positive integer. Found {clients_per_round!r}."
        )
    if not _is_int(noise_seed) or not 0 <= noise_seed <= MAX_NOISE_SEED:
        raise ValueError(f"noise_seed must be an integer in [0, 2**63 - 1]. Found {noise_seed!r}.")


def build_aggregator(
    mechanism: str, *, clients_per_round: int, noise_seed: int,
    noise_cohort_size: Optional[int] = None, **params: Any
) -> Aggregator:
    """The model-update aggregator of `mechanism`, or `None` for no DP.

    Args:
      mechanism: a key of `MECHANISMS`.
      clients_per_round: expected cohort size; the fixed denominator of the noisy mean.
      noise_seed: seed of the DP noise (derived from the task seed by the caller). The noise of
        round r is a function of (noise_seed, r) only: fresh every round, identical across reruns.
      noise_cohort_size: the nominal cohort C_nom whose noise the average gets (`nominal.py`;
        mechanisms that declare `nominal_cohort` only: gaussian, adaptive, tree and such
        plugins); None: the noise of `clients_per_round` clients.
      **params: the mechanism's parameters (see `MECHANISMS[mechanism].params`); missing ones take
        their defaults.

    Returns:
      An unweighted aggregation factory to pass as the learning process's model aggregator
      (clients must then be weighted uniformly), or `None`.
    """
    _check_build_inputs(clients_per_round, noise_seed)
    chosen = get_mechanism(mechanism)
    return chosen.build(
        clients_per_round=clients_per_round,
        noise_seed=noise_seed,
        **_nominal_argument(mechanism, noise_cohort_size),
        **validate_params(mechanism, params),
    )
