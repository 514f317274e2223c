"""Statistics and tables of `tff_rec.results`, against hand-computed values."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from tff_rec import results


def test_mean_ci_matches_hand_computed_student_t():
    # mean 2, sem 1/sqrt(3), t(0.975, df=2) = 4.302653: half-width 2.484138.
    mean, half = results.mean_ci([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and half == pytest.approx(2.484138, rel=1e-6)
    assert math.isnan(results.mean_ci([5.0])[1]) and results.mean_ci([5.0])[0] == 5.0
    assert results.mean_ci([1.0, None, float("nan"), 3.0])[0] == pytest.approx(2.0)


def test_paired_test_matches_hand_computed_p_value():
    # differences 1, 1, 3: mean 5/3, sd sqrt(4/3), t = 2.5 on 2 df; two-sided p = 1 - t/sqrt(t²+2).
    values = pd.Series([1.0, 2.0, 4.0], index=[0, 1, 2])
    baseline = pd.Series([0.0, 1.0, 1.0, 9.0], index=[0, 1, 2, 3])  # seed 3 has no pair
    difference, p, pairs = results.paired_test(values, baseline)
    assert pairs == 3 and difference == pytest.approx(5 / 3)
    assert p == pytest.approx(1 - 2.5 / math.sqrt(2.5**2 + 2), rel=1e-6)
    assert results.paired_test(values, values)[1] == 1.0
    assert math.isnan(results.paired_test(values.iloc[:1], baseline)[1])


def runs_table() -> pd.DataFrame:
    """A grid study as `load_runs` returns it: 2 partitions × 2 privacy settings + centralized."""
    rows = []
    values = {("natural", "none"): [0.30, 0.34], ("natural", "gaussian(ε=2)"): [0.10, 0.12],
              ("iid", "none"): [0.40, 0.44], ("iid", "gaussian(ε=2)"): [0.20, 0.22]}
    for order, ((partition, privacy), metric) in enumerate(values.items(), start=1):
        for seed, value in enumerate(metric):
            rows.append({
                "study": "grid", "label": f"{partition} · {privacy}", "task_hash": f"h{order}",
                "seed": seed, "order": order, "algorithm": "fedavg", "partition": partition,
                "privacy": "none" if privacy == "none" else "gaussian",
                "epsilon": None if privacy == "none" else 2.0 + seed / 10, "delta": 1e-3,
                "axis_partition": partition, "axis_privacy": privacy, "test_ndcg@10": value,
                "git_commit": "a" * 40, "git_dirty": False, "packages": "tf==2.14",
                "uv_lock_sha256": "x",
            })
    for seed, value in enumerate([0.50, 0.50]):
        rows.append({"study": "grid", "label": "centralized", "task_hash": "c", "seed": seed,
                     "order": 0, "algorithm": "centralized", "partition": "natural",
                     "privacy": "none", "epsilon": None, "delta": None, "test_ndcg@10": value,
                     "git_commit": "a" * 40, "git_dirty": False, "packages": "tf==2.14",
                     "uv_lock_sha256": "x"})
    return pd.DataFrame(rows)


def test_compare_with_a_paired_baseline():
    table = results.compare(runs_table(), ["ndcg@10"], baseline="natural · none")
    assert list(table["label"])[0] == "centralized"  # manifest order
    row = table.set_index("label").loc["iid · none"]
    assert row["ndcg@10"] == pytest.approx(0.42) and row["seeds"] == 2
    assert row["ndcg@10_diff"] == pytest.approx(0.10)
    assert math.isnan(row["ndcg@10_p"])  # identical differences: the t statistic is undefined
    noisy = results.compare(runs_table(), ["ndcg@10"], baseline="natural · gaussian(ε=2)")
    assert 0 < noisy.set_index("label").loc["iid · none", "ndcg@10_p"] < 1
    assert row["epsilon"] != row["epsilon"]  # nan without DP
    private = table.set_index("label").loc["natural · gaussian(ε=2)"]
    assert private["epsilon"] == pytest.approx(2.05)
    shown = results.format_table(table, ["ndcg@10"])
    assert "Δ ndcg@10 vs natural · none" in shown and "+0.1000 (p=–)" in shown
    with pytest.raises(KeyError, match="baseline 'nope'"):
        results.compare(runs_table(), ["ndcg@10"], baseline="nope")


def test_pivot_means_cis_and_change_against_centralized():
    pivot = results.pivot(runs_table(), "partition", "privacy", "ndcg@10")
    assert list(pivot.mean.index) == ["natural", "iid"]
    assert list(pivot.mean.columns) == ["none", "gaussian(ε=2)"]
    assert pivot.mean.loc["iid", "none"] == pytest.approx(0.42)
    # two seeds 0.40, 0.44: sem 0.02, t(0.975, 1) = 12.7062
    assert pivot.ci.loc["iid", "none"] == pytest.approx(0.02 * 12.706205, rel=1e-5)
    assert pivot.reference_label == "centralized"
    assert pivot.relative.loc["natural", "gaussian(ε=2)"] == pytest.approx(100 * (0.11 / 0.5 - 1))
    assert pivot.references["centralized"][0] == pytest.approx(0.5)
    markdown = results.format_pivot(pivot)
    assert "| partition \\ privacy | none | gaussian(ε=2) |" in markdown
    assert "0.4200 ± 0.2541 (-16%)" in markdown and "| centralized | 0.5000 ± 0.0000 |" in markdown
    assert r"\toprule" in results.format_pivot(pivot, "latex")
    csv = results.format_pivot(pivot, "csv").splitlines()
    assert csv[0] == "partition,privacy,mean,ci,relative_percent" and len(csv) == 5
    without = results.pivot(runs_table(), "partition", "privacy", "ndcg@10", relative_to=None)
    assert without.relative is None and "%" not in results.format_pivot(without)
    with pytest.raises(KeyError, match="grid axes: partition, privacy"):
        results.pivot(runs_table(), "model", "privacy")


def test_html_output_is_escaped():
    runs = runs_table()
    runs.loc[runs["label"] == "centralized", "label"] = "<central & co>"
    text = results.format_table(results.compare(runs, ["ndcg@10"]), ["ndcg@10"], "html")
    assert text.startswith("<table>") and "&lt;central &amp; co&gt;" in text
    assert "<central" not in text


def test_provenance_warnings_name_what_differs():
    runs = runs_table()
    assert results.provenance_warnings(runs) == []
    runs.loc[0, "git_commit"] = "b" * 40
    runs.loc[1, "git_dirty"] = True
    runs.loc[2, "packages"] = "tf==2.15"
    warnings = results.provenance_warnings(runs)
    assert any("2 git commits" in w and "aaaaaaaaaa" in w for w in warnings)
    assert any("modified working tree" in w and "natural · none" in w for w in warnings)
    assert any("2 different package versions" in w for w in warnings)


def test_pivot_refuses_cells_that_mix_variants_until_other_axes_are_fixed():
    with pytest.raises(ValueError, match="holds 2 variants.*privacy"):
        results.pivot(runs_table(), "partition", "algorithm")
    fixed = results.pivot(runs_table(), "partition", "algorithm", where={"privacy": "none"})
    assert fixed.mean.loc["iid", "fedavg"] == pytest.approx(0.42)
    with pytest.raises(KeyError, match="no such value"):
        results.pivot(runs_table(), "partition", "algorithm", where={"privacy": "huge"})
