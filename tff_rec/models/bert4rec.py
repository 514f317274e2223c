"""BERT4Rec (Sun et al., 2019): a bidirectional transformer predicting masked items."""
from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf

from tff_rec.models.base import ItemSequenceModel, keras_nlp, padding_mask
from tff_rec.models.hparams import BERT4RecHParams
from tff_rec.models.examples import mask_token


class BERT4Rec(ItemSequenceModel):
    """Bidirectional transformer encoder over the item sequence, with keras-nlp layers.

    inputs int32 [batch, L] of item ids and [MASK] (num_items + 1) → logits float32
    [batch, L, num_items + 1] (no column for [MASK], so it is never ranked). Token + learned
    position embeddings, layer norm and dropout (as BERT), `num_blocks` post-norm
    `TransformerEncoder`s with GELU (every position attends to every real item, padding keys
    masked), and the item scores of `ItemSequenceModel`.
    """

    def __init__(self, num_items: int, hparams: BERT4RecHParams, **kwargs: Any) -> None:
        super().__init__(num_items, hparams, **kwargs)
        self.embedding = keras_nlp.layers.TokenAndPositionEmbedding(
            vocabulary_size=mask_token(num_items) + 1,
            sequence_length=hparams.max_len,
            embedding_dim=hparams.embedding_dim,
            name="item_and_position_embedding",
        )
        self.item_table = self.embedding.token_embedding
        self.output_projection = self._output_projection()
        self.embedding_norm = tf.keras.layers.LayerNormalization(epsilon=1e-5, name="embedding_norm")
        self.embedding_dropout = tf.keras.layers.Dropout(hparams.dropout, name="embedding_dropout")
        self.blocks = [
            keras_nlp.layers.TransformerEncoder(
                intermediate_dim=hparams.intermediate_dim,
                num_heads=hparams.num_heads,
                dropout=hparams.dropout,
                activation="gelu",
                name=f"block_{i}",
            )
            for i in range(hparams.num_blocks)
        ]

    def encode(self, inputs: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
        mask = padding_mask(inputs)
        x = self.embedding_norm(self.embedding(inputs))
        x = self.embedding_dropout(x, training=training)
        for block in self.blocks:
            x = block(x, padding_mask=mask, training=training)
        return x
