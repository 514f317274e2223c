"""What every model shares: common hyperparameters with size presets, and item scoring.

A model encodes int32 item ids [batch, L] (left-padded with 0) into hidden states [batch, L, d]
and scores items by the dot product of a hidden state with each item's output vector: the row of
the input item embedding when tied, a separate [d, num_items + 1] matrix otherwise. Logits cover
columns 0..num_items (0 = padding, never a target, never ranked); extra input tokens (BERT4Rec's
[MASK]) have no output column.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Any, ClassVar, Optional

import numpy as np
import tensorflow as tf

with contextlib.redirect_stdout(io.StringIO()):  # keras-core prints its backend to stdout
    import keras_nlp  # noqa: F401  (re-exported for the model modules)

from tff_rec.data.types import PADDING_ITEM
from tff_rec.models.losses import LOSSES

SIZES = ("tiny", "small", "base", "large")  # every model's presets; SASRec adds "paper"


def positive_int(label: str, value: Any) -> None:
    """ValueError naming model.<label> unless value is a positive int (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"model.{label} must be a positive integer. Found {value!r}.")


def unit_interval(label: str, value: Any, *, closed: bool = False) -> None:
    """ValueError naming model.<label> unless value is a number in [0, 1) ([0, 1] if closed)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (0 <= value <= 1 if closed else 0 <= value < 1):
        raise ValueError(f"model.{label} must be in [0, {'1]' if closed else '1)'}. Found {value!r}.")


def one_of(label: str, value: Any, allowed: Any) -> None:
    """ValueError naming model.<label>, the bad value and the allowed ones."""
    if value not in allowed:
        raise ValueError(f"model.{label} must be one of {', '.join(allowed)}. Found {value!r}.")


@dataclasses.dataclass(frozen=True)
class CommonHParams:
    """Hyperparameters every model has.

    size: preset (tiny | small | base | large; SASRec also paper) that fills the size keys left
      unset (None); an explicit key always wins over the preset. `base` has each model's paper
      dimensions; see the model's class for what else it changes.
    embedding_dim: item embedding and hidden size d (from the preset when unset).
    dropout: dropout rate of the model's layers.
    max_len: input length L; longer histories keep their last L items.
    tie_embeddings: score items with their input embedding instead of a separate output matrix.
    loss: what training minimizes (`losses.LOSSES`); evaluation always scores the full catalogue.
      softmax: full cross-entropy over every item (cost ∝ num_items per position).
      sampled_softmax: the target's cross-entropy against `num_sampled` items drawn uniformly
        once per batch (`losses.SampledSoftmaxLoss`).
      bce: the SASRec paper's binary cross-entropy, −log σ(s⁺) − Σ log(1 − σ(s⁻)), with
        `num_negatives` negatives (paper: 1) drawn per target position uniformly among the
        other items, never the target (`losses.NegativeSamplingBCE`).
      gbce: gSASRec's generalised BCE (Petrov & Macdonald 2023): the same negatives,
        (−β log σ(s⁺) − Σ log(1 − σ(s⁻))) / (k + 1), β = α(t(1 − 1/α) + 1/α),
        α = k / (num_items − 1), k = `num_negatives` (paper: 256), t = `gbce_t`
        (`losses.GeneralizedBCE`).
      With bce and gbce, num_negatives ≥ num_items − 1 means every other item, once (one-vs-all).
      Their memory grows with batch × max_len × min(num_negatives × embedding_dim, num_items).
    num_sampled: negatives per training batch of sampled_softmax (unused by the others).
    num_negatives: negatives per target position of bce and gbce (unused by the others).
    gbce_t: gbce's calibration t in [0, 1] (paper default 0.75; 0 is plain BCE, unused by the
      others).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    size: str = "base"
    embedding_dim: Optional[int] = None
    dropout: float = 0.2
    max_len: int = 50
    tie_embeddings: bool = True
    loss: str = "softmax"
    num_sampled: int = 100
    num_negatives: int = 1
    gbce_t: float = 0.75

    def __post_init__(self) -> None:
        one_of("size", self.size, tuple(self.PRESETS))
        for key, value in self.PRESETS[self.size].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        self.derive()
        self.validate()

    def derive(self) -> None:
        """Fill keys derived from others (after the preset); subclasses extend it."""

    def validate(self) -> None:
        """Raise ValueError naming the first bad key; subclasses extend it."""
        for label in ("embedding_dim", "max_len", "num_sampled", "num_negatives"):
            positive_int(label, getattr(self, label))
        unit_interval("dropout", self.dropout)
        unit_interval("gbce_t", self.gbce_t, closed=True)
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(
                f"model.tie_embeddings must be true or false. Found {self.tie_embeddings!r}."
            )
        one_of("loss", self.loss, tuple(LOSSES))


class ItemSequenceModel(tf.keras.Model):
    """Base of the recommenders: `encode` (per model) then item scores.

    call(inputs, training) returns logits [batch, L, num_items + 1], except in training mode
    under a loss that scores a sample of items itself (sampled_softmax, bce, gbce): then it returns the
    hidden states [batch, L, d], so the full [batch, L, num_items + 1] product is never computed
    while training. Subclasses set `item_table` (their input item embedding, a keras-nlp
    `ReversibleEmbedding`) and `output_projection` (None when tied, else a bias-free Dense).
    """

    item_table: Any
    output_projection: Optional[tf.keras.layers.Dense]

    def __init__(self, num_items: int, hparams: CommonHParams, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_items = num_items
        self.hparams = hparams

    def _output_projection(self) -> Optional[tf.keras.layers.Dense]:
        """None when tied; else a separate output matrix (not keras-nlp's untied
        `ReversibleEmbedding`: in tf.keras 2.14 it reuses the embedding's initializer instance,
        so its output matrix would start as the embedding matrix's values, reshaped)."""
        if self.hparams.tie_embeddings:
            return None
        return tf.keras.layers.Dense(self.num_items + 1, use_bias=False, name="output_projection")

    def encode(self, inputs: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
        """Hidden states float32 [batch, L, d] of int32 inputs [batch, L]."""
        raise NotImplementedError

    def logits(self, hidden: tf.Tensor) -> tf.Tensor:
        """Scores of every output column 0..num_items: [..., d] → [..., num_items + 1]."""
        if self.output_projection is None:
            return self.item_table(hidden, reverse=True)[..., : self.num_items + 1]
        return self.output_projection(hidden)

    def item_vectors(self, items: tf.Tensor) -> tf.Tensor:
        """Output vectors of item ids [...] → [..., d] (the columns `logits` multiplies with)."""
        if self.output_projection is None:
            return tf.gather(self.item_table.embeddings, items)
        columns = tf.gather(self.output_projection.kernel, tf.reshape(items, [-1]), axis=1)
        return tf.reshape(tf.transpose(columns), tf.concat([tf.shape(items), [-1]], axis=0))

    def call(self, inputs: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
        hidden = self.encode(inputs, training=training)
        if training and LOSSES[self.hparams.loss].scores_hidden_states:
            return hidden
        return self.logits(hidden)


def padding_mask(inputs: tf.Tensor) -> tf.Tensor:
    """bool [batch, L]: True at real items."""
    return tf.not_equal(inputs, PADDING_ITEM)
