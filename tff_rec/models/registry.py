"""The model registry: name → hyperparameters, Keras model, and the examples it trains on.

Declared without TensorFlow: an entry's hyperparameter class (`hparams`) validates a task's
`[model]` keys at load, and its `build` (a `tff_rec.lazy.Ref` for the built-in models) is
imported only when a run builds the model. Models from other packages register through the
`tff_rec.models` entry point group (`tff_rec.plugins`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from tff_rec.lazy import Ref
from tff_rec.models.hparams import (
    BERT4RecHParams, CommonHParams, GRU4RecHParams, SASRecHParams, declared,
)
from tff_rec.params import Param
from tff_rec.registry import Registry
from tff_rec.models.loss_registry import LOSSES


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registered model: its name and one-line description, its hyperparameter dataclass
    (`hparams.CommonHParams`: the task's `[model]` keys with their declarations and presets,
    validated on construction), its constructor `build(num_items, hparams) -> Keras model` (an
    `ItemSequenceModel`), and the `EXAMPLES` builder it trains on."""

    name: str
    description: str
    hparams: type[CommonHParams]
    build: Callable[[int, Any], Any]
    examples: str

    @property
    def params(self) -> tuple[Param, ...]:
        """The `[model]` keys it takes (`hparams.declared`)."""
        return declared(self.hparams)


MODELS: Registry[ModelEntry] = Registry("model", "model.name", group="tff_rec.models", entries=(
    ModelEntry("sasrec", "SASRec: causal self-attention (Kang & McAuley 2018)", SASRecHParams,
               Ref("tff_rec.models.sasrec:SASRec"), examples="next_item"),
    ModelEntry("bert4rec", "BERT4Rec: bidirectional encoder, masked items (Sun et al. 2019)",
               BERT4RecHParams, Ref("tff_rec.models.bert4rec:BERT4Rec"), examples="masked_item"),
    ModelEntry("gru4rec", "GRU4Rec: recurrent (Hidasi et al. 2016)", GRU4RecHParams,
               Ref("tff_rec.models.gru4rec:GRU4Rec"), examples="next_item"),
))


def model_hparams(name: str) -> dict[str, Any]:
    """Allowed hyperparameters of model `name` and their defaults (None = from the size preset
    or derived, see the hyperparameter class)."""
    return MODELS.defaults(name)


def resolve_hparams(name: str, **hparams: Any) -> CommonHParams:
    """The validated hyperparameter dataclass of model `name`, presets and derived keys filled
    in; ValueError names a bad key."""
    MODELS.validate(name, hparams)
    return MODELS.entry(name).hparams(**hparams)


def build_model(name: str, num_items: int, *, seed: int, **hparams: Any) -> Any:
    """A built (variables created), uncompiled Keras model; same seed → same initial weights.

    Determinism: `tf.keras.utils.set_random_seed(seed)` runs first. It reseeds Keras's seed
    generator, from which every unseeded initializer draws its own op seed in creation order (so
    this holds in eager mode and inside TFF's graph tracing alike), and, as a side effect, Python's
    `random`, NumPy's global RNG and TF's global seed. Explicit initializer seeds are not an
    option: keras-nlp clones one initializer for all sublayers of a block, which would make
    same-shaped kernels (query, key, value) identical.
    """
    import tensorflow as tf

    from tff_rec.models.dropout import make_dropout_stateless

    config = resolve_hparams(name, **hparams)
    if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)) or num_items < 1:
        raise ValueError(f"num_items must be a positive integer. Found {num_items!r}.")
    tf.keras.utils.set_random_seed(seed)
    model = MODELS.entry(name).build(num_items, config)
    model(tf.zeros([1, config.max_len], tf.int32))
    make_dropout_stateless(model)  # after the call: attention builds its dropout layers then
    return model


def training_loss(model: Any) -> Any:
    """The loss `model` trains with (its `loss` hyperparameter), bound to the model if needed:
    a `tf.keras.losses.Loss`."""
    return LOSSES[model.hparams.loss].build(model)


def example_recipe(name: str, task_seed: int, **hparams: Any) -> dict[str, Any]:
    """JSON-able description of model `name`'s training examples beyond (data, max_len):
    {"builder": an `EXAMPLES` name, **its parameters}. Equal recipes → equal examples."""
    from tff_rec.models.examples import EXAMPLES

    entry = MODELS.entry(name)
    config = resolve_hparams(name, **hparams)
    return {"builder": entry.examples, **EXAMPLES[entry.examples].params(config, task_seed)}
