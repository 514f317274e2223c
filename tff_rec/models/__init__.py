"""Keras sequential recommenders, their losses, training examples and registry.

Conventions: item ids are 1..num_items and 0 is padding. A model maps int32 inputs
[batch, max_len] of item ids, LEFT-padded with 0 (most recent item last), to logits
[batch, max_len, num_items + 1]; evaluation reads the logits at the last position. Column 0
(padding) is an ordinary output column that the loss never targets and evaluation never ranks.

Modules: `base` (shared hyperparameters, size presets, item scoring), one module per model
(`sasrec`, `bert4rec`, `gru4rec`), `losses` (full and sampled softmax), `examples` (per-family
training examples and evaluation inputs) and `registry` (`MODELS`: name → hyperparameters,
Keras model, examples), each of which works with `tff.learning.models.from_keras_model`.
"""
from tff_rec.models.base import SIZES, CommonHParams, ItemSequenceModel
from tff_rec.models.bert4rec import BERT4Rec, BERT4RecHParams
from tff_rec.models.examples import (
    EXAMPLES, ExampleBuilder, HistoryInputs, batch_spec, left_pad, make_masked_examples,
    make_training_example, make_training_examples, mask_token, masked_history_inputs,
)
from tff_rec.models.gru4rec import GRU4Rec, GRU4RecHParams
from tff_rec.models.losses import LOSSES, MaskedNextItemLoss, SampledSoftmaxLoss, sample_items
from tff_rec.models.registry import (
    MODELS, ModelEntry, build_model, example_recipe, model_hparams, resolve_hparams, training_loss,
)
from tff_rec.models.sasrec import SASRec, SASRecHParams

__all__ = [
    "BERT4Rec", "BERT4RecHParams", "CommonHParams", "EXAMPLES", "ExampleBuilder", "GRU4Rec",
    "GRU4RecHParams", "HistoryInputs", "ItemSequenceModel", "LOSSES", "MODELS",
    "MaskedNextItemLoss", "ModelEntry", "SASRec", "SASRecHParams", "SIZES", "SampledSoftmaxLoss",
    "batch_spec", "build_model", "example_recipe", "left_pad", "make_masked_examples",
    "make_training_example", "make_training_examples", "mask_token", "masked_history_inputs",
    "model_hparams", "resolve_hparams", "sample_items", "training_loss",
]
