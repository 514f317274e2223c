"""Raw log → filtered, chronological, re-indexed per-user sequences.

Rules (all deterministic, independent of row order except where stated):
- k-core: drop users with fewer than ``min_user_interactions`` and items with fewer than
  ``min_item_interactions`` interactions, repeatedly until nothing changes (dropping an item
  can push a user under the threshold and vice versa). Repeated user-item pairs each count.
  A threshold of 0 or 1 disables that side.
- Order within a user: by timestamp; equal timestamps keep their order in the log (stable).
- Ids: users and items are ordered by their original id, numerically when every id of that
  kind is a decimal integer, else as strings; items then get 1..N (0 is padding).
- Categories: ``category_names`` are the sorted distinct categories of the kept items; an item
  the source gives no category gets ``UNKNOWN_CATEGORY``. User attributes missing for a kept
  user are ``UNKNOWN_CATEGORY`` too.
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np
import pandas as pd

from tff_rec.data.errors import DataError
from tff_rec.data.types import Interactions, SequenceData, unique_integers, unpack

UNKNOWN_CATEGORY = "(unknown)"
_DECIMAL = re.compile(r"[0-9]+")
_DECIMALS = re.compile(r"[0-9]+(?:\n[0-9]+)*")


def to_sequences(
    interactions: Interactions, min_user_interactions: int = 5, min_item_interactions: int = 5
) -> SequenceData:
    """Filter, order and re-index an interaction log (see the module docstring for the rules)."""
    for name, value in (
        ("min_user_interactions", min_user_interactions),
        ("min_item_interactions", min_item_interactions),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"{name} must be a non-negative integer, found {value!r}")
    events = interactions.events
    missing = {"user", "item", "timestamp"} - set(events.columns)
    if missing:
        raise DataError(f"the interaction log lacks the columns {sorted(missing)}")
    user_codes, user_ids = _ordered_codes(events["user"])
    item_codes, item_ids = _ordered_codes(events["item"])
    keep = _k_core(user_codes, item_codes, min_user_interactions, min_item_interactions)
    if not keep.any():
        raise DataError(
            f"no interactions left after keeping users with at least {min_user_interactions} "
            f"and items with at least {min_item_interactions} interactions "
            f"({len(events)} interactions before filtering); lower min_user_interactions "
            f"and/or min_item_interactions"
        )
    rows = np.flatnonzero(keep)
    user_codes, item_codes = user_codes[rows], item_codes[rows]
    timestamps = events["timestamp"].to_numpy(dtype=np.int64)[rows]
    order = _chronological(user_codes, timestamps)
    kept_users, user_index = unique_integers(user_codes)
    kept_items, item_index = unique_integers(item_codes)
    items_in_order = (item_index[order] + 1).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(user_index, minlength=len(kept_users)))])
    item_names = tuple(item_ids[kept_items])
    user_names = tuple(user_ids[kept_users])
    categories, category_names = _categories(interactions.item_categories, item_names)
    return SequenceData(
        users=user_names,
        sequences=unpack(items_in_order, offsets),
        num_items=len(item_names),
        item_ids=item_names,
        item_category=categories,
        category_names=category_names,
        user_attributes=_attributes(interactions.user_attributes, user_names),
        packed=(items_in_order, offsets.astype(np.int64)),
    )


def _chronological(user_codes: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """The order by (user, timestamp), ties in row order: ``np.lexsort((rows, timestamps, users))``.

    One stable sort of a combined key when it fits in int64 (timsort: linear on the usual log that
    is already grouped by user and in time order), else the lexsort (stable, so rows break ties).
    """
    if not len(user_codes):
        return np.empty(0, dtype=np.int64)
    low, high = int(timestamps.min()), int(timestamps.max())
    span = high - low + 1
    if (int(user_codes.max()) + 1) * span >= 2**62:
        return np.lexsort((timestamps, user_codes))
    key = user_codes.astype(np.int64) * span + (timestamps - low)
    if np.all(key[1:] >= key[:-1]):
        return np.arange(len(key))
    return np.argsort(key, kind="stable")


def _ordered_codes(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..K-1 for the distinct ids, numbered in id order; and the ids as str, in order."""
    codes, uniques = pd.factorize(ids, sort=False)
    if (codes < 0).any():
        raise DataError(f"the interaction log has a missing {ids.name} id")
    names = np.array([str(value) for value in uniques], dtype=object)
    if _all_decimal(names):
        rank = _numeric_rank(names)
    else:
        rank = sorted(range(len(names)), key=names.__getitem__)
    position = np.empty(len(names), dtype=np.int64)
    position[rank] = np.arange(len(names))
    return position[codes], names[rank]


def _all_decimal(names: np.ndarray) -> bool:
    """Whether every name is a decimal integer (one regex pass over the joined names)."""
    joined = "\n".join(names)
    return bool(len(names)) and joined.count("\n") == len(names) - 1 and bool(_DECIMALS.fullmatch(joined))


def _numeric_rank(names: np.ndarray) -> list[int]:
    """Codes sorted by (int(name), name): vectorized when no two names have the same value."""
    if max(len(name) for name in names) <= 18:  # fits int64
        values = np.array(names, dtype=str).astype(np.int64)
        rank = np.argsort(values, kind="stable")
        if np.all(np.diff(values[rank]) > 0):
            return rank.tolist()
    return sorted(range(len(names)), key=lambda code: (int(names[code]), names[code]))


def _k_core(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Mask of the interactions that survive iterative user/item count filtering."""
    num_users, num_items = (int(codes.max(initial=-1)) + 1 for codes in (users, items))
    keep = np.ones(len(users), dtype=bool)
    while True:
        user_counts = np.bincount(users[keep], minlength=num_users)
        item_counts = np.bincount(items[keep], minlength=num_items)
        survivors = keep & (user_counts[users] >= min_user) & (item_counts[items] >= min_item)
        if survivors.sum() == keep.sum():
            return keep
        keep = survivors


def _categories(
    item_categories: Optional[pd.Series], item_names: tuple[str, ...]
) -> tuple[Optional[np.ndarray], tuple[str, ...]]:
    """Per-item category index (entry 0 is padding) and the sorted category names."""
    if item_categories is None:
        return None, ()
    unique = item_categories[~item_categories.index.astype(str).duplicated()]
    unique.index = unique.index.astype(str)
    names = unique.reindex(list(item_names)).fillna(UNKNOWN_CATEGORY).astype(str).to_numpy()
    category_names, index = np.unique(names, return_inverse=True)
    return (
        np.concatenate([[0], index]).astype(np.int32),
        tuple(str(name) for name in category_names),
    )


def _attributes(
    attributes: Optional[pd.DataFrame], user_names: tuple[str, ...]
) -> Optional[pd.DataFrame]:
    """User attributes reindexed to ``user_names`` (index = user id)."""
    if attributes is None:
        return None
    attributes = attributes[~attributes.index.astype(str).duplicated()]
    attributes.index = attributes.index.astype(str)
    aligned = attributes.reindex(list(user_names)).fillna(UNKNOWN_CATEGORY).astype(str)
    aligned.index.name = "user"
    return aligned

