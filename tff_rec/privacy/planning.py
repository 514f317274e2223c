"""A run's privacy plan: mechanism, accountant and client sampler bound into one object.

As pfl-research binds them, the plan holds what ε depends on together — the mechanism and its
(calibrated) parameters, the ε analysis that matches it (DP-FTRL's tree analysis included, through
`accounting.analysis_of`), δ, and the sampler that draws the cohorts — so the ε a record states is
always the ε of the cohorts the run drew. Resolved before training (`tff_rec.plan`); no
TensorFlow is imported here.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

from tff_rec.errors import SpecError
from tff_rec.privacy import accounting
from tff_rec.privacy import nominal as nominal_cohort
from tff_rec.privacy.mechanism_registry import get_mechanism, validate_params
from tff_rec.sampling import CohortSampler


@dataclasses.dataclass(frozen=True)
class PrivacyPlan:
    """The DP setting a run trains with, and the ε each round costs."""

    mechanism: str
    params: dict[str, Any]
    target_epsilon: Optional[float]  # when set, params["noise_multiplier"] was calibrated to it
    delta: Optional[float]
    accountant: str
    sampling: str
    population: int
    clients_per_round: int
    ledger: tuple[Optional[float], ...]
    reason: Optional[str]  # why ε is not reported, when it is not
    # Noise and ε calibrated for a nominal cohort (privacy/nominal.py): then `population` is the
    # accounted one, `clients_per_round` the trained cohort, and ε is for the nominal setting.
    nominal: Optional[nominal_cohort.NominalCohort] = None
    # The sampler that draws the trained cohorts (over the partition's clients; its scheme is the
    # accountant's `sampling`), and with a target ε the ε the calibration achieved.
    sampler: Optional[CohortSampler] = None
    calibrated_epsilon: Optional[float] = None

    @property
    def noise_cohort_size(self) -> Optional[int]:
        """C_nom when the noise is calibrated for a nominal cohort, else None."""
        return None if self.nominal is None else self.nominal.noise_cohort_size

    @property
    def accounted_cohort(self) -> int:
        """The cohort ε is accounted for: the nominal one, or the trained one."""
        return self.clients_per_round if self.nominal is None else self.nominal.noise_cohort_size

    def calibration(self) -> Optional[dict[str, Any]]:
        """What the calibration to `privacy.target_epsilon` chose (None without a target):
        `tasks describe` and `data partition` show it."""
        if self.target_epsilon is None:
            return None
        return {"target_epsilon": self.target_epsilon,
                "noise_multiplier": self.params["noise_multiplier"],
                "epsilon": self.calibrated_epsilon, "delta": self.delta,
                "accountant": self.accountant, "population": self.population,
                "clients_per_round": self.accounted_cohort}

    def to_record(self) -> dict[str, Any]:
        simulated = {} if self.nominal is None else {
            "simulated": self.nominal.to_record(self.params.get("noise_multiplier"))}
        return {
            "mechanism": self.mechanism, "params": self.params,
            "target_epsilon": self.target_epsilon, "delta": self.delta,
            "accountant": self.accountant, "sampling": self.sampling,
            "privacy_unit_population": self.population,
            "clients_per_round": self.clients_per_round,
            "epsilon": self.ledger[-1] if self.ledger else None,
            "epsilon_by_round": list(self.ledger), "reason": self.reason, **simulated,
        }


def plan_privacy(task: Any, population: int, seed: int = 0) -> Optional[PrivacyPlan]:
    """Resolve noise (calibrating to a target ε if asked), δ and the per-round ε ledger of
    `task` trained on a partition of `population` clients at task seed `seed` (None: no DP).

    ε comes from the analysis that matches the mechanism and the runner's sampler; where none
    does, the ledger holds None and `reason` says why (no number is made up).

    With `privacy.noise_cohort_size` / `privacy.population` (`privacy/nominal.py`), the noise is
    calibrated and ε accounted for the nominal cohort out of the nominal population; δ's default
    comes from the nominal population.
    """
    section, algorithm = task["privacy"], task["algorithm"]
    if section["mechanism"] == "none":
        return None
    try:
        nominal = nominal_cohort.resolve(section, algorithm, population)
    except nominal_cohort.NominalError as error:
        raise SpecError(f"{task.source}: {error}") from None
    accounted_population = population if nominal is None else nominal.population
    accounted_cohort = algorithm["clients_per_round"] if nominal is None else nominal.noise_cohort_size
    mechanism = get_mechanism(section["mechanism"])
    params = validate_params(section["mechanism"], section["params"])
    delta = section["delta"] or accounting.default_delta(accounted_population)
    common = dict(
        population=accounted_population, clients_per_round=accounted_cohort,
        delta=delta, sampling=algorithm["sampling"], accountant=section["accountant"],
    )
    calibrated = None
    if section["target_epsilon"] is not None:
        params["noise_multiplier"], calibrated = _calibrate(
            accounting.analysis_of(mechanism), float(section["target_epsilon"]),
            algorithm["rounds"], **common)
    ledger, reason = accounting.mechanism_ledger(mechanism, params, algorithm["rounds"], common)
    return PrivacyPlan(
        mechanism=section["mechanism"], params=params, target_epsilon=section["target_epsilon"],
        delta=delta,
        accountant=section["accountant"], sampling=algorithm["sampling"],
        population=accounted_population, clients_per_round=algorithm["clients_per_round"],
        ledger=tuple(ledger), reason=reason, nominal=nominal,
        sampler=CohortSampler(algorithm["sampling"], population, algorithm["clients_per_round"], seed),
        calibrated_epsilon=calibrated,
    )


@functools.lru_cache(maxsize=None)
def _calibrate(analysis: Any, target_epsilon: float, rounds: int, *, population: int,
               clients_per_round: int, delta: float, sampling: str,
               accountant: str) -> tuple[float, float]:
    """(noise multiplier, ε achieved) for the target: calibrated once per distinct setting, so
    a study's variants (and `tasks describe` over them) that share one reuse it."""
    return analysis.calibrate(target_epsilon=target_epsilon, population=population,
                              clients_per_round=clients_per_round, rounds=rounds, delta=delta,
                              sampling=sampling, accountant=accountant)
