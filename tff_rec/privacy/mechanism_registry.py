"""The DP mechanism registry (`MECHANISMS`), declared without TensorFlow.

Each mechanism's parameters (defaults, ranges, help), its accounting and the noise-split rules
that task validation needs live here; its aggregator builder lives in `mechanisms` (TensorFlow,
TFF, tensorflow-privacy) and is imported when a run builds it (`tff_rec.lazy.Ref`). The
mechanisms themselves are described in `mechanisms`' docstring. Mechanisms from other packages
register through the `tff_rec.mechanisms` entry point group (`tff_rec.plugins`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from tff_rec.lazy import Ref
from tff_rec.params import NONNEGATIVE, POSITIVE, UNIT_INTERVAL, Param, Range
from tff_rec.registry import Registry

MAX_NOISE_SEED = 2**63 - 1  # stateless seeds are int64
# Why a mechanism refuses privacy.noise_cohort_size unless it declares otherwise (`nominal.py`).
NOMINAL_NOT_DERIVED = "the scaling of its noise to a nominal cohort is not derived"
NO_NOISE_TO_SCALE = "it adds no noise, so there is no noise to calibrate for a nominal cohort"


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
      accounted_noise_multiplier: `f(validated_params) -> z | None`: the noise multiplier its
        analysis must use; `None` when no analysis applies (no DP at all, or no accountant).
      analysis: the ε analysis: a name in `accounting.ANALYSES` ("sampled-gaussian":
        dp-accounting's sampled Gaussian under the runner's sampler; "tree": single-pass
        DP-FTRL) or an `accounting.Analysis` of its own (a plugin's mechanism with its accountant).
      noise_sets_epsilon: its `noise_multiplier` sets ε: a task must choose it, or a
        `privacy.target_epsilon` that the analysis calibrates it to.
      accounting_note: how ε is obtained for this mechanism, for run records.
      query_builder: for mechanisms that are one tensorflow-privacy sum query, aggregated as
        TFF's `DifferentiallyPrivateFactory` would (`aggregator.QueryAggregatorFactory`):
        `query_builder(*, clients_per_round, noise_seed, **validated_params) -> DPQuery`. Such a query keeps its noise seed, clip, noise and
        denominator only in its global state, so one built learning process serves every seed
        and parameter of the mechanism: `aggregator.with_query_state` swaps the run's state in.
      nominal_cohort: its builder (`query_builder` or `builder`) takes `noise_cohort_size=C_nom`
        and scales its noise so that the average of the clients_per_round clients carries the
        noise of a C_nom cohort's round (`nominal.py` derives it for the built-ins): tasks may then
        set `privacy.noise_cohort_size` / `privacy.population`, and ε is accounted for C_nom.
      nominal_refusal: why the mechanism refuses those keys when `nominal_cohort` is False (shown
        in the task's error).
      sampling: the one client sampler (`algorithm.sampling`) its analysis assumes; a task with
        another is refused at load. None: any sampler.
      rules: its rules on the task's other keys, checked at load: `rule(privacy, algorithm)`
        (the resolved sections) raises ValueError naming the keys, the values and what is allowed.
    """

    name: str
    description: str
    reference: str
    params: tuple[Param, ...]
    accounted_noise_multiplier: Callable[[Mapping[str, Any]], Optional[float]]
    accounting_note: str
    analysis: Any = "sampled-gaussian"  # str | accounting.Analysis
    noise_sets_epsilon: bool = False
    builder: Optional[Callable[..., Any]] = None  # → Aggregator (mechanisms.py)
    query_builder: Optional[Callable[..., Any]] = None  # → tfp.DPQuery
    nominal_cohort: bool = False
    nominal_refusal: str = NOMINAL_NOT_DERIVED
    sampling: Optional[str] = None
    rules: tuple[Callable[[Mapping[str, Any], Mapping[str, Any]], None], ...] = ()

    def build(self, **arguments: Any) -> Any:
        """The aggregator: `builder`'s, or the query in a `QueryAggregatorFactory`."""
        if self.builder is not None:
            return self.builder(**arguments)
        from tff_rec.privacy.aggregator import QueryAggregatorFactory

        return QueryAggregatorFactory(self.query_builder(**arguments))


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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


def _adaptive_noise_rule(privacy: Mapping[str, Any], algorithm: Mapping[str, Any]) -> None:
    """Adaptive clipping's split of an explicit noise multiplier between the update sum and the
    clipped count (TFF's rule: the count's noise multiplier 2s must exceed the total z), for the
    nominal cohort when the noise is calibrated for one (`nominal.py`)."""
    if privacy["target_epsilon"] is not None:
        return
    params = privacy["params"]
    try:
        adaptive_noise_split(params["noise_multiplier"],
                             privacy.get("noise_cohort_size") or algorithm["clients_per_round"],
                             params["clipped_count_stddev"])
    except ValueError as error:
        raise ValueError(
            f"{error} (privacy.mechanism = 'adaptive', privacy.noise_multiplier = "
            f"{params['noise_multiplier']!r}, algorithm.clients_per_round = "
            f"{algorithm['clients_per_round']})"
        ) from None


# Why `ddp` is registered (parameters, accounting note) but refused at task load.
DDP_UNAVAILABLE = (
    "TFF 0.87 fails to build a learning process around tff.learning.ddp_secure_aggregator with "
    "the installed protobuf (4.25, upb): serializing the composed computation raises "
    "'DecodeError: Error parsing message' (its nesting is too deep for upb; the pure-Python "
    "protobuf did not finish building it in 5 minutes). The aggregator alone builds and runs."
)
DDP_ACCOUNTING = (
    "not accounted: TFF's ddp_secure_aggregator adds distributed Skellam noise after random "
    "rotation, scaling and modular rounding, with an adaptive clip estimated from noisy counts; "
    "dp-accounting has no event for this mechanism (and the rounding inflates the sensitivity "
    "beyond the clip), so no ε is claimed"
)


def _ddp_rule(privacy: Mapping[str, Any], algorithm: Mapping[str, Any]) -> None:
    """ddp: TFF's bound on its noise, and why it cannot run here."""
    clients = algorithm["clients_per_round"]
    try:
        adaptive_noise_split(privacy["params"]["noise_multiplier"], clients, None)
    except ValueError:
        raise ValueError(
            f"privacy.mechanism = 'ddp' needs privacy.noise_multiplier < 0.1 × "
            f"algorithm.clients_per_round = {0.1 * clients:g} (TFF's adaptive clip estimate takes "
            f"noise 0.05 × clients per round). Found {privacy['params']['noise_multiplier']!r}."
        ) from None
    raise ValueError(f"privacy.mechanism = 'ddp' cannot run here: {DDP_UNAVAILABLE}")


DDP_BITS = Param(
    "bits", int, 20, "Bit width of the secure sum (TFF allows 1 to 22).", Range(low=1, high=22)
)


# ---------------------------------------------------------------- registry

MECHANISMS: Registry[Mechanism] = Registry(
    "privacy mechanism", "privacy.mechanism", group="tff_rec.mechanisms", entries=(
        Mechanism(
            name="none",
            description="No clipping, no noise: plain federated averaging, no DP guarantee.",
            reference="",
            params=(),
            builder=Ref("tff_rec.privacy.mechanisms:_build_none"),
            accounted_noise_multiplier=lambda params: None,
            accounting_note="not differentially private",
            nominal_refusal=NO_NOISE_TO_SCALE,
        ),
        Mechanism(
            name="clip",
            description="Fixed L2 clipping without noise (clipping ablation), no DP guarantee.",
            reference="McMahan et al. 2018 without the noise",
            params=(CLIP,),
            query_builder=Ref("tff_rec.privacy.mechanisms:_clip_query"),
            accounted_noise_multiplier=lambda params: 0.0,
            accounting_note="noise multiplier 0: epsilon is infinite",
            nominal_refusal=NO_NOISE_TO_SCALE,
        ),
        Mechanism(
            name="gaussian",
            description="Fixed L2 clipping + Gaussian noise (DP-FedAvg).",
            reference=(
                "McMahan et al. 2018, Learning Differentially Private Recurrent Language Models"
            ),
            params=(CLIP, NOISE_MULTIPLIER),
            query_builder=Ref("tff_rec.privacy.mechanisms:_gaussian_query"),
            accounted_noise_multiplier=lambda params: params["noise_multiplier"],
            accounting_note="sampled Gaussian mechanism with noise_multiplier per round",
            noise_sets_epsilon=True,
            nominal_cohort=True,
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
            query_builder=Ref("tff_rec.privacy.mechanisms:_adaptive_query"),
            accounted_noise_multiplier=lambda params: params["noise_multiplier"],
            accounting_note=(
                "sampled Gaussian mechanism with the total noise_multiplier (updates and clipped "
                "count together)"
            ),
            noise_sets_epsilon=True,
            nominal_cohort=True,
            rules=(_adaptive_noise_rule,),
        ),
        Mechanism(
            name="tree",
            description="DP-FTRL tree-aggregated Gaussian noise (use with a server SGD optimizer).",
            reference=(
                "Kairouz et al. 2021, Practical and Private (Deep) Learning without Sampling "
                "or Shuffling"
            ),
            params=(CLIP, NOISE_MULTIPLIER, EFFICIENT_TREE),
            builder=Ref("tff_rec.privacy.mechanisms:_build_tree"),
            accounted_noise_multiplier=lambda params: params["noise_multiplier"],
            accounting_note=(
                "tree-aggregation accounting (each client at most once per tree); the "
                "sampled-Gaussian accountant does not apply"
            ),
            analysis="tree",
            noise_sets_epsilon=True,
            nominal_cohort=True,
            sampling="shuffle",  # its accounting assumes each client at most once per tree
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
            builder=Ref("tff_rec.privacy.mechanisms:_build_ddp"),
            accounted_noise_multiplier=lambda params: None,
            accounting_note=DDP_ACCOUNTING,
            rules=(_ddp_rule,),
            nominal_refusal=(
                "its noise is drawn by each client (Skellam shares in a secure modular sum whose "
                "bits, scaling and rounding are set for the clients that take part), so it cannot "
                "be rescaled to a nominal cohort's; its ε is not accounted either"
            ),
        ),
    ),
)


def get_mechanism(name: str) -> Mechanism:
    """The registered mechanism `name` (a plugin's is loaded on first use), or ValueError listing
    the allowed names."""
    return MECHANISMS.entry(name)


def nominal_mechanisms() -> list[str]:
    """The registered mechanisms (built-ins, and plugins loaded so far) that declare
    `nominal_cohort`: the allowed values of privacy.mechanism with privacy.noise_cohort_size."""
    return [name for name, mechanism in MECHANISMS.items() if mechanism.nominal_cohort]


def nominal_refusal(name: str) -> Optional[str]:
    """None if mechanism `name` takes a nominal cohort, else why not (unknown: not derived)."""
    try:
        mechanism = get_mechanism(name)
    except ValueError:
        return NOMINAL_NOT_DERIVED
    return None if mechanism.nominal_cohort else mechanism.nominal_refusal


def validate_params(mechanism: str, params: Mapping[str, Any]) -> dict:
    """`params` checked against `mechanism`'s declaration, defaults filled in.

    Raises:
      ValueError: unknown mechanism, unknown key, wrong type or out-of-range value; the message
        names the key and the allowed values (`privacy.clip must be positive. Found -1.`).
    """
    return MECHANISMS.validate(mechanism, params)
