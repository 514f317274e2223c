"""SASRec (Kang & McAuley, 2018): a decoder-only transformer predicting the next item."""
from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf

from tff_rec.models.base import ItemSequenceModel, keras_nlp, padding_mask
from tff_rec.models.hparams import SASRecHParams


class SASRec(ItemSequenceModel):
    """Decoder-only transformer over the item sequence: SASRec with keras-nlp layers.

    inputs int32 [batch, L] → logits float32 [batch, L, num_items + 1]. Token + learned position
    embeddings, dropout, `num_blocks` pre-norm `TransformerDecoder`s (causal self-attention,
    padding keys masked), a final layer norm (pre-norm plus final norm as in the SASRec reference
    code), and the item scores of `ItemSequenceModel` (tied or separate output matrix, no bias).
    Outputs at padding positions are meaningless (they may even see later items, because a row
    whose keys are all masked attends uniformly); the loss ignores them and no real position
    ever attends to them.
    """

    def __init__(self, num_items: int, hparams: SASRecHParams, **kwargs: Any) -> None:
        super().__init__(num_items, hparams, **kwargs)
        self.embedding = keras_nlp.layers.TokenAndPositionEmbedding(
            vocabulary_size=num_items + 1,
            sequence_length=hparams.max_len,
            embedding_dim=hparams.embedding_dim,
            name="item_and_position_embedding",
        )
        self.item_table = self.embedding.token_embedding
        self.output_projection = self._output_projection()
        self.embedding_dropout = tf.keras.layers.Dropout(hparams.dropout, name="embedding_dropout")
        self.blocks = [
            keras_nlp.layers.TransformerDecoder(
                intermediate_dim=hparams.intermediate_dim,
                num_heads=hparams.num_heads,
                dropout=hparams.dropout,
                normalize_first=True,
                name=f"block_{i}",
            )
            for i in range(hparams.num_blocks)
        ]
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")

    def encode(self, inputs: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
        mask = padding_mask(inputs)
        if self.hparams.scale_embeddings:  # the paper's code: items × √d, then + positions
            items = self.embedding.token_embedding(inputs) * self.hparams.embedding_dim ** 0.5
            x = items + self.embedding.position_embedding(items)
        else:
            x = self.embedding(inputs)
        x = self.embedding_dropout(x, training=training)
        for block in self.blocks:
            x = block(x, decoder_padding_mask=mask, training=training)
        return self.final_norm(x)
