"""Keras sequential recommenders, their losses, training examples and registry.

Conventions: item ids are 1..num_items and 0 is padding. A model maps int32 inputs
[batch, max_len] of item ids, LEFT-padded with 0 (most recent item last), to logits
[batch, max_len, num_items + 1]; evaluation reads the logits at the last position. Column 0
(padding) is an ordinary output column that the loss never targets and evaluation never ranks.

Modules: `hparams` (every model's hyperparameters and size presets, no TensorFlow), `base`
(item scoring), one module per model (`sasrec`, `bert4rec`, `gru4rec`), `losses` (full and
sampled softmax; their registry `loss_registry`), `examples` (per-family training examples and
evaluation inputs) and `registry` (`MODELS`: name → hyperparameters, Keras model, examples),
each of which works with `tff.learning.models.from_keras_model`.

Names are imported from their module on first use (PEP 562): `from tff_rec.models import
resolve_hparams` (task validation) imports no TensorFlow; `from tff_rec.models import SASRec`
does.
"""
from __future__ import annotations

import importlib
from typing import Any

# Name → the module that defines it (see the docstring).
_EXPORTS = {
    "BERT4Rec": "bert4rec", "BERT4RecHParams": "hparams", "CommonHParams": "hparams",
    "EXAMPLES": "examples", "ExampleBuilder": "examples", "GRU4Rec": "gru4rec",
    "GRU4RecHParams": "hparams", "HistoryInputs": "examples", "ItemSequenceModel": "base",
    "LOSSES": "loss_registry", "MODELS": "registry", "MaskedNextItemLoss": "losses",
    "ModelEntry": "registry", "SASRec": "sasrec", "SASRecHParams": "hparams", "SIZES": "hparams",
    "SampledSoftmaxLoss": "losses", "batch_spec": "examples", "build_model": "registry",
    "example_recipe": "registry", "left_pad": "examples", "make_masked_examples": "examples",
    "make_training_example": "examples", "make_training_examples": "examples",
    "mask_token": "examples", "masked_history_inputs": "examples", "model_hparams": "registry",
    "resolve_hparams": "registry", "sample_items": "losses", "training_loss": "registry",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
