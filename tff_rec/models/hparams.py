"""Model hyperparameters: every model's keys, defaults, size presets and checks (no TensorFlow).

`registry.MODELS` pairs each hyperparameter class with the Keras model built from it; task
validation reads only this module (`registry.resolve_hparams`), so loading a task imports no
TensorFlow (ARCHITECTURE.md, Registries and plugins). A hyperparameter class is a frozen
dataclass: its fields are the task's `[model]` keys, `PRESETS` fills the size keys left unset,
`derive` fills derived keys and `validate` raises ValueError naming the first bad key.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import numpy as np

from tff_rec.models.loss_registry import LOSSES

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
    loss: what training minimizes (`loss_registry.LOSSES`); evaluation always scores the full catalogue.
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


@dataclasses.dataclass(frozen=True)
class GRU4RecHParams(CommonHParams):
    """GRU4Rec hyperparameters (same examples and evaluation as SASRec).

    Presets (embedding_dim = GRU units, num_layers): tiny 16/1, small 32/1, base 100/1 (the
    paper's 100 units, one layer), large 512/2. The GRU width equals embedding_dim, so the item
    embedding can be tied to the output (tie_embeddings).
    num_layers: stacked GRU layers.
    """

    PRESETS: ClassVar[dict[str, dict[str, int]]] = {
        "tiny": {"embedding_dim": 16, "num_layers": 1},
        "small": {"embedding_dim": 32, "num_layers": 1},
        "base": {"embedding_dim": 100, "num_layers": 1},
        "large": {"embedding_dim": 512, "num_layers": 2},
    }

    num_layers: Optional[int] = None

    def validate(self) -> None:
        super().validate()
        positive_int("num_layers", self.num_layers)
