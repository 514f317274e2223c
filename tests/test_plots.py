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


def test_an_unknown_axis_is_named():
    with pytest.raises(KeyError, match="nothing"):
        plots.privacy_utility(_runs(), by="population,nothing")
