"""Reading run records and comparing them across seeds: the results API notebooks use.

- `load_runs(paths)`: one row per complete run record (through study manifests where given).
- `compare(runs, metrics, baseline=...)`: one row per variant, mean and 95% Student-t CI across
  seeds, optionally a paired t-test over seeds against a baseline variant, with Holm–Bonferroni
  adjusted p-values beside the raw ones (`holm`), and `statistics_warnings` for rows with fewer
  than `MIN_SEEDS` seeds. A study's own `metrics` list is the default metrics (`study_metrics`).
- `pivot(runs, row_axis, col_axis, metric)`: a grid table of one metric (e.g. partitioning ×
  privacy), with the relative change against a reference row (e.g. centralized).
- `format_table` / `format_pivot`: Markdown, LaTeX (booktabs), CSV and HTML.
- `provenance_warnings(runs)`: what differs in code or packages between the runs compared.
"""
from __future__ import annotations

import dataclasses
import html
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from tff_rec import faults, record, stale

DEFAULT_METRICS = ("ndcg@10", "hr@10")
MIN_SEEDS = 3  # fewer seeds: a t-interval on 1 degree of freedom is ±12.7 sd, a paired test is weak
ORDER = {"popularity": 0, "centralized": 1}
IDENTITY = (
    "label", "task_hash", "seed", "dataset", "model", "algorithm", "partition", "privacy",
    "epsilon", "delta", "privacy_unit",
)
NOT_COLUMNS = {"seed", "resumed_from_round"}  # numeric summary keys that are not measurements
COMMUNICATION_COLUMNS = (  # from summary["communication"] (federated runs)
    "bytes_down_total", "bytes_up_total", "bytes_down_per_client", "bytes_up_per_client",
    "uplink_bits_per_parameter",
)


# ---------------------------------------------------------------- loading


def _run_row(directory: Path) -> dict[str, Any]:
    """One record's identity, metrics (test_/val_), heterogeneity (het_), measurements, provenance."""
    summary = json.loads((directory / record.SUMMARY).read_text())
    row = {k: summary.get(k) for k in IDENTITY}
    row["study"] = summary.get("study")  # records made before study manifests existed
    row.update({
        k: v for k, v in summary.items()
        if k not in row and k not in NOT_COLUMNS and isinstance(v, (int, float)) and not isinstance(v, bool)
    })
    row.update({f"test_{k}": v for k, v in summary["test"].items() if k != "users"})
    row.update({f"val_{k}": v for k, v in summary["validation"].items() if k != "users"})
    row.update({
        f"het_{k}": v for k, v in (summary.get("heterogeneity") or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    })
    simulated = summary.get("privacy_simulated")  # noise and ε of a nominal cohort (privacy/nominal.py)
    if simulated:
        row.update(simulated=simulated["label"], noise_cohort_size=simulated["noise_cohort_size"],
                   privacy_population=simulated["population"])
    communication = summary.get("communication") or {}
    row.update({key: communication.get(key) for key in COMMUNICATION_COLUMNS})
    row.update(_provenance(directory))
    row["path"] = str(directory)
    users = summary.get("users") or {}  # validated < evaluated: validation ranked a seeded sample
    row.update(users_validated=users.get("validated"), users_evaluated=users.get("evaluated"))
    row.update(_audit(directory))
    return row


AUDIT_COLUMNS = ("epsilon_lower_bound", "audit_epsilon_accounted", "audit_delta", "audit_canaries",
                 "audit_confidence")


def _audit(directory: Path) -> dict[str, Any]:
    """The record's privacy audit (audit.json, `tff-rec privacy audit`): ε_lb and the accountant's
    ε at the audit's δ_a; NaN without one."""
    path = directory / record.AUDIT
    if not path.is_file():
        return dict.fromkeys(AUDIT_COLUMNS, math.nan)
    audit = json.loads(path.read_text())

    def number(value: Any) -> float:
        return math.inf if value == "inf" else (math.nan if value is None else float(value))

    return {"epsilon_lower_bound": number(audit["epsilon_lower_bound"]),
            "audit_epsilon_accounted": number(audit["epsilon_accounted"]),
            "audit_delta": number(audit["delta"]), "audit_canaries": number(audit["canaries"]),
            "audit_confidence": number(audit["confidence"])}


def _provenance(directory: Path) -> dict[str, Any]:
    env_path = directory / record.ENV
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    packages = env.get("packages") or {}
    return {
        "git_commit": (env.get("git") or {}).get("commit"),
        "git_dirty": (env.get("git") or {}).get("dirty"),
        "packages": ", ".join(f"{k}=={v}" for k, v in sorted(packages.items()) if k != "tff-rec"),
        "uv_lock_sha256": env.get("uv_lock_sha256"),
        "cpu_model": env.get("cpu_model"),
        "stale": stale.is_stale(directory),  # made by other code than the code running now
    }


def _intact(directory: Path) -> bool:
    """Whether a record is complete; a damaged one (unreadable summary.json or metrics.csv) is
    left out with a warning naming the file (a re-run of its task re-makes it)."""
    if record.is_complete(directory):
        return True
    problem = record.damage(directory) if (directory / record.SUMMARY).is_file() else None
    if problem is not None:
        faults.warn(f"{problem}; left out (re-run its task to re-make the record)")
    return False


def _study_rows(study_dir: Path) -> list[dict[str, Any]]:
    """The runs a study manifest lists (complete ones), labelled as the study labels them."""
    manifest = record.read_manifest(study_dir)
    out = study_dir.parent
    rows = []
    for order, variant in enumerate(manifest["variants"]):
        for seed in manifest["seeds"]:
            directory = record.run_dir(out, variant["task_hash"], seed)
            if not _intact(directory):
                continue
            row = _run_row(directory)
            row.update(study=manifest["name"], label=variant["label"], order=order)
            row.update({f"axis_{k}": v for k, v in (variant.get("axes") or {}).items()})
            rows.append(row)
    return rows


def load_runs(paths: Iterable[Path | str]) -> pd.DataFrame:
    """One row per complete run record below `paths`.

    A path holding study.json is read through that manifest (its labels, its seeds, its grid axes
    as `axis_<name>` columns); a folder holding study folders gives all of them; any other path
    gives the records below it. Columns: study, label, task_hash, seed, model, algorithm,
    partition, privacy, epsilon, delta, privacy_unit, numeric measurements (wall_seconds,
    cpu_seconds, peak_rss_mb, ...), `test_<metric>`, `val_<metric>`, `het_<statistic>`,
    provenance (git_commit, git_dirty, packages, uv_lock_sha256, cpu_model), and `path`.
    """
    paths = [Path(p) for p in paths]
    rows: list[dict[str, Any]] = []
    metrics: list[str] = []  # the studies' own `metrics` lists, in order (see `study_metrics`)
    for path in paths:
        manifests = [path / record.MANIFEST] if (path / record.MANIFEST).is_file() else sorted(
            path.glob(f"*/{record.MANIFEST}"))
        if manifests:
            for manifest in manifests:
                rows.extend(_study_rows(manifest.parent))
                metrics.extend(record.read_manifest(manifest.parent).get("metrics") or [])
        else:
            rows.extend(_run_row(directory) for directory in record.find_runs([path])
                        if _intact(directory))
    if not rows:
        raise FileNotFoundError(
            f"no complete run records (summary.json) for {', '.join(map(str, paths))}"
        )
    runs = pd.DataFrame(rows)
    runs["study"] = runs["study"].fillna("runs")
    runs.attrs["metrics"] = list(dict.fromkeys(metrics))  # [] when no study manifest was read
    return runs


def study_metrics(runs: pd.DataFrame) -> tuple[str, ...]:
    """The metrics a table of runs is compared on by default: the `[study] metrics` lists of the
    studies `load_runs` read (in order, without repeats), else `DEFAULT_METRICS`.

    Read from `runs.attrs`, which `load_runs` sets; a table built otherwise (or filtered by an
    operation that drops attrs) gets `DEFAULT_METRICS`.
    """
    return tuple(runs.attrs.get("metrics") or DEFAULT_METRICS)


def load_metrics(run_path: Path | str) -> pd.DataFrame:
    """The per-round metrics of one run (its metrics.csv)."""
    return pd.read_csv(Path(run_path) / record.METRICS)


def load_curves(runs: pd.DataFrame, metric: str = "val_ndcg@10") -> pd.DataFrame:
    """Per-round values of `metric` for every run: columns study, label, seed, round, value."""
    frames = []
    for _, run in runs.iterrows():
        rounds = load_metrics(run["path"])
        if metric not in rounds:
            continue
        present = rounds[["round", metric]].dropna()
        frames.append(pd.DataFrame({
            "study": run["study"], "label": run["label"], "seed": run["seed"],
            "round": present["round"].to_numpy(), "value": present[metric].to_numpy(),
        }))
    if not frames:
        raise KeyError(f"no run records a per-round {metric!r}")
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- statistics


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (nan half-width for one value)."""
    clean = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not clean:
        return math.nan, math.nan
    mean = sum(clean) / len(clean)
    if len(clean) < 2:
        return mean, math.nan
    sem = stats.sem(clean)
    return mean, float(sem * stats.t.ppf((1 + confidence) / 2, len(clean) - 1))


def paired_test(values: pd.Series, baseline: pd.Series) -> tuple[float, float, int]:
    """Mean difference and two-sided paired t-test p-value over the seeds both have.

    `values` and `baseline` are indexed by seed. Returns (mean difference, p, pairs); p is nan
    with fewer than two pairs or when the differences do not vary (the t statistic is then
    undefined), and 1.0 when every difference is zero.
    """
    both = pd.concat([values, baseline], axis=1, join="inner").dropna()
    if len(both) == 0:
        return math.nan, math.nan, 0
    differences = both.iloc[:, 0].astype(float) - both.iloc[:, 1].astype(float)
    if len(both) < 2:
        return float(differences.mean()), math.nan, len(both)
    if np.allclose(differences, differences.iloc[0], rtol=1e-9, atol=1e-12):
        no_change = np.isclose(differences.iloc[0], 0.0, atol=1e-12)
        return float(differences.mean()), (1.0 if no_change else math.nan), len(both)
    result = stats.ttest_rel(both.iloc[:, 0].astype(float), both.iloc[:, 1].astype(float))
    return float(differences.mean()), float(result.pvalue), len(both)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given (nan stays nan and is not counted).

    With the m valid p-values sorted ascending, p_(1) ≤ … ≤ p_(m), the adjusted value of the
    i-th is max over j ≤ i of min(1, (m − j + 1) · p_(j)): monotone in p and capped at 1.
    Rejecting where the adjusted value is ≤ α keeps the family-wise error rate at α.
    """
    values = [float(p) if p is not None else math.nan for p in p_values]
    valid = sorted((p, i) for i, p in enumerate(values) if not math.isnan(p))
    adjusted = [math.nan] * len(values)
    running = 0.0
    for rank, (p, index) in enumerate(valid):
        running = max(running, min(1.0, (len(valid) - rank) * p))
        adjusted[index] = running
    return adjusted


def _check_columns(runs: pd.DataFrame, wanted: Sequence[str], stage: str, metrics: Sequence[str]) -> None:
    for metric in metrics:
        if f"{stage}_{metric}" not in runs:
            raise KeyError(
                f"metric {metric!r} is not in the records; available: "
                f"{', '.join(sorted(c[len(stage) + 1:] for c in runs if c.startswith(stage + '_')))}"
            )
    for column in wanted:
        if column not in runs:
            numeric = [c for c in runs.select_dtypes("number") if c not in ("seed", "order")]
            raise KeyError(f"column {column!r} is not in the records; available: {', '.join(sorted(numeric))}")


def _variant_order(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs sorted into table order: manifest order where known, else baselines first."""
    fallback = runs["algorithm"].map(ORDER).fillna(len(ORDER))
    order = runs["order"].fillna(fallback + 1e6) if "order" in runs else fallback
    return runs.assign(_order=order).sort_values(["study", "_order", "label", "seed"], kind="stable")


def compare(runs: pd.DataFrame, metrics: Optional[Sequence[str]] = None, stage: str = "test",
            columns: Sequence[str] = (), baseline: Optional[str] = None) -> pd.DataFrame:
    """One row per variant (study, label, hash): seeds, metric mean ± CI, ε mean ± CI.

    metrics: default `study_metrics(runs)` (the study file's `[study] metrics`).
    columns: further numeric run columns (e.g. `het_mean_js_divergence`, `wall_seconds`),
    shown as their mean over seeds. baseline: the label of a variant to test every row against:
    adds `<metric>_diff` (mean paired difference), `<metric>_p` (paired t-test over seeds),
    `<metric>_pairs` (seeds both have) and `<metric>_p_holm`: the p-values of all rows but the
    baseline's own, Holm–Bonferroni adjusted as one family per metric (`holm`).
    """
    metrics = list(study_metrics(runs) if metrics is None else metrics)
    _check_columns(runs, columns, stage, metrics)
    ordered = _variant_order(runs)
    reference = None
    if baseline is not None:
        reference = ordered[ordered["label"] == baseline]
        if reference.empty:
            raise KeyError(f"baseline {baseline!r} is not a label of these runs; labels: "
                           f"{', '.join(dict.fromkeys(ordered['label']))}")
    audits = "epsilon_lower_bound" in runs and bool(runs["epsilon_lower_bound"].notna().any())
    rows = []
    for (study, label, task_hash), group in ordered.groupby(["study", "label", "task_hash"], sort=False):
        first = group.iloc[0]
        row = {
            "study": study, "label": label, "task_hash": task_hash,
            "algorithm": first["algorithm"], "partition": first["partition"],
            "privacy": first["privacy"], "seeds": group["seed"].nunique(),
        }
        row.update({c: first[c] for c in group if c.startswith("axis_")})
        if "users_validated" in group:  # users validation ranked, of the users test ranked
            row["users_validated"], row["users_evaluated"] = first["users_validated"], first["users_evaluated"]
        for metric in metrics:
            column = f"{stage}_{metric}"
            row[metric], row[f"{metric}_ci"] = mean_ci(group[column].tolist())
            if reference is not None:
                row[f"{metric}_diff"], row[f"{metric}_p"], row[f"{metric}_pairs"] = paired_test(
                    group.set_index("seed")[column], reference.set_index("seed")[column])
        row["epsilon"], row["epsilon_ci"] = mean_ci(group["epsilon"].tolist())
        row["stale"] = int(group["stale"].astype(bool).sum()) if "stale" in group else 0  # stale seeds
        row["delta"] = first["delta"]
        if audits:
            row.update(_audit_columns(group))
        if "simulated" in group:  # e.g. 'noise for C=5000': ε and noise of a nominal cohort
            row["simulated"] = first["simulated"] if isinstance(first["simulated"], str) else None
        for column in columns:
            row[column] = pd.to_numeric(group[column], errors="coerce").mean()
        rows.append(row)
    table = pd.DataFrame(rows)
    if reference is not None:  # one family per metric: every row tested against the baseline
        tested = (table["label"] != baseline).to_numpy()
        for metric in metrics:
            adjusted = np.full(len(table), math.nan)
            adjusted[tested] = holm(table.loc[tested, f"{metric}_p"].tolist())
            position = table.columns.get_loc(f"{metric}_p") + 1
            table.insert(position, f"{metric}_p_holm", adjusted)
    table.attrs.update(baseline=baseline, metrics=metrics)
    return table


def _audit_columns(group: pd.DataFrame) -> dict[str, Any]:
    """A variant's privacy audits: seeds audited, mean ε_lb (each seed's one-run bound holds at its
    confidence; the max over seeds would not), mean accounted ε at the audit's δ_a."""
    audited = group.dropna(subset=["epsilon_lower_bound"])
    if audited.empty:
        return {"audited_seeds": 0, "epsilon_lower_bound": math.nan,
                "audit_epsilon_accounted": math.nan, "audit_delta": math.nan}
    return {"audited_seeds": len(audited),
            "epsilon_lower_bound": audited["epsilon_lower_bound"].mean(),
            "audit_epsilon_accounted": audited["audit_epsilon_accounted"].mean(),
            "audit_delta": audited["audit_delta"].iloc[0]}


def statistics_warnings(table: pd.DataFrame) -> list[str]:
    """Sentences about what the statistics of a `compare` table cannot carry (empty if nothing):
    rows with fewer than `MIN_SEEDS` seeds (their CI is wide, their paired test weak or absent),
    and the multiple-comparison correction applied when several rows face one baseline."""
    warnings = []
    n = table["seeds"].astype(int)
    pairs = [c for c in table if c.endswith("_pairs")]
    if pairs:  # a tested row counts the seeds it shares with the baseline
        n = n.where(table["label"] == table.attrs.get("baseline"),
                    np.minimum(n, table[pairs].min(axis=1).fillna(0).astype(int)))
    few = table.assign(_n=n)[n < MIN_SEEDS]
    if len(few):
        labels = ", ".join(f"{label} (n={k})" for label, k in zip(few["label"], few["_n"]))
        warnings.append(
            f"{len(few)} of {len(table)} rows have fewer than {MIN_SEEDS} seeds: {labels}; their 95% "
            f"CI uses Student's t on n-1 degrees of freedom (n=2: ±12.7 standard errors, n=1: none)"
            + (" and their paired test against the baseline has little power (n=1: no p-value)"
               if table.attrs.get("baseline") is not None else "")
            + "; run more seeds before reading differences")
    baseline = table.attrs.get("baseline")
    if baseline is not None:
        metrics = [c[:-len("_p_holm")] for c in table if c.endswith("_p_holm")]
        tested = int((table["label"] != baseline).sum())
        if tested > 1 and metrics:
            warnings.append(
                f"{tested} rows are each tested against {baseline}: read 'p (Holm)' (Holm–Bonferroni "
                f"over those {tested} tests, per metric), not the raw p, for significance")
    return warnings


def provenance_warnings(runs: pd.DataFrame) -> list[str]:
    """Sentences naming what differs between the runs' code and packages (empty if nothing)."""
    warnings = []
    if "stale" in runs and runs["stale"].any():
        warnings.append(f"{int(runs['stale'].sum())} of {len(runs)} runs are stale (made by other code "
                        f"than this; the table's 'stale' column marks them): `study --rerun-stale` re-makes them")
    commits = sorted(set(runs["git_commit"].dropna()))
    if len(commits) > 1:
        warnings.append(f"runs come from {len(commits)} git commits: {', '.join(c[:10] for c in commits)}")
    if runs["git_dirty"].fillna(False).astype(bool).any():
        dirty = runs[runs["git_dirty"].fillna(False).astype(bool)]["label"].unique()
        warnings.append(f"runs made from a modified working tree (uncommitted changes): {', '.join(dirty)}")
    for column, what in (("packages", "package versions"), ("uv_lock_sha256", "uv.lock files")):
        values = set(runs[column].dropna())
        if len(values) > 1:
            warnings.append(f"runs were made with {len(values)} different {what}")
    return warnings


# ---------------------------------------------------------------- pivot


@dataclasses.dataclass(frozen=True)
class Pivot:
    """A grid of one metric: `mean`, `ci` and `relative` (change vs the reference) share one shape.

    references: variants outside the grid (e.g. centralized, popularity): label → (mean, ci).
    """

    metric: str
    row_axis: str
    col_axis: str
    mean: pd.DataFrame
    ci: pd.DataFrame
    relative: Optional[pd.DataFrame]
    reference_label: Optional[str]
    references: dict[str, tuple[float, float]]


def _axis_column(runs: pd.DataFrame, axis: str) -> str:
    for column in (f"axis_{axis}", axis):
        if column in runs:
            return column
    axes = sorted(c[5:] for c in runs if c.startswith("axis_"))
    raise KeyError(f"axis {axis!r} is not in the records; grid axes: {', '.join(axes) or 'none'}; "
                   "record columns such as partition, privacy, algorithm also work")


def pivot(runs: pd.DataFrame, row_axis: str, col_axis: str, metric: str = "ndcg@10",
          stage: str = "test", relative_to: Optional[str] = "auto",
          where: Optional[dict[str, str]] = None) -> Pivot:
    """Mean ± CI of `metric` for every (row, column) value pair of two axes.

    where: values of the other axes ({axis: value}) that select one variant per cell; a cell that
    still holds several variants is an error (its runs would mix settings).
    relative_to: label of the reference variant for the relative change (in %); "auto" picks the
    study's centralized variant when there is exactly one, None leaves it out.
    """
    _check_columns(runs, (), stage, [metric])
    row_column, col_column = _axis_column(runs, row_axis), _axis_column(runs, col_axis)
    ordered = _variant_order(runs)
    for axis, value in (where or {}).items():
        selected = ordered[_axis_column(ordered, axis)]
        if value not in set(selected.dropna()):
            raise KeyError(f"--where {axis}={value}: no such value; values: {', '.join(dict.fromkeys(selected.dropna()))}")
        ordered = ordered[selected.isna() | (selected == value)]
    column = f"{stage}_{metric}"
    in_grid = ordered[row_column].notna() & ordered[col_column].notna()
    mixed = ordered[in_grid].groupby([row_column, col_column], sort=False)["label"].nunique()
    if (mixed > 1).any():
        others = sorted(c[5:] for c in ordered if c.startswith("axis_") and c not in (row_column, col_column))
        cell = mixed[mixed > 1].index[0]
        raise ValueError(f"pivot cell {cell} holds {mixed.max()} variants: fix the other axes "
                         f"({', '.join(others)}) with where, e.g. --where {others[0] if others else 'AXIS'}=VALUE")
    cells = ordered[in_grid].groupby([row_column, col_column], sort=False)[column].apply(list)
    rows = list(dict.fromkeys(ordered[in_grid][row_column]))
    cols = list(dict.fromkeys(ordered[in_grid][col_column]))
    mean = pd.DataFrame(index=rows, columns=cols, dtype=float)
    ci = pd.DataFrame(index=rows, columns=cols, dtype=float)
    for (r, c), values in cells.items():
        mean.loc[r, c], ci.loc[r, c] = mean_ci(values)
    references = {
        label: mean_ci(group[column].tolist())
        for label, group in ordered[~in_grid].groupby("label", sort=False)
    }
    if relative_to == "auto":
        central = ordered[~in_grid & (ordered["algorithm"] == "centralized")]["label"].unique()
        relative_to = central[0] if len(central) == 1 else None
    relative = None
    if relative_to is not None:
        if relative_to not in references:
            raise KeyError(f"reference {relative_to!r} is not a variant outside the grid; "
                           f"those are: {', '.join(references) or 'none'}")
        relative = 100 * (mean / references[relative_to][0] - 1)
    for frame in (mean, ci):
        frame.index.name, frame.columns.name = row_axis, col_axis
    return Pivot(metric, row_axis, col_axis, mean, ci, relative, relative_to, references)


# ---------------------------------------------------------------- rendering


def _cell(mean: float, ci: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(ci):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def _number_cell(value: float) -> str:
    if pd.isna(value):
        return "–"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3f}"


def _p_cell(difference: float, p: float) -> str:
    if math.isnan(difference):
        return "–"
    shown = "–" if math.isnan(p) else (f"{p:.3f}" if p >= 0.001 else "<0.001")
    return f"{difference:+.4f} (p={shown})"


def _epsilon_cell(row: pd.Series) -> str:
    simulated = row.get("simulated")
    marker = f" ({simulated})" if isinstance(simulated, str) else ""  # privacy/nominal.py
    if math.isnan(row["epsilon"]):
        return ("∞" if row["privacy"] not in ("none", None) else "–") + marker
    return f"{row['epsilon']:.2f} (δ={row['delta']:.0e}){marker}"


def _audit_cell(row: pd.Series) -> str:
    """'0.42 / 6.10 (δ=1e-06, 2 seeds)': the audit's mean ε_lb and accounted ε at its δ_a."""
    if not row["audited_seeds"]:
        return "–"
    seeds = f"{row['audited_seeds']} seed{'s' if row['audited_seeds'] > 1 else ''}"
    return (f"{row['epsilon_lower_bound']:.2f} / {row['audit_epsilon_accounted']:.2f} "
            f"(δ={row['audit_delta']:.0e}, {seeds})")


def _table_metrics(table: pd.DataFrame, metrics: Optional[Sequence[str]]) -> list[str]:
    """The metrics asked for, else those `compare` made the table with."""
    return list(metrics if metrics is not None else table.attrs.get("metrics") or DEFAULT_METRICS)


def holm_column(metric: str, metrics: Sequence[str]) -> str:
    """The display column of a metric's Holm-adjusted p-values: 'p (Holm)', naming the metric
    when the table shows several."""
    return "p (Holm)" if len(metrics) == 1 else f"p (Holm) {metric}"


def _holm_cell(p: float) -> str:
    if math.isnan(p):
        return "–"
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def display_table(table: pd.DataFrame, metrics: Optional[Sequence[str]] = None,
                  columns: Sequence[str] = ()) -> pd.DataFrame:
    """The human-readable table: label, seeds, `mean ± CI` per metric, Δ (raw p) vs the baseline
    and its Holm–Bonferroni adjusted p, ε, columns."""
    metrics = _table_metrics(table, metrics)
    shown = pd.DataFrame({"task": table["label"], "seeds": table["seeds"]})
    if table["study"].nunique() > 1:
        shown.insert(0, "study", table["study"])
    baseline = table.attrs.get("baseline")
    for metric in metrics:
        shown[metric] = [_cell(m, c) for m, c in zip(table[metric], table[f"{metric}_ci"])]
        if baseline is not None:
            shown[f"Δ {metric} vs {baseline}"] = [
                _p_cell(d, p) for d, p in zip(table[f"{metric}_diff"], table[f"{metric}_p"])]
            if f"{metric}_p_holm" in table:
                shown[holm_column(metric, metrics)] = [_holm_cell(p) for p in table[f"{metric}_p_holm"]]
    shown["ε"] = [_epsilon_cell(row) for _, row in table.iterrows()]
    if "audited_seeds" in table and table["audited_seeds"].any():  # `tff-rec privacy audit` records
        shown["ε_lb / ε accounted (audit)"] = [_audit_cell(row) for _, row in table.iterrows()]
    if "stale" in table and table["stale"].any():  # records made by other code: say which rows, and how many seeds
        shown["stale"] = [f"{n}/{seeds}" if n else "" for n, seeds in zip(table["stale"], table["seeds"])]
    if "users_validated" in table:  # `evaluation.validation_users`: say on how many users validation ran
        cells = [_validation_users_cell(n, m) for n, m in zip(table["users_validated"], table["users_evaluated"])]
        if any(cells):
            shown["validation users"] = cells
    for column in columns:
        shown[column.removeprefix("het_")] = [_number_cell(v) for v in table[column]]
    return shown


def _validation_users_cell(validated: Any, evaluated: Any) -> str:
    """'N of M' when validation ranked a sample of N of the M test users, else ''."""
    numbers = pd.to_numeric(pd.Series([validated, evaluated]), errors="coerce")
    if numbers.isna().any() or numbers[0] >= numbers[1]:
        return ""
    return f"{int(numbers[0]):,} of {int(numbers[1]):,}"


def pivot_display(result: Pivot) -> pd.DataFrame:
    """The pivot as text cells: `mean ± CI (+x% vs reference)`, reference rows appended."""
    def text(r: Any, c: Any) -> str:
        cell = _cell(result.mean.loc[r, c], result.ci.loc[r, c])
        if result.relative is not None and not math.isnan(result.relative.loc[r, c]):
            cell += f" ({result.relative.loc[r, c]:+.0f}%)"
        return cell

    shown = pd.DataFrame(
        [[str(r)] + [text(r, c) for c in result.mean.columns] for r in result.mean.index],
        columns=[f"{result.row_axis} \\ {result.col_axis}", *map(str, result.mean.columns)],
    )
    for label, (mean, ci) in result.references.items():
        shown.loc[len(shown)] = [label, _cell(mean, ci)] + [""] * (len(result.mean.columns) - 1)
    return shown


def _markdown(shown: pd.DataFrame) -> str:
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join(
        "---" if i == 0 or c in ("study", "task") else "--:" for i, c in enumerate(shown.columns)) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])


LATEX_REPLACEMENTS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#",
                      "±": r"$\pm$", "ε": r"$\varepsilon$", "δ": r"$\delta$", "∞": r"$\infty$", "–": "--",
                      "α": r"$\alpha$", "μ": r"$\mu$", "Δ": r"$\Delta$", "·": r"$\cdot$"}


def _latex_cell(value: object) -> str:
    text = str(value)
    for old, new in LATEX_REPLACEMENTS.items():
        text = text.replace(old, new)
    return text


def _latex(shown: pd.DataFrame) -> str:
    """A booktabs tabular: left-aligned labels, right-aligned numbers."""
    columns = "l" + "r" * (len(shown.columns) - 1)
    lines = [rf"\begin{{tabular}}{{{columns}}}", r"\toprule",
             " & ".join(_latex_cell(c) for c in shown.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_cell(v) for v in row) + r" \\" for row in shown.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def _html(shown: pd.DataFrame) -> str:
    """A plain HTML table (escaped), numbers right-aligned."""
    right = ' style="text-align:right"'
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(
            f"<td{'' if i == 0 else right}>{html.escape(str(v))}</td>" for i, v in enumerate(row)
        ) + "</tr>\n"
        for row in shown.itertuples(index=False)
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


FORMATS = ("markdown", "latex", "csv", "html")
RENDERERS: dict[str, Callable[[pd.DataFrame], str]] = {
    "markdown": _markdown, "latex": _latex, "html": _html,
    "csv": lambda shown: shown.to_csv(index=False),
}


def format_table(table: pd.DataFrame, metrics: Optional[Sequence[str]] = None,
                 fmt: str = "markdown", columns: Sequence[str] = ()) -> str:
    """Render a `compare` table: markdown, latex and html show mean ± CI (and, with a baseline,
    Δ with its raw p and the Holm-adjusted p); csv gives raw columns (`<metric>_p`,
    `<metric>_p_holm`, ...)."""
    if fmt == "csv":
        return table.to_csv(index=False, float_format="%.6g").rstrip("\n")
    return RENDERERS[fmt](display_table(table, metrics, columns)).rstrip("\n")


def format_pivot(result: Pivot, fmt: str = "markdown") -> str:
    """Render a pivot: text cells for markdown/latex/html; csv gives means, CIs and relative change."""
    if fmt == "csv":
        frames = {"mean": result.mean, "ci": result.ci}
        if result.relative is not None:
            frames["relative_percent"] = result.relative
        long = pd.concat({k: v.stack(dropna=False) for k, v in frames.items()}, axis=1)
        return long.reset_index().to_csv(index=False, float_format="%.6g").rstrip("\n")
    return RENDERERS[fmt](pivot_display(result)).rstrip("\n")

