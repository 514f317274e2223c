"""Model hyperparameters: every model's keys, defaults, size presets and checks (no TensorFlow).

`registry.MODELS` pairs each hyperparameter class with the Keras model built from it; task
validation reads only this module (`registry.resolve_hparams`), so loading a task imports no
TensorFlow (ARCHITECTURE.md, Registries and plugins). A hyperparameter class is a frozen
dataclass whose fields are the task's `[model]` keys, each declared with `hparam` (type, default,
range, help: a `tff_rec.params.Param`, listed by `declared`). `PRESETS` fills the size keys left
unset, `derive` fills derived keys, and `validate` checks every declaration, then the rules
between keys (heads divide d, ...), raising ValueError naming the first bad key.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

from tff_rec.models.loss_registry import LOSSES
from tff_rec.params import AT_LEAST_ONE, Param, Range, at_most

SIZES = ("tiny", "small", "base", "large")  # every model's presets; SASRec adds "paper"


def hparam(default: Any, kind: type, help: str, range: Optional[Range] = None, *,
           choices: Optional[tuple[Any, ...]] = None, preset: bool = False, bound: str = "") -> Any:
    """A hyperparameter field: its dataclass default and its declaration (`declared`). `preset`:
    None (the default) means the size preset's or a derived value."""
    return dataclasses.field(default=default, metadata={"preset": preset, "param": dict(
        kind=kind, help=help, range=range, choices=choices, optional=preset, bound=bound)})


def declared(hparams: type) -> tuple[Param, ...]:
    """The `Param`s of a hyperparameter class, one per field (the `[model]` keys it takes).
    `size` takes the class's own presets; a plain field (a plugin's, not declared with `hparam`)
    is typed by its default and otherwise left to the class's `validate`."""
    params = []
    for field in dataclasses.fields(hparams):
        plain = {"kind": object if field.default is None else type(field.default), "help": "",
                 "optional": field.default is None}
        spec = dict(field.metadata.get("param") or plain)
        if field.name == "size":
            spec["choices"] = tuple(hparams.PRESETS)
        params.append(Param(field.name, default=field.default, **spec))
    return tuple(params)


def _heads_divide(hparams: Any) -> None:
    if hparams.embedding_dim % hparams.num_heads:
        raise ValueError(
            "model.num_heads must divide model.embedding_dim. "
            f"Found {hparams.embedding_dim} and {hparams.num_heads}."
        )


BETWEEN_0_AND_1 = Range(0.0, 1.0, high_inclusive=False)
ITEM_TABLE = "the item table is [items + 1, embedding_dim]"
FEED_FORWARD = "feed-forward width"


@dataclasses.dataclass(frozen=True)
class CommonHParams:
    """Hyperparameters every model has (see each field's help, `tff-rec tasks schema`).

    Losses (`model.loss`, `loss_registry.LOSSES`): evaluation always scores the full catalogue.
    softmax: full cross-entropy over every item (cost ∝ num_items per position).
    sampled_softmax: the target's cross-entropy against `num_sampled` items drawn uniformly once
      per batch (`losses.SampledSoftmaxLoss`).
    bce: the SASRec paper's binary cross-entropy, −log σ(s⁺) − Σ log(1 − σ(s⁻)), with
      `num_negatives` negatives (paper: 1) drawn per target position uniformly among the other
      items, never the target (`losses.NegativeSamplingBCE`).
    gbce: gSASRec's generalised BCE (Petrov & Macdonald 2023): the same negatives,
      (−β log σ(s⁺) − Σ log(1 − σ(s⁻))) / (k + 1), β = α(t(1 − 1/α) + 1/α),
      α = k / (num_items − 1), k = `num_negatives` (paper: 256), t = `gbce_t`
      (`losses.GeneralizedBCE`).
    With bce and gbce, num_negatives ≥ num_items − 1 means every other item, once (one-vs-all).
    Their memory grows with batch × max_len × min(num_negatives × embedding_dim, num_items).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    size: str = hparam("base", str, "preset that fills the size keys left unset; an explicit key "
                       "always wins. `base` has each model's paper dimensions")
    embedding_dim: Optional[int] = hparam(None, int, "item embedding and hidden size d",
                                          at_most(10_000), preset=True, bound=ITEM_TABLE)
    dropout: float = hparam(0.2, float, "dropout rate of the model's layers", BETWEEN_0_AND_1)
    max_len: int = hparam(50, int, "input length L; longer histories keep their last L items",
                          at_most(10_000),
                          bound="training examples are [examples, max_len] arrays built up front")
    tie_embeddings: bool = hparam(True, bool, "score items with their input embedding instead of "
                                  "a separate output matrix")
    loss: str = hparam("softmax", str, "what training minimizes (see `tff-rec tasks schema`, Losses)",
                       choices=tuple(LOSSES))
    num_sampled: int = hparam(100, int, "negatives per training batch of sampled_softmax",
                              at_most(1_000_000), bound="negatives per training batch")
    num_negatives: int = hparam(1, int, "negatives per target position of bce and gbce "
                                "(≥ num_items − 1: every other item)", AT_LEAST_ONE)
    gbce_t: float = hparam(0.75, float, "gbce's calibration t (paper 0.75; 0 is plain BCE)",
                           Range(0.0, 1.0))

    def __post_init__(self) -> None:
        size = next(param for param in declared(type(self)) if param.name == "size")
        size.validate(self.size, "model")
        for key, value in self.PRESETS[self.size].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        self.derive()
        self.validate()

    def derive(self) -> None:
        """Fill keys derived from others (after the preset); subclasses extend it."""

    def validate(self) -> None:
        """Every declared key (presets and derived keys filled, so none may be None), then the
        rules between keys (subclasses extend it); ValueError naming the first bad key."""
        for field, param in zip(dataclasses.fields(self), declared(type(self))):
            if field.metadata.get("preset"):  # filled by now
                param = dataclasses.replace(param, optional=False)
            param.validate(getattr(self, field.name), "model")


BLOCKS = hparam(None, int, "stacked transformer blocks", at_most(100), preset=True,
                bound="transformer blocks")
HEADS = hparam(None, int, "attention heads; must divide embedding_dim", at_most(10_000), preset=True)


@dataclasses.dataclass(frozen=True)
class SASRecHParams(CommonHParams):
    """SASRec (Kang & McAuley 2018): causal self-attention over the item sequence.

    Presets (embedding_dim, num_blocks, num_heads, feed-forward width, √d item scaling):
    tiny 16/1/1/2d/no, small 32/1/2/2d/no, base 50/2/1/2d/no (the paper's dimensions with a
    wider feed-forward, which gives the small models here a little more capacity at low cost),
    large 512/6/8/2d/no (the largest that still trains a few federated rounds on a 2-core
    machine), paper 50/2/1/d/yes (Kang & McAuley 2018 exactly; its training settings — dropout
    0.5 (0.2 on ML-1M), loss bce, Adam β2 0.98, batch 128 — are task keys: see tasks/reproduce/).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"embedding_dim": 16, "num_blocks": 1, "num_heads": 1, "scale_embeddings": False},
        "small": {"embedding_dim": 32, "num_blocks": 1, "num_heads": 2, "scale_embeddings": False},
        "base": {"embedding_dim": 50, "num_blocks": 2, "num_heads": 1, "scale_embeddings": False},
        "large": {"embedding_dim": 512, "num_blocks": 6, "num_heads": 8, "scale_embeddings": False},
        "paper": {"embedding_dim": 50, "num_blocks": 2, "num_heads": 1, "intermediate_dim": 50,
                  "scale_embeddings": True},
    }

    num_blocks: Optional[int] = BLOCKS
    num_heads: Optional[int] = HEADS
    intermediate_dim: Optional[int] = hparam(
        None, int, "feed-forward hidden size (unset: the preset's, else 2 × embedding_dim)",
        at_most(100_000), preset=True, bound=FEED_FORWARD)
    scale_embeddings: Optional[bool] = hparam(
        None, bool, "multiply item embeddings by √embedding_dim before adding the position "
        "embeddings, as the paper's code does (unset: the preset's)", preset=True)

    def derive(self) -> None:
        if self.intermediate_dim is None and isinstance(self.embedding_dim, int):
            object.__setattr__(self, "intermediate_dim", 2 * self.embedding_dim)

    def validate(self) -> None:
        super().validate()
        _heads_divide(self)


@dataclasses.dataclass(frozen=True)
class BERT4RecHParams(CommonHParams):
    """BERT4Rec (Sun et al. 2019): a bidirectional encoder trained to fill masked items.

    Presets (embedding_dim, num_blocks, num_heads): tiny 16/1/1, small 32/1/2, base 64/2/2 (the
    paper's), large 512/6/8 (the largest that still trains a few federated rounds on a 2-core
    machine). `base` and the other defaults follow the paper.
    """

    PRESETS: ClassVar[dict[str, dict[str, int]]] = {
        "tiny": {"embedding_dim": 16, "num_blocks": 1, "num_heads": 1},
        "small": {"embedding_dim": 32, "num_blocks": 1, "num_heads": 2},
        "base": {"embedding_dim": 64, "num_blocks": 2, "num_heads": 2},
        "large": {"embedding_dim": 512, "num_blocks": 6, "num_heads": 8},
    }

    dropout: float = hparam(0.1, float, "dropout rate of the model's layers", BETWEEN_0_AND_1)
    num_blocks: Optional[int] = BLOCKS
    num_heads: Optional[int] = HEADS
    intermediate_dim: Optional[int] = hparam(
        None, int, "feed-forward hidden size (unset: 4 × embedding_dim, as BERT)",
        at_most(100_000), preset=True, bound=FEED_FORWARD)
    mask_rate: float = hparam(0.2, float, "share of a training copy's items replaced by [MASK] "
                              "(paper: 0.2 on ML-1M)", Range(0.0, 1.0, low_inclusive=False))
    dupe_factor: int = hparam(10, int, "masked copies per user, each masked independently "
                              "(paper: 10)", at_most(1_000),
                              bound="masked copies of every user's sequence are built up front")
    mask_last_rate: float = hparam(
        0.1, float, "probability that a copy masks only its last item, the evaluation task (the "
        "paper adds one such copy per user: 1 / (dupe_factor + 1) of them)", Range(0.0, 1.0))

    def derive(self) -> None:
        if self.intermediate_dim is None and isinstance(self.embedding_dim, int):
            object.__setattr__(self, "intermediate_dim", 4 * self.embedding_dim)

    def validate(self) -> None:
        super().validate()
        _heads_divide(self)


@dataclasses.dataclass(frozen=True)
class GRU4RecHParams(CommonHParams):
    """GRU4Rec (Hidasi et al. 2016): recurrent, with SASRec's examples and evaluation.

    Presets (embedding_dim = GRU units, num_layers): tiny 16/1, small 32/1, base 100/1 (the
    paper's 100 units, one layer), large 512/2. The GRU width equals embedding_dim, so the item
    embedding can be tied to the output (tie_embeddings).
    """

    PRESETS: ClassVar[dict[str, dict[str, int]]] = {
        "tiny": {"embedding_dim": 16, "num_layers": 1},
        "small": {"embedding_dim": 32, "num_layers": 1},
        "base": {"embedding_dim": 100, "num_layers": 1},
        "large": {"embedding_dim": 512, "num_layers": 2},
    }

    num_layers: Optional[int] = hparam(None, int, "stacked GRU layers", at_most(100), preset=True,
                                       bound="GRU layers")
