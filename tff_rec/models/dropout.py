"""Stateless dropout: each mask is a pure function of the layer's input and the layer.

Keras's dropout draws its masks from stateful random ops. Inside TFF's worker those ops live in
sessions that concurrent client computations borrow from a pool, so which mask a client got
depended on which session it happened to run in — the same task and seed gave different records
when the machine was busy (ARCHITECTURE.md, Reproducibility). Here every mask is drawn by a
stateless op seeded with (a hash of the layer's input, the layer's index in the model), the same
idea as the sampled-softmax negatives (`losses.SampledSoftmaxLoss`): the task seed fixes the
weights and the data, so it fixes every mask, in Keras and in TFF alike, under any scheduling,
after a resume too, with no random state to carry. Masks still change at every step and for every
client, because inputs and weights do.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tff_rec.models.losses import fingerprint


class InputSeededDropout:
    """Stands in for a `Dropout` layer's Keras `RandomGenerator` (whose `dropout` is all the layer
    calls): seeds a stateless mask from the layer's input."""

    def __init__(self, salt: int) -> None:
        self.salt = salt

    def dropout(self, inputs: tf.Tensor, rate: float, noise_shape: Optional[tf.Tensor] = None) -> tf.Tensor:
        seed = tf.stack([fingerprint(inputs), tf.constant(self.salt, tf.int64)])
        return tf.nn.experimental.stateless_dropout(inputs, rate=rate, noise_shape=noise_shape, seed=seed)


def make_dropout_stateless(model: tf.keras.Model) -> int:
    """Give every built `Dropout` layer of `model` (nested ones included: attention, transformer
    blocks) an `InputSeededDropout`, salted by the layer's position in the model. Returns how
    many layers were changed. The generators hold no variables: the model's weights are the same."""
    layers = [m for m in model._flatten_modules(include_self=False) if isinstance(m, tf.keras.layers.Dropout)]
    for index, layer in enumerate(layers):
        layer._random_generator = InputSeededDropout(salt=index + 1)
    return len(layers)
