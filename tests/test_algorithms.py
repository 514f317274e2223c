"""Federated algorithms, server optimizers, uplink aggregators and the bytes they move.

The learning processes are built with `algorithms.build_process` on a tiny linear-regression
model (5 inputs → 2 outputs, 12 parameters) and two or three in-memory clients; each test runs
one to three rounds.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_rec import aggregation, algorithms, communication, runtime

IN, OUT = 5, 2
PARAMS = IN * OUT + OUT  # kernel + bias
CLIENT = {"optimizer": "sgd", "learning_rate": 0.1, "local_epochs": 1, "batch_size": 4}
SERVER = {"optimizer": "sgd", "learning_rate": 1.0, "momentum": 0.0}
TRUE_W = np.linspace(-1.0, 1.0, IN * OUT, dtype=np.float32).reshape(IN, OUT)
METRICS_BYTES = 2 * 4 + 8 + 8  # loss (sum, count) float32, num_examples and num_batches int64


@pytest.fixture(scope="module", autouse=True)
def tff_runtime():
    runtime.configure()
    yield
    runtime.stop_workers()


def model_fn():
    def build() -> tff.learning.models.VariableModel:
        keras = tf.keras.Sequential([tf.keras.layers.Dense(OUT, input_shape=(IN,))])
        return tff.learning.models.from_keras_model(
            keras, loss=tf.keras.losses.MeanSquaredError(),
            input_spec=(tf.TensorSpec([None, IN], tf.float32), tf.TensorSpec([None, OUT], tf.float32)),
        )

    return build


def client_data(size: int, seed: int) -> tf.data.Dataset:
    x = np.random.default_rng(seed).normal(size=(size, IN)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, x @ TRUE_W)).batch(4)


def build(algorithm: str, client=CLIENT, server=SERVER, aggregator=None, uplink=None, **params):
    setup = algorithms.FederatedSetup(
        model_fn=model_fn(), client=client, server=server, aggregator=aggregator, uplink=uplink,
        algorithm=algorithm, params=params,
    )
    return algorithms.build_process(setup)


def start(process):
    """The process's initial state at fixed weights (zeros kernel, 0.1 bias)."""
    weights = tff.learning.models.ModelWeights(
        trainable=[np.zeros((IN, OUT), np.float32), np.full(OUT, 0.1, np.float32)], non_trainable=[]
    )
    return process.set_model_weights(process.initialize(), weights)


def weights_after(process, datasets, rounds: int = 1) -> list[np.ndarray]:
    state = start(process)
    for _ in range(rounds):
        state = process.next(state, datasets).state
    return [np.asarray(w) for w in process.get_model_weights(state).trainable]


def losses(process, datasets, rounds: int) -> list[float]:
    state, found = start(process), []
    for _ in range(rounds):
        result = process.next(state, datasets)
        state = result.state
        found.append(float(result.metrics["client_work"]["train"]["loss"]))
    return found


A, B, B_SAME_SIZE = client_data(4, 1), client_data(16, 2), client_data(4, 3)


@pytest.fixture(scope="module")
def fedavg():
    return build("fedavg")


@pytest.fixture(scope="module")
def fedavg_unweighted():
    return build("fedavg_unweighted")


def test_registry_matches_the_spec_names():
    from tff_rec.spec import FEDERATED_ALGORITHMS

    assert tuple(algorithms.ALGORITHMS) == FEDERATED_ALGORITHMS


def test_weighted_average_weights_by_examples_and_unweighted_is_the_plain_mean(fedavg, fedavg_unweighted):
    # With server SGD at learning rate 1, a round's model is the average of the clients' models.
    alone_a, alone_b = weights_after(fedavg, [A]), weights_after(fedavg, [B])
    weighted, plain = weights_after(fedavg, [A, B]), weights_after(fedavg_unweighted, [A, B])
    for wa, wb, ww, wp in zip(alone_a, alone_b, weighted, plain):
        np.testing.assert_allclose(ww, (4 * wa + 16 * wb) / 20, atol=1e-6)
        np.testing.assert_allclose(wp, (wa + wb) / 2, atol=1e-6)
    assert max(np.abs(ww - wp).max() for ww, wp in zip(weighted, plain)) > 1e-3
    # Equal client sizes: the two averages coincide.
    for ww, wp in zip(weights_after(fedavg, [A, B_SAME_SIZE]), weights_after(fedavg_unweighted, [A, B_SAME_SIZE])):
        np.testing.assert_allclose(ww, wp, atol=1e-6)


def moved(weights) -> float:
    """Squared distance from the start weights of `start`."""
    initial = [np.zeros((IN, OUT)), np.full(OUT, 0.1)]
    return sum(float(np.sum((w - w0) ** 2)) for w, w0 in zip(weights, initial))


def test_fedprox_with_zero_mu_is_fedavg_and_positive_mu_pulls_towards_the_global_model(fedavg):
    expected = weights_after(fedavg, [A, B])
    for got, want in zip(weights_after(build("fedprox", mu=0.0), [A, B]), expected):
        np.testing.assert_allclose(got, want, atol=1e-7)
    distances = [moved(weights_after(build("fedprox", mu=mu), [A, B])) for mu in (1.0, 5.0)]
    assert moved(expected) > distances[0] > distances[1]


def test_tffs_own_fedprox_pushes_away_from_the_global_model(fedavg):
    """Why `fedprox` does not use `build_weighted_fed_prox`: in TFF 0.87 its proximal gradient has
    the wrong sign. If this fails, TFF fixed it and `algorithms.build_fedprox` can use it."""
    process = tff.learning.algorithms.build_weighted_fed_prox(
        model_fn(), proximal_strength=1.0,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(CLIENT["learning_rate"]),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
        loop_implementation=algorithms.LOOP,
    )
    assert moved(weights_after(process, [A, B])) > moved(weights_after(fedavg, [A, B]))


def test_proximal_optimizer_adds_mu_times_the_distance_to_the_first_weights():
    optimizer = algorithms.ProximalOptimizer(tff.learning.optimizers.build_sgdm(0.5), mu=2.0)
    weights = (tf.constant([1.0, -1.0]),)
    state = optimizer.initialize((tf.TensorSpec([2], tf.float32),))
    state, weights = optimizer.next(state, weights, (tf.constant([0.2, 0.2]),))
    np.testing.assert_allclose(weights[0], [0.9, -1.1])  # at the anchor: plain SGD
    state, weights = optimizer.next(state, weights, (tf.constant([0.0, 0.0]),))
    # gradient 2 * (w - anchor) = (-0.2, -0.2): back towards the anchor by 0.5 * 0.2
    np.testing.assert_allclose(weights[0], [1.0, -1.0], atol=1e-6)
    assert float(optimizer.get_hparams(state)["learning_rate"]) == 0.5


def test_fedadam_server_state_moves_and_takes_its_hyperparameters_and_decay():
    server = {**SERVER, "optimizer": "adam", "learning_rate": 0.05, "beta_1": 0.8, "epsilon": 1e-3,
              "lr_decay": 0.5}
    process = build("fedavg", server=server)
    state = start(process)
    seen = []
    for _ in range(2):
        state = process.next(state, [A, B]).state
        seen.append(state.finalizer)  # schedule_learning_rate's state around Adam's
    first, second = (s["optimizer"] for s in seen)
    assert float(first["beta_1"]) == pytest.approx(0.8) and float(first["epsilon"]) == pytest.approx(1e-3)
    assert float(first["beta_2"]) == pytest.approx(0.999)  # TFF's default where the task says nothing
    assert int(first["step"]) == 1 and int(second["step"]) == 2
    for m1, m2 in zip(first["accumulator"], second["accumulator"]):
        assert np.abs(np.asarray(m1)).max() > 0 and not np.allclose(m1, m2)
    # the learning rate of the next round: 0.05 × 0.5^r after r rounds
    assert [float(s["learning_rate"]) for s in (first, second)] == pytest.approx([0.025, 0.0125])


def test_client_learning_rate_decays_by_round(fedavg):
    process = build("fedavg", client={**CLIENT, "lr_decay": 0.5})
    constant = [weights_after(fedavg, [A, B], rounds) for rounds in (1, 2)]
    decayed = [weights_after(process, [A, B], rounds) for rounds in (1, 2)]
    for got, want in zip(decayed[0], constant[0]):  # round 1 uses learning_rate × 0.5^0
        np.testing.assert_allclose(got, want, atol=1e-7)
    assert max(np.abs(g - w).max() for g, w in zip(decayed[1], constant[1])) > 1e-4


@pytest.mark.parametrize("name", ["fedsgd", "mime_lite"])
def test_fedsgd_and_mime_lite_learn(name):
    # mime_lite with momentum: a stateful base optimizer, whose state the server broadcasts
    # (with plain SGD Mime Lite is exactly FedAvg)
    server = {**SERVER, "learning_rate": 0.2} if name == "fedsgd" else SERVER
    client = {**CLIENT, "optimizer": "sgdm", "learning_rate": 0.05} if name == "mime_lite" else CLIENT
    found = losses(build(name, client=client, server=server), [A, B, B_SAME_SIZE], rounds=3)
    assert found[2] < found[1] < found[0], found


def test_plain_bytes_are_parameters_times_four(fedavg):
    traffic = communication.traffic(fedavg)
    assert communication.model_parameters(fedavg) == (PARAMS, PARAMS)
    # down: the model weights plus the client learning rate (client-work state, a float32)
    assert traffic.down_by_intrinsic == {"federated_broadcast": PARAMS * 4 + 4}
    # up: the model update, its weight (float32) and the training metrics, all by federated_sum
    assert traffic.up_by_intrinsic == {"federated_sum": PARAMS * 4 + 4 + METRICS_BYTES}
    assert traffic.round_bytes(3) == (3 * traffic.down, 3 * traffic.up)


def test_mime_lite_broadcasts_its_optimizer_state_and_uploads_the_full_gradient():
    client = {**CLIENT, "optimizer": "adam"}
    traffic = communication.traffic(build("mime_lite", client=client))
    # weights + Adam state (lr, beta_1, beta_2, epsilon float32, step int32, two moment slots)
    assert traffic.down == PARAMS * 4 + (4 * 4 + 4 + 2 * PARAMS * 4)
    # update + weight, full gradient + weight, metrics
    assert traffic.up == 2 * (PARAMS * 4 + 4) + METRICS_BYTES


def quantized_bytes(elements: int, bits: int) -> int:
    """TFF's uniform quantization: 28 value bits per int32 word, plus a float32 (min, max) pair."""
    return math.ceil(elements * bits / 28) * 4 + 2 * 4


@pytest.mark.parametrize("bits", [8, 4])
def test_compression_sends_the_quantized_size_above_the_threshold(bits):
    # threshold 5: the 10-element kernel is quantized, the 2-element bias goes as float32.
    uplink = aggregation.uplink("compression", {"quantization_bits": bits, "threshold": 5})
    process = build("fedavg", uplink=uplink)
    traffic = communication.traffic(process)
    assert traffic.up_by_intrinsic["federated_aggregate"] == quantized_bytes(IN * OUT, bits) + OUT * 4
    # the rest: weight, metrics, and for each of adaptive clipping and zeroing an int32 count of
    # clipped/zeroed clients and a float32 pair for the private quantile estimate of the norm
    assert traffic.up_by_intrinsic["federated_sum"] == 4 + METRICS_BYTES + 2 * (4 + 2 * 4)
    assert aggregation.nominal_bits("compression", {"quantization_bits": bits, "threshold": 5},
                                    communication.trainable_sizes(process)) \
        == (IN * OUT * bits + OUT * 32) / PARAMS


def test_compression_at_tff_defaults_is_tffs_compression_aggregator():
    value, weight = tff.TensorType(np.float32, [30000]), tff.TensorType(np.float32)
    for weighted in (True, False):
        ours = aggregation.uplink("compression", {})(weighted)
        theirs = tff.learning.compression_aggregator(weighted=weighted)
        args = (value, weight) if weighted else (value,)
        assert str(ours.create(*args).next.type_signature) == str(theirs.create(*args).next.type_signature)


def test_secure_aggregation_runs_simulated_and_matches_the_plain_average(fedavg_unweighted):
    # runtime.configure installs TFF's test context, which lowers the secure sums to plain ones.
    uplink = aggregation.uplink("secure", {"zeroing": False, "clipping": False})
    process = build("fedavg_unweighted", uplink=uplink)
    for got, want in zip(weights_after(process, [A, B]), weights_after(fedavg_unweighted, [A, B])):
        np.testing.assert_allclose(got, want, atol=1e-4)  # SecAgg's integer quantization error
    up = communication.traffic(process).up_by_intrinsic
    assert up["federated_secure_sum_bitwidth"] >= PARAMS * 4


# ---------------------------------------------------------------- one build, many hyperparameters

ADAM = {**SERVER, "optimizer": "adam", "learning_rate": 0.05}
REUSE_PAIRS = {  # (built for, run with): the same build key, different settable values
    "fedavg: client lr, server lr and momentum": (
        ("fedavg", CLIENT, {**SERVER, "momentum": 0.5}, 0.0),
        ("fedavg", {**CLIENT, "learning_rate": 0.3, "batch_size": 8}, {**SERVER, "learning_rate": 0.5, "momentum": 0.9}, 0.0)),
    "fedprox: mu, client lr, Adam's lr, betas and epsilon": (
        ("fedprox", CLIENT, ADAM, 0.1),
        ("fedprox", {**CLIENT, "learning_rate": 0.2}, {**ADAM, "learning_rate": 0.01, "beta_1": 0.5, "beta_2": 0.99, "epsilon": 1e-3}, 2.0)),
    "fedsgd: Adagrad's lr and epsilon": (
        ("fedsgd", CLIENT, {**SERVER, "optimizer": "adagrad", "learning_rate": 0.1}, 0.0),
        ("fedsgd", CLIENT, {**SERVER, "optimizer": "adagrad", "learning_rate": 0.5, "epsilon": 0.1}, 0.0)),
    "scheduled client lr, server yogi": (
        ("fedavg_unweighted", {**CLIENT, "lr_decay": 0.5}, {**ADAM, "optimizer": "yogi"}),
        ("fedavg_unweighted", {**CLIENT, "lr_decay": 0.5}, {**ADAM, "optimizer": "yogi", "learning_rate": 0.2, "beta_1": 0.7})),
}


@pytest.mark.parametrize("pair", REUSE_PAIRS.values(), ids=list(REUSE_PAIRS))
def test_a_process_built_for_other_hyperparameters_runs_as_its_own_build_after_set_hparams(pair):
    from tff_rec.training import processes

    (name, client, server, *mu), (_, run_client, run_server, *run_mu) = pair
    built_for = algorithms.build_key(name, client, server, {"mu": (mu or [0.0])[0]})
    run_params = {"mu": (run_mu or [0.0])[0]}
    assert algorithms.build_key(name, run_client, run_server, run_params) == built_for
    reused = build(name, client, server, mu=(mu or [0.0])[0])
    fresh = build(name, run_client, run_server, **run_params)
    state = processes.with_hparams(
        reused, start(reused), algorithms.settable_hparams(name, run_client, run_server, run_params)
    )
    assert reused.get_hparams(state) == fresh.get_hparams(start(fresh))
    unset = start(reused)
    for _ in range(2):
        state = reused.next(state, [A, B]).state
        unset = reused.next(unset, [A, B]).state
    got = [np.asarray(w) for w in reused.get_model_weights(state).trainable]
    for got_w, want_w in zip(got, weights_after(fresh, [A, B], rounds=2)):
        np.testing.assert_array_equal(got_w, want_w)
    without = [np.asarray(w) for w in reused.get_model_weights(unset).trainable]
    assert max(np.abs(g - w).max() for g, w in zip(got, without)) > 1e-4  # the values mattered


@pytest.mark.parametrize("change", [
    {"server": {"lr_decay": 0.9}},  # a schedule is built in
    {"server": {"momentum": 0.5}},  # SGD with momentum keeps a momentum state
    {"server": {"optimizer": "adagrad", "initial_accumulator": 0.5}},  # used at initialization
    {"client": {"lr_decay": 0.9}},
    {"client": {"optimizer": "adam"}},
    {"algorithm": "fedsgd"},
])
def test_build_keys_differ_where_a_value_is_built_into_the_process(change):
    server = {**SERVER, "optimizer": "adagrad"} if "initial_accumulator" in str(change) else SERVER
    base = ("fedavg", CLIENT, server, {"mu": 0.0})
    changed = (change.get("algorithm", "fedavg"), {**CLIENT, **change.get("client", {})},
               {**server, **change.get("server", {})}, {"mu": 0.0})
    assert algorithms.build_key(*base) != algorithms.build_key(*changed)


def test_client_values_a_process_does_not_expose_stay_in_its_build_key():
    # mime_lite's and fedsgd's client steps (and a scheduled client lr) are built in
    for name in ("mime_lite", "fedsgd"):
        assert algorithms.settable_hparams(name, CLIENT, SERVER, {"mu": 0.0})["client_work"] == {}
        assert (algorithms.build_key(name, CLIENT, SERVER, {"mu": 0.0})
                != algorithms.build_key(name, {**CLIENT, "learning_rate": 0.3}, SERVER, {"mu": 0.0}))
    fedprox = {"mu": 0.1}, {"mu": 0.2}
    scheduled = {**CLIENT, "lr_decay": 0.5}
    assert (algorithms.build_key("fedprox", scheduled, SERVER, fedprox[0])
            != algorithms.build_key("fedprox", scheduled, SERVER, fedprox[1]))
    assert (algorithms.build_key("fedprox", CLIENT, SERVER, fedprox[0])
            == algorithms.build_key("fedprox", CLIENT, SERVER, fedprox[1]))
