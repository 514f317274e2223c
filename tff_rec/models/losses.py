"""Training losses: full softmax, and sampled softmax for large catalogues.

Both take y_true int [batch, L] (target item ids, 0 = no target at that position) and return the
mean over the positions with a target (every target counts the same), so they plug into Keras
`compile` and `tff.learning.models.from_keras_model(loss=...)`, which only pass (y_true, y_pred).

Where the sampling happens: TFF hands the loss nothing but the model's training output. So under
sampled_softmax the model returns its hidden states [batch, L, d] in training mode (inference
still returns full logits), and the loss, built for that model, holds a function that looks up
the output vectors of the items it samples (`ItemSequenceModel.item_vectors`). The gradient
reaches those vectors through the loss, inside the same tape as the rest of the model.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import tensorflow as tf

from tff_rec.data.types import PADDING_ITEM

# Logit given to a sampled negative that is the position's own target ("accidental hit"):
# exp(_HIDDEN - max) is exactly 0 in float32, so the hit drops out of the softmax.
_HIDDEN = -1e9


def _masked_mean(per_position: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean of per_position [batch, L] over positions whose label is not 0 (0 if none)."""
    mask = tf.cast(tf.not_equal(labels, PADDING_ITEM), tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(per_position * mask), tf.reduce_sum(mask))


class _MaskedLoss(tf.keras.losses.Loss):
    """A loss whose `call` already averages over the targets, hence `Reduction.NONE` (Keras and
    TFF then use the scalar as is). `sample_weight` is not supported."""

    def __init__(self, name: str) -> None:
        super().__init__(reduction=tf.keras.losses.Reduction.NONE, name=name)

    def __call__(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: Optional[tf.Tensor] = None
    ) -> tf.Tensor:
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} does not support sample_weight.")
        return super().__call__(y_true, y_pred)


class MaskedNextItemLoss(_MaskedLoss):
    """Softmax cross-entropy over all items, averaged over the non-padding targets of a batch.

    y_true: int [batch, max_len] target ids, 0 = ignored. y_pred: float logits
    [batch, max_len, num_items + 1]. Returns a scalar: sum of the per-position losses over
    positions with a target, divided by their number (0 for a batch without targets): every
    target counts the same, so a user with a longer window weighs more.
    """

    def __init__(self, name: str = "masked_next_item_loss") -> None:
        super().__init__(name=name)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(y_true, tf.int32)
        per_position = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=tf.cast(y_pred, tf.float32)
        )
        return _masked_mean(per_position, labels)


def fingerprint(tensor: tf.Tensor) -> tf.Tensor:
    """int64 scalar: a hash of the tensor's bytes (no gradient)."""
    flat = tf.reshape(tf.stop_gradient(tensor), [1, -1])
    return tf.bitcast(tf.fingerprint(flat), tf.int64)[0]


def sample_items(num_items: int, num_sampled: int, seed: tf.Tensor) -> tf.Tensor:
    """int32 [min(num_sampled, num_items)]: distinct item ids drawn uniformly from 1..num_items.

    Stateless (uniform keys, top-k), so the draw is a pure function of `seed` (int64 [2]).
    """
    keys = tf.random.stateless_uniform([num_items], seed=seed)
    return tf.math.top_k(keys, k=min(num_sampled, num_items)).indices + 1


class SampledSoftmaxLoss(_MaskedLoss):
    """Sampled softmax: each target against `num_sampled` items shared by the whole batch.

    y_true: int [batch, L] targets (0 = ignored). y_pred: hidden states float [batch, L, d] (the
    model's training output under this loss). Per batch, `num_sampled` distinct items are drawn
    uniformly from 1..num_items; a position's logits are its target's and the negatives' dot
    products with its hidden state, a negative equal to the target is dropped, and the loss is
    the cross-entropy of the target among them. Uniform proposals give every candidate the same
    log-probability correction, which cancels in the softmax, so none is applied. Cost per batch
    O(batch · L · num_sampled · d) instead of O(batch · L · num_items · d). With num_sampled ≥
    num_items the candidates are all items and the loss equals the full softmax over items
    1..num_items (the padding column left out).

    Seeded and stateless: the draw's seed is (hash of the hidden states, hash of the targets), a
    pure function of the batch and the current weights, which the task seed fixes (init, data
    order, dropout). Same task seed → same negatives at every step, in Keras and inside TFF's
    graphs alike, after a resume too, with no RNG state to carry; and the negatives change every
    step, because the weights do.
    """

    def __init__(
        self,
        item_vectors: Callable[[tf.Tensor], tf.Tensor],
        num_items: int,
        num_sampled: int,
        name: str = "sampled_softmax_loss",
    ) -> None:
        super().__init__(name=name)
        self.item_vectors = item_vectors
        self.num_items = num_items
        self.num_sampled = num_sampled

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(y_true, tf.int32)
        hidden = tf.cast(y_pred, tf.float32)
        seed = tf.stack([fingerprint(hidden), fingerprint(labels)])
        negatives = sample_items(self.num_items, self.num_sampled, seed)
        positive = tf.reduce_sum(hidden * self.item_vectors(labels), axis=-1)  # [batch, L]
        negative = tf.einsum("bld,sd->bls", hidden, self.item_vectors(negatives))
        hit = tf.equal(labels[..., None], negatives)
        negative = tf.where(hit, tf.constant(_HIDDEN, tf.float32), negative)
        logits = tf.concat([positive[..., None], negative], axis=-1)
        per_position = tf.reduce_logsumexp(logits, axis=-1) - positive
        return _masked_mean(per_position, labels)


@dataclasses.dataclass(frozen=True)
class LossEntry:
    """A training loss: how to build it for a model, and whether the model must then return
    hidden states (not logits) in training mode."""

    build: Callable[[Any], tf.keras.losses.Loss]
    scores_hidden_states: bool


LOSSES: dict[str, LossEntry] = {
    "softmax": LossEntry(build=lambda model: MaskedNextItemLoss(), scores_hidden_states=False),
    "sampled_softmax": LossEntry(
        build=lambda model: SampledSoftmaxLoss(
            model.item_vectors, model.num_items, model.hparams.num_sampled
        ),
        scores_hidden_states=True,
    ),
}
