"""What every model shares: item scoring (the hyperparameters and presets: `hparams`).

A model encodes int32 item ids [batch, L] (left-padded with 0) into hidden states [batch, L, d]
and scores items by the dot product of a hidden state with each item's output vector: the row of
the input item embedding when tied, a separate [d, num_items + 1] matrix otherwise. Logits cover
columns 0..num_items (0 = padding, never a target, never ranked); extra input tokens (BERT4Rec's
[MASK]) have no output column.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Optional

import tensorflow as tf

with contextlib.redirect_stdout(io.StringIO()):  # keras-core prints its backend to stdout
    import keras_nlp  # noqa: F401  (re-exported for the model modules)

from tff_rec.data.types import PADDING_ITEM
from tff_rec.models.hparams import CommonHParams
from tff_rec.models.loss_registry import LOSSES


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

    # Not converted by AutoGraph: the models have no tensor-dependent Python control flow, so
    # converting them (recursively, once per process, at every graph build) only costs time:
    # ≈ 3.5 s of the first learning-process build's ≈ 10 s (ARCHITECTURE.md, Performance notes).
    @tf.autograph.experimental.do_not_convert
    def call(self, inputs: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
        hidden = self.encode(inputs, training=training)
        if training and LOSSES[self.hparams.loss].scores_hidden_states:
            return hidden
        return self.logits(hidden)


def padding_mask(inputs: tf.Tensor) -> tf.Tensor:
    """bool [batch, L]: True at real items."""
    return tf.not_equal(inputs, PADDING_ITEM)
