"""The values that flow through the data stage: raw log → sequences → leave-one-out split."""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import pandas as pd

PADDING_ITEM = 0


@dataclasses.dataclass(frozen=True)
class Interactions:
    """A raw interaction log, as loaded from a source, before any filtering.

    events: one row per interaction, columns ``user`` (str), ``item`` (str), ``timestamp`` (int64).
      Rows are in file order; that order breaks timestamp ties (see ``preprocess``). The loaders
      store ``user`` and ``item`` as categoricals of str to save memory (see ``events_frame``).
    item_categories: item (str) → category name (str), or None when the source has none.
    user_attributes: DataFrame indexed by user (str), one str column per attribute, or None.
    """

    events: pd.DataFrame
    item_categories: Optional[pd.Series] = None
    user_attributes: Optional[pd.DataFrame] = None


@dataclasses.dataclass(frozen=True)
class SequenceData:
    """Filtered, chronological per-user item sequences with item ids 1..num_items (0 = padding).

    users[u] is the original id of user u; sequences[u] its int32 item ids in time order.
    item_ids[i - 1] is the original id of item i.
    item_category: int32 array of shape [num_items + 1]; item_category[i] indexes category_names
      (entry 0, the padding item, is 0 and meaningless), or None when the source has no categories.
    user_attributes: DataFrame with one row per user, in the order of ``users``, or None.
    """

    users: tuple[str, ...]
    sequences: tuple[np.ndarray, ...]
    num_items: int
    item_ids: tuple[str, ...]
    item_category: Optional[np.ndarray] = None
    category_names: tuple[str, ...] = ()
    user_attributes: Optional[pd.DataFrame] = None
    # (items, offsets), see `flat`; filled by `to_sequences`, else built on first use.
    packed: Optional[tuple[np.ndarray, np.ndarray]] = dataclasses.field(
        default=None, repr=False, compare=False
    )

    @property
    def num_users(self) -> int:
        return len(self.users)

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """(items, offsets): every sequence concatenated in user order (int32) and int64 offsets
        [num_users + 1], so sequences[u] == items[offsets[u]:offsets[u + 1]]. For vectorized code."""
        if self.packed is None:
            object.__setattr__(self, "packed", pack(self.sequences))
        return self.packed


@dataclasses.dataclass(frozen=True)
class LeaveOneOutSplit:
    """Leave-one-out split per user: train prefix | validation item | test item.

    Users with at least 3 interactions hold out their last item (test) and second-to-last
    (validation); users with fewer only train, and their validation/test entries are 0.
    """

    data: SequenceData
    train: tuple[np.ndarray, ...]
    validation: np.ndarray
    test: np.ndarray

    # (items, offsets) of the training prefixes, see `train_flat`; filled by `leave_one_out`.
    packed_train: Optional[tuple[np.ndarray, np.ndarray]] = dataclasses.field(
        default=None, repr=False, compare=False
    )

    def evaluation_users(self) -> np.ndarray:
        """Indices of users that have held-out items."""
        return np.flatnonzero(self.test > 0)

    def train_flat(self) -> tuple[np.ndarray, np.ndarray]:
        """(items, offsets) of the training prefixes, as `SequenceData.flat` packs sequences."""
        if self.packed_train is None:
            object.__setattr__(self, "packed_train", pack(self.train))
        return self.packed_train

    def train_lengths(self) -> np.ndarray:
        """int64 [num_users]: the length of each training prefix."""
        return np.diff(self.train_flat()[1])


def pack(sequences) -> tuple[np.ndarray, np.ndarray]:
    """(items, offsets int64 [len + 1]) of a sequence of 1-D arrays; items keep the arrays' dtype
    (int32 when there are none)."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    dtype = np.asarray(sequences[0]).dtype if len(sequences) else np.int32
    items = np.concatenate([np.asarray(s).ravel() for s in sequences] + [np.empty(0, dtype)]).astype(dtype)
    return items, offsets


def unpack(items: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
    """The per-user arrays (views of ``items``) of a packed (items, offsets) pair."""
    bounds = offsets.tolist()
    return tuple(items[start:stop] for start, stop in zip(bounds[:-1], bounds[1:]))


def events_frame(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray) -> pd.DataFrame:
    """An ``Interactions.events`` frame with ids stored as categoricals of str.

    Integer ids become their decimal strings; a 20M-row log then costs a few hundred MB, not GBs.
    """
    return pd.DataFrame(
        {
            "user": _str_categorical(users),
            "item": _str_categorical(items),
            "timestamp": np.asarray(timestamps, dtype=np.int64),
        }
    )


def _str_categorical(ids: np.ndarray) -> pd.Categorical:
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu":
        uniques, codes = unique_integers(ids)
        return pd.Categorical.from_codes(codes, categories=[str(value) for value in uniques.tolist()])
    return pd.Categorical([str(value) for value in ids])


def unique_integers(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for integers, without sorting when their range is
    at most a few times their count (a table of the range instead: O(n), not O(n log n))."""
    values = np.asarray(values)
    if values.size and values.dtype.kind in "iu":
        low, high = int(values.min()), int(values.max())
        if high - low < 4 * values.size + 1024:
            present = np.zeros(high - low + 1, dtype=bool)
            shifted = values - values.dtype.type(low)
            present[shifted] = True
            code_of = np.cumsum(present, dtype=np.int64) - 1
            return (np.flatnonzero(present) + low).astype(values.dtype), code_of[shifted]
    uniques, inverse = np.unique(values, return_inverse=True)
    return uniques, inverse.reshape(-1).astype(np.int64, copy=False)
