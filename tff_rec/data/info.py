"""Dataset statistics before and after filtering, as a dict (for --json) or a text table."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from tff_rec.data.preprocess import to_sequences
from tff_rec.data.sources import default_min_interactions, load, source_params
from tff_rec.data.types import Interactions, SequenceData

STATISTICS = (
    "users",
    "items",
    "interactions",
    "density",
    "min_length",
    "median_length",
    "mean_length",
    "max_length",
)


def info(
    name: str,
    path: Optional[Union[str, Path]],
    params: Optional[Mapping[str, Any]],
    min_user_interactions: Optional[int] = None,
    min_item_interactions: Optional[int] = None,
) -> dict[str, Any]:
    """Load, preprocess and describe a dataset; the dict also records what was asked for.
    Thresholds left None are the dataset's defaults (`sources.default_min_interactions`)."""
    default_users, default_items = default_min_interactions(name)
    min_user_interactions = default_users if min_user_interactions is None else min_user_interactions
    min_item_interactions = default_items if min_item_interactions is None else min_item_interactions
    interactions = load(name, path, params)
    data = to_sequences(interactions, min_user_interactions, min_item_interactions)
    return {
        "dataset": name,
        "params": {**source_params(name), **(params or {})},
        "min_user_interactions": min_user_interactions,
        "min_item_interactions": min_item_interactions,
        **describe(interactions, data),
    }


def describe(interactions: Interactions, data: SequenceData) -> dict[str, dict[str, Any]]:
    """``raw`` (the log as loaded) and ``filtered`` (the sequences) statistics."""
    events = interactions.events
    raw_lengths = events.groupby("user", observed=True, sort=False).size().to_numpy()
    return {
        "raw": _statistics(raw_lengths, events["item"].nunique()),
        "filtered": _statistics(np.diff(data.flat()[1]), data.num_items),
    }


def format_info(summary: Mapping[str, Any]) -> str:
    """A text table, one row per statistic and one column per section (raw, filtered).

    Takes ``describe`` output, or ``info`` output, whose dataset line then heads the table.
    """
    header = f"{'':<16}{'raw':>14}{'filtered':>14}"
    rows = [
        f"{key:<16}{_format(summary['raw'][key]):>14}{_format(summary['filtered'][key]):>14}"
        for key in STATISTICS
    ]
    title = []
    if "dataset" in summary:
        params = ", ".join(f"{key}={value}" for key, value in summary["params"].items())
        users, items = summary["min_user_interactions"], summary["min_item_interactions"]
        kept = (
            "not filtered (k-core 0/0: the file is used as it is)" if max(users, items) <= 1
            else f"filtered keeps users with at least {users} and items with at least {items} "
                 f"interactions"
        )
        title = [f"dataset {summary['dataset']}{f' ({params})' if params else ''}; {kept}"]
    return "\n".join([*title, header, *rows])


def _statistics(lengths: np.ndarray, items: int) -> dict[str, Any]:
    """Counts and per-user sequence-length statistics (all 0 for an empty log)."""
    users, interactions = len(lengths), int(lengths.sum())
    if not users:
        return {key: 0 for key in STATISTICS}
    return {
        "users": users,
        "items": int(items),
        "interactions": interactions,
        "density": interactions / (users * items),
        "min_length": int(lengths.min()),
        "median_length": float(np.median(lengths)),
        "mean_length": interactions / users,
        "max_length": int(lengths.max()),
    }


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if value < 1 else f"{value:,.1f}"
    return f"{value:,}"
