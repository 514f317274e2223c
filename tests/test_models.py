"""SASRec model, masked loss and training examples; one FedAvg round through TFF."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest
import tensorflow as tf

from tff_rec import models, runtime

SMALL = dict(embedding_dim=8, num_blocks=1, num_heads=2, max_len=6, dropout=0.0)


@pytest.fixture(scope="module", autouse=True)
def _stop_tff_worker() -> Iterator[None]:
    """TFF's worker_binary child outlives Python; stop the ones this module started."""
    yield
    runtime.stop_workers()
    assert runtime.worker_pids() == []


def _weights_equal(a: tf.keras.Model, b: tf.keras.Model) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


# ---------------------------------------------------------------- training examples


def test_training_example_takes_the_last_window() -> None:
    inputs, targets = models.make_training_example(np.array([1, 2, 3, 4, 5]), max_len=3)
    assert inputs.tolist() == [2, 3, 4] and targets.tolist() == [3, 4, 5]
    assert inputs.dtype == targets.dtype == np.int32


def test_training_examples_left_pad_and_ignore_padded_targets() -> None:
    sequences = [np.array([7, 8]), np.array([9]), np.array([], np.int32), np.array([1, 2, 3])]
    inputs, targets = models.make_training_examples(sequences, max_len=3)
    assert inputs.tolist() == [[0, 0, 7], [0, 0, 0], [0, 0, 0], [0, 1, 2]]
    assert targets.tolist() == [[0, 0, 8], [0, 0, 0], [0, 0, 0], [0, 2, 3]]


# ---------------------------------------------------------------- hyperparameters


def test_model_hparams_lists_defaults() -> None:
    assert models.model_hparams("sasrec") == {
        "size": "base",
        "embedding_dim": None,
        "num_blocks": None,
        "num_heads": None,
        "intermediate_dim": None,
        "scale_embeddings": None,
        "dropout": 0.2,
        "max_len": 50,
        "tie_embeddings": True,
        "loss": "softmax",
        "num_sampled": 100,
        "num_negatives": 1,
        "gbce_t": 0.75,
    }
    resolved = models.resolve_hparams("sasrec")
    assert (resolved.embedding_dim, resolved.num_blocks, resolved.num_heads) == (50, 2, 1)
    assert models.resolve_hparams("sasrec", embedding_dim=10).intermediate_dim == 20


@pytest.mark.parametrize(
    "name, hparams, message",
    [
        ("bert", {}, "model.name must be one of bert4rec, gru4rec, sasrec. Found 'bert'."),
        ("sasrec", {"layers": 2}, "model.layers is not a parameter of model 'sasrec'. Allowed: "),
        (
            "sasrec",
            {"num_heads": 3},
            "model.num_heads must divide model.embedding_dim. Found 50 and 3.",
        ),
        ("sasrec", {"dropout": 1.0}, "model.dropout must be in [0, 1). Found 1.0."),
        ("sasrec", {"max_len": 0}, "model.max_len must be in [1, 10000] (training examples are "),
        ("sasrec", {"num_blocks": True}, "model.num_blocks must be an integer. Found True"),
        ("sasrec", {"size": "huge"}, "model.size must be one of tiny, small, base, large, paper."),
        ("bert4rec", {"size": "paper"}, "model.size must be one of tiny, small, base, large. Found"),
        ("bert4rec", {"mask_rate": 0}, "model.mask_rate must be in (0, 1]. Found 0."),
        ("sasrec", {"tie_embeddings": 1}, "model.tie_embeddings must be true or false. Found 1."),
    ],
)
def test_bad_hparams_are_rejected(name: str, hparams: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        models.build_model(name, 10, seed=0, **hparams)
    assert str(error.value).startswith(message)


# ---------------------------------------------------------------- model


def test_output_shape_covers_all_items_and_padding() -> None:
    model = models.build_model("sasrec", 20, seed=0, **SMALL)
    logits = model(np.zeros((3, 6), np.int32) + 1)
    assert logits.shape == (3, 6, 21) and logits.dtype == tf.float32


def test_same_seed_same_weights() -> None:
    a = models.build_model("sasrec", 20, seed=5, **SMALL)
    b = models.build_model("sasrec", 20, seed=5, **SMALL)
    c = models.build_model("sasrec", 20, seed=6, **SMALL)
    assert _weights_equal(a, b) and not _weights_equal(a, c)


def test_tied_embeddings_save_the_output_matrix() -> None:
    tied = models.build_model("sasrec", 20, seed=0, **SMALL)
    untied = models.build_model("sasrec", 20, seed=0, **{**SMALL, "tie_embeddings": False})
    assert untied.count_params() - tied.count_params() == 21 * 8
    # The separate output matrix starts independent of the item embedding.
    embedding = untied.embedding.token_embedding.embeddings.numpy()
    output = untied.output_projection.kernel.numpy()
    assert not np.array_equal(embedding.ravel(), output.ravel())


@pytest.mark.parametrize(
    "sequence", [[3, 1, 4, 1, 5, 9], [0, 0, 2, 6, 5, 3]], ids=["full", "left-padded"]
)
def test_outputs_do_not_see_later_items(sequence: list[int]) -> None:
    model = models.build_model("sasrec", 20, seed=1, **{**SMALL, "num_blocks": 2})
    before = model(np.array([sequence], np.int32)).numpy()
    changed = np.array([sequence], np.int32)
    changed[0, 4] = 17
    after = model(changed).numpy()
    real = np.flatnonzero(np.array(sequence[:4]))
    np.testing.assert_array_equal(before[0, real], after[0, real])
    assert not np.allclose(before[0, 4:], after[0, 4:])


def test_loss_is_the_mean_over_non_padding_targets() -> None:
    logits = tf.random.stateless_normal([2, 3, 5], seed=[1, 2])
    targets = np.array([[0, 2, 4], [0, 0, 1]], np.int32)
    log_probs = tf.nn.log_softmax(logits).numpy()
    expected = -(log_probs[0, 1, 2] + log_probs[0, 2, 4] + log_probs[1, 2, 1]) / 3
    loss = models.MaskedNextItemLoss()
    assert float(loss(targets, logits)) == pytest.approx(expected, rel=1e-6)
    # Logits at ignored positions do not matter at all.
    noisy = logits.numpy()
    noisy[:, 0] += 100.0
    noisy[1, 1] -= 50.0
    assert float(loss(targets, noisy)) == float(loss(targets, logits))
    assert float(loss(np.zeros_like(targets), logits)) == 0.0


def _cyclic_examples(num_items: int, count: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences walking 1, 2, ..., num_items, 1, ... from random starts: a learnable next item."""
    starts = np.random.default_rng(0).integers(0, num_items, size=count)
    sequences = [(start + np.arange(max_len + 1)) % num_items + 1 for start in starts]
    return models.make_training_examples(sequences, max_len)


def test_keras_fit_learns_a_simple_pattern() -> None:
    model = models.build_model("sasrec", 12, seed=0, **SMALL)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.02), loss=models.MaskedNextItemLoss())
    inputs, targets = _cyclic_examples(12, 64, 6)
    history = model.fit(inputs, targets, batch_size=16, epochs=8, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------- TFF


def test_one_fedavg_round_through_tff() -> None:
    import tensorflow_federated as tff

    num_items, max_len = 12, 6

    def model_fn() -> tff.learning.models.VariableModel:
        keras_model = models.build_model("sasrec", num_items, seed=3, **SMALL)
        return tff.learning.models.from_keras_model(
            keras_model, loss=models.MaskedNextItemLoss(), input_spec=models.batch_spec(max_len)
        )

    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
        loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR,
    )
    examples = [_cyclic_examples(num_items, 3, max_len), _cyclic_examples(num_items, 2, max_len)]
    clients = [tf.data.Dataset.from_tensor_slices(e).batch(8) for e in examples]  # one batch each
    state = process.initialize()
    initial = models.build_model("sasrec", num_items, seed=3, **SMALL)
    start_weights = process.get_model_weights(state).trainable
    assert all(np.allclose(a, b) for a, b in zip(start_weights, initial.get_weights()))

    output = process.next(state, clients)

    train = output.metrics["client_work"]["train"]
    loss = models.MaskedNextItemLoss()
    client_losses = [float(loss(y, initial(x))) for x, y in examples]
    # TFF averages each client's single-batch loss (before its step) weighted by batch size.
    expected = (3 * client_losses[0] + 2 * client_losses[1]) / 5
    assert train["loss"] == pytest.approx(expected, rel=1e-4)
    assert train["num_examples"] == 5
    end_weights = process.get_model_weights(output.state).trainable
    assert not all(np.allclose(a, b) for a, b in zip(start_weights, end_weights))
