"""Catalogue-scale losses (bce, gbce): negatives, full-sampling equivalence, determinism,
gradients, training, hyperparameter errors; and the centralized optimizer's keys. No TFF."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tff_rec import algorithms, models, spec
from tff_rec.models.losses import GeneralizedBCE, NegativeSamplingBCE, sample_negatives

TINY = dict(embedding_dim=8, num_blocks=1, num_heads=1, max_len=6, dropout=0.0)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _table_vectors(table: np.ndarray):
    """An `item_vectors` function over a fixed [num_items + 1, d] table."""
    constant = tf.constant(table, tf.float32)
    return lambda items: tf.gather(constant, items)


def _batch(num_items: int, d: int, seed: int, batch: int = 3, length: int = 4):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(batch, length, d)).astype(np.float32)
    labels = rng.integers(1, num_items + 1, size=(batch, length)).astype(np.int32)
    labels[0, :2] = 0  # positions without a target
    table = rng.normal(size=(num_items + 1, d)).astype(np.float32)
    return hidden, labels, table


# ---------------------------------------------------------------- negatives


@pytest.mark.parametrize("num_items", [2, 3, 5])
def test_sampled_negatives_are_never_the_positive(num_items: int) -> None:
    labels = tf.constant(np.tile(np.arange(1, num_items + 1, dtype=np.int32), 20)[None, :])
    seen = set()
    for seed in range(200):
        negatives = sample_negatives(labels, num_items, 4, tf.constant([seed, 7], tf.int64)).numpy()
        assert negatives.shape == (1, labels.shape[1], 4)
        assert (negatives != labels.numpy()[..., None]).all()
        assert ((negatives >= 1) & (negatives <= num_items)).all()
        seen.update(zip(np.repeat(labels.numpy().ravel(), 4), negatives.ravel()))
    # every (positive, other item) pair is drawn: uniform over the other items
    assert seen == {(p, n) for p in range(1, num_items + 1) for n in range(1, num_items + 1) if n != p}


@pytest.mark.parametrize("loss_class", [NegativeSamplingBCE, GeneralizedBCE])
def test_a_loss_draws_its_negatives_among_the_other_items(loss_class) -> None:
    num_items = 3
    loss = loss_class(_table_vectors(np.zeros((num_items + 1, 2), np.float32)), num_items, 1)
    for seed in range(100):
        hidden, labels, _ = _batch(num_items, d=2, seed=seed)
        negatives = loss.negatives(tf.constant(hidden), tf.constant(labels)).numpy()
        real = labels > 0
        assert (negatives[real] != labels[real][..., None]).all()
        assert ((negatives >= 1) & (negatives <= num_items)).all()


def test_loss_never_uses_the_positive_end_to_end() -> None:
    """Scores: +30 for a position's own target, −30 for every other item. Were a target drawn as
    its own negative, its term softplus(30) ≈ 30 would show in the loss."""
    num_items, d = 6, 6
    labels = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    # hidden state of a position = one-hot of its target; vectors: 30·e_i − 30·(1 − e_i)
    hidden = np.eye(d, dtype=np.float32)[labels - 1]
    table = np.zeros((num_items + 1, d), np.float32)
    table[1:] = 60 * np.eye(d, dtype=np.float32) - 30
    for num_negatives in (1, 2, 4):
        for cls in (NegativeSamplingBCE, GeneralizedBCE):
            loss = cls(_table_vectors(table), num_items, num_negatives)
            for step in range(30):
                value = float(loss(tf.constant(labels), tf.constant(hidden + 1e-3 * step)))
                assert value < 1e-6 * (num_negatives + 1)


# ---------------------------------------------------------------- full sampling


def _one_vs_all(hidden, labels, table, beta=1.0, scale=1.0):
    scores = np.einsum("bld,nd->bln", hidden.astype(np.float64), table[1:].astype(np.float64))
    total, count = 0.0, 0
    for b, l in zip(*np.nonzero(labels)):
        positive = scores[b, l, labels[b, l] - 1]
        others = np.delete(scores[b, l], labels[b, l] - 1)
        total += (beta * _softplus(-positive) + _softplus(others).sum()) / scale
        count += 1
    return total / count


@pytest.mark.parametrize("num_negatives", [4, 5, 50])  # num_items − 1 and more: every other item
def test_bce_at_full_sampling_is_one_vs_all(num_negatives: int) -> None:
    num_items = 5
    hidden, labels, table = _batch(num_items, d=3, seed=1)
    loss = NegativeSamplingBCE(_table_vectors(table), num_items, num_negatives)
    assert loss.full and loss.num_negatives == num_items - 1
    expected = _one_vs_all(hidden, labels, table)
    assert float(loss(tf.constant(labels), tf.constant(hidden))) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("t", [0.0, 0.75, 1.0])
def test_gbce_at_full_sampling_is_one_vs_all_over_num_items(t: float) -> None:
    """α = 1 at full sampling, so β = 1 whatever t: the one-vs-all BCE divided by num_items."""
    num_items = 7
    hidden, labels, table = _batch(num_items, d=4, seed=2)
    loss = GeneralizedBCE(_table_vectors(table), num_items, num_items - 1, t=t)
    assert loss.beta() == pytest.approx(1.0)
    expected = _one_vs_all(hidden, labels, table, scale=num_items)
    assert float(loss(tf.constant(labels), tf.constant(hidden))) == pytest.approx(expected, rel=1e-5)


def test_gbce_beta_follows_the_paper() -> None:
    num_items, k, t = 1001, 10, 0.75
    alpha = k / (num_items - 1)
    loss = GeneralizedBCE(_table_vectors(np.zeros((num_items + 1, 2))), num_items, k, t=t)
    assert loss.beta() == pytest.approx(alpha * (t * (1 - 1 / alpha) + 1 / alpha))
    assert GeneralizedBCE(loss.item_vectors, num_items, k, t=0.0).beta() == pytest.approx(1.0)
    assert GeneralizedBCE(loss.item_vectors, num_items, k, t=1.0).beta() == pytest.approx(alpha)


@pytest.mark.parametrize("cls", [NegativeSamplingBCE, GeneralizedBCE])
def test_sampled_loss_matches_a_direct_computation_of_its_negatives(cls) -> None:
    """Both scoring paths (gather the negatives' vectors; score all items and pick) give the
    formula's value for the negatives `negatives` returns."""
    num_items = 30
    for num_negatives, d in ((2, 4), (8, 16)):  # 8 < 4·2, 30 < 8·16: one per path
        hidden, labels, table = _batch(num_items, d=d, seed=3)
        loss = cls(_table_vectors(table), num_items, num_negatives)
        negatives = loss.negatives(tf.constant(hidden), tf.constant(labels)).numpy()
        scores = np.einsum("bld,bld->bl", hidden, table[labels])
        negative = np.einsum("bld,blkd->blk", hidden, table[negatives])
        per_position = (loss.beta() * _softplus(-scores) + _softplus(negative).sum(-1)) / loss.scale()
        expected = per_position[labels > 0].mean()
        value = float(loss(tf.constant(labels), tf.constant(hidden)))
        assert value == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- determinism


def test_same_inputs_same_loss_other_batches_other_negatives() -> None:
    num_items = 50
    hidden, labels, table = _batch(num_items, d=4, seed=4)
    loss = NegativeSamplingBCE(_table_vectors(table), num_items, 3)
    again = NegativeSamplingBCE(_table_vectors(table), num_items, 3)
    h, y = tf.constant(hidden), tf.constant(labels)
    assert float(loss(y, h)) == float(loss(y, h)) == float(again(y, h))  # bit for bit
    assert np.array_equal(loss.negatives(h, y).numpy(), again.negatives(h, y).numpy())
    other_hidden = tf.constant(hidden + 1e-3)
    assert not np.array_equal(loss.negatives(h, y).numpy(), loss.negatives(other_hidden, y).numpy())
    other_labels = tf.constant(np.where(labels > 0, labels % num_items + 1, 0).astype(np.int32))
    assert not np.array_equal(loss.negatives(h, y).numpy(), loss.negatives(h, other_labels).numpy())


# ---------------------------------------------------------------- in a model


def _examples(num_items: int, users: int = 64, max_len: int = 6):
    """Each user walks the catalogue upward from a random start: the next item is predictable."""
    rng = np.random.default_rng(0)
    starts = rng.integers(0, num_items, size=users)
    sequences = [(start + np.arange(max_len + 1)) % num_items + 1 for start in starts]
    return models.make_training_examples(sequences, max_len)


@pytest.mark.parametrize("loss", ["bce", "gbce"])
@pytest.mark.parametrize("tied", [True, False])
def test_gradients_reach_the_item_vectors(loss: str, tied: bool) -> None:
    num_items = 30
    model = models.build_model("sasrec", num_items, seed=0, loss=loss, num_negatives=2,
                               tie_embeddings=tied, **TINY)
    inputs, targets = _examples(num_items, users=4)
    loss_fn = models.training_loss(model)
    with tf.GradientTape() as tape:
        hidden = model(inputs, training=True)
        assert hidden.shape == (4, TINY["max_len"], TINY["embedding_dim"])  # hidden states
        value = loss_fn(targets, hidden)
    matrix = model.item_table.embeddings if tied else model.output_projection.kernel
    gradient = tf.convert_to_tensor(tape.gradient(value, matrix)).numpy()
    rows = gradient if tied else gradient.T
    negatives = loss_fn.negatives(hidden, tf.constant(targets)).numpy()[targets > 0]
    unseen = set(negatives.ravel()) - set(inputs.ravel()) - set(targets.ravel())
    assert unseen, "some negative should be an item the batch does not contain"
    for item in unseen:  # reached only through the loss's negative term
        assert np.abs(rows[item]).sum() > 0


@pytest.mark.parametrize("loss, params", [
    ("bce", {}), ("bce", {"num_negatives": 5}), ("gbce", {"num_negatives": 8}),
    ("gbce", {"num_negatives": 100, "gbce_t": 0.0}),  # full sampling
])
def test_a_model_trains_with_each_loss(loss: str, params: dict) -> None:
    num_items = 20
    model = models.build_model("sasrec", num_items, seed=0, loss=loss, **params, **TINY)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.02), loss=models.training_loss(model))
    inputs, targets = _examples(num_items)
    history = model.fit(inputs, targets, batch_size=16, epochs=10, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0]
    logits = model(inputs, training=False)  # inference still scores every item
    assert logits.shape == (len(inputs), TINY["max_len"], num_items + 1)


# ---------------------------------------------------------------- hyperparameters


@pytest.mark.parametrize("hparams, message", [
    ({"num_negatives": 0}, "model.num_negatives must be at least 1. Found 0."),
    ({"num_negatives": True}, "model.num_negatives must be an integer. Found True."),
    ({"gbce_t": 1.5}, "model.gbce_t must be in [0, 1]. Found 1.5."),
    ({"gbce_t": -0.1}, "model.gbce_t must be in [0, 1]. Found -0.1."),
    ({"loss": "bpr"}, "model.loss must be one of softmax, sampled_softmax, bce, gbce. Found 'bpr'."),
])
def test_bad_loss_hyperparameters_name_the_key(hparams: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        models.build_model("sasrec", 10, seed=0, **hparams)
    assert str(error.value).startswith(message)


def test_bce_needs_two_items() -> None:
    with pytest.raises(ValueError, match="model.loss = 'bce' needs at least 2 items"):
        models.training_loss(models.build_model("sasrec", 1, seed=0, loss="bce", **TINY))


def _task(**overrides) -> spec.TaskSpec:
    raw = spec.apply_overrides({"algorithm": {"name": "centralized"}}, overrides)
    return spec.resolve_task(raw)


def test_new_keys_at_their_defaults_keep_the_task_hash() -> None:
    base = _task()
    explicit = _task(**{"model.num_negatives": 1, "model.gbce_t": 0.75})
    assert base.hash == explicit.hash
    hashed = spec._hashed_sections(base.sections)
    assert "num_negatives" not in hashed["model"].get("params", {})
    assert not {"beta_1", "beta_2", "epsilon"} & set(hashed["algorithm.centralized"])
    assert _task(**{"model.loss": "gbce", "model.gbce_t": 0.5}).hash != _task(**{"model.loss": "gbce"}).hash
    assert _task(**{"algorithm.centralized.beta_2": 0.98}).hash != base.hash


def test_bad_loss_keys_in_a_task_name_the_key() -> None:
    with pytest.raises(spec.SpecError, match="model.gbce_t"):
        _task(**{"model.gbce_t": 2.0})
    with pytest.raises(spec.SpecError, match="model.num_negatives"):
        _task(**{"model.num_negatives": 0})


# ---------------------------------------------------------------- centralized optimizer


def test_centralized_adam_takes_beta_2() -> None:
    task = _task(**{"algorithm.centralized.beta_2": 0.98, "algorithm.centralized.epsilon": 1e-8})
    optimizer = algorithms.keras_optimizer(task["algorithm.centralized"])
    assert isinstance(optimizer, tf.keras.optimizers.Adam)
    assert optimizer.beta_2 == pytest.approx(0.98) and optimizer.epsilon == pytest.approx(1e-8)
    assert optimizer.beta_1 == pytest.approx(0.9)  # absent: Keras's default
    default = algorithms.keras_optimizer(_task()["algorithm.centralized"])
    assert default.beta_2 == pytest.approx(0.999)


@pytest.mark.parametrize("optimizer, key, value", [
    ("sgd", "beta_2", 0.98), ("sgdm", "epsilon", 1e-8), ("adagrad", "beta_1", 0.5),
])
def test_centralized_keys_are_refused_for_optimizers_without_them(optimizer, key, value) -> None:
    with pytest.raises(spec.SpecError) as error:
        _task(**{"algorithm.centralized.optimizer": optimizer, f"algorithm.centralized.{key}": value})
    message = str(error.value)
    assert f"'algorithm.centralized.{key}'" in message and repr(optimizer) in message


def test_centralized_beta_out_of_range_names_the_key() -> None:
    with pytest.raises(spec.SpecError, match=r"algorithm.centralized.beta_2' must be in \[0, 1\)"):
        _task(**{"algorithm.centralized.beta_2": 1.0})
