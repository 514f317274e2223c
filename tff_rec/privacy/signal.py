"""`tff-rec privacy signal`: how much signal the update, and each item's embedding row, can get
against the DP noise.

Why. User-level DP-FedAvg adds to every round's averaged update Gaussian noise of standard
deviation σ = z·c / C per coordinate (z: the noise multiplier on the update sum; c: the clip; C:
the cohort the noise is calibrated for, `privacy.noise_cohort_size` or the trained cohort). In a
sequential recommender nearly every parameter is in the item table ([items + 1, d]), and a
client's update reaches only the rows of the items in its own data. So whether DP leaves
anything to learn beyond popularity is, to first order, a question about those rows. This module
answers it from the task's data and privacy plan alone; nothing trains.

For item i, with n_i the clients whose training examples hold it (as input or target) out of the
partition's `clients` (its holders):

    holders per round    k_i = C · n_i / clients          (expected holders in a cohort of C)
    noise on the row     ‖noise_i‖ ≈ σ·√d = z·c·√d / C     (per round)
    holders' signal      ‖signal_i‖ ≤ k_i·c / C = c·n_i / clients
                         (at most: every holder puts its whole clipped update into row i, aligned)

Over the run's T rounds an aligned signal adds up T times and independent noise √T times, so the
ceiling of the row's signal-to-noise ratio is

    SNR_T(i) ≤ √T · (n_i / clients) · C / (z·√d).

Below 1 the noise the run adds to row i outweighs anything its holders can say about the item,
so the model cannot learn the item's own embedding; it can still rank it through what is shared
(the dense layers, and the push-down every row gets as a sampled or softmax negative, which says
only that other users did not pick it). Above 1 the row may be learned; whether it is depends on
how aligned the holders' updates are and on the server optimizer (Adam's per-coordinate scaling
takes full-size steps on noise), which this ceiling does not model: it is a necessary condition,
not a prediction. `rows_per_client` (r_u, the distinct items of a client's examples) says how
thinly a client's clipped norm is spread over rows.

The same bound for the whole update: the round's average has norm at most c (every client's
clipped update aligned), the noise has norm ≈ σ·√P over the model's P parameters, so

    model SNR_T ≤ √T · C / (z·√P).

Below 1 not even perfectly aligned clients move the model further than its noise does.

The knobs, at a fixed ε: SNR_T grows with C/z (the calibrated z grows more slowly than the
cohort as long as the sampling rate C/N stays small: a larger population lets a larger cohort
keep z low), with √T only as far as the accountant lets z stay put, and falls with √d.

Mechanisms: those whose noise multiplier is one Gaussian on the update sum per round (`VALUE_NOISE`:
gaussian, and adaptive with z split between the update sum and the clipped count). Others are
refused with the reason: `tree` adds correlated noise to prefix sums, not independent noise per
round; `clip` and `none` add no noise; `ddp`'s noise is drawn by the clients.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Any, Callable, Mapping, Optional

import numpy as np

from tff_rec.privacy.mechanism_registry import adaptive_noise_split

# The noise multiplier on the update sum, from the mechanism's parameters and the cohort C the
# noise is calibrated for.
VALUE_NOISE: dict[str, Callable[[Mapping[str, Any], int], float]] = {
    "gaussian": lambda params, cohort: float(params["noise_multiplier"]),
    "adaptive": lambda params, cohort: adaptive_noise_split(
        float(params["noise_multiplier"]), cohort, params.get("clipped_count_stddev"))[0],
}
REFUSED = {
    "none": "it adds no noise",
    "clip": "it adds no noise",
    "tree": "its noise is correlated across rounds (tree-aggregated prefix sums), not drawn "
            "afresh each round",
    "ddp": "its noise is drawn by the clients (Skellam shares), not one Gaussian on the sum",
}


class SignalError(ValueError):
    """A task whose noise this analysis does not cover (the message says why)."""


class NoNoise(SignalError):
    """A task that trains without DP noise (no DP, or not federated): nothing to compare with."""


@dataclasses.dataclass(frozen=True)
class ItemRows:
    """Who holds which item: the input of the analysis, from a partition's training examples."""

    holders: np.ndarray  # int64 [num_items + 1]: n_i, clients whose examples hold item i (row 0: padding)
    rows_per_client: np.ndarray  # int64 [clients]: r_u, distinct items of each client's examples
    clients: int


def item_rows(client_of_user: np.ndarray, user_items: np.ndarray, num_items: int) -> ItemRows:
    """`ItemRows` from each user's client (-1: in no client) and items (int [users, k]; 0 = none,
    above `num_items` = a mask token).

    Vectorized: one `np.unique` over (client, item) pairs, so 10^6 users take seconds.
    """
    clients = int(client_of_user.max()) + 1 if len(client_of_user) else 0
    width = num_items + 1
    owners = np.repeat(client_of_user.astype(np.int64), user_items.shape[1])
    items = user_items.reshape(-1).astype(np.int64)
    keep = (items > 0) & (items <= num_items) & (owners >= 0)  # not padding, nor BERT4Rec's mask token
    pairs = np.unique(owners[keep] * width + items[keep])
    pair_clients, pair_items = pairs // width, pairs % width
    rows_per_client = np.bincount(pair_clients, minlength=clients)
    holders = np.bincount(pair_items, minlength=width)
    return ItemRows(holders, rows_per_client, clients)


@dataclasses.dataclass(frozen=True)
class Signal:
    """The analysis of one task (module docstring); `to_json` is what `--json` prints."""

    mechanism: str
    population: int  # N, ε accounted over it
    cohort: int  # C, the cohort the noise is calibrated for
    simulated: bool  # C is a nominal cohort (privacy.noise_cohort_size), not the trained one
    noise_multiplier: float  # z on the update sum
    clip: Optional[float]  # c (None: adaptive, whose clip moves; SNR does not depend on it)
    rounds: int  # T
    embedding_dim: int  # d
    clients: int
    parameters: int  # P, the model's parameter count
    rows_per_client_median: float
    holders_per_round_median: float  # k_i of the median test interaction's item
    snr_ceiling: np.ndarray = dataclasses.field(repr=False)  # float [num_items + 1]
    test_items: np.ndarray = dataclasses.field(repr=False)  # int, one per test interaction

    @property
    def model_snr_ceiling(self) -> float:
        """√T · C / (z·√P): the whole update's ceiling (module docstring)."""
        return math.sqrt(self.rounds) * self.cohort / (self.noise_multiplier * math.sqrt(self.parameters))

    @property
    def noise_per_coordinate(self) -> Optional[float]:
        """σ = z·c / C (None for adaptive clipping, whose c adapts)."""
        return None if self.clip is None else self.noise_multiplier * self.clip / self.cohort

    def share(self, snr: np.ndarray, of_test: bool) -> float:
        """Share of test interactions (or of catalogue items) whose row's ceiling reaches 1."""
        values = snr[self.test_items] if of_test else snr[1:]
        return float(np.mean(values >= 1.0)) if len(values) else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism, "population": self.population, "cohort": self.cohort,
            "simulated": self.simulated, "noise_multiplier": self.noise_multiplier,
            "clip": self.clip, "noise_per_coordinate": self.noise_per_coordinate,
            "rounds": self.rounds, "embedding_dim": self.embedding_dim, "clients": self.clients,
            "parameters": self.parameters, "model_snr_ceiling": self.model_snr_ceiling,
            "rows_per_client_median": self.rows_per_client_median,
            "holders_per_round_median": self.holders_per_round_median,
            "median_test_snr_ceiling": float(np.median(self.snr_ceiling[self.test_items])),
            "test_share_snr_ceiling_ge_1": self.share(self.snr_ceiling, True),
            "item_share_snr_ceiling_ge_1": self.share(self.snr_ceiling, False),
        }


def value_noise_multiplier(mechanism: str, params: Mapping[str, Any], cohort: int) -> float:
    """z on the update sum of `mechanism` (SignalError for one this analysis does not cover)."""
    if mechanism in VALUE_NOISE:
        z = VALUE_NOISE[mechanism](params, cohort)
        if z <= 0:
            raise NoNoise(f"privacy.noise_multiplier = {params['noise_multiplier']}: {mechanism} adds "
                          f"no noise, so there is no ratio to compute.")
        return z
    reason = REFUSED.get(mechanism, "its noise on the update sum is not declared to this analysis")
    raise SignalError(f"privacy.mechanism = {mechanism!r}: no per-round signal-to-noise ratio, "
                      f"because {reason}. It covers {', '.join(VALUE_NOISE)}.")


def analyse(rows: ItemRows, test_items: np.ndarray, *, mechanism: str, params: Mapping[str, Any],
            population: int, cohort: int, simulated: bool, rounds: int,
            embedding_dim: int, parameters: int) -> Signal:
    """SNR_T of every item row (module docstring) for a run of `rounds` rounds."""
    z = value_noise_multiplier(mechanism, params, cohort)
    fraction = rows.holders / max(rows.clients, 1)
    ceiling = math.sqrt(rounds) * fraction * cohort / (z * math.sqrt(embedding_dim))
    test_items = np.asarray(test_items, dtype=np.int64)
    return Signal(
        mechanism=mechanism, population=population, cohort=cohort, simulated=simulated,
        noise_multiplier=z, clip=params.get("clip") if mechanism == "gaussian" else None,
        rounds=rounds, embedding_dim=embedding_dim, clients=rows.clients, parameters=parameters,
        rows_per_client_median=float(np.median(rows.rows_per_client)) if rows.clients else 0.0,
        holders_per_round_median=float(np.median(cohort * fraction[test_items])) if len(test_items) else 0.0,
        snr_ceiling=ceiling, test_items=test_items,
    )


def task_signal(task: Any, seed: int) -> Signal:
    """The analysis of a federated DP task at task seed `seed`, from its run plan (`plan.resolve`)."""
    from tff_rec import plan
    from tff_rec.models.registry import resolve_hparams

    run = plan.resolve(task, seed)
    if run.privacy is None or run.partition is None:
        raise NoNoise(f"{task.source}: the task trains without DP noise (privacy.mechanism = "
                          f"{task['privacy']['mechanism']!r}, algorithm.name = "
                          f"{task['algorithm']['name']!r}): there is no noise to compare with.")
    privacy = run.privacy
    try:  # refused before the data is read
        value_noise_multiplier(privacy.mechanism, privacy.params, privacy.accounted_cohort)
    except SignalError as error:
        raise type(error)(f"{task.source}: {error}") from None  # NoNoise stays NoNoise
    prepared = run.data.get()
    inputs, targets = prepared.user_examples()
    client_of_user = np.full(len(inputs), -1, dtype=np.int64)
    members = [run.partition.clients[cid] for cid in run.client_ids]
    client_of_user[np.concatenate(members)] = np.repeat(np.arange(len(members)), [len(m) for m in members])
    users = len(inputs)
    rows = item_rows(client_of_user, np.concatenate([inputs.reshape(users, -1), targets.reshape(users, -1)], axis=1),
                     prepared.num_items)
    split = prepared.split
    test_items = split.test[split.evaluation_users()]
    hparams = resolve_hparams(task["model"]["name"], **task["model"]["params"])
    return analyse(rows, test_items, mechanism=privacy.mechanism, params=privacy.params,
                   population=privacy.population, cohort=privacy.accounted_cohort,
                   simulated=privacy.nominal is not None, rounds=run.rounds,
                   embedding_dim=hparams.embedding_dim, parameters=_parameters(run.model))


@functools.lru_cache(maxsize=None)
def _count(name: str, num_items: int, params: str) -> int:
    from tff_rec import models

    return int(models.build_model(name, num_items, seed=0, **json.loads(params)).count_params())


def _parameters(model: Any) -> int:
    """P of the run's model (built once per model setting: this imports TensorFlow)."""
    return _count(model.name, model.num_items, json.dumps(model.params, sort_keys=True))


HEADER = ("variant", "N", "C", "z", "σ/coord", "T", "d", "P", "model SNR_T ceiling", "rows/client",
          "holders/round", "item SNR_T ceiling", "test items ≥ 1", "catalogue ≥ 1")


def table_row(label: str, signal: Signal) -> list[str]:
    """One line of the printed table (HEADER); rows/client, holders/round and the SNR_T
    ceiling are medians (over clients, and over test interactions' items)."""
    found = signal.to_json()
    sigma = signal.noise_per_coordinate
    return [
        label, f"{signal.population:,}", f"{signal.cohort:,}" + (" (nominal)" if signal.simulated else ""),
        f"{signal.noise_multiplier:.3g}", "adaptive c" if sigma is None else f"{sigma:.2e}",
        str(signal.rounds), str(signal.embedding_dim), f"{signal.parameters:,}",
        f"{signal.model_snr_ceiling:.3g}", f"{signal.rows_per_client_median:g}",
        f"{signal.holders_per_round_median:.3g}", f"{found['median_test_snr_ceiling']:.3g}",
        f"{found['test_share_snr_ceiling_ge_1']:.1%}", f"{found['item_share_snr_ceiling_ge_1']:.1%}",
    ]


def measured(runs: Any, task_hashes: list[str], metric: str) -> dict[str, float]:
    """task hash → the mean of `metric` over that task's complete records in `runs`
    (`results.load_runs`); tasks without a record are left out."""
    if metric not in runs.columns:
        metrics = sorted(c for c in runs.columns if c.startswith(("test_", "val_")))
        raise SignalError(f"--metric {metric!r} is not a column of the records; they have "
                          f"{', '.join(metrics) or 'no metric (no complete record)'}.")
    kept = runs[runs["task_hash"].isin(task_hashes)]
    return {str(key): float(value) for key, value in kept.groupby("task_hash")[metric].mean().items()}


def rank_correlation(x: list[float], y: list[float]) -> float:
    """Spearman's ρ (Pearson's r of average ranks, ties shared)."""
    import pandas as pd

    return float(pd.Series(x).rank().corr(pd.Series(y).rank()))


def format_table(rows: list[list[str]], measured: Optional[tuple[str, list[Optional[float]]]] = None,
                 model_ceilings: Optional[list[float]] = None) -> str:
    """The Markdown table `tff-rec privacy signal` prints, with the lines that say what it is;
    with `measured` (metric, a value or None per row) a last column, and the rank correlation
    between the model ceiling and the measured values."""
    header = list(HEADER)
    correlation = ""
    if measured is not None:
        metric, values = measured
        header.append(f"{metric} (measured)")
        rows = [row + ["–" if value is None else f"{value:.4f}"] for row, value in zip(rows, values)]
        pairs = [(ceiling, value) for ceiling, value in zip(model_ceilings, values) if value is not None]
        correlation = (f"\nSpearman's ρ between the model ceiling and the measured {metric} over "
                       f"the {len(pairs)} measured rows: "
                       + (f"{rank_correlation(*zip(*pairs)):.3f}." if len(pairs) > 2 else "too few rows."))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    note = ("Ceilings of the signal-to-noise ratio over the run's T rounds. Model: every client's "
            "clipped update aligned, against the noise on all P parameters. Item: the most its "
            "holders can put into an item's embedding row, against that row's noise (median over "
            "test interactions); '≥ 1': the share of test interactions (of catalogue items) whose "
            "row's ceiling reaches 1. Below 1 the noise outweighs the signal; above, learning is "
            "possible, not promised (tff_rec/privacy/signal.py).")
    return "\n".join(lines + ["", note]) + correlation
