"""BERT4Rec masking, GRU4Rec, size presets and the sampled-softmax loss (no TFF)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tff_rec import models

TINY = dict(size="tiny", max_len=6, dropout=0.0)
MASKING = dict(mask_rate=0.2, dupe_factor=3, mask_last_rate=0.0, seed=7)


def _sequences(count: int, length: int, num_items: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, num_items + 1, size=length) for _ in range(count)]


def _cyclic(num_items: int, count: int, length: int) -> list[np.ndarray]:
    """Sequences walking 1, 2, ..., num_items, 1, ... from random starts: learnable."""
    starts = np.random.default_rng(0).integers(0, num_items, size=count)
    return [(start + np.arange(length)) % num_items + 1 for start in starts]


# ---------------------------------------------------------------- BERT4Rec masking


def test_masked_examples_mask_items_and_target_only_them() -> None:
    sequences = _sequences(20, 9, num_items=30)
    inputs, targets = models.make_masked_examples(sequences, 30, 6, **MASKING)
    window = np.repeat(models.left_pad(sequences, 6), 3, axis=0)
    masked = inputs == models.mask_token(30)
    assert inputs.shape == targets.shape == (60, 6) and inputs.dtype == targets.dtype == np.int32
    np.testing.assert_array_equal(targets, np.where(masked, window, 0))
    np.testing.assert_array_equal(inputs[~masked], window[~masked])
    assert (masked.sum(axis=1) == 1).all()  # round(0.2 × 6) = 1 per copy
    assert len({row.tobytes() for row in masked}) > 1  # the copies are masked independently


def test_masking_is_seeded_and_respects_the_rate() -> None:
    sequences = _sequences(400, 50, num_items=100)
    first = models.make_masked_examples(sequences, 100, 50, **{**MASKING, "dupe_factor": 1})
    again = models.make_masked_examples(sequences, 100, 50, **{**MASKING, "dupe_factor": 1})
    other = models.make_masked_examples(sequences, 100, 50, **{**MASKING, "dupe_factor": 1, "seed": 8})
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])
    assert (first[1] > 0).mean() == pytest.approx(0.2, abs=0.01)
    last_only = models.make_masked_examples(sequences, 100, 50, **{**MASKING, "mask_last_rate": 1.0})
    assert ((last_only[1] > 0).sum(axis=1) == 1).all() and (last_only[1][:, -1] > 0).all()


def test_short_and_empty_sequences_mask_at_least_one_item_or_none() -> None:
    inputs, targets = models.make_masked_examples(
        [np.array([5]), np.array([], np.int32)], 9, 4, **{**MASKING, "dupe_factor": 1}
    )
    assert inputs.tolist() == [[0, 0, 0, 10], [0, 0, 0, 0]]
    assert targets.tolist() == [[0, 0, 0, 5], [0, 0, 0, 0]]


def test_only_masked_positions_contribute_to_the_loss() -> None:
    model = models.build_model("bert4rec", 30, seed=0, **TINY)
    inputs, targets = models.make_masked_examples(_sequences(8, 9, 30), 30, 6, **MASKING)
    logits = model(inputs).numpy()
    loss = models.training_loss(model)
    noisy = logits.copy()
    noisy[targets == 0] += np.random.default_rng(0).normal(size=noisy[targets == 0].shape) * 50
    assert float(loss(targets, noisy)) == float(loss(targets, logits))
    log_probs = tf.nn.log_softmax(logits).numpy()
    rows, columns = np.nonzero(targets)
    expected = -log_probs[rows, columns, targets[rows, columns]].mean()
    assert float(loss(targets, logits)) == pytest.approx(expected, rel=1e-5)


def test_evaluation_inputs_end_with_the_mask_and_never_hold_the_target() -> None:
    histories = [np.array([1, 2, 3, 4, 5, 6, 7]), np.array([8, 9])]
    inputs = models.masked_history_inputs(histories, 4, num_items=30)
    assert inputs.tolist() == [[5, 6, 7, 31], [0, 8, 9, 31]]


def test_bert4rec_sees_both_directions_and_never_scores_the_mask() -> None:
    model = models.build_model("bert4rec", 30, seed=1, **TINY)
    sequence = np.array([[0, 3, 31, 4, 5, 31]], np.int32)
    before = model(sequence).numpy()
    changed = sequence.copy()
    changed[0, 4] = 17
    assert before.shape == (1, 6, 31)  # columns 0..30: no [MASK] column
    assert not np.allclose(before[0, 2], model(changed).numpy()[0, 2])  # a later item matters


def test_gru4rec_outputs_do_not_see_later_items() -> None:
    model = models.build_model("gru4rec", 20, seed=1, **TINY)
    sequence = np.array([[0, 0, 2, 6, 5, 3]], np.int32)
    changed = sequence.copy()
    changed[0, 4] = 17
    before, after = model(sequence).numpy(), model(changed).numpy()
    np.testing.assert_array_equal(before[0, 2:4], after[0, 2:4])
    assert not np.allclose(before[0, 4:], after[0, 4:])


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_presets_grow_and_explicit_keys_win(name: str) -> None:
    counts = [
        models.build_model(name, 50, seed=0, size=size, max_len=8).count_params()
        for size in models.SIZES
    ]
    assert counts == sorted(set(counts)), counts
    overridden = models.resolve_hparams(name, size="large", embedding_dim=8, max_len=8)
    large = models.resolve_hparams(name, size="large")
    assert overridden.embedding_dim == 8
    # Every other key keeps the preset's (or its default) value.
    assert _without(overridden, "embedding_dim", "intermediate_dim") == _without(
        large, "embedding_dim", "intermediate_dim", max_len=8
    )


def _without(hparams: models.CommonHParams, *keys: str, **changes: object) -> dict:
    values = {**dataclasses.asdict(hparams), **changes}
    return {k: v for k, v in values.items() if k not in keys}


@pytest.mark.parametrize(
    "name, hparams, message",
    [
        ("sasrec", {"size": "huge"}, "model.size must be one of tiny, small, base, large, paper. Found 'huge'."),
        ("bert4rec", {"loss": "bpr"}, "model.loss must be one of softmax, sampled_softmax, bce, gbce. Found 'bpr'."),
        ("sasrec", {"size": "large", "num_heads": 3}, "model.num_heads must divide model.embedding_dim. Found 512 and 3."),
        ("bert4rec", {"mask_rate": 0.0}, "model.mask_rate must be in (0, 1]. Found 0.0."),
        ("bert4rec", {"dupe_factor": 0}, "model.dupe_factor must be in [1, 1000] (masked copies of every user's sequence are built up front). Found 0."),
        ("gru4rec", {"num_layers": 1.5}, "model.num_layers must be an integer. Found 1.5."),
        ("gru4rec", {"num_sampled": -1}, "model.num_sampled must be in [1, 1000000] (negatives per training batch). Found -1."),
    ],
)
def test_bad_model_keys_are_named(name: str, hparams: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        models.resolve_hparams(name, **hparams)
    assert str(error.value) == message


# ---------------------------------------------------------------- sampled softmax


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_sampling_every_item_gives_the_full_softmax_without_padding(name: str, tie: bool) -> None:
    num_items = 12
    model = models.build_model(name, num_items, seed=0, tie_embeddings=tie, **TINY)
    inputs, targets = models.make_training_examples(_sequences(5, 8, num_items), 6)
    hidden = model.encode(inputs)
    logits = model.logits(hidden).numpy()
    logits[..., 0] = -1e9  # the sampled loss never offers the padding column
    full = models.MaskedNextItemLoss()(targets, logits)
    exact = models.SampledSoftmaxLoss(model.item_vectors, num_items, num_sampled=num_items)
    partial = models.SampledSoftmaxLoss(model.item_vectors, num_items, num_sampled=3)
    assert float(exact(targets, hidden)) == pytest.approx(float(full), rel=1e-5)
    assert float(partial(targets, hidden)) < float(full)  # fewer competitors
    assert float(partial(targets, hidden)) == float(partial(targets, hidden))  # seeded


def test_sampled_negatives_are_distinct_items_and_follow_the_seed() -> None:
    draw = models.sample_items(50, 20, tf.constant([1, 2], tf.int64)).numpy()
    assert len(set(draw)) == 20 and draw.min() >= 1 and draw.max() <= 50
    np.testing.assert_array_equal(draw, models.sample_items(50, 20, tf.constant([1, 2], tf.int64)))
    assert not np.array_equal(draw, models.sample_items(50, 20, tf.constant([1, 3], tf.int64)))


def test_sampled_softmax_trains_and_leaves_inference_alone() -> None:
    sampled = models.build_model("sasrec", 12, seed=0, loss="sampled_softmax", num_sampled=4, **TINY)
    full = models.build_model("sasrec", 12, seed=0, **TINY)
    inputs, targets = models.make_training_examples(_cyclic(12, 64, 7), 6)
    np.testing.assert_array_equal(sampled(inputs, training=False), full(inputs, training=False))
    assert sampled(inputs, training=True).shape == (64, 6, 16)  # hidden states while training
    sampled.compile(optimizer=tf.keras.optimizers.Adam(0.02), loss=models.training_loss(sampled))
    losses = sampled.fit(inputs, targets, batch_size=16, epochs=6, verbose=0, shuffle=False)
    assert losses.history["loss"][-1] < 0.5 * losses.history["loss"][0]
    assert sampled(inputs, training=False).shape == (64, 6, 13)  # evaluation: every item
