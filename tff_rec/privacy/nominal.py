"""DP calibrated for a nominal cohort: train C clients a round, add the noise a C_nom cohort would get.

Production DP-FedAvg runs cohorts of thousands out of populations of millions; a 2-core machine
cannot train 5,000 clients a round. As pfl-research does, a task can ask for the noise and ε of
the nominal setting while it trains a smaller cohort:

    privacy.noise_cohort_size = C_nom   the cohort the noise and ε are calibrated for
    privacy.population        = P       the population ε is accounted over
                                        (default: the clients the partition yields)

Derivation (why scaling the aggregator's noise multiplier by C / C_nom is the sound emulation).
The fixed-size sum query of DP-FedAvg releases, for a cohort S of expected size m,

    avg = (Σ_{i∈S} clip(Δ_i) + N(0, (z·c)² I)) / m

with clip bound c and noise multiplier z. The noise on the released average has standard
deviation σ_avg = z·c / m per coordinate. The nominal round (m = C_nom) adds σ_nom = z·c / C_nom.
The simulated round averages C clients (m = C, the fixed denominator of the sum query), so its
aggregator must add sum noise of stddev z'·c with z'·c / C = z·c / C_nom, i.e.

    z' = z · C / C_nom.

Then avg_sim = (Σ_{i∈S_C} clip(Δ_i)) / C + N(0, σ_nom²): the first term is an unbiased estimate of
the nominal cohort's mean clipped update (each is a uniform sample of the same population) and the
second is exactly the nominal noise. Nothing else changes: the clip, the denominator C and the
sampler are those of the simulated run. The same holds, term by term, for

  gaussian  z' = z·C/C_nom on the update sum.
  adaptive  the total z is split between the update sum and the clipped count for the nominal
            cohort (z_v and s, with the default count stddev s = 0.05·C_nom), then both sum
            stddevs are scaled by C/C_nom. The clipped-fraction estimate (count + N(0, s'²)) / C
            then has noise s/C_nom, as in a nominal round, so the clip adapts under nominal noise.
  tree      DP-FTRL's tree noise is linear in z (each node N(0, (z·c)²)), so z' = z·C/C_nom gives
            every prefix sum of averages the nominal noise. Its ε does not depend on the cohort,
            but the single-pass condition must hold for the nominal setting:
            rounds × C_nom ≤ population.

Which mechanisms take a nominal cohort is declared by each registry entry
(`mechanism_registry.Mechanism.nominal_cohort`, with `nominal_refusal` saying why not), so a
plugin mechanism whose builder scales its noise by C / C_nom (and takes `noise_cohort_size`) can
declare it too; the default is refused, "the scaling of its noise to a nominal cohort is not
derived". The built-ins gaussian, adaptive and tree declare it (above). Refused (the claim "the
noise a C_nom cohort gets" would be wrong or empty):
  none, clip  no noise to calibrate.
  ddp         its noise is drawn by each client (Skellam shares of a secure modular sum whose bit
              width, scaling and rounding are set for the clients that actually take part), so the
              noise on the aggregate is not a scalar multiple one can rescale; its ε is not
              accounted either.

Sampling. `fixed` and `poisson` are both sound: ε is accounted for the nominal scheme
(C_nom of P without replacement; or each client with probability q = C_nom / P), and in both the
mechanism's denominator is the expected cohort size, which is what the noise is calibrated to.
Under Poisson the simulated cohort's size varies relatively more (±√C against ±√C_nom), which is
part of the sampling variance the simulation over-states (below). `shuffle` has no Gaussian event
(ε is not reported, as without the simulation), and is DP-FTRL's sampler.

What the simulation shows and what it does not:
  - It shows the utility a model reaches when every round's average carries the noise a C_nom
    cohort's round would carry: the signal-to-noise ratio of the nominal setting.
  - The model is trained on C clients a round, not C_nom: its updates have more variance from
    sampling and it sees less data per round than a real C_nom round would; a real run at C_nom
    would usually do at least as well.
  - ε is the accountant's for the nominal setting (C_nom of P clients, the task's rounds and δ).
    It is not a property of the simulated run itself, whose own guarantee (C of the dataset's
    clients with noise z') is weaker.
Records mark such runs (`privacy.simulated`), and tables and plots label their ε
(`ε=2.00 (noise for C=5000)`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from tff_rec.privacy.mechanism_registry import nominal_mechanisms, nominal_refusal

KEYS = ("noise_cohort_size", "population")


class NominalError(ValueError):
    """A nominal-cohort setting whose claim would be wrong; `key` is the privacy key to blame."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class NominalCohort:
    """The nominal setting of a simulated run.

    Attributes:
      noise_cohort_size: C_nom, the cohort the noise and ε are calibrated for.
      population: P, the population ε is accounted over.
      clients_per_round: C, the cohort the simulation trains.
      dataset_clients: the clients the task's partition yields.
    """

    noise_cohort_size: int
    population: int
    clients_per_round: int
    dataset_clients: int

    @property
    def noise_scale(self) -> float:
        """C / C_nom: the factor on the aggregator's noise multiplier(s)."""
        return self.clients_per_round / self.noise_cohort_size

    def label(self) -> str:
        return label(self.noise_cohort_size, self.population, self.dataset_clients)

    def to_record(self, noise_multiplier: Optional[float]) -> dict[str, Any]:
        """The record's `simulated` entry."""
        return {
            "noise_cohort_size": self.noise_cohort_size,
            "population": self.population,
            "clients_per_round": self.clients_per_round,
            "dataset_clients": self.dataset_clients,
            "aggregator_noise_scale": self.noise_scale,
            "aggregator_noise_multiplier": (
                None if noise_multiplier is None else noise_multiplier * self.noise_scale
            ),
            "label": self.label(),
            "meaning": (
                "noise and ε calibrated for the nominal cohort noise_cohort_size out of population "
                "clients; the model was trained on clients_per_round clients a round: ε is the "
                "accountant's for the nominal setting, not a property of this run"
            ),
        }


def label(noise_cohort_size: Any, population: Any = None, dataset_clients: Any = None) -> str:
    """'noise for C=5000' (with ', N=10^6' when the population is not the dataset's)."""
    text = f"noise for C={int(noise_cohort_size)}"
    if population is not None and population != dataset_clients:
        text += f", N={int(population)}"
    return text


def is_set(privacy: Mapping[str, Any]) -> bool:
    """Whether a resolved privacy section asks for a nominal setting."""
    return any(privacy.get(key) is not None for key in KEYS)


def check_task(privacy: Mapping[str, Any], algorithm: Mapping[str, Any]) -> None:
    """The checks that need no data. Raises NominalError naming the key."""
    if not is_set(privacy):
        return
    mechanism = privacy["mechanism"]
    cohort_size, population = privacy.get("noise_cohort_size"), privacy.get("population")
    key = "noise_cohort_size" if cohort_size is not None else "population"
    why = nominal_refusal(mechanism)
    if why is not None:
        raise NominalError(key, (
            f"key 'privacy.{key}' cannot be used with privacy.mechanism = {mechanism!r}: {why}. "
            f"Allowed: privacy.mechanism = {' | '.join(nominal_mechanisms())}."))
    clients = algorithm["clients_per_round"]
    if cohort_size is not None and cohort_size < clients:
        raise NominalError("noise_cohort_size", (
            f"key 'privacy.noise_cohort_size' ({cohort_size}) is smaller than "
            f"algorithm.clients_per_round ({clients}): the simulation would add less noise than "
            f"the cohort it trains gets. Allowed: at least {clients}."))
    nominal = cohort_size if cohort_size is not None else clients
    if population is not None and population < nominal:
        what = "privacy.noise_cohort_size" if cohort_size is not None else "algorithm.clients_per_round"
        raise NominalError("population", (
            f"key 'privacy.population' ({population}) is smaller than {what} ({nominal}): a "
            f"cohort cannot be larger than its population. Allowed: at least {nominal}."))
    if mechanism == "tree" and population is not None and algorithm["rounds"] * nominal > population:
        raise NominalError("population", (
            f"key 'privacy.population' ({population}) is too small for DP-FTRL's single pass at "
            f"the nominal cohort: algorithm.rounds × cohort = {algorithm['rounds']} × {nominal} = "
            f"{algorithm['rounds'] * nominal}. Allowed: at least {algorithm['rounds'] * nominal}."))


def resolve(privacy: Mapping[str, Any], algorithm: Mapping[str, Any],
            dataset_clients: int) -> Optional[NominalCohort]:
    """The nominal setting of a run on `dataset_clients` clients, or None when none is asked.

    Raises NominalError for the checks of `check_task` and those that need the data: the
    population must hold the dataset's clients and the nominal cohort (and, for DP-FTRL, its
    single pass).
    """
    check_task(privacy, algorithm)
    if not is_set(privacy):
        return None
    clients = algorithm["clients_per_round"]
    cohort_size = privacy.get("noise_cohort_size") or clients
    population = privacy.get("population")
    if population is not None and population < dataset_clients:
        raise NominalError("population", (
            f"key 'privacy.population' ({population}) is smaller than the {dataset_clients} "
            f"clients the partition yields: the simulated clients must be part of the accounted "
            f"population. Allowed: at least {dataset_clients} (or leave it unset)."))
    population = population if population is not None else dataset_clients
    if cohort_size > population:
        raise NominalError("noise_cohort_size", (
            f"key 'privacy.noise_cohort_size' ({cohort_size}) is larger than the population "
            f"({population} clients, the partition's; set privacy.population to simulate a larger "
            f"one). Allowed: at most {population}."))
    if privacy["mechanism"] == "tree" and algorithm["rounds"] * cohort_size > population:
        raise NominalError("noise_cohort_size", (
            f"key 'privacy.noise_cohort_size' ({cohort_size}) breaks DP-FTRL's single pass over "
            f"the population ({population}): algorithm.rounds × noise_cohort_size = "
            f"{algorithm['rounds'] * cohort_size}. Allowed: at most "
            f"{population // algorithm['rounds']}, or a larger privacy.population."))
    return NominalCohort(cohort_size, population, clients, dataset_clients)
