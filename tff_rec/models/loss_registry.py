"""The loss registry (`LOSSES`, the values of `model.loss`), declared without TensorFlow.

An entry says whether the model must return hidden states (not logits) in training mode and
how to build the Keras loss for a model; the builders live in `losses` (TensorFlow) and are
imported when a run builds its model (`tff_rec.lazy.Ref`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from tff_rec.lazy import Ref


@dataclasses.dataclass(frozen=True)
class LossEntry:
    """A training loss: how to build it for a model, and whether the model must then return
    hidden states (not logits) in training mode."""

    build: Callable[[Any], Any]  # model → tf.keras.losses.Loss
    scores_hidden_states: bool


LOSSES: dict[str, LossEntry] = {
    "softmax": LossEntry(build=Ref("tff_rec.models.losses:softmax_loss"),
                         scores_hidden_states=False),
    "sampled_softmax": LossEntry(build=Ref("tff_rec.models.losses:sampled_softmax_loss"),
                                 scores_hidden_states=True),
    "bce": LossEntry(build=Ref("tff_rec.models.losses:bce_loss"), scores_hidden_states=True),
    "gbce": LossEntry(build=Ref("tff_rec.models.losses:gbce_loss"), scores_hidden_states=True),
}
