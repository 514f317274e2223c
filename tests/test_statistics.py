"""Honest statistics in `compare`: Holm–Bonferroni beside raw p-values, warnings for few seeds,
and the study's own metrics list as the default."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from tff_rec import cli, record, results


def test_holm_matches_hand_computed_values():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max(0.06, 0.04) = 0.06
    adjusted = results.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_is_capped_at_one_monotone_and_skips_nan():
    # m = 2 (the nan is not a test): 0.5·2 = 1.0, 0.6·1 = 0.6 → max(1.0, 0.6) = 1.0
    adjusted = results.holm([0.5, math.nan, 0.6])
    assert adjusted[0] == 1.0 and adjusted[2] == 1.0 and math.isnan(adjusted[1])
    assert results.holm([0.7, 0.6]) == [1.0, 1.0]  # 0.6·2 = 1.2 is capped
    raw = [0.001, 0.2, 0.011, 0.04, 0.03, 0.5]
    adjusted = results.holm(raw)
    ordered = [a for _, a in sorted(zip(raw, adjusted))]
    assert ordered == sorted(ordered)  # monotone in the raw p
    assert all(a >= p for a, p in zip(adjusted, raw)) and max(adjusted) <= 1.0
    assert results.holm([0.02]) == [0.02] and results.holm([]) == []


def _runs(seeds: int = 4) -> pd.DataFrame:
    """A baseline and three variants over `seeds` seeds, with different paired differences."""
    shifts = {"base": [0.0] * 4, "a": [0.05, 0.06, 0.04, 0.05], "b": [0.01, -0.02, 0.03, 0.0],
              "c": [0.02, 0.03, 0.01, 0.025]}
    rows = []
    for order, (label, shift) in enumerate(shifts.items()):
        for seed in range(seeds):
            rows.append({"study": "s", "label": label, "task_hash": f"h{order}", "seed": seed,
                         "order": order, "algorithm": "fedavg", "partition": "natural",
                         "privacy": "none", "epsilon": None, "delta": None,
                         "test_ndcg@10": 0.3 + 0.01 * seed + shift[seed],
                         "test_hr@10": 0.5 + 0.02 * seed + 2 * shift[seed]})
    return pd.DataFrame(rows)


def test_compare_adds_holm_adjusted_p_values_per_metric():
    table = results.compare(_runs(), ["ndcg@10", "hr@10"], baseline="base").set_index("label")
    for metric in ("ndcg@10", "hr@10"):
        raw = table.loc[["a", "b", "c"], f"{metric}_p"].tolist()
        assert all(0 < p < 1 for p in raw)
        assert table.loc[["a", "b", "c"], f"{metric}_p_holm"].tolist() == pytest.approx(results.holm(raw))
        assert math.isnan(table.loc["base", f"{metric}_p_holm"])  # the baseline is not tested
        assert (table.loc[["a", "b", "c"], f"{metric}_pairs"] == 4).all()
    assert results.statistics_warnings(results.compare(_runs(), baseline="base"))[0].startswith(
        "3 rows are each tested against base")


def test_holm_column_in_every_format():
    table = results.compare(_runs(), ["ndcg@10"], baseline="base")
    adjusted = table.set_index("label")["ndcg@10_p_holm"]
    markdown = results.format_table(table, ["ndcg@10"])
    header = markdown.splitlines()[0]
    assert "| Δ ndcg@10 vs base | p (Holm) |" in header
    row_a = next(line for line in markdown.splitlines() if line.startswith("| a |"))
    assert row_a.split(" | ")[-2] == (f"{adjusted['a']:.3f}" if adjusted["a"] >= 0.001 else "<0.001")
    assert "p (Holm)" in results.format_table(table, ["ndcg@10"], "html")
    assert "p (Holm)" in results.format_table(table, ["ndcg@10"], "latex")
    csv = results.format_table(table, ["ndcg@10"], "csv").splitlines()[0].split(",")
    assert csv.index("ndcg@10_p_holm") == csv.index("ndcg@10_p") + 1
    two = results.format_table(results.compare(_runs(), ["ndcg@10", "hr@10"], baseline="base"))
    assert "p (Holm) ndcg@10" in two and "p (Holm) hr@10" in two


def test_fewer_than_three_seeds_are_warned_about():
    assert results.statistics_warnings(results.compare(_runs(4), ["ndcg@10"])) == []
    warnings = results.statistics_warnings(results.compare(_runs(2), ["ndcg@10"]))
    assert len(warnings) == 1 and "4 of 4 rows have fewer than 3 seeds" in warnings[0]
    assert "a (n=2)" in warnings[0] and "paired" not in warnings[0]
    runs = _runs(4)
    runs = runs[~((runs["label"] == "b") & (runs["seed"] >= 2))]  # b: 2 seeds
    warnings = results.statistics_warnings(results.compare(runs, ["ndcg@10"], baseline="base"))
    assert "1 of 4 rows" in warnings[0] and "b (n=2)" in warnings[0] and "paired test" in warnings[0]
    one = runs[~((runs["label"] == "c") & (runs["seed"] >= 1))]  # c: one seed, no p at all
    table = results.compare(one, ["ndcg@10"], baseline="base").set_index("label")
    assert math.isnan(table.loc["c", "ndcg@10_p"]) and math.isnan(table.loc["c", "ndcg@10_p_holm"])
    # Holm counts only the tests that gave a p-value: a and b here
    assert table.loc[["a", "b"], "ndcg@10_p_holm"].tolist() == pytest.approx(
        results.holm(table.loc[["a", "b"], "ndcg@10_p"].tolist()))


def _write_study(out: Path, metrics: list[str], seeds: int = 2) -> Path:
    """A study folder of hand-made, complete records (summary.json, metrics.csv, env.json)."""
    variants = [{"label": label, "task_hash": f"{label:0<12}", "axes": {}, "overrides": {}}
                for label in ("base", "better")]
    record.write_manifest(out, record.study_manifest("tiny", "tiny.toml", list(range(seeds)),
                                                     metrics, variants))
    for number, variant in enumerate(variants):
        for seed in range(seeds):
            directory = record.run_dir(out, variant["task_hash"], seed)
            directory.mkdir(parents=True)
            value = 0.2 + 0.1 * number + 0.01 * seed * (1 + number)
            summary = {"label": variant["label"], "task_hash": variant["task_hash"], "seed": seed,
                       "algorithm": "fedavg", "partition": "natural", "privacy": "none",
                       "epsilon": None, "delta": None, "rounds": 1,
                       "test": {"ndcg@10": value, "hr@10": 2 * value, "mrr": value / 2},
                       "validation": {"ndcg@10": value}}
            (directory / record.SUMMARY).write_text(json.dumps(summary))
            (directory / record.METRICS).write_text("round,val_ndcg@10\n1,0.1\n")
    return out / "tiny"


def test_compare_command_uses_the_study_metrics_and_warns(tmp_path, capsys):
    study = _write_study(tmp_path, ["mrr"])
    assert cli.main(["compare", str(study), "--baseline", "base"]) == 0
    captured = capsys.readouterr()
    header = captured.out.splitlines()[0]
    assert "| mrr |" in header and "ndcg@10" not in header and "p (Holm)" in header
    assert "fewer than 3 seeds" in captured.err
    assert cli.main(["compare", str(study), "--metrics", "hr@10"]) == 0  # a flag still wins
    header = capsys.readouterr().out.splitlines()[0]
    assert "| hr@10 |" in header and "mrr" not in header
    assert results.study_metrics(results.load_runs([study])) == ("mrr",)
    assert cli.main(["compare", str(study), "--format", "csv", "--baseline", "base"]) == 0
    assert "mrr_p_holm" in capsys.readouterr().out.splitlines()[0]
