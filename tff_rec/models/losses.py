"""Training losses (`LOSSES`, the values of `model.loss`): full softmax, and, for large
catalogues, sampled softmax and the negative-sampling binary cross-entropies bce and gbce.

- softmax: cross-entropy of the target among all items (`MaskedNextItemLoss`).
- sampled_softmax: cross-entropy of the target among `num_sampled` items drawn once per batch
  (`SampledSoftmaxLoss`).
- bce: the SASRec paper's loss (Kang & McAuley 2018): per target position, `num_negatives`
  (default 1, the paper's) items drawn uniformly among the items other than that position's
  target; −log σ(s⁺) − Σ log(1 − σ(s⁻)) (`NegativeSamplingBCE`).
- gbce: gSASRec's generalised BCE (Petrov & Macdonald 2023): the same negatives,
  (−β log σ(s⁺) − Σ log(1 − σ(s⁻))) / (k + 1), β = α(t(1 − 1/α) + 1/α), α = k / (num_items − 1),
  k = `num_negatives`, t = `gbce_t` (`GeneralizedBCE`).

All take y_true int [batch, L] (target item ids, 0 = no target at that position) and return the
mean over the positions with a target (every target counts the same), so they plug into Keras
`compile` and `tff.learning.models.from_keras_model(loss=...)`, which only pass (y_true, y_pred).

Where the sampling happens: TFF hands the loss nothing but the model's training output. So under
every loss but softmax the model returns its hidden states [batch, L, d] in training mode
(inference still returns full logits), and the loss, built for that model, holds a function that
looks up the output vectors of the items it samples (`ItemSequenceModel.item_vectors`). The
gradient reaches those vectors through the loss, inside the same tape as the rest of the model.

Negatives are stateless: every draw is seeded by (a hash of the hidden states, a hash of the
targets), a pure function of the weights and the batch, which the task seed fixes; so runs are
bit-reproducible under any load, in Keras and in TFF, and after a resume (ARCHITECTURE.md,
Reproducibility).
"""
from __future__ import annotations

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


def sample_negatives(labels: tf.Tensor, num_items: int, num_negatives: int,
                     seed: tf.Tensor) -> tf.Tensor:
    """int32 [..., num_negatives]: per position of labels [...], ids drawn uniformly (with
    replacement) from the num_items − 1 items 1..num_items other than that position's label.

    Stateless (a pure function of `seed`, int64 [2]): a draw from 1..num_items − 1, shifted up
    by one where it is ≥ the label, so it is never the label. Positions with label 0 (no target)
    get ids from 2..num_items; the losses mask them out. Needs num_items ≥ 2.
    """
    shape = tf.concat([tf.shape(labels), [num_negatives]], axis=0)
    draw = tf.random.stateless_uniform(shape, seed=seed, minval=1, maxval=num_items, dtype=tf.int32)
    return draw + tf.cast(draw >= labels[..., None], tf.int32)


class NegativeSamplingBCE(_MaskedLoss):
    """bce: binary cross-entropy of each target against negatives drawn for its own position.

    y_true: int [batch, L] targets (0 = ignored). y_pred: hidden states float [batch, L, d] (the
    model's training output under this loss). For each position with a target, k =
    `num_negatives` items are drawn uniformly, with replacement, among the items 1..num_items
    other than the target (`sample_negatives`; never the target). With s the dot product of the
    hidden state with an item's output vector, the position's loss is

        β · (−log σ(s⁺)) + Σ over its k negatives of (−log(1 − σ(s⁻)))

    (softplus(−s⁺) and softplus(s⁻), stable for any score), divided by `scale(k)`, and the batch
    loss is the mean over positions with a target. For bce β = 1 and scale = 1: with k = 1 this
    is the SASRec paper's loss (its reference code sums the two terms, averaged over targets).

    Full sampling: with num_negatives ≥ num_items − 1 the negatives are not drawn but are every
    other item, each once: the loss is then the one-vs-all BCE of the target against items
    1..num_items (padding column left out), with k = num_items − 1.

    Cost: per-position negatives need the scores of batch × L × k items. Gathering their vectors
    costs batch × L × k × d floats (and as much again for the gradient); when k × d exceeds
    num_items the loss instead scores every item once (batch × L × num_items floats, as a
    softmax logit tensor) and picks the negatives' scores from it, the same numbers up to
    rounding. Memory is thus ≈ 4 bytes × batch × L × min(k × d, num_items) × 2: at batch 128,
    L 50, d 50, k 1 (the paper's bce) takes 2.6 MB; k 256 (gSASRec's) 0.66 GB; on a 23,715-item
    catalogue no k takes more than 1.2 GB. Lower the batch size where that is too much.

    Seeded and stateless like `SampledSoftmaxLoss`: the draw's seed is (hash of the hidden
    states, hash of the targets).
    """

    def __init__(
        self,
        item_vectors: Callable[[tf.Tensor], tf.Tensor],
        num_items: int,
        num_negatives: int = 1,
        name: str = "bce_loss",
    ) -> None:
        super().__init__(name=name)
        if num_items < 2:
            raise ValueError(
                f"model.loss = {self.loss_name!r} needs at least 2 items (a negative other than "
                f"the target). Found {num_items} item."
            )
        self.item_vectors = item_vectors
        self.num_items = num_items
        self.full = num_negatives >= num_items - 1
        self.num_negatives = num_items - 1 if self.full else num_negatives

    loss_name = "bce"

    def beta(self) -> float:
        """Weight of the positive term."""
        return 1.0

    def scale(self) -> float:
        """Divisor of a position's loss."""
        return 1.0

    def negatives(self, hidden: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """int32 [batch, L, num_negatives]: the sampled negatives of a batch (not under full
        sampling), seeded by (hash of the hidden states, hash of the targets)."""
        seed = tf.stack([fingerprint(hidden), fingerprint(labels)])
        return sample_negatives(labels, self.num_items, self.num_negatives, seed)

    def negative_scores(self, hidden: tf.Tensor,
                        labels: tf.Tensor) -> tuple[tf.Tensor, Optional[tf.Tensor]]:
        """Scores float [batch, L, k] of each position's negatives, and None; under full
        sampling the scores [batch, L, num_items] of items 1..num_items and a bool mask of the
        same shape, False at the target's column."""
        if self.full:
            all_items = self.item_vectors(tf.range(1, self.num_items + 1))  # [N, d]
            scores = tf.einsum("bld,nd->bln", hidden, all_items)
            return scores, tf.not_equal(tf.range(1, self.num_items + 1), labels[..., None])
        negatives = self.negatives(hidden, labels)
        # Gather the negatives' vectors, or score all items once: whichever is smaller.
        if self.num_negatives * hidden.shape[-1] > self.num_items:
            all_items = self.item_vectors(tf.range(1, self.num_items + 1))  # [N, d]
            scores = tf.einsum("bld,nd->bln", hidden, all_items)
            return tf.gather(scores, negatives - 1, batch_dims=2), None
        return tf.einsum("bld,blkd->blk", hidden, self.item_vectors(negatives)), None

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(y_true, tf.int32)
        hidden = tf.cast(y_pred, tf.float32)
        positive = tf.reduce_sum(hidden * self.item_vectors(labels), axis=-1)  # [batch, L]
        negative, keep = self.negative_scores(hidden, labels)
        negative_terms = tf.math.softplus(negative)
        if keep is not None:
            negative_terms = tf.where(keep, negative_terms, tf.zeros_like(negative_terms))
        per_position = self.beta() * tf.math.softplus(-positive) + tf.reduce_sum(negative_terms, -1)
        scale = self.scale()
        if scale != 1.0:
            per_position = per_position / scale
        return _masked_mean(per_position, labels)


class GeneralizedBCE(NegativeSamplingBCE):
    """gbce: gSASRec's generalised binary cross-entropy (Petrov & Macdonald, RecSys 2023).

    The negatives of `NegativeSamplingBCE` (k = `num_negatives` per position, never the target),
    and per position

        (β · (−log σ(s⁺)) + Σ over the k negatives of (−log(1 − σ(s⁻)))) / (k + 1)

    with β = α(t(1 − 1/α) + 1/α), α = k / (num_items − 1) the sampling rate and t ∈ [0, 1] the
    calibration (`gbce_t`; the paper's default 0.75, used with k = 256). t = 0 gives β = 1, plain
    BCE (divided by k + 1); t = 1 gives β = α. With full sampling (num_negatives ≥ num_items − 1)
    α = 1 and β = 1: the one-vs-all BCE over items 1..num_items, divided by num_items.
    """

    loss_name = "gbce"

    def __init__(
        self,
        item_vectors: Callable[[tf.Tensor], tf.Tensor],
        num_items: int,
        num_negatives: int = 1,
        t: float = 0.75,
        name: str = "gbce_loss",
    ) -> None:
        super().__init__(item_vectors, num_items, num_negatives, name=name)
        self.t = t
        alpha = self.num_negatives / (num_items - 1)
        self._beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)

    def beta(self) -> float:
        return self._beta

    def scale(self) -> float:
        return float(self.num_negatives + 1)


# Builders of the `LOSSES` entries (`loss_registry`, declared without TensorFlow).


def softmax_loss(model: Any) -> tf.keras.losses.Loss:
    return MaskedNextItemLoss()


def sampled_softmax_loss(model: Any) -> tf.keras.losses.Loss:
    return SampledSoftmaxLoss(model.item_vectors, model.num_items, model.hparams.num_sampled)


def bce_loss(model: Any) -> tf.keras.losses.Loss:
    return NegativeSamplingBCE(model.item_vectors, model.num_items, model.hparams.num_negatives)


def gbce_loss(model: Any) -> tf.keras.losses.Loss:
    return GeneralizedBCE(model.item_vectors, model.num_items, model.hparams.num_negatives,
                          model.hparams.gbce_t)
