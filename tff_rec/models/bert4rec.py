"""BERT4Rec (Sun et al., 2019): a bidirectional transformer predicting masked items."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import tensorflow as tf

from tff_rec.models.base import (
    CommonHParams, ItemSequenceModel, keras_nlp, padding_mask, positive_int, unit_interval,
)
from tff_rec.models.examples import mask_token


@dataclasses.dataclass(frozen=True)
class BERT4RecHParams(CommonHParams):
    """BERT4Rec hyperparameters; `base` and the other defaults follow the paper.

    Presets (embedding_dim, num_blocks, num_heads): tiny 16/1/1, small 32/1/2, base 64/2/2 (the
    paper's), large 512/6/8 (the largest that still trains a few federated rounds on a 2-core
    machine).
    num_blocks, num_heads: bidirectional encoder blocks and their heads (heads divide d).
    intermediate_dim: feed-forward hidden size; None means 4 × embedding_dim (as BERT).
    mask_rate: share of a training copy's items replaced by [MASK] (paper: 0.2 on ML-1M).
    dupe_factor: masked copies per user, each masked independently (paper: 10).
    mask_last_rate: probability that a copy masks only its last item, the evaluation task
      (the paper adds one such copy per user: 1 / (dupe_factor + 1) of them).
    """

    PRESETS: ClassVar[dict[str, dict[str, int]]] = {
        "tiny": {"embedding_dim": 16, "num_blocks": 1, "num_heads": 1},
        "small": {"embedding_dim": 32, "num_blocks": 1, "num_heads": 2},
        "base": {"embedding_dim": 64, "num_blocks": 2, "num_heads": 2},
        "large": {"embedding_dim": 512, "num_blocks": 6, "num_heads": 8},
    }

    dropout: float = 0.1
    num_blocks: Optional[int] = None
    num_heads: Optional[int] = None
    intermediate_dim: Optional[int] = None
    mask_rate: float = 0.2
    dupe_factor: int = 10
    mask_last_rate: float = 0.1

    def derive(self) -> None:
        if self.intermediate_dim is None and isinstance(self.embedding_dim, int):
            object.__setattr__(self, "intermediate_dim", 4 * self.embedding_dim)

    def validate(self) -> None:
        super().validate()
        for label in ("num_blocks", "num_heads", "intermediate_dim", "dupe_factor"):
            positive_int(label, getattr(self, label))
        if self.embedding_dim % self.num_heads:
            raise ValueError(
                "model.num_heads must divide model.embedding_dim. "
                f"Found {self.embedding_dim} and {self.num_heads}."
            )
        unit_interval("mask_last_rate", self.mask_last_rate, closed=True)
        unit_interval("mask_rate", self.mask_rate, closed=True)
        if self.mask_rate == 0:
            raise ValueError("model.mask_rate must be in (0, 1]. Found 0.")


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
