"""The loss registry (`LOSSES`, the values of `model.loss`), declared without TensorFlow.

An entry says whether the model must return hidden states (not logits) in training mode and
how to build the Keras loss for a model; the builders live in `losses` (TensorFlow) and are
imported when a run builds its model (`tff_rec.lazy.Ref`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from tff_rec.lazy import Ref
from tff_rec.registry import Registry


@dataclasses.dataclass(frozen=True)
class LossEntry:
    """A training loss: its name and description, how to build it for a model, and whether the
    model must then return hidden states (not logits) in training mode. Its parameters are
    model keys (`hparams.CommonHParams`: num_sampled, num_negatives, gbce_t), so `params` is
    empty."""

    name: str
    description: str
    build: Callable[[Any], Any]  # model → tf.keras.losses.Loss
    scores_hidden_states: bool
    params: tuple = ()


LOSSES: Registry[LossEntry] = Registry("loss", "model.loss", entries=(
    LossEntry("softmax", "full cross-entropy over every item (cost ∝ num_items per position)",
              Ref("tff_rec.models.losses:softmax_loss"), scores_hidden_states=False),
    LossEntry("sampled_softmax", "the target's cross-entropy against model.num_sampled items "
              "drawn uniformly once per batch", Ref("tff_rec.models.losses:sampled_softmax_loss"),
              scores_hidden_states=True),
    LossEntry("bce", "the SASRec paper's binary cross-entropy with model.num_negatives negatives "
              "per position (paper: 1), never the target", Ref("tff_rec.models.losses:bce_loss"),
              scores_hidden_states=True),
    LossEntry("gbce", "gSASRec's generalised BCE (Petrov & Macdonald 2023), calibrated by "
              "model.gbce_t, with model.num_negatives negatives (paper: 256)",
              Ref("tff_rec.models.losses:gbce_loss"), scores_hidden_states=True),
))
