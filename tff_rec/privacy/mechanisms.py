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
            select it yet: `registries.DDP_UNAVAILABLE` says why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_rec.privacy.aggregator import QueryAggregatorFactory
from tff_rec.privacy.params import NONNEGATIVE, POSITIVE, UNIT_INTERVAL, Param, Range, validate
from tff_rec.privacy.queries import SeededGaussianSumQuery, SeededQuantileAdaptiveClipSumQuery

Aggregator = Optional[tff.aggregators.UnweightedAggregationFactory]

MAX_NOISE_SEED = 2**63 - 1  # stateless seeds are int64


@dataclass(frozen=True)
class Mechanism:
    """A named DP aggregation mechanism.

    Attributes:
      name: registry key (the task's `privacy.mechanism`).
      description: one line for listings.
      reference: the paper the mechanism implements.
      params: declared parameters, with defaults and allowed ranges.
      builder: `builder(*, clients_per_round, noise_seed, **validated_params) -> Aggregator`,
        for mechanisms that are not a single query (else None).
      accounted_noise_multiplier: `f(validated_params) -> z | None`: the noise multiplier the
        Gaussian accountant (`accounting.epsilon`) must use for this mechanism; `None` when
        that accounting does not apply (no DP at all, or a different analysis such as DP-FTRL).
      accounting_note: how ε is obtained for this mechanism, for run records.
      query_builder: for mechanisms that are one tensorflow-privacy sum query, aggregated as
        TFF's `DifferentiallyPrivateFactory` would (`aggregator.QueryAggregatorFactory`):
        `query_builder(*, clients_per_round, noise_seed, **validated_params) -> DPQuery`. Such a query keeps its noise seed, clip, noise and
        denominator only in its global state, so one built learning process serves every seed
        and parameter of the mechanism: `aggregator.with_query_state` swaps the run's state in.
    """

    name: str
    description: str
    reference: str
    params: tuple[Param, ...]
    accounted_noise_multiplier: Callable[[Mapping[str, Any]], Optional[float]]
    accounting_note: str
    builder: Optional[Callable[..., Aggregator]] = None
    query_builder: Optional[Callable[..., tfp.DPQuery]] = None

    def build(self, **arguments: Any) -> Aggregator:
        """The aggregator: `builder`'s, or the query in a `QueryAggregatorFactory`."""
        if self.builder is not None:
            return self.builder(**arguments)
        return QueryAggregatorFactory(self.query_builder(**arguments))

    def defaults(self) -> dict:
        """The parameter defaults."""
        return {param.name: param.default for param in self.params}


# ---------------------------------------------------------------- parameters (shared declarations)

CLIP = Param("clip", float, 1.0, "L2 norm bound of each client's model update.", POSITIVE)
NOISE_MULTIPLIER = Param(
    "noise_multiplier",
    float,
    1.0,
    "Noise stddev of the summed updates divided by the clip (0 = no noise).",
    NONNEGATIVE,
)
INITIAL_CLIP = Param(
    "initial_clip", float, 0.1, "Clip norm at round 1, before adaptation.", POSITIVE
)
TARGET_QUANTILE = Param(
    "target_unclipped_quantile",
    float,
    0.5,
    "Fraction of client updates the adapted clip should leave unclipped (0.5 = median norm).",
    UNIT_INTERVAL,
)
CLIP_LEARNING_RATE = Param(
    "clip_learning_rate",
    float,
    0.2,
    "Geometric step of the clip adaptation: the clip changes by at most exp(rate) per round.",
    NONNEGATIVE,
)
CLIPPED_COUNT_STDDEV = Param(
    "clipped_count_stddev",
    float,
    None,
    "Noise stddev of the count of unclipped clients; None = 0.05 * clients_per_round "
    "(0 when noise_multiplier is 0), as in Andrew et al.",
    NONNEGATIVE,
    optional=True,
)
EFFICIENT_TREE = Param(
    "efficient",
    bool,
    True,
    "Use the efficient tree estimator (Honaker 2015) instead of the plain binary tree.",
)


# ---------------------------------------------------------------- builders


def _build_none(*, clients_per_round: int, noise_seed: int) -> Aggregator:
    """No DP: the learning process keeps its default aggregation."""
    del clients_per_round, noise_seed
    return None


def noise_scale(clients_per_round: int, noise_cohort_size: Optional[int]) -> float:
    """C / C_nom: the factor on the sum's noise that gives the average a C_nom cohort's noise
    (`nominal.py` derives it); 1 without a nominal cohort."""
    if noise_cohort_size is None:
        return 1.0
    if not _is_int(noise_cohort_size) or noise_cohort_size < clients_per_round:
        raise ValueError(
            f"privacy.noise_cohort_size must be an integer of at least clients_per_round = "
            f"{clients_per_round}. Found {noise_cohort_size!r}."
        )
    return clients_per_round / noise_cohort_size


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


def adaptive_noise_split(
    noise_multiplier: float, clients_per_round: int, clipped_count_stddev: Optional[float]
) -> tuple[float, float]:
    """Split a total noise multiplier z between the update sum and the clipped count.

    Adaptive clipping releases two Gaussian sums per round: the updates (noise multiplier z_v) and
    the +/-0.5 "was unclipped" indicators (sensitivity 0.5, stddev s, so noise multiplier 2s).
    Two Gaussian mechanisms compose like one with  z^-2 = z_v^-2 + (2s)^-2,  so for a total z the
    updates get  z_v = (z^-2 - (2s)^-2)^-1/2  (as TFF's `adaptive_clip_noise_params`), which
    needs 2s > z. Returns (z_v, s).
    """
    if noise_multiplier == 0.0:
        return 0.0, 0.0 if clipped_count_stddev is None else clipped_count_stddev
    stddev = 0.05 * clients_per_round if clipped_count_stddev is None else clipped_count_stddev
    if noise_multiplier >= 2 * stddev:
        raise ValueError(
            f"privacy.clipped_count_stddev must be greater than noise_multiplier / 2 = "
            f"{noise_multiplier / 2:g} (default 0.05 * clients_per_round = "
            f"{0.05 * clients_per_round:g}). Found {stddev:g}. Increase it, or clients_per_round, "
            f"or lower privacy.noise_multiplier."
        )
    return (noise_multiplier**-2 - (2 * stddev) ** -2) ** -0.5, stddev


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


DDP_BITS = Param(
    "bits", int, 20, "Bit width of the secure sum (TFF allows 1 to 22).", Range(low=1, high=22)
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


# ---------------------------------------------------------------- registry

MECHANISMS: dict[str, Mechanism] = {
    mechanism.name: mechanism
    for mechanism in (
        Mechanism(
            name="none",
            description="No clipping, no noise: plain federated averaging, no DP guarantee.",
            reference="",
            params=(),
            builder=_build_none,
            accounted_noise_multiplier=lambda params: None,
            accounting_note="not differentially private",
        ),
        Mechanism(
            name="clip",
            description="Fixed L2 clipping without noise (clipping ablation), no DP guarantee.",
            reference="McMahan et al. 2018 without the noise",
            params=(CLIP,),
            query_builder=_clip_query,
            accounted_noise_multiplier=lambda params: 0.0,
            accounting_note="noise multiplier 0: epsilon is infinite",
        ),
        Mechanism(
            name="gaussian",
            description="Fixed L2 clipping + Gaussian noise (DP-FedAvg).",
            reference=(
                "McMahan et al. 2018, Learning Differentially Private Recurrent Language Models"
            ),
            params=(CLIP, NOISE_MULTIPLIER),
            query_builder=_gaussian_query,
            accounted_noise_multiplier=lambda params: params["noise_multiplier"],
            accounting_note="sampled Gaussian mechanism with noise_multiplier per round",
        ),
        Mechanism(
            name="adaptive",
            description="Quantile-adaptive L2 clipping + Gaussian noise.",
            reference="Andrew et al. 2021, Differentially Private Learning with Adaptive Clipping",
            params=(
                NOISE_MULTIPLIER,
                INITIAL_CLIP,
                TARGET_QUANTILE,
                CLIP_LEARNING_RATE,
                CLIPPED_COUNT_STDDEV,
            ),
            query_builder=_adaptive_query,
            accounted_noise_multiplier=lambda params: params["noise_multiplier"],
            accounting_note=(
                "sampled Gaussian mechanism with the total noise_multiplier (updates and clipped "
                "count together)"
            ),
        ),
        Mechanism(
            name="tree",
            description="DP-FTRL tree-aggregated Gaussian noise (use with a server SGD optimizer).",
            reference=(
                "Kairouz et al. 2021, Practical and Private (Deep) Learning without Sampling "
                "or Shuffling"
            ),
            params=(CLIP, NOISE_MULTIPLIER, EFFICIENT_TREE),
            builder=_build_tree,
            accounted_noise_multiplier=lambda params: None,
            accounting_note=(
                "needs tree-aggregation accounting (each client at most once per tree); the "
                "sampled-Gaussian accountant does not apply"
            ),
        ),
        Mechanism(
            name="ddp",
            description=(
                "Distributed DP with secure aggregation (TFF's ddp_secure_aggregator, Skellam "
                "noise added by clients, adaptive clipping); ε not reported."
            ),
            reference=(
                "Agarwal et al. 2021, The Skellam Mechanism for Differentially Private Federated "
                "Learning; Kairouz et al. 2021, The Distributed Discrete Gaussian Mechanism"
            ),
            params=(NOISE_MULTIPLIER, DDP_BITS),
            builder=_build_ddp,
            accounted_noise_multiplier=lambda params: None,
            accounting_note=(
                "not accounted: TFF's ddp_secure_aggregator adds distributed Skellam noise after "
                "random rotation, scaling and modular rounding, with an adaptive clip estimated "
                "from noisy counts; dp-accounting has no event for this mechanism (and the "
                "rounding inflates the sensitivity beyond the clip), so no ε is claimed"
            ),
        ),
    )
}


def get_mechanism(name: str) -> Mechanism:
    """The registered mechanism `name`, or ValueError listing the allowed names."""
    try:
        return MECHANISMS[name]
    except (KeyError, TypeError):
        allowed = ", ".join(sorted(MECHANISMS))
        raise ValueError(f"privacy.mechanism must be one of {allowed}. Found {name!r}.") from None


def validate_params(mechanism: str, params: Mapping[str, Any]) -> dict:
    """`params` checked against `mechanism`'s declaration, defaults filled in.

    Raises:
      ValueError: unknown mechanism, unknown key, wrong type or out-of-range value; the message
        names the key and the allowed values (`privacy.clip must be positive. Found -1.`).
    """
    return validate(params, get_mechanism(mechanism).params, owner=mechanism)


def _nominal_argument(mechanism: str, noise_cohort_size: Optional[int]) -> dict:
    """{'noise_cohort_size': C_nom} for a mechanism that can take it, {} without one."""
    if noise_cohort_size is None:
        return {}
    from tff_rec.privacy import nominal

    if mechanism not in nominal.NOMINAL_MECHANISMS:
        why = nominal.REFUSED.get(mechanism, "its noise scaling is not derived")
        raise ValueError(f"privacy.noise_cohort_size cannot be used with {mechanism!r}: {why}.")
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
        **validate(params, chosen.params, owner=mechanism),
    )
    return tf.nest.map_structure(np.asarray, query.initial_global_state())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
        gaussian, adaptive and tree only); None: the noise of `clients_per_round` clients.
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
        **validate(params, chosen.params, owner=mechanism),
    )
