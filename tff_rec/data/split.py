"""Leave-one-out split: per user, the last item is the test item, the one before validation."""
from __future__ import annotations

import numpy as np

from tff_rec.data.types import PADDING_ITEM, LeaveOneOutSplit, SequenceData, unpack

MIN_EVALUATION_LENGTH = 3  # shorter sequences would leave no training prefix


def leave_one_out(data: SequenceData) -> LeaveOneOutSplit:
    """Hold out the last two items of every user with at least 3; shorter users only train.

    Vectorized over the packed sequences (`SequenceData.flat`).
    """
    items, offsets = data.flat()
    starts, ends = offsets[:-1], offsets[1:]
    held = (ends - starts) >= MIN_EVALUATION_LENGTH
    validation = np.where(held, items[np.maximum(ends - 2, 0)] if len(items) else 0, PADDING_ITEM)
    test = np.where(held, items[np.maximum(ends - 1, 0)] if len(items) else 0, PADDING_ITEM)
    train_ends = np.where(held, ends - 2, ends)
    keep = np.ones(len(items), dtype=bool)
    keep[np.concatenate([ends[held] - 2, ends[held] - 1]).astype(np.int64)] = False
    train_items = items[keep]
    train_offsets = np.concatenate([[0], np.cumsum(train_ends - starts)]).astype(np.int64)
    return LeaveOneOutSplit(
        data=data,
        train=unpack(train_items, train_offsets),
        validation=validation.astype(np.int32),
        test=test.astype(np.int32),
        packed_train=(train_items, train_offsets),
    )
