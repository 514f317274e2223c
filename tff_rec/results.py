"""Reading run records and comparing them across seeds.

`load_runs(paths)` gives one row per run record; `compare(runs, metrics)` one row per task with
the mean and 95% Student-t confidence interval across seeds; `format_table` renders it as
Markdown, CSV or LaTeX. This is the API notebooks use.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd
from scipy import stats

from tff_rec import record

DEFAULT_METRICS = ("ndcg@10", "hr@10")
ORDER = {"popularity": 0, "centralized": 1, "fedavg": 2}
COMMUNICATION_COLUMNS = (
    "bytes_down_total", "bytes_up_total", "bytes_down_per_client", "bytes_up_per_client",
    "uplink_bits_per_parameter",
)


def load_runs(paths: Iterable[Path | str]) -> pd.DataFrame:
    """One row per complete run record below `paths`: identity columns plus flat metrics.

    Columns: study, label, task_hash, seed, algorithm, partition, privacy, epsilon, delta,
    wall_seconds, `test_<metric>` and `val_<metric>` for every metric in the summary, and
    `het_<statistic>` for the partition's heterogeneity statistics, and `path`.
    """
    rows = []
    for directory in record.find_runs(Path(p) for p in paths):
        summary = json.loads((directory / record.SUMMARY).read_text())
        row = {k: summary.get(k) for k in (
            "study", "label", "task_hash", "seed", "dataset", "algorithm", "partition",
            "privacy", "epsilon", "delta", "privacy_unit", "wall_seconds", "rounds",
        )}
        row.update({f"test_{k}": v for k, v in summary["test"].items() if k != "users"})
        row.update({f"val_{k}": v for k, v in summary["validation"].items() if k != "users"})
        row.update({
            f"het_{k}": v for k, v in (summary.get("heterogeneity") or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        })
        # communication totals (federated runs): `compare --columns bytes_up_total ...`
        communication = summary.get("communication") or {}
        row.update({key: communication.get(key) for key in COMMUNICATION_COLUMNS})
        row["path"] = str(directory)
        rows.append(row)
    if not rows:
        raise FileNotFoundError(
            f"no complete run records (summary.json) below {', '.join(map(str, paths))}"
        )
    return pd.DataFrame(rows)


def load_metrics(run_path: Path | str) -> pd.DataFrame:
    """The per-round metrics of one run (its metrics.csv)."""
    return pd.read_csv(Path(run_path) / record.METRICS)


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


def compare(runs: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS,
            stage: str = "test", columns: Sequence[str] = ()) -> pd.DataFrame:
    """One row per task (study, label, hash): seeds, metric mean ± CI, ε mean ± CI.

    columns: further run columns (e.g. `het_mean_js_divergence`, `wall_seconds`) shown as their
    mean over seeds.
    """
    for column in columns:
        if column not in runs:
            raise KeyError(
                f"column {column!r} is not in the records; available: "
                f"{', '.join(sorted(c for c in runs if c.startswith('het_')) + ['wall_seconds', 'rounds', *COMMUNICATION_COLUMNS])}"
            )
    rows = []
    for (study, label, task_hash), group in runs.groupby(["study", "label", "task_hash"], sort=False):
        first = group.iloc[0]
        row = {
            "study": study, "label": label, "task_hash": task_hash,
            "algorithm": first["algorithm"], "partition": first["partition"],
            "privacy": first["privacy"], "seeds": len(group),
        }
        for metric in metrics:
            column = f"{stage}_{metric}"
            if column not in group:
                raise KeyError(
                    f"metric {metric!r} is not in the records; available: "
                    f"{', '.join(sorted(c[len(stage) + 1:] for c in group if c.startswith(stage + '_')))}"
                )
            row[metric], row[f"{metric}_ci"] = mean_ci(group[column].tolist())
        row["epsilon"], row["epsilon_ci"] = mean_ci(group["epsilon"].tolist())
        row["delta"] = first["delta"]
        for column in columns:
            row[column] = pd.to_numeric(group[column], errors="coerce").mean()
        rows.append(row)
    table = pd.DataFrame(rows)
    order = table["algorithm"].map(ORDER).fillna(len(ORDER))
    ordered = table.assign(_order=order).sort_values(["study", "_order", "label"], kind="stable")
    return ordered.drop(columns="_order").reset_index(drop=True)


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


def _epsilon_cell(row: pd.Series) -> str:
    if math.isnan(row["epsilon"]):
        return "∞" if row["privacy"] not in ("none", None) else "–"
    return f"{row['epsilon']:.2f} (δ={row['delta']:.0e})"


def display_table(table: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS,
                  columns: Sequence[str] = ()) -> pd.DataFrame:
    """The human-readable table: label, seeds, `mean ± CI` per metric, ε, extra columns."""
    shown = pd.DataFrame({"task": table["label"], "seeds": table["seeds"]})
    if table["study"].nunique() > 1:
        shown.insert(0, "study", table["study"])
    for metric in metrics:
        shown[metric] = [_cell(m, c) for m, c in zip(table[metric], table[f"{metric}_ci"])]
    shown["ε"] = [_epsilon_cell(row) for _, row in table.iterrows()]
    for column in columns:
        shown[column.removeprefix("het_")] = [_number_cell(v) for v in table[column]]
    return shown


def _markdown(shown: pd.DataFrame) -> str:
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" if i < 2 else "--:" for i in range(len(shown.columns))) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])


LATEX_REPLACEMENTS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#",
                      "±": r"$\pm$", "ε": r"$\varepsilon$", "δ": r"$\delta$", "∞": r"$\infty$", "–": "--"}


def _latex_cell(value: object) -> str:
    text = str(value)
    for old, new in LATEX_REPLACEMENTS.items():
        text = text.replace(old, new)
    return text


def _latex(shown: pd.DataFrame) -> str:
    """A booktabs tabular: left-aligned labels, right-aligned numbers."""
    columns = "".join("l" if c in ("study", "task") else "r" for c in shown.columns)
    lines = [rf"\begin{{tabular}}{{{columns}}}", r"\toprule",
             " & ".join(_latex_cell(c) for c in shown.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_cell(v) for v in row) + r" \\" for row in shown.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


FORMATTERS: dict[str, Callable[[pd.DataFrame, pd.DataFrame], str]] = {
    "markdown": lambda table, shown: _markdown(shown),
    "latex": lambda table, shown: _latex(shown),
    "csv": lambda table, shown: table.to_csv(index=False, float_format="%.6g"),
}


def format_table(table: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS,
                 fmt: str = "markdown", columns: Sequence[str] = ()) -> str:
    """Render a `compare` table: markdown and latex show mean ± CI; csv gives raw columns."""
    return FORMATTERS[fmt](table, display_table(table, metrics, columns)).rstrip("\n")
