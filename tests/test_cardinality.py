"""Rounds padded to a few fixed CLIENTS cardinalities (`training.cardinality`).

The learning processes are the runner's (`processes.taking_arrays` around `algorithms.build_process`)
on a tiny SASRec (20 items, d = 8, max_len 6) and 12 in-memory clients of 1-3 examples; a padded
round must leave state and metrics bit-identical to `process.next` on the cohort alone.
"""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_rec import aggregation, algorithms, models, runtime
from tff_rec.privacy import mechanisms
from tff_rec.training import cardinality, processes

ITEMS, MAX_LEN = 20, 6
CLIENT = {"optimizer": "sgd", "learning_rate": 0.5, "local_epochs": 1, "batch_size": 2}
SERVER = {"optimizer": "adam", "learning_rate": 0.01, "momentum": 0.0}
SIZES = [3, 5, 2, 4, 5, 1, 3]  # one round each


@pytest.fixture(scope="module", autouse=True)
def tff_runtime():
    runtime.configure()
    yield
    runtime.stop_workers()


def test_one_size_is_not_padded():
    assert cardinality.plan([7, 7, 0, 7]) == {7: 7}
    assert cardinality.plan([]) == {}


def test_up_to_most_sizes_each_run_at_their_own_cardinality():
    assert cardinality.plan([3, 5, 4, 5, 3], most=3) == {3: 3, 4: 4, 5: 5}


def test_more_sizes_share_at_most_most_cardinalities_with_the_fewest_pads():
    sizes = [10, 11, 12, 20, 21, 30, 10, 11, 12, 20, 21, 30]
    found = cardinality.plan(sizes, most=3)
    assert sorted(set(found.values())) == [12, 21, 30]
    assert all(found[n] >= n for n in found)
    # the largest cohort always fits; with two: 10-12 at 12 and 20-30 at 30 (19 pads per pass,
    # against 31 for 10-21 at 21 and 30 alone)
    assert cardinality.plan(sizes, most=2) == {10: 12, 11: 12, 12: 12, 20: 30, 21: 30, 30: 30}


def test_a_cardinality_first_needed_late_is_merged_into_the_next_larger_one():
    sizes = [5, 9, 5, 9, 5, 9, 7, 7, 7, 7]  # 7 first appears in round 7
    assert set(cardinality.plan(sizes, most=3, settled_by=20).values()) == {5, 7, 9}
    assert cardinality.plan(sizes, most=3, settled_by=6) == {5: 5, 7: 9, 9: 9}


def model_fn():
    spec = models.batch_spec(MAX_LEN)

    def build() -> tff.learning.models.VariableModel:
        keras = models.build_model("sasrec", ITEMS, seed=0, max_len=MAX_LEN, embedding_dim=8,
                                   num_blocks=1, num_heads=1, dropout=0.2)
        return tff.learning.models.from_keras_model(keras, loss=models.training_loss(keras), input_spec=spec)

    return build


def build(algorithm="fedavg", mechanism=None, mu=0.0, uplink="plain", **privacy):
    aggregator = None
    if mechanism is not None:
        aggregator = mechanisms.build_aggregator(mechanism, clients_per_round=3, noise_seed=5, **privacy)
    process = algorithms.build_process(algorithms.FederatedSetup(
        model_fn=model_fn(), client=CLIENT, server=SERVER, aggregator=aggregator, algorithm=algorithm,
        params={"mu": mu}, uplink=aggregation.uplink(uplink, {}),
    ))
    return processes.taking_arrays(process, MAX_LEN)


def clients() -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    rng = np.random.default_rng(0)
    found = []
    for rows in rng.integers(1, 4, size=12):
        inputs = rng.integers(1, ITEMS + 1, size=(rows, MAX_LEN)).astype(np.int32)
        targets = np.roll(inputs, -1, axis=1)
        found.append((inputs, targets, CLIENT["batch_size"], CLIENT["local_epochs"]))
    return found


def leaves(value) -> list[np.ndarray]:
    if hasattr(value, "_asdict"):
        value = value._asdict()
    return [np.asarray(leaf) for leaf in tf.nest.flatten(value)]


def assert_identical(a, b):
    left, right = leaves(a), leaves(b)
    assert len(left) == len(right)
    for x, y in zip(left, right):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()  # bit for bit, signs of zeros included


def cardinalities_seen():
    """Record the CLIENTS cardinality of every computation the execution context runs."""
    factory = tff.framework.get_context_stack().current.executor_factory
    seen, create = [], factory.create_executor

    def recording(wanted):
        seen.append(wanted.get(tff.CLIENTS))
        return create(wanted)

    factory.create_executor = recording
    return seen, lambda: setattr(factory, "create_executor", create)


@pytest.mark.parametrize("config", [
    {},  # weighted by examples
    {"algorithm": "fedavg_unweighted"},  # federated mean: a padding client must not be counted
    {"mechanism": "adaptive", "noise_multiplier": 0.5, "clipped_count_stddev": 1.0},  # DP: count, noise
], ids=["fedavg", "fedavg_unweighted", "dp_adaptive"])
def test_padded_rounds_are_bit_identical_to_the_cohort_alone(config, monkeypatch):
    process = build(**config)
    monkeypatch.setattr(cardinality, "MOST", 2)
    padded = cardinality.padded_next(process, SIZES)
    assert padded is not process.next
    everyone = clients()
    state = padded_state = process.initialize()
    seen, restore = cardinalities_seen()
    plain_cardinalities, padded_cardinalities = set(), set()
    try:
        for round_number, size in enumerate(SIZES):
            cohort = everyone[round_number:round_number + size]
            plain = process.next(state, cohort)
            plain_cardinalities.update(seen)
            seen.clear()
            padded_result = padded(padded_state, cohort)
            padded_cardinalities.update(seen)
            seen.clear()
            assert type(padded_result.state) is type(plain.state)
            assert_identical(plain.state, padded_result.state)
            assert_identical(plain.metrics, padded_result.metrics)
            state, padded_state = plain.state, padded_result.state
    finally:
        restore()
    assert plain_cardinalities == set(SIZES)  # one executor per size on the worker
    assert padded_cardinalities == {3, 5}  # 1-3 at 3, 4-5 at 5: 4 padding clients in all


def test_every_algorithm_and_mechanism_of_the_suite_can_be_masked():
    """A round that could not be masked would quietly run unpadded (one executor per size)."""
    for config in [{"algorithm": "fedprox", "mu": 0.1}, {"algorithm": "fedsgd"}, {"algorithm": "mime_lite"},
                   {"mechanism": "gaussian", "clip": 1.0, "noise_multiplier": 1.0},
                   {"mechanism": "clip", "clip": 1.0}, {"uplink": "secure"}, {"uplink": "compression"}]:
        assert cardinality.masked_next(build(**config).next) is not None, config
