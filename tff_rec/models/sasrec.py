"""SASRec (Kang & McAuley, 2018): a decoder-only transformer predicting the next item."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import tensorflow as tf

from tff_rec.models.base import CommonHParams, ItemSequenceModel, keras_nlp, padding_mask, positive_int


@dataclasses.dataclass(frozen=True)
class SASRecHParams(CommonHParams):
    """SASRec hyperparameters.

    Presets (embedding_dim, num_blocks, num_heads, feed-forward width, √d item scaling):
    tiny 16/1/1/2d/no, small 32/1/2/2d/no, base 50/2/1/2d/no (the paper's dimensions with a
    wider feed-forward, which gives the small models here a little more capacity at low cost),
    large 512/6/8/2d/no (the largest that still trains a few federated rounds on a 2-core
    machine), paper 50/2/1/d/yes (Kang & McAuley 2018 exactly; its training settings — dropout
    0.5 (0.2 on ML-1M), loss bce, Adam β2 0.98, batch 128 — are task keys: see tasks/reproduce/).
    num_blocks: stacked causal self-attention blocks.
    num_heads: attention heads; must divide embedding_dim.
    intermediate_dim: feed-forward hidden size; None means the preset's (2 × embedding_dim,
      or embedding_dim for paper).
    scale_embeddings: multiply item embeddings by √embedding_dim before adding the position
      embeddings, as the paper's code does; None means the preset's.
    dropout (paper: 0.5; 0.2 on ML-1M), max_len (paper: 50; 200 on ML-1M), tie_embeddings (as
    the paper), loss, num_sampled, num_negatives, gbce_t, size: see `CommonHParams`.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"embedding_dim": 16, "num_blocks": 1, "num_heads": 1, "scale_embeddings": False},
        "small": {"embedding_dim": 32, "num_blocks": 1, "num_heads": 2, "scale_embeddings": False},
        "base": {"embedding_dim": 50, "num_blocks": 2, "num_heads": 1, "scale_embeddings": False},
        "large": {"embedding_dim": 512, "num_blocks": 6, "num_heads": 8, "scale_embeddings": False},
        "paper": {"embedding_dim": 50, "num_blocks": 2, "num_heads": 1, "intermediate_dim": 50,
                  "scale_embeddings": True},
    }

    num_blocks: Optional[int] = None
    num_heads: Optional[int] = None
    intermediate_dim: Optional[int] = None
    scale_embeddings: Optional[bool] = None

    def derive(self) -> None:
        if self.intermediate_dim is None and isinstance(self.embedding_dim, int):
            object.__setattr__(self, "intermediate_dim", 2 * self.embedding_dim)

    def validate(self) -> None:
        super().validate()
        for label in ("num_blocks", "num_heads", "intermediate_dim"):
            positive_int(label, getattr(self, label))
        if not isinstance(self.scale_embeddings, bool):
            raise ValueError(
                f"model.scale_embeddings must be true or false. Found {self.scale_embeddings!r}."
            )
        if self.embedding_dim % self.num_heads:
            raise ValueError(
                "model.num_heads must divide model.embedding_dim. "
                f"Found {self.embedding_dim} and {self.num_heads}."
            )


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
