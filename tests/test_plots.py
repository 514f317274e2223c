"""The privacy–utility figure: groups of several axes, simulated points, reference lines."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tff_rec import plots  # noqa: E402


def _runs() -> pd.DataFrame:
    rows = []
    for population in ("N=10^4", "N=10^6"):
        for cohort in ("C=100", "C=1000"):
            for epsilon, value in ((2.0, 0.2), (8.0, 0.3)):
                rows.append({
                    "label": f"{population} · {cohort} · ε={epsilon}", "algorithm": "fedavg",
                    "privacy": "gaussian", "epsilon": epsilon, "test_ndcg@10": value,
                    "axis_population": population, "axis_cohort": cohort,
                    "simulated": "noise for C=1000" if cohort == "C=1000" else None,
                })
    rows.append({"label": "no DP", "algorithm": "fedavg", "privacy": "none", "epsilon": None,
                 "test_ndcg@10": 0.4, "axis_population": None, "axis_cohort": None})
    rows.append({"label": "popularity", "algorithm": "popularity", "privacy": "none",
                 "epsilon": None, "test_ndcg@10": 0.1, "axis_population": None,
                 "axis_cohort": None})
    return pd.DataFrame(rows)


def test_several_axes_give_one_line_per_combination_and_simulated_points_are_hollow():
    figure = plots.privacy_utility(_runs(), by="population,cohort")
    axes = figure.axes[0]
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend[:4] == ["N=10^4 · C=100", "N=10^4 · C=1000", "N=10^6 · C=100", "N=10^6 · C=1000"]
    assert any(label.startswith("hollow") for label in legend)
    hollow = [line for line in axes.get_lines()
              if line.get_marker() not in ("None", "none", None) and len(line.get_xdata())
              and line.get_markerfacecolor() == "white"]
    assert sum(len(line.get_xdata()) for line in hollow) == 4  # the C=1000 points
    references = [text.get_text() for text in axes.texts]
    assert "no DP" in references and "popularity" in references  # outside every group: gray lines


def test_rows_on_a_dataset_no_group_uses_draw_no_reference_line():
    runs = _runs().assign(dataset="synthetic")
    games = [{"label": f"Games · {name}", "algorithm": algorithm, "privacy": "none", "epsilon": None,
              "test_ndcg@10": 0.01, "dataset": "sasrec-games"}
             for name, algorithm in (("no DP", "fedavg"), ("popularity", "popularity"))]
    axes = plots.privacy_utility(pd.concat([runs, pd.DataFrame(games)]), by="population,cohort").axes[0]
    references = [text.get_text() for text in axes.texts]
    assert "no DP" in references and "popularity" in references
    assert not any(label.startswith("Games") for label in references)


def test_an_unknown_axis_is_named():
    with pytest.raises(KeyError, match="nothing"):
        plots.privacy_utility(_runs(), by="population,nothing")


# ---------------------------------------------------------------- bands, ticks, dodging


def test_confidence_band_is_mean_and_t_interval_clipped_to_the_metric_range():
    # mean 0.98, sem 0.02, t(0.975, 1) = 12.7062: the interval 0.98 ± 0.254 leaves [0, 1]
    mean, low, high = plots.confidence_band([0.96, 1.0], "ndcg@10")
    assert mean == pytest.approx(0.98) and high == 1.0 and low == pytest.approx(0.98 - 0.02 * 12.706205, rel=1e-5)
    assert plots.confidence_band([0.0, 0.04], "test_hr@10")[1] == 0.0
    assert plots.confidence_band([0.5, 2.5], "epsilon")[1] == 0.0  # ε ≥ 0, no upper bound
    assert plots.confidence_band([0.5, 2.5], "epsilon")[2] > 2.5
    assert plots.confidence_band([-1.0, 1.0], "loss_delta")[1] < -1  # unknown: not clipped
    assert plots.confidence_band([0.3], "mrr") == (0.3, 0.3, 0.3)  # one seed: no width
    assert plots.metric_range("val_mrr") == (0.0, 1.0)


def test_dodge_offsets_are_distinct_and_centred():
    offsets = plots.dodge(4, 0.3)
    assert len(set(offsets)) == 4 and offsets.sum() == pytest.approx(0.0)
    assert offsets.max() - offsets.min() == pytest.approx(0.3)
    assert list(plots.dodge(1, 0.3)) == [0.0]


def _bounded_runs() -> pd.DataFrame:
    """Two partitions × two mechanisms at the same ε's, near the top of [0, 1], two seeds each."""
    rows = []
    for partition in ("natural", "iid"):
        for mechanism in ("gaussian", "adaptive"):
            for epsilon in (2.0, 8.0):
                for seed, value in enumerate((0.95, 0.999)):
                    rows.append({"label": f"{partition} {mechanism} {epsilon}", "seed": seed,
                                 "algorithm": "fedavg", "privacy": mechanism, "epsilon": epsilon,
                                 "partition": partition, "test_ndcg@10": value})
    return pd.DataFrame(rows)


def test_privacy_utility_error_bars_are_clipped_and_equal_epsilons_dodged():
    axes = plots.privacy_utility(_bounded_runs(), by="partition").axes[0]
    tops = [segment[:, 1].max() for collection in axes.collections
            for segment in collection.get_segments()]
    assert tops and max(tops) <= 1.0
    markers = [line for line in axes.get_lines() if len(line.get_xdata()) and line.get_marker() in plots.MARKERS]
    xs = [x for line in markers for x in line.get_xdata()]
    assert len(xs) == 8 and len(set(xs)) == 8  # 4 series at ε = 2 and 8: no marker on another
    assert sorted(axes.get_xticks()) == [2.0, 8.0]  # the ticks name the true ε


def _curves(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = [{"study": "s", "label": label, "seed": seed, "round": r, "value": min(1.0, 0.9 + 0.04 * r + 0.02 * seed)}
            for label in ("fedavg", "fedprox") for seed in (0, 1) for r in (1, 2, 3)]
    return pd.DataFrame(rows)


def test_convergence_band_is_clipped_ticks_are_rounds_and_markers_dodged(monkeypatch):
    monkeypatch.setattr(plots.results, "load_curves", _curves)
    runs = pd.DataFrame({"label": ["fedavg", "fedprox"], "algorithm": ["fedavg", "fedprox"]})
    figure = plots.convergence(runs)
    axes = figure.axes[0]
    figure.canvas.draw()
    [band_a, band_b] = axes.collections
    for band in (band_a, band_b):
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.max() <= 1.0 and ys.min() >= 0.0
    ticks = [t for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    [a, b] = [line.get_xdata() for line in axes.get_lines() if line.get_label() in ("fedavg", "fedprox")]
    assert set(a).isdisjoint(b) and (abs(a - b) < 0.5).all()  # side by side, still at their round


def test_notebooks_and_the_plot_command_draw_through_the_same_functions(monkeypatch):
    import json
    import re
    from pathlib import Path

    calls = []
    band = plots.confidence_band
    monkeypatch.setattr(plots, "confidence_band", lambda *a, **k: calls.append(a) or band(*a, **k))
    plots.privacy_utility(_bounded_runs(), by="partition")
    assert calls  # the CLI's figure functions take their bands from confidence_band
    notebooks = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
    for path in notebooks:
        code = "\n".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"]
                         if cell["cell_type"] == "code")
        assert "fill_between" not in code and "errorbar" not in code, f"{path.name} draws its own band"
        if path.name in ("01_quickstart.ipynb", "03_privacy_utility.ipynb", "04_partition_x_privacy.ipynb"):
            assert re.search(r"^from tff_rec import .*\bplots\b", code, flags=re.M), \
                f"{path.name} does not import tff_rec.plots"
            assert "plots.convergence(" in code or "plots.privacy_utility(" in code, path.name
