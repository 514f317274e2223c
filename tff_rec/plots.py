"""Figures from run records: convergence curves with CI bands, and utility–privacy curves.

Both take the runs table of `results.load_runs` and return a matplotlib Figure; `save` writes
it as PNG and SVG. Every band and error bar is `confidence_band`: the mean over seeds ± the
95% Student-t interval (`results.mean_ci`, as in tables), clipped to the metric's range
(`metric_range`: [0, 1] for HR, NDCG, MRR; ε ≥ 0). The notebooks draw through these functions.
Round axes have integer ticks; markers of settings that share an x value are dodged (`dodge`):
shifted by small, distinct horizontal offsets so that none hides another.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from tff_rec import results

# Without a display matplotlib falls back to Agg (files only); in a notebook the inline backend
# shows the figures. SVG text stays text: editable and searchable.
matplotlib.rcParams["svg.fonttype"] = "none"

NOT_FEDERATED = ("centralized", "popularity")
UNIT_INTERVAL = ("hr", "ndcg", "mrr", "recall", "precision", "map", "auc", "coverage")
NON_NEGATIVE = ("epsilon", "ε", "delta", "noise_multiplier", "wall_seconds", "cpu_seconds",
                "peak_rss_mb", "loss")
DODGE_ROUNDS = 0.3  # convergence: markers of a round spread over this fraction of the round spacing
DODGE_DECADES = 0.06  # privacy–utility (log ε axis): markers of an ε spread over this many decades


def metric_range(metric: str) -> tuple[float, float]:
    """The values a metric can take: (0, 1) for ranking metrics (`hr@10`, `test_ndcg@10`,
    `val_mrr`, ...), (0, inf) for ε and other non-negative quantities, else unbounded."""
    name = metric.split("@")[0].lower()
    for prefix in ("test_", "val_", "het_"):
        name = name.removeprefix(prefix)
    if name in UNIT_INTERVAL:
        return 0.0, 1.0
    if name in NON_NEGATIVE:
        return 0.0, math.inf
    return -math.inf, math.inf


def confidence_band(values: Sequence[float] | pd.Series, metric: Optional[str] = None,
                    confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) over seeds: mean ± the Student-t interval of `results.mean_ci`, clipped
    to `metric_range(metric)`. One value gives a zero-width band at it; none gives nans.

    The one band definition of the figures of `tff-rec plot` and of the notebooks.
    """
    mean, half = results.mean_ci(list(values), confidence)
    if math.isnan(mean):
        return mean, math.nan, math.nan
    half = 0.0 if math.isnan(half) else half
    lower, upper = metric_range(metric) if metric is not None else (-math.inf, math.inf)
    return mean, max(mean - half, lower), min(mean + half, upper)


def dodge(count: int, width: float) -> np.ndarray:
    """`count` distinct offsets, evenly spaced, centred on 0, spanning `width` (0 for one)."""
    if count <= 1:
        return np.zeros(max(count, 0))
    return np.linspace(-width / 2, width / 2, count)


def convergence(runs: pd.DataFrame, metric: str = "ndcg@10") -> plt.Figure:
    """Validation `metric` per round, mean and CI band across seeds, one line per federated variant.

    Variants without rounds (centralized, popularity) are drawn as gray dotted lines at their
    final validation value, for reference. Ticks are whole rounds; the variants' markers of one
    round are spread side by side (`dodge`) over a fraction of the round spacing.
    """
    figure, axes = plt.subplots(figsize=(9, 4.5))
    federated = runs[~runs["algorithm"].isin(NOT_FEDERATED)]
    curves = results.load_curves(federated, f"val_{metric}") if len(federated) else pd.DataFrame()
    labels = [label for label in dict.fromkeys(federated["label"])
              if len(curves) and (curves["label"] == label).any()]
    spacing = np.diff(np.unique(curves["round"])).min() if len(curves) and curves["round"].nunique() > 1 else 1
    offsets = dodge(len(labels), DODGE_ROUNDS * spacing)  # equal rounds: markers side by side
    for label, offset in zip(labels, offsets):
        curve = curves[curves["label"] == label].groupby("round")["value"].apply(
            lambda values: confidence_band(values, metric))
        rounds = curve.index.to_numpy(dtype=float) + offset
        mean, low, high = (np.array(v, dtype=float) for v in zip(*curve))
        (line,) = axes.plot(rounds, mean, marker="o", markersize=3, label=label)
        axes.fill_between(rounds, low, high, color=line.get_color(), alpha=0.2)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    _reference_lines(axes, runs, f"val_{metric}", at=1.0)
    return _finish(figure, axes, "round", f"validation {metric}",
                   f"Convergence: validation {metric} (mean and 95% CI over seeds)")


MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _group_column(runs: pd.DataFrame, by: str) -> pd.Series:
    """The value each run is grouped by: a grid axis or a record column, or several of them
    joined by commas (`population,cohort` → 'N=10^6 · C=1000')."""
    parts = []
    for name in by.split(","):
        name = name.strip()
        column = f"axis_{name}" if f"axis_{name}" in runs else name
        if column not in runs:
            raise KeyError(f"cannot group by {name!r}: neither a grid axis nor a record column")
        parts.append(runs[column])
    if len(parts) == 1:
        return parts[0]
    joined = pd.concat(parts, axis=1)
    return joined.apply(
        lambda row: None if row.isna().any() else " · ".join(map(str, row)), axis=1)


def privacy_utility(runs: pd.DataFrame, metric: str = "ndcg@10", by: str = "partition",
                    stage: str = "test") -> plt.Figure:
    """Test `metric` against ε: one colour per value of `by` (a grid axis or a record column, or
    several joined by commas).

    Each point is a DP variant (mean ε, mean metric, `confidence_band` error bars); a mechanism's
    points of one colour are joined, and each mechanism has its own marker. Each (colour,
    mechanism) series is shifted by a small factor on the log ε axis (`dodge`), so that variants
    calibrated to the same ε stay visible side by side (the ticks name the true ε). Points whose noise and ε are a
    nominal cohort's (`privacy.noise_cohort_size`, simulated) are hollow. The same group's runs
    without DP are a dashed line of its colour; federated runs without DP outside every group,
    centralized and popularity are gray lines. Rows on a dataset no group trains on (a study's
    Games rows beside its synthetic grid) are left out.
    """
    column = f"{stage}_{metric}"
    runs = runs.assign(_group=_group_column(runs, by))
    if "dataset" in runs:  # reference lines from the plotted groups' data only: no mixed scales
        plotted = runs.loc[runs["_group"].notna(), "dataset"].dropna().unique()
        if len(plotted):
            runs = runs[runs["dataset"].isin(plotted) | runs["dataset"].isna()]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    federated = runs[~runs["algorithm"].isin(NOT_FEDERATED) & runs["_group"].notna()]
    mechanisms = list(dict.fromkeys(federated[federated["privacy"] != "none"]["privacy"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    epsilons: set[float] = set()
    any_simulated = False
    private_runs = federated[federated["privacy"] != "none"]
    series = list(private_runs.groupby(["_group", "privacy"], sort=False).groups)
    # Settings calibrated to the same ε share an x: each (group, mechanism) series is shifted by
    # its own factor of 10^offset (log axis), so that no marker or error bar hides another.
    shift = dict(zip(series, 10.0 ** dodge(len(series), DODGE_DECADES)))
    for index, (group_value, group) in enumerate(federated.groupby("_group", sort=False)):
        color = colors[index % len(colors)]
        for mechanism, private in group[group["privacy"] != "none"].groupby("privacy", sort=False):
            points = []
            for _, variant in private.groupby("label", sort=False):
                epsilon = pd.to_numeric(variant["epsilon"], errors="coerce").mean()
                if not math.isnan(epsilon):
                    simulated = variant["simulated"].iloc[0] if "simulated" in variant else None
                    points.append((epsilon, *confidence_band(variant[column], metric),
                                   isinstance(simulated, str)))
            if points:
                x, y, low, high, hollow = (np.array(v) for v in zip(*sorted(points)))
                epsilons.update(float(f"{e:.2g}") for e in x)  # ticks: 7.99 and 8 are one
                x = x * shift[(group_value, mechanism)]
                marker = MARKERS[mechanisms.index(mechanism) % len(MARKERS)]
                axes.errorbar(x, y, yerr=np.vstack([y - low, high - y]), color=color, capsize=3,
                              linewidth=1, linestyle="-", marker="none")
                for filled, face in ((False, color), (True, "white")):
                    chosen = hollow == filled
                    axes.plot(x[chosen], y[chosen], linestyle="none", marker=marker,
                              color=color, markerfacecolor=face)
                any_simulated |= bool(hollow.any())
        public = group[group["privacy"] == "none"]
        if not public.empty:
            axes.axhline(confidence_band(public[column])[0], linestyle="--", color=color, linewidth=1)
        axes.plot([], [], color=color, linewidth=3, label=str(group_value))
    for mechanism in mechanisms if by.strip() != "privacy" else ():  # by privacy: colours say it
        axes.plot([], [], color="black", linestyle="none", label=mechanism,
                  marker=MARKERS[mechanisms.index(mechanism) % len(MARKERS)])
    if any_simulated:
        axes.plot([], [], color="black", linestyle="none", marker="o", markerfacecolor="white",
                  label="hollow: noise and ε of a\nnominal cohort (simulated)")
    ungrouped = runs[~runs["algorithm"].isin(NOT_FEDERATED) & runs["_group"].isna()
                     & (runs["privacy"] == "none")]
    _reference_lines(axes, runs, column, at=0.0, extra=ungrouped)
    axes.set_xscale("log")
    if epsilons:
        axes.set_xticks(sorted(epsilons), [f"{e:g}" for e in sorted(epsilons)])
        axes.minorticks_off()
    groups = " × ".join(name.strip() for name in by.split(","))
    dashed = "federated without DP" if groups == "privacy" else f"same {groups} without DP"
    return _finish(figure, axes, "ε (log scale)", f"{stage} {metric}",
                   f"{stage.capitalize()} {metric} vs ε by {groups} (mean and 95% CI over seeds)\n"
                   f"(dashed: {dashed})")


def _reference_lines(axes: plt.Axes, runs: pd.DataFrame, column: str, at: float,
                     extra: Optional[pd.DataFrame] = None) -> None:
    """Gray dotted lines at the mean `column` of the variants without rounds (and of the runs in
    `extra`), labelled at x = `at`."""
    references = runs[runs["algorithm"].isin(NOT_FEDERATED)]
    if extra is not None:
        references = pd.concat([references, extra])
    for label, group in references.groupby("label", sort=False):
        if column in group:
            level = confidence_band(group[column])[0]
            axes.axhline(level, linestyle=":", color="gray", linewidth=1)
            axes.annotate(label, (at, level), xycoords=("axes fraction", "data"), fontsize=8,
                          ha="left" if at < 0.5 else "right", va="bottom", color="gray")


def _finish(figure: plt.Figure, axes: plt.Axes, xlabel: str, ylabel: str, title: str) -> plt.Figure:
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def save(figure: plt.Figure, stem: Path | str, dpi: Optional[int] = 150) -> list[Path]:
    """Write the figure as `<stem>.png` and `<stem>.svg`; return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.parent / f"{stem.name}.{suffix}" for suffix in ("png", "svg")]
    for path in paths:
        figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return paths


PLOTS = {"convergence": convergence, "privacy-utility": privacy_utility}
