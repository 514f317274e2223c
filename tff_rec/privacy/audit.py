"""Privacy audit: an empirical lower bound on ε beside the accountant's ε, from one run.

The DP guarantee of a run is a claim about its aggregator: the task's `privacy.mechanism`, built by
`mechanisms.build_aggregator` as training builds it, run through TFF for the task's rounds, with
the cohorts the runner's sampler draws (`sampling.SAMPLERS`, seeded by the task seed).
This module plays the one-run membership game of Steinke, Nasr & Jagielski (2023, "Privacy
Auditing with One (1) Training Run", NeurIPS; arXiv:2305.08846) against exactly that aggregator:

1. Canaries. m of the population's N client slots (m ≤ N) are canaries. Canary i's update is a
   Dirac vector: `canary_norm` clips (default 1000, ≫ the clip) along coordinate i of a
   d = m dimensional update, so canaries are orthogonal to each other. A secret fair coin S_i per
   canary (seeded, kept by the auditor) says whether it is in the data:
     - poisson sampling (ADD_OR_REMOVE_ONE): an "out" canary is absent: if the sampler draws its
       slot, nobody takes part in its place;
     - fixed / shuffle sampling (REPLACE_ONE; tree: REPLACE_SPECIAL): an "out" canary is replaced
       by a client with a zero update (the replacement those relations account for).
   The other N - m slots are benign clients sending fresh random updates of norm `benign_norm`
   clips every round. The guarantee holds for arbitrary updates of the other clients and of the
   canary, so neither the reduced dimension d nor synthetic benign updates weaken the test: they
   choose one dataset among all those the claim covers (the worst case for the auditor is any).
2. Statistic. The auditor sees every round's released aggregate (white-box, per-round model
   deltas) and scores canary i by the sum over rounds of the aggregate's i-th coordinate (its dot
   product with the canary's unit direction). It never sees who was sampled.
3. Guesses. It guesses "in" for the k₊ highest scores, "out" for the k₋ lowest, abstains otherwise
   (ties broken by a seeded permutation independent of the coins). (k₊, k₋) runs over the fixed
   grid `GUESS_GRID` (fractions of m) and each point is tested at level (1 - confidence)/|grid|
   (Bonferroni), so reporting the best point keeps the stated confidence.
4. Bound. With r guesses of which v are correct, ε_lb is the largest ε such that the
   (ε, δ)-DP null hypothesis leaves P[≥ v correct] < 1 - confidence, with the paper's
   p-value (Steinke et al. 2023, Theorem 3.1 / Proposition 5.2 and the code of their appendix):
       p(ε) = P[Binomial(r, q) ≥ v] + 2 m δ · max_{i=1..v} P[v > Binomial(r, q) ≥ v - i] / i,
       q = e^ε / (1 + e^ε).
   A mechanism that is (ε, δ)-DP yields ε_lb ≤ ε except with probability 1 - confidence.

δ of the audit: the δ term grows as 2mδ, so the task's δ (N^-1.1, ~5e-4 for 1000 clients) would
leave nothing to test with m = 1000. The audit tests the point (ε_acc(δ_a), δ_a) of the same
privacy curve, δ_a = `privacy.audit.delta` (default 1e-6), and `epsilon_accounted` is the
accountant's ε for the task's mechanism, noise, sampling and rounds AT δ_a; the task's own claim
(ε at its δ) is reported beside it as `epsilon_task`.

What it can show: a one-run audit is loose (with m canaries, ε_lb is at most about
ln(m / (2 ln(1/α)))), so a sound mechanism gives ε_lb well below ε_acc, and a broken one is
caught when its leak exceeds the claim by that margin (`broken.py`: no noise, no clip, noise
before clipping, a weighted average of clipped updates). It does not prove a mechanism private.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

from tff_rec.spec import SCHEMA

_DEFAULTS = {key: field.default for key, field in SCHEMA["privacy.audit"].items()}  # one source
# (k₊, k₋) as fractions of m: guess "in" for the top k₊ scores, "out" for the bottom k₋.
GUESS_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
GUESS_GRID = tuple((plus, minus) for plus in GUESS_FRACTIONS for minus in (0.0, plus))
_TAG = 0xA0D17  # separates the auditor's random streams from the run's
_COINS, _BENIGN, _TIES = 0, 1, 2


# ---------------------------------------------------------------- the bound (no TensorFlow)


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[≥ v of r guesses correct] allowed by (ε, δ)-DP with m canaries (Steinke et al. 2023).

    p = P[Binomial(r, q) ≥ v] + 2mδ · max_{i=1..v} P[v > Binomial(r, q) ≥ v - i] / i,
    q = e^ε / (1 + e^ε) (the accuracy of ε-DP randomized response). Capped at 1.
    """
    _check_counts(m, r, v)
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a nonnegative finite number. Found {epsilon!r}.")
    if not 0 <= delta <= 1:
        raise ValueError(f"delta must be in [0, 1]. Found {delta!r}.")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], P[B = v-2], ..., P[B = 0]
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(beta + 2 * m * delta * alpha, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, *, delta: float, confidence: float) -> float:
    """The largest ε whose p-value stays below 1 - confidence (0 when even ε = 0 does not).

    Bisection to 1e-9 relative; p-value is nondecreasing in ε. With δ = 0 and all r guesses
    correct it is the closed form ln(a / (1 - a)), a = (1 - confidence)^(1/r).
    """
    _check_counts(m, r, v)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1). Found {confidence!r}.")
    level = 1.0 - confidence
    if r == 0 or p_value(m, r, v, 0.0, delta) >= level:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) < level:
        low, high = high, 2 * high
        if high > 1e3:  # only at r ~ e^1000: cannot happen with finite m
            return low
    while high - low > 1e-9 * max(1.0, high):
        middle = (low + high) / 2
        if p_value(m, r, v, middle, delta) < level:
            low = middle
        else:
            high = middle
    return low


def _check_counts(m: int, r: int, v: int) -> None:
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= correct v <= guesses r <= canaries m. Found v={v}, r={r}, m={m}.")


@dataclasses.dataclass(frozen=True)
class Guesses:
    """The best point of the guess grid: ε_lb, with k₊ "in" and k₋ "out" guesses, v correct."""

    epsilon_lower_bound: float
    guesses: int
    correct: int
    k_plus: int
    k_minus: int


def best_guesses(scores: np.ndarray, coins: np.ndarray, *, delta: float, confidence: float,
                 tie_seed: Sequence[int] = (0,)) -> Guesses:
    """ε_lb from per-canary scores and the secret coins (True = in), over `GUESS_GRID` with a
    Bonferroni correction (each point tested at (1 - confidence) / |grid|)."""
    scores, coins = np.asarray(scores, float), np.asarray(coins, bool)
    m = scores.size
    if coins.shape != scores.shape or m < 2:
        raise ValueError(f"need one coin per score and at least 2 canaries. Found {m} scores, "
                         f"{coins.size} coins.")
    ties = np.random.default_rng(list(tie_seed)).permutation(m)
    order = np.lexsort((ties, scores))  # ascending score; ties by a coin-independent permutation
    corrected = 1.0 - (1.0 - confidence) / len(GUESS_GRID)
    best = Guesses(0.0, 0, 0, 0, 0)
    for plus, minus in GUESS_GRID:
        k_plus, k_minus = max(1, int(plus * m)), int(minus * m)
        k_minus = min(k_minus, m - k_plus)
        correct = int(coins[order[m - k_plus:]].sum()) + int((~coins[order[:k_minus]]).sum())
        bound = epsilon_lower_bound(m, k_plus + k_minus, correct, delta=delta, confidence=corrected)
        if bound > best.epsilon_lower_bound:
            best = Guesses(bound, k_plus + k_minus, correct, k_plus, k_minus)
    return best


# ---------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    """`[privacy.audit]` of a task file (every key optional).

    Attributes:
      canaries: m, canary slots among the population (2 ≤ m ≤ population).
      confidence: of the lower bound (0 < c < 1).
      delta: δ_a of the tested claim (module docstring).
      fault: `broken.FAULTS`: a deliberately broken aggregator (negative control), or "none".
      canary_norm: norm of a canary's update, in clips (initial clip for adaptive).
      benign_norm: norm of a benign client's update, in clips.
      canary_weight: a canary's example weight (benign clients: 1), read by weighted faults only.
    """

    canaries: int = _DEFAULTS["canaries"]
    confidence: float = _DEFAULTS["confidence"]
    delta: float = _DEFAULTS["delta"]
    fault: str = _DEFAULTS["fault"]
    canary_norm: float = _DEFAULTS["canary_norm"]
    benign_norm: float = _DEFAULTS["benign_norm"]
    canary_weight: float = _DEFAULTS["canary_weight"]

    @classmethod
    def from_task(cls, task: Any) -> "AuditSettings":
        """The settings of a resolved task's `[privacy.audit]` (validated by `spec`)."""
        return cls(**task["privacy.audit"])


# ---------------------------------------------------------------- the game (TFF)


@dataclasses.dataclass(frozen=True)
class Game:
    """What one audit run produced: per-canary scores and the secret coins."""

    scores: np.ndarray
    coins: np.ndarray
    cohort_sizes: tuple[int, ...]


def reference_clip(params: Mapping[str, Any]) -> float:
    """The clip the canary and benign norms are measured in (initial clip when adaptive)."""
    for key in ("clip", "initial_clip"):
        if params.get(key) is not None:
            return float(params[key])
    return 1.0


def _aggregator(mechanism: str, params: Mapping[str, Any], fault: str, clients_per_round: int,
                noise_seed: int):
    from tff_rec.privacy import broken, mechanisms

    if fault != "none":
        return broken.build_faulty_aggregator(
            fault, mechanism, clients_per_round=clients_per_round, noise_seed=noise_seed,
            params=dict(params))
    aggregator = mechanisms.build_aggregator(
        mechanism, clients_per_round=clients_per_round, noise_seed=noise_seed, **params)
    if aggregator is None:
        raise ValueError(f"privacy.mechanism = {mechanism!r} has no DP aggregator: nothing to audit.")
    return aggregator


def play(mechanism: str, params: Mapping[str, Any], *, population: int, clients_per_round: int,
         rounds: int, sampling: str, seed: int, noise_seed: int,
         settings: AuditSettings = AuditSettings()) -> Game:
    """Run the aggregator of `mechanism` (or its `settings.fault` variant) for `rounds` rounds on
    cohorts of the runner's `sampling` sampler over `population` slots, m of them canaries."""
    import tensorflow_federated as tff

    from tff_rec.privacy.broken import WEIGHTED_FAULTS
    from tff_rec.sampling import SAMPLERS

    m = settings.canaries
    if not 2 <= m <= population:
        raise ValueError(f"privacy.audit.canaries must be between 2 and the population "
                         f"({population} clients). Found {m}.")
    if sampling not in SAMPLERS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLERS)}. Found {sampling!r}.")
    clip = reference_clip(params)
    weighted = settings.fault in WEIGHTED_FAULTS  # records carry their weight as a last coordinate
    process = _aggregator(mechanism, params, settings.fault, clients_per_round, noise_seed).create(
        tff.TensorType(np.float32, [m + 1 if weighted else m]))
    coins = np.random.default_rng([seed, _TAG, _COINS]).random(m) < 0.5
    benign = np.random.default_rng([seed, _TAG, _BENIGN])
    canary_norm = np.float32(settings.canary_norm * clip)
    out_is_absent = sampling == "poisson"  # add/remove; fixed, shuffle: replaced by a zero update
    state, total, sizes = process.initialize(), np.zeros(m), []
    for round_number in range(1, rounds + 1):
        values = []
        for slot in SAMPLERS[sampling].draw(population, seed, round_number, clients_per_round):
            weight = 1.0
            if slot < m:
                if coins[slot]:
                    update = np.zeros(m, np.float32)
                    update[slot] = canary_norm
                    weight = settings.canary_weight
                elif out_is_absent:
                    continue
                else:
                    update = np.zeros(m, np.float32)
            else:
                direction = benign.standard_normal(m)
                update = (direction * (settings.benign_norm * clip / np.linalg.norm(direction)))
            if weighted:
                update = np.append(update, weight)
            values.append(update.astype(np.float32))
        output = process.next(state, values)
        state = output.state
        total += np.asarray(output.result, np.float64)[:m]
        sizes.append(len(values))
    return Game(scores=total, coins=coins, cohort_sizes=tuple(sizes))


# ---------------------------------------------------------------- tasks and studies


@dataclasses.dataclass(frozen=True)
class AuditCase:
    """A task to audit with its settings (one per study variant)."""

    label: str
    task: Any  # spec.TaskSpec
    settings: AuditSettings


@dataclasses.dataclass(frozen=True)
class AuditResult:
    label: str
    epsilon_lower_bound: float
    epsilon_accounted: Optional[float]  # at `delta`; None: no accounting (reason)
    canaries: int
    confidence: float
    delta: float
    epsilon_task: Optional[float]  # the task's own claim, at task_delta
    task_delta: Optional[float]
    mechanism: str
    fault: str
    noise_multiplier: Optional[float]
    sampling: str
    population: int
    clients_per_round: int
    rounds: int
    guesses: int
    correct: int
    k_plus: int
    k_minus: int
    seed: int
    seconds: float
    reason: Optional[str] = None

    @property
    def caught(self) -> bool:
        """ε_lb exceeds the accounted ε: the mechanism as run breaks its claim."""
        accounted = self.epsilon_accounted
        return accounted is not None and self.epsilon_lower_bound > accounted

    def to_json(self) -> dict[str, Any]:
        """The four keys users' scripts rely on first, then the details (inf as "inf")."""
        record = dataclasses.asdict(self)
        head = {key: record.pop(key) for key in
                ("epsilon_lower_bound", "epsilon_accounted", "canaries", "confidence")}
        record = {**head, **record, "caught": self.caught}
        for key, value in record.items():
            if isinstance(value, float) and math.isinf(value):
                record[key] = "inf"
        return record


def load_cases(path: Path | str, overrides: Optional[Mapping[str, Any]] = None) -> list[AuditCase]:
    """The audits a task file (one) or a study file (one per variant) asks for; `overrides`
    (dotted keys, `privacy.audit.*` included) apply to every task."""
    from tff_rec import spec

    path = Path(path)
    if spec.STUDY_SECTION in spec.read_toml(path):
        tasks = spec.load_study(path, overrides).tasks
    else:
        tasks = (spec.load_task(path, overrides),)
    return [AuditCase(task.name, task, AuditSettings.from_task(task)) for task in tasks]


def _population(task: Any, seed: int) -> int:
    """The task's clients, as the run partitions them (the accounted population)."""
    from tff_rec import checks
    from tff_rec.prepare import prepare_split

    split = prepare_split(task)
    checks.check_task(task, seed, split)
    return checks.build_partition(task, seed, split).num_clients


def _accounted(plan: Any, rounds: int, delta: float) -> tuple[Optional[float], Optional[str]]:
    """The accountant's ε of the planned run at `delta` (as `planning.plan_privacy` ledgers it)."""
    from tff_rec.privacy import accounting, mechanism_registry

    common = dict(population=plan.population, clients_per_round=plan.clients_per_round,
                  delta=delta, sampling=plan.sampling, accountant=plan.accountant)
    ledger, reason = accounting.mechanism_ledger(
        mechanism_registry.get_mechanism(plan.mechanism), plan.params, rounds, common)
    return ledger[-1], reason


def audit_case(case: AuditCase, seed: int = 0) -> AuditResult:
    """Audit one task: plan its privacy as a run would, play the game, bound ε."""
    from tff_rec import runtime, seeds
    from tff_rec.spec import FEDERATED_ALGORITHMS, SpecError
    from tff_rec.privacy.planning import plan_privacy

    started = time.monotonic()
    task, settings = case.task, case.settings
    algorithm, privacy = task["algorithm"], task["privacy"]
    if algorithm["name"] not in FEDERATED_ALGORITHMS:
        raise SpecError(f"{task.source}: the audit needs a federated algorithm. Found "
                        f"algorithm.name = {algorithm['name']!r}.")
    if privacy["mechanism"] == "none":
        raise SpecError(f"{task.source}: privacy.mechanism = 'none' has no DP claim to audit.")
    if privacy.get("noise_cohort_size") is not None or privacy.get("population") is not None:
        raise SpecError(f"{task.source}: the audit does not simulate a nominal cohort yet "
                        f"(privacy.noise_cohort_size / privacy.population): remove them.")
    population = _population(task, seed)
    plan = plan_privacy(task, population, seed)
    rounds = algorithm["rounds"]
    accounted, reason = _accounted(plan, rounds, settings.delta)
    runtime.configure()
    game = play(plan.mechanism, plan.params, population=population,
                clients_per_round=plan.clients_per_round, rounds=rounds,
                sampling=plan.sampling, seed=seed, noise_seed=seeds.derive(seed, "dp-noise"),
                settings=settings)
    best = best_guesses(game.scores, game.coins, delta=settings.delta,
                        confidence=settings.confidence, tie_seed=(seed, _TAG, _TIES))
    return AuditResult(
        label=case.label, epsilon_lower_bound=best.epsilon_lower_bound,
        epsilon_accounted=accounted, canaries=settings.canaries, confidence=settings.confidence,
        delta=settings.delta, epsilon_task=plan.ledger[-1] if plan.ledger else None,
        task_delta=plan.delta, mechanism=plan.mechanism, fault=settings.fault,
        noise_multiplier=plan.params.get("noise_multiplier"), sampling=plan.sampling,
        population=population, clients_per_round=plan.clients_per_round, rounds=rounds,
        guesses=best.guesses, correct=best.correct, k_plus=best.k_plus, k_minus=best.k_minus,
        seed=seed, seconds=round(time.monotonic() - started, 2), reason=reason,
    )


def keep_in_record(case: AuditCase, result: AuditResult, out: Path | str) -> Optional[Path]:
    """Write an audit of the task's own mechanism to its run record (record.AUDIT, beside the
    record of the same task and seed, made or not yet made), where `compare` reads it. Audits of
    a broken control (`fault`) are not the run's: None."""
    from tff_rec import record

    if result.fault != "none":
        return None
    path = record.run_dir(Path(out), case.task.hash, result.seed) / record.AUDIT
    record.write_json(path, result.to_json())
    return path


def format_results(results: Sequence[AuditResult]) -> str:
    """A Markdown table: accounted ε, empirical ε_lb, and whether the audit caught a leak."""
    def show(value: Optional[float]) -> str:
        if value is None:
            return "—"
        return "∞" if math.isinf(value) else f"{value:.2f}"

    lines = ["| audit | mechanism | fault | ε accounted (δ_a) | ε_lb | guesses (correct) | caught |",
             "|---|---|---|---|---|---|---|"]
    for result in results:
        lines.append(
            f"| {result.label} | {result.mechanism} | {result.fault} | "
            f"{show(result.epsilon_accounted)} | {show(result.epsilon_lower_bound)} | "
            f"{result.guesses} ({result.correct}) | {'yes' if result.caught else 'no'} |")
    first = results[0]
    lines.append(f"\nm = {first.canaries} canaries, confidence {first.confidence:g}, "
                 f"δ_a = {first.delta:g}, seed {first.seed}")
    return "\n".join(lines)
