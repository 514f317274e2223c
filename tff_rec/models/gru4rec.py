"""GRU4Rec (Hidasi et al., 2016): a recurrent, non-transformer next-item reference."""
from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf

from tff_rec.models.base import ItemSequenceModel, keras_nlp, padding_mask
from tff_rec.models.hparams import GRU4RecHParams


class GRU4Rec(ItemSequenceModel):
    """Item embedding, dropout, `num_layers` GRUs over the sequence, dropout, item scores.

    inputs int32 [batch, L] → logits float32 [batch, L, num_items + 1]; position t sees items
    ..t only (recurrence), padding steps are masked (the state carries over them), and the
    output at t predicts the item after t, as SASRec's.
    """

    def __init__(self, num_items: int, hparams: GRU4RecHParams, **kwargs: Any) -> None:
        super().__init__(num_items, hparams, **kwargs)
        self.item_table = keras_nlp.layers.ReversibleEmbedding(
            num_items + 1, hparams.embedding_dim, name="item_embedding"
        )
        self.output_projection = self._output_projection()
        self.embedding_dropout = tf.keras.layers.Dropout(hparams.dropout, name="embedding_dropout")
        self.grus = [
            tf.keras.layers.GRU(hparams.embedding_dim, return_sequences=True, name=f"gru_{i}")
            for i in range(hparams.num_layers)
        ]
        self.output_dropout = tf.keras.layers.Dropout(hparams.dropout, name="output_dropout")

    def encode(self, inputs: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
        mask = padding_mask(inputs)
        x = self.embedding_dropout(self.item_table(inputs), training=training)
        for gru in self.grus:
            x = gru(x, mask=mask, training=training)
        return self.output_dropout(x, training=training)
