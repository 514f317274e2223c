"""Privacy accounting: (ε, δ) of T rounds of a sampled Gaussian mechanism, with dp-accounting.

One round of DP-FedAvg releases  (sum of the cohort's clipped updates + N(0, (z·C)^2)) / m.
How the cohort was drawn decides the `DpEvent`, and the event decides which neighbouring relation
the guarantee is stated under:

  poisson  each of n clients joins independently with probability q = m / n
           PoissonSampledDpEvent(q, GaussianDpEvent(z))                  ADD_OR_REMOVE_ONE
  fixed    m distinct clients drawn uniformly without replacement
           SampledWithoutReplacementDpEvent(n, m, GaussianDpEvent(z/2))  REPLACE_ONE

Why z / 2 for `fixed`: dp-accounting (0.4.3) feeds the event's noise multiplier straight into the
subsampled-RDP bound of Wang, Balle & Kasiviswanathan (2019, Thm. 27), which is normalised by the
query's L2 *sensitivity*. Under REPLACE_ONE one client's clipped update (norm ≤ C) can be swapped
for another, moving the sum by up to 2C, so noise stddev z·C is a noise multiplier of z/2 relative
to the sensitivity. Passing z would understate the privacy loss (4x in RDP when every client is
sampled; reported upstream as google/differential-privacy issue #378). ε under REPLACE_ONE and
under ADD_OR_REMOVE_ONE are different guarantees; the result records which one holds.

Supported (accountant, sampling) pairs in dp-accounting 0.4.3 (read from its source):

  rdp + poisson  ADD_OR_REMOVE_ONE   `_compute_rdp_poisson_subsampled_gaussian`
  rdp + fixed    REPLACE_ONE         `_compute_rdp_sample_wor_gaussian` (refuses other relations)
  pld + poisson  ADD_OR_REMOVE_ONE   `from_gaussian_mechanism(sampling_prob=q)`
  pld + fixed    none                PLDAccountant has no SampledWithoutReplacementDpEvent case:
                                     ε is reported as None with the accountant's reason.

RDP converts to (ε, δ) with dp-accounting's improved bound (Canonne, Kamath & Steinke 2020,
Prop. 12), tighter than the classic  min_α rdp(α) + log(1/δ)/(α-1)  of the moments accountant
that older published figures use. PLD is a pessimistic discretisation (still an upper bound) and is
typically tighter than RDP.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import math
import sys
import threading
import types
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Optional


def _deferred_package(name: str) -> types.ModuleType:
    """The package `name`, its `__init__` run only when an attribute it defines is first read.

    dp-accounting's `__init__` imports all of it: the PLD library (scipy.signal, scipy.stats) and
    `mechanism_calibration` (scipy.optimize), about 1 s of CPU where bytecode is not cached, even
    for an RDP-only command. Deferred, `import dp_accounting.rdp` loads the RDP accountant alone
    (numpy, scipy.special) and each submodule loads when used (`_rdp`, `_pld`, `_calibration`).
    Reading a name the `__init__` defines (`dp_accounting.GaussianDpEvent`, as tensorflow-privacy
    does) runs it in this same module object, so every importer ends up with the complete package.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    module = importlib.util.module_from_spec(spec)
    lock = threading.Lock()

    def __getattr__(attribute: str) -> Any:  # PEP 562: only names the module does not have yet
        if importlib.machinery.PathFinder.find_spec(attribute, module.__path__) is not None:
            raise AttributeError(attribute)  # a submodule: `from name import it` imports it
        with lock:
            if module.__dict__.get("__getattr__") is __getattr__:
                del module.__dict__["__getattr__"]
                spec.loader.exec_module(module)
        return getattr(module, attribute)

    module.__getattr__ = __getattr__
    sys.modules[name] = module
    return module


_deferred_package("dp_accounting")
from dp_accounting import dp_event as events  # noqa: E402  (attrs only, no scipy)
from dp_accounting import privacy_accountant  # noqa: E402

NeighboringRelation = privacy_accountant.NeighboringRelation


def _rdp() -> types.ModuleType:
    """dp-accounting's RDP accountant module (numpy, scipy.special)."""
    return importlib.import_module("dp_accounting.rdp.rdp_privacy_accountant")


def _pld() -> types.ModuleType:
    """dp-accounting's PLD accountant module (scipy.signal, scipy.stats, scipy.fft)."""
    return importlib.import_module("dp_accounting.pld.pld_privacy_accountant")


def _calibration() -> types.ModuleType:
    """dp-accounting's `calibrate_dp_mechanism` (scipy.optimize)."""
    return importlib.import_module("dp_accounting.mechanism_calibration")

# Calibration tolerance on the noise multiplier (absolute).
CALIBRATION_TOLERANCE = 1e-4
# PLD discretisation of the privacy-loss values (dp-accounting's default).
PLD_DISCRETIZATION = 1e-4


class UnsupportedAccountingError(ValueError):
    """No sound accounting exists in dp-accounting for this (accountant, sampling) pair."""


# ---------------------------------------------------------------- sampling schemes


@dataclass(frozen=True)
class SamplingScheme:
    """How the cohort of one round is drawn, and the DpEvent of one round under it.

    Attributes:
      name: registry key (the runner's sampler must match it).
      description: what the sampler does.
      neighboring_relation: the relation the event's analysis requires.
      round_event: `(noise_multiplier, population, clients_per_round) -> DpEvent` of one round,
        where the noise stddev of the summed updates is noise_multiplier * clip.
    """

    name: str
    description: str
    neighboring_relation: NeighboringRelation
    round_event: Callable[[float, int, int], events.DpEvent]


def _poisson_round(
    noise_multiplier: float, population: int, clients_per_round: int
) -> events.DpEvent:
    return events.PoissonSampledDpEvent(
        clients_per_round / population, events.GaussianDpEvent(noise_multiplier)
    )


def _fixed_round(
    noise_multiplier: float, population: int, clients_per_round: int
) -> events.DpEvent:
    # z / 2: replace-one sensitivity of a sum of C-clipped updates is 2C (module docstring).
    return events.SampledWithoutReplacementDpEvent(
        population, clients_per_round, events.GaussianDpEvent(noise_multiplier / 2)
    )


SAMPLINGS: dict[str, SamplingScheme] = {
    scheme.name: scheme
    for scheme in (
        SamplingScheme(
            name="poisson",
            description=(
                "each client joins each round independently with probability "
                "clients_per_round / population"
            ),
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            round_event=_poisson_round,
        ),
        SamplingScheme(
            name="fixed",
            description=(
                "each round, clients_per_round distinct clients drawn uniformly without replacement"
            ),
            neighboring_relation=NeighboringRelation.REPLACE_ONE,
            round_event=_fixed_round,
        ),
    )
}


# ---------------------------------------------------------------- accountants


Ledger = Callable[[events.DpEvent, NeighboringRelation, int, float], list[float]]


def _rdp_ledger(
    round_event: events.DpEvent, relation: NeighboringRelation, rounds: int, delta: float
) -> list[float]:
    """ε after rounds 1..T: RDP composes additively, so round t's curve is t × one round's."""
    rdp_module = _rdp()
    one_round = rdp_module.RdpAccountant(neighboring_relation=relation)
    one_round.compose(round_event)
    orders, rdp = one_round.orders, one_round.rdp
    return [
        float(rdp_module.compute_epsilon(orders, t * rdp, delta)[0])
        for t in range(1, rounds + 1)
    ]


def _pld_ledger(
    round_event: events.DpEvent, relation: NeighboringRelation, rounds: int, delta: float
) -> list[float]:
    """ε after rounds 1..T, composing one round's PLD T times (each an FFT convolution).

    `PLDAccountant.compose` rebuilds the per-round PLD on every call (~0.35 s at the default
    discretisation), so the per-round PLD is taken from an accountant once and composed directly.
    The accountant keeps it in the private `_pld`; if a future dp-accounting renames it, this falls
    back to composing through the accountant (same numbers, slower).
    """
    accountant = _make_pld(relation)
    accountant.compose(round_event)
    per_round = getattr(accountant, "_pld", None)
    if per_round is None:  # pragma: no cover - depends on dp-accounting internals
        epsilons = [accountant.get_epsilon(delta)]
        for _ in range(rounds - 1):
            epsilons.append(accountant.compose(round_event).get_epsilon(delta))
        return [float(e) for e in epsilons]
    composed, epsilons = per_round, [per_round.get_epsilon_for_delta(delta)]
    for _ in range(rounds - 1):
        composed = composed.compose(per_round)
        epsilons.append(composed.get_epsilon_for_delta(delta))
    return [float(e) for e in epsilons]


@dataclass(frozen=True)
class Accountant:
    """A dp-accounting privacy accountant, by name.

    Attributes:
      name: registry key.
      description: method and reference.
      make: `relation -> fresh PrivacyAccountant`.
      ledger: `(round_event, relation, rounds, delta) -> [ε after round 1, ..., ε after round T]`.
    """

    name: str
    description: str
    make: Callable[[NeighboringRelation], privacy_accountant.PrivacyAccountant]
    ledger: Ledger


def _make_rdp(relation: NeighboringRelation) -> privacy_accountant.PrivacyAccountant:
    return _rdp().RdpAccountant(neighboring_relation=relation)


def _make_pld(relation: NeighboringRelation) -> privacy_accountant.PrivacyAccountant:
    return _pld().PLDAccountant(
        relation, value_discretization_interval=PLD_DISCRETIZATION
    )


ACCOUNTANTS: dict[str, Accountant] = {
    accountant.name: accountant
    for accountant in (
        Accountant(
            name="rdp",
            description=(
                "Renyi DP (Mironov 2017), dp-accounting's default orders and RDP-to-DP conversion"
            ),
            make=_make_rdp,
            ledger=_rdp_ledger,
        ),
        Accountant(
            name="pld",
            description=(
                "privacy loss distributions (Koskela et al. 2020; Doroshenko et al. 2022), "
                f"pessimistic discretisation {PLD_DISCRETIZATION:g}"
            ),
            make=_make_pld,
            ledger=_pld_ledger,
        ),
    )
}


# ---------------------------------------------------------------- results and validation


@dataclass(frozen=True)
class EpsilonResult:
    """ε of a training run, or why there is none.

    Attributes:
      epsilon: ε at `delta`; `math.inf` for noise multiplier 0; `None` when the accountant has no
        sound analysis for the sampling scheme (see `reason`).
      delta: the δ of the guarantee.
      accountant: accountant name ("rdp" or "pld").
      sampling: sampling scheme name ("poisson" or "fixed").
      neighboring_relation: the relation the guarantee holds under ("ADD_OR_REMOVE_ONE",
        "REPLACE_ONE"); with clients as records, the privacy unit is one client.
      reason: why `epsilon` is None, else None.
    """

    epsilon: Optional[float]
    delta: float
    accountant: str
    sampling: str
    neighboring_relation: str
    reason: Optional[str] = None

    def to_dict(self) -> dict:
        """Plain dict for run records (JSON: an infinite ε is written as the string "inf")."""
        record = asdict(self)
        if record["epsilon"] is not None and math.isinf(record["epsilon"]):
            record["epsilon"] = "inf"
        return record


def _numpy_types(*names: str) -> tuple[type, ...]:
    """numpy's scalar types `names` if numpy is loaded (a value cannot be one otherwise): the
    checks below need not import numpy."""
    numpy = sys.modules.get("numpy")
    return tuple(getattr(numpy, name) for name in names) if numpy is not None else ()


def _is_int(value) -> bool:
    return isinstance(value, (int, *_numpy_types("integer"))) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return (isinstance(value, (int, float, *_numpy_types("integer", "floating")))
            and not isinstance(value, bool))


def _check_cohort(population, clients_per_round, rounds) -> None:
    """Validate the population, cohort size and number of rounds."""
    if not _is_int(population) or population < 1:
        raise ValueError(f"population must be a positive integer. Found {population!r}.")
    if not _is_int(clients_per_round) or not 1 <= clients_per_round <= population:
        raise ValueError(
            f"clients_per_round must be an integer in [1, population={population}]. "
            f"Found {clients_per_round!r}."
        )
    if not _is_int(rounds) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer. Found {rounds!r}.")


def _check_delta(delta) -> None:
    if not _is_real(delta) or not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1). Found {delta!r}.")


def _lookup_sampling(sampling) -> SamplingScheme:
    if sampling not in SAMPLINGS:
        allowed = ", ".join(SAMPLINGS)
        raise ValueError(f"sampling must be one of {allowed}. Found {sampling!r}.")
    return SAMPLINGS[sampling]


def _lookup_accountant(accountant) -> Accountant:
    if accountant not in ACCOUNTANTS:
        allowed = ", ".join(ACCOUNTANTS)
        raise ValueError(f"accountant must be one of {allowed}. Found {accountant!r}.")
    return ACCOUNTANTS[accountant]


def _check_common(
    population, clients_per_round, rounds, delta, sampling, accountant
) -> tuple[SamplingScheme, Accountant]:
    """Validate the inputs shared by the ε functions; return the registry entries."""
    _check_cohort(population, clients_per_round, rounds)
    _check_delta(delta)
    return _lookup_sampling(sampling), _lookup_accountant(accountant)


def _check_noise_multiplier(noise_multiplier) -> None:
    z = noise_multiplier
    if not (_is_real(z) and math.isfinite(z) and z >= 0):
        raise ValueError(
            f"noise_multiplier must be a nonnegative finite number. Found {noise_multiplier!r}."
        )


def _unsupported_reason(
    scheme: SamplingScheme, accountant: Accountant, event: events.DpEvent
) -> Optional[str]:
    """None if `accountant` can analyse `event`, else dp-accounting's reason, with context."""
    if accountant.make(scheme.neighboring_relation).supports(event):
        return None
    try:
        accountant.make(scheme.neighboring_relation).compose(event)
    except privacy_accountant.UnsupportedEventError as error:
        detail = str(error)
    else:  # pragma: no cover - supports() and compose() disagree
        detail = "supports() returned False"
    return (
        f"dp-accounting's {accountant.name} accountant has no analysis of {scheme.name} sampling "
        f"({type(event).__name__}) under {scheme.neighboring_relation.name}. {detail}"
    )


def dp_event(
    *,
    noise_multiplier: float,
    population: int,
    clients_per_round: int,
    rounds: int,
    sampling: str = "poisson",
) -> events.DpEvent:
    """The `DpEvent` of `rounds` rounds (a `SelfComposedDpEvent` of one round's event)."""
    _check_cohort(population, clients_per_round, rounds)
    scheme = _lookup_sampling(sampling)
    _check_noise_multiplier(noise_multiplier)
    return events.SelfComposedDpEvent(
        scheme.round_event(float(noise_multiplier), population, clients_per_round), rounds
    )


# ---------------------------------------------------------------- public API


def default_delta(population: int) -> float:
    """δ = population^-1.1.

    An (ε, δ) guarantee with δ ≥ 1/n is met by a mechanism that publishes one random client's
    data in full, so δ must be well below 1/n. n^-1.1 is a convention of federated DP work that
    stays below 1/n by a factor n^0.1 growing with the population: 1000 clients → 5.0e-4
    (1/n = 1e-3); 10^6 clients → 2.5e-7 (1/n = 1e-6). Tasks that state δ explicitly override it.
    """
    if not _is_int(population) or population < 2:
        raise ValueError(f"population must be an integer of at least 2. Found {population!r}.")
    return float(population) ** -1.1


def epsilon(
    *,
    noise_multiplier: float,
    population: int,
    clients_per_round: int,
    rounds: int,
    delta: float,
    sampling: str = "poisson",
    accountant: str = "rdp",
) -> EpsilonResult:
    """ε after `rounds` rounds of the sampled Gaussian mechanism at `delta`.

    Args:
      noise_multiplier: z = noise stddev of the summed updates / clip. 0 gives ε = inf.
      population: number of clients n that can be sampled.
      clients_per_round: m (expected, for Poisson) cohort size, 1 ≤ m ≤ n.
      rounds: T ≥ 1.
      delta: δ in (0, 1).
      sampling: key of `SAMPLINGS`; must match the runner's client sampler.
      accountant: key of `ACCOUNTANTS`.

    Returns:
      An `EpsilonResult`; `epsilon` is None with a `reason` when the pair is unsupported.
    """
    scheme, chosen = _check_common(
        population, clients_per_round, rounds, delta, sampling, accountant
    )
    _check_noise_multiplier(noise_multiplier)
    relation = scheme.neighboring_relation.name
    result = EpsilonResult(None, float(delta), accountant, sampling, relation)
    event = dp_event(
        noise_multiplier=noise_multiplier,
        population=population,
        clients_per_round=clients_per_round,
        rounds=rounds,
        sampling=sampling,
    )
    reason = _unsupported_reason(scheme, chosen, event)
    if reason is not None:
        return replace(result, reason=reason)
    if noise_multiplier == 0:
        return replace(result, epsilon=math.inf)
    value = chosen.make(scheme.neighboring_relation).compose(event).get_epsilon(delta)
    return replace(result, epsilon=float(value))


def epsilon_ledger(
    *,
    noise_multiplier: float,
    population: int,
    clients_per_round: int,
    rounds: int,
    delta: float,
    sampling: str = "poisson",
    accountant: str = "rdp",
) -> list[Optional[float]]:
    """[ε after round 1, ..., ε after round T]; all None if the pair is unsupported.

    Linear in T for RDP (one composition, then a scaled RDP curve per round: T = 300 in well under
    a second); for PLD one FFT composition per round (measured ≈ 20 ms per round, T = 300 in 6 s).
    """
    scheme, chosen = _check_common(
        population, clients_per_round, rounds, delta, sampling, accountant
    )
    _check_noise_multiplier(noise_multiplier)
    round_event = scheme.round_event(float(noise_multiplier), population, clients_per_round)
    if _unsupported_reason(scheme, chosen, round_event) is not None:
        return [None] * rounds
    if noise_multiplier == 0:
        return [math.inf] * rounds
    return chosen.ledger(round_event, scheme.neighboring_relation, rounds, delta)


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    population: int,
    clients_per_round: int,
    rounds: int,
    delta: float,
    sampling: str = "poisson",
    accountant: str = "rdp",
    tolerance: float = CALIBRATION_TOLERANCE,
) -> tuple[float, float]:
    """The smallest noise multiplier z whose ε after `rounds` rounds is at most `target_epsilon`.

    ε decreases with z. A bracket [low, high] with ε(low) > target ≥ ε(high) is found by
    halving and doubling from z = 1; `dp_accounting.calibrate_dp_mechanism` (Brent's method)
    then returns z within `tolerance` of the exact crossing z*, adjusted so that ε(z) ≤ target;
    hence ε(z) ≤ target < ε(z - 2·tolerance).

    Returns:
      (noise_multiplier, achieved ε).

    Raises:
      ValueError: invalid inputs.
      UnsupportedAccountingError: the accountant cannot analyse the sampling scheme.
    """
    scheme, chosen = _check_common(
        population, clients_per_round, rounds, delta, sampling, accountant
    )
    if not (_is_real(target_epsilon) and math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ValueError(
            f"target_epsilon must be a positive finite number. Found {target_epsilon!r}."
        )
    if not _is_real(tolerance) or not tolerance > 0:
        raise ValueError(f"tolerance must be positive. Found {tolerance!r}.")

    def make_event(z: float) -> events.DpEvent:
        one_round = scheme.round_event(z, population, clients_per_round)
        return events.SelfComposedDpEvent(one_round, rounds)

    reason = _unsupported_reason(scheme, chosen, make_event(1.0))
    if reason is not None:
        raise UnsupportedAccountingError(reason)

    return _calibrate(lambda: chosen.make(scheme.neighboring_relation), make_event,
                      target_epsilon, delta, tolerance)


class _RememberingAccountant:
    """The fresh accountant `calibrate_dp_mechanism` asks for, answering ε from a shared cache.

    The bracket search, Brent's method (which starts at the bracket's ends) and the final checks
    evaluate several noise multipliers more than once; each evaluation is a full RDP or PLD
    composition. The same event gives the same ε, so the calibrated z is unchanged.
    """

    def __init__(self, epsilon_of: Callable[[events.DpEvent, float], float]) -> None:
        self._epsilon_of = epsilon_of
        self._event: Optional[events.DpEvent] = None

    @property
    def ledger(self) -> events.DpEvent:
        return events.NoOpDpEvent() if self._event is None else self._event

    def compose(self, event: events.DpEvent, count: int = 1) -> "_RememberingAccountant":
        if self._event is not None or count != 1:  # pragma: no cover - not how calibration calls it
            raise NotImplementedError("one event, composed once, per fresh accountant")
        self._event = event
        return self

    def get_epsilon(self, target_delta: float) -> float:
        return self._epsilon_of(self._event, target_delta)


def _calibrate(make_accountant: Callable[[], privacy_accountant.PrivacyAccountant],
               make_event: Callable[[float], events.DpEvent], target_epsilon: float,
               delta: float, tolerance: float) -> tuple[float, float]:
    """(z, ε(z)): dp-accounting's `calibrate_dp_mechanism` in the bracket `_bracket` finds, every
    ε computed once (`_RememberingAccountant`)."""
    known: dict[tuple[events.DpEvent, float], float] = {}

    def epsilon_of(event: events.DpEvent, target_delta: float) -> float:
        if (event, target_delta) not in known:
            known[event, target_delta] = make_accountant().compose(event).get_epsilon(target_delta)
        return known[event, target_delta]

    def eps(z: float) -> float:
        return epsilon_of(make_event(z), delta)

    low, high = _bracket(eps, target_epsilon)
    calibration = _calibration()
    z = calibration.calibrate_dp_mechanism(
        lambda: _RememberingAccountant(epsilon_of), make_event, target_epsilon, delta,
        bracket_interval=calibration.ExplicitBracketInterval(low, high), tol=tolerance,
    )
    return float(z), float(eps(z))


def _bracket(eps: Callable[[float], float], target: float) -> tuple[float, float]:
    """(low, high) with eps(low) > target ≥ eps(high), searching by factors of 2 from z = 1."""
    high = 1.0
    while eps(high) > target:
        high *= 2
        if high > 2.0**20:
            raise ValueError(f"No noise multiplier up to 2**20 reaches target_epsilon={target}.")
    low = high / 2
    while eps(low) <= target:
        high, low = low, low / 2
        if low < 2.0**-20:
            raise ValueError(f"target_epsilon={target} is met by noise multipliers down to 2**-20.")
    return low, high


# ---------------------------------------------------------------- DP-FTRL (tree aggregation)

TREE_SAMPLING = "shuffle"


def check_tree_participation(*, population: int, clients_per_round: int, rounds: int,
                             sampling: str) -> None:
    """Refuse tree settings whose accounting would not hold.

    The tree analysis (Kairouz et al. 2021, appendix D; `SingleEpochTreeAggregationDpEvent`)
    assumes each client contributes at most once to the tree. The runner's `shuffle` sampler walks
    through one random permutation of the clients, so that holds while
    rounds × clients_per_round ≤ population (trees are not restarted).
    """
    _check_cohort(population, clients_per_round, rounds)
    if sampling != TREE_SAMPLING:
        raise ValueError(
            f"privacy.mechanism = 'tree' needs algorithm.sampling = '{TREE_SAMPLING}' (each client "
            f"at most once per tree). Found {sampling!r}."
        )
    if rounds * clients_per_round > population:
        raise ValueError(
            f"privacy.mechanism = 'tree' lets each client take part at most once: "
            f"algorithm.rounds × algorithm.clients_per_round = {rounds} × {clients_per_round} = "
            f"{rounds * clients_per_round} is larger than the {population} clients. Lower one of them."
        )


def tree_epsilon_ledger(*, noise_multiplier: float, population: int, clients_per_round: int,
                        rounds: int, delta: float, sampling: str = TREE_SAMPLING,
                        accountant: str = "rdp") -> tuple[list[Optional[float]], Optional[str]]:
    """ε after each round of single-pass DP-FTRL, and why ε is missing when it is.

    Round t's ε is that of one tree with t steps (`SingleEpochTreeAggregationDpEvent`), under the
    REPLACE_SPECIAL relation the analysis uses (a client's data replaced by a zero update).
    Only the RDP accountant analyses the event.
    """
    check_tree_participation(population=population, clients_per_round=clients_per_round,
                             rounds=rounds, sampling=sampling)
    _check_delta(delta)
    _check_noise_multiplier(noise_multiplier)
    if accountant != "rdp":
        return [None] * rounds, f"dp-accounting analyses tree aggregation with RDP only (not {accountant})"
    if noise_multiplier == 0:
        return [math.inf] * rounds, "noise multiplier 0: ε is infinite"
    ledger: list[Optional[float]] = []
    for steps in range(1, rounds + 1):
        rdp = _rdp().RdpAccountant(
            neighboring_relation=NeighboringRelation.REPLACE_SPECIAL
        )
        rdp.compose(events.SingleEpochTreeAggregationDpEvent(float(noise_multiplier), steps))
        ledger.append(float(rdp.get_epsilon(delta)))
    return ledger, None


def calibrate_tree_noise_multiplier(*, target_epsilon: float, population: int,
                                    clients_per_round: int, rounds: int, delta: float,
                                    sampling: str = TREE_SAMPLING, accountant: str = "rdp",
                                    tolerance: float = CALIBRATION_TOLERANCE) -> tuple[float, float]:
    """The smallest tree noise multiplier whose single-pass DP-FTRL ε is at most the target."""
    check_tree_participation(population=population, clients_per_round=clients_per_round,
                             rounds=rounds, sampling=sampling)
    _check_delta(delta)
    if accountant != "rdp":
        raise UnsupportedAccountingError(
            f"dp-accounting analyses tree aggregation with RDP only (not {accountant})"
        )

    def make_accountant() -> privacy_accountant.PrivacyAccountant:
        return _rdp().RdpAccountant(
            neighboring_relation=NeighboringRelation.REPLACE_SPECIAL
        )

    def make_event(z: float) -> events.DpEvent:
        return events.SingleEpochTreeAggregationDpEvent(z, rounds)

    return _calibrate(make_accountant, make_event, target_epsilon, delta, tolerance)


# ---------------------------------------------------------------- analyses: ε for a mechanism

Ledger = tuple[list[Optional[float]], Optional[str]]


def _sampled_gaussian_ledger(*, noise_multiplier: float, rounds: int, **common) -> Ledger:
    """ε after each round of the sampled Gaussian mechanism, for samplers with a DpEvent."""
    if noise_multiplier == 0:
        return [None] * rounds, "no noise: not differentially private (ε is infinite)"
    if common["sampling"] not in SAMPLINGS:
        return [None] * rounds, (
            f"dp-accounting has no event for the Gaussian mechanism under {common['sampling']!r} "
            f"sampling; use 'poisson' or 'fixed' for a reported ε"
        )
    ledger = epsilon_ledger(noise_multiplier=noise_multiplier, rounds=rounds, **common)
    return ledger, epsilon(noise_multiplier=noise_multiplier, rounds=rounds, **common).reason


def _sampled_gaussian_final(*, noise_multiplier: float, **common) -> tuple[Optional[float], Optional[str]]:
    """ε after the last round only (what `privacy epsilon` prints; no per-round ledger)."""
    if common["sampling"] not in SAMPLINGS:
        return None, f"no accounting of the Gaussian mechanism under {common['sampling']!r} sampling"
    result = epsilon(noise_multiplier=noise_multiplier, **common)
    return result.epsilon, result.reason


def _tree_final(**arguments) -> tuple[Optional[float], Optional[str]]:
    ledger, reason = tree_epsilon_ledger(**arguments)
    return ledger[-1], reason


@dataclass(frozen=True)
class Analysis:
    """How ε is computed for a family of mechanisms (a mechanism names its analysis:
    `mechanism_registry.Mechanism.analysis`). Every function takes the keywords noise_multiplier
    (or target_epsilon), rounds, population, clients_per_round, delta, sampling, accountant.

    ledger: ε after each round and why ε is missing where it is; final: ε after the last round;
    calibrate: the smallest noise multiplier meeting a target ε, and the ε it gives.
    """

    name: str
    ledger: Callable[..., Ledger]
    final: Callable[..., tuple[Optional[float], Optional[str]]]
    calibrate: Callable[..., tuple[float, float]]


ANALYSES: dict[str, Analysis] = {
    "sampled-gaussian": Analysis("sampled-gaussian", _sampled_gaussian_ledger,
                                 _sampled_gaussian_final, calibrate_noise_multiplier),
    "tree": Analysis("tree", tree_epsilon_ledger, _tree_final, calibrate_tree_noise_multiplier),
}


def analysis_of(mechanism) -> Analysis:
    """The ε analysis of a registered mechanism (`mechanism_registry.Mechanism.analysis`: a name
    in `ANALYSES`, or the mechanism's own `Analysis`)."""
    analysis = mechanism.analysis
    return ANALYSES[analysis] if isinstance(analysis, str) else analysis


def mechanism_ledger(mechanism, params, rounds: int, common: dict) -> Ledger:
    """ε after each round of a registered mechanism (`mechanism_registry.Mechanism`) with
    validated `params`; [None, ...] and the mechanism's accounting note where no analysis applies."""
    noise = mechanism.accounted_noise_multiplier(params)
    if noise is None:
        return [None] * rounds, mechanism.accounting_note
    return analysis_of(mechanism).ledger(noise_multiplier=noise, rounds=rounds, **common)
