"""The popularity baseline: every user gets the items ranked by training-set frequency.

It has no Keras model: its record keeps the test ranks but no model/ folder (`tff_rec.saved`)."""
from __future__ import annotations

import numpy as np

from tff_rec.training.context import Outcome, RunContext, Training


def train_popularity(context: RunContext) -> Training:
    """No training: scores are item counts over all training prefixes; yields one row (its
    validation)."""
    scores = context.data.item_popularity.astype(np.float32)

    def score_fn(inputs: np.ndarray) -> np.ndarray:
        return np.broadcast_to(scores, (len(inputs), scores.shape[0]))

    row = {"round": 0}
    row.update(context.validation_columns(score_fn, 0))
    yield row
    return Outcome(score_fn=score_fn)
