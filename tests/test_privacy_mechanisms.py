"""DP aggregation mechanisms: parameter validation, clipping, noise scale, fresh and seeded noise.

The aggregation processes are run directly (`factory.create(type)`, `initialize`, `next`) with a
handful of clients; no model is involved.
"""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_rec.privacy import mechanisms, queries
from tff_rec.privacy.aggregator import QueryAggregatorFactory, StateLayout, with_query_state
from tff_rec.privacy.mechanisms import MECHANISMS, build_aggregator, mix_seed, validate_params
from tff_rec.privacy.queries import SeededGaussianSumQuery

DIM = 10_000
CLIENTS = 4


def _worker_children() -> list[int]:
    """PIDs of `worker_binary` processes whose parent is this Python process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as comm_file:
                comm = comm_file.read().strip()
            with open(f"/proc/{entry}/stat") as stat_file:
                stat = stat_file.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # fields after "(comm)": state, ppid, ...
        if comm == "worker_binary" and ppid == os.getpid():
            found.append(int(entry))
    return found


@pytest.fixture(scope="module", autouse=True)
def stop_tff_worker():
    """Stop TFF's C++ worker after this module: it outlives Python and holds our stdout open.

    SIGINT, as TFF itself uses; the process is not reaped here, so TFF's own `Popen` can still
    wait on it and start a fresh worker if a later module runs a computation.
    """
    yield
    for pid in _worker_children():
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass


def _process(mechanism: str, *, noise_seed: int = 7, dim: int = DIM, **params):
    factory = build_aggregator(
        mechanism, clients_per_round=CLIENTS, noise_seed=noise_seed, **params
    )
    return factory.create(tff.TensorType(np.float32, [dim]))


def _run(process, rounds: int, values=None) -> list[np.ndarray]:
    """Aggregates of `rounds` rounds; by default all clients send zero updates (pure noise)."""
    if values is None:
        shape = process.next.type_signature.parameter[1].member.shape
        values = [np.zeros(shape, np.float32)] * CLIENTS
    state, results = process.initialize(), []
    for _ in range(rounds):
        output = process.next(state, values)
        state = output.state
        results.append(np.asarray(output.result))
    return results


# ---------------------------------------------------------------- registry and validation


def test_registry_names():
    assert {"none", "clip", "gaussian", "adaptive", "tree"} <= set(MECHANISMS)
    for name, mechanism in MECHANISMS.items():
        assert mechanism.name == name and mechanism.description


def test_validate_fills_defaults_and_converts_ints():
    assert validate_params("gaussian", {}) == {"clip": 1.0, "noise_multiplier": 1.0}
    checked = validate_params("gaussian", {"clip": 2, "noise_multiplier": 0})
    assert checked == {"clip": 2.0, "noise_multiplier": 0.0}
    assert isinstance(checked["clip"], float)
    assert validate_params("adaptive", {})["clipped_count_stddev"] is None
    assert validate_params("tree", {"efficient": False})["efficient"] is False


@pytest.mark.parametrize(
    ("mechanism", "params", "message"),
    [
        ("gaussian", {"clip": -1}, "privacy.clip must be positive. Found -1."),
        ("gaussian", {"clip": 0.0}, "privacy.clip must be positive. Found 0.0."),
        (
            "gaussian",
            {"noise_multiplier": -0.5},
            "privacy.noise_multiplier must be nonnegative. Found -0.5.",
        ),
        ("gaussian", {"clip": float("nan")}, "privacy.clip must be finite. Found nan."),
        ("gaussian", {"clip": True}, "privacy.clip must be a number. Found True."),
        ("gaussian", {"clip": "1"}, "privacy.clip must be a number. Found '1'."),
        (
            "adaptive",
            {"target_unclipped_quantile": 1.5},
            "privacy.target_unclipped_quantile must be in [0, 1]. Found 1.5.",
        ),
        ("tree", {"efficient": 1}, "privacy.efficient must be true or false. Found 1."),
        (
            "gaussian",
            {"clipp": 1.0},
            "privacy.clipp is not a parameter of privacy mechanism 'gaussian'. Allowed: clip, noise_multiplier.",
        ),
        ("none", {"clip": 1.0}, "privacy.clip is not a parameter of privacy mechanism 'none'. It takes none."),
        (
            "laplace",
            {},
            "privacy.mechanism must be one of adaptive, clip, ddp, gaussian, none, tree. "
            "Found 'laplace'.",
        ),
    ],
)
def test_validate_errors_name_key_and_allowed_values(mechanism, params, message):
    with pytest.raises(ValueError) as error:
        validate_params(mechanism, params)
    assert str(error.value) == message


def test_build_checks_cohort_and_seed():
    with pytest.raises(ValueError, match="clients_per_round must be a positive integer. Found 0."):
        build_aggregator("gaussian", clients_per_round=0, noise_seed=1)
    with pytest.raises(ValueError, match="noise_seed must be an integer"):
        build_aggregator("gaussian", clients_per_round=2, noise_seed=-1)
    with pytest.raises(ValueError, match="privacy.clip must be positive. Found -1."):
        build_aggregator("gaussian", clients_per_round=2, noise_seed=1, clip=-1)


def test_adaptive_rejects_count_noise_too_small_for_total_noise():
    # Total z = 1 needs clipped-count stddev > 0.5; the default 0.05 * 4 clients = 0.2 is not.
    with pytest.raises(ValueError, match="privacy.clipped_count_stddev must be greater than"):
        build_aggregator("adaptive", clients_per_round=4, noise_seed=1, noise_multiplier=1.0)


def test_none_is_no_aggregator():
    assert build_aggregator("none", clients_per_round=3, noise_seed=0) is None


def test_mix_seed_spreads_adjacent_seeds():
    mixed = [mix_seed(seed) for seed in range(100)]
    assert len(set(mixed)) == 100
    assert min(abs(a - b) for a, b in zip(mixed, mixed[1:])) > 2**20
    assert all(0 <= value < 2**62 for value in mixed)


# ---------------------------------------------------------------- the seeded query, without TFF


def test_seeded_query_noise_per_tensor_and_round():
    query = SeededGaussianSumQuery(l2_norm_clip=1.0, stddev=1.0, noise_seed=3)
    state = query.initial_global_state()
    zeros = [tf.zeros([1000]), tf.zeros([1000])]
    first, state, event = query.get_noised_result(zeros, state)
    second, state, _ = query.get_noised_result(zeros, state)
    assert int(state.round_num) == 2
    assert float(event.noise_multiplier) == pytest.approx(1.0)
    # Two same-shaped tensors in one round, and one tensor in two rounds: independent draws.
    assert abs(np.corrcoef(first[0], first[1])[0, 1]) < 0.15
    assert abs(np.corrcoef(first[0], second[0])[0, 1]) < 0.15
    again, _, _ = query.get_noised_result(zeros, query.initial_global_state())
    np.testing.assert_array_equal(again[0], first[0])


def test_seeded_noise_is_the_documented_per_tensor_draw():
    """The small graph draws exactly stateless_normal(seed=fold_in(fold_in(key, r), i)) for
    tensor i of round r, with Philox, as the docstring says (and as earlier versions drew)."""
    template = [tf.zeros([3, 4]), tf.zeros([5]), tf.zeros([2, 2], tf.float64)]
    key = queries.noise_key(12345, queries.COUNT_STREAM)
    for round_num in (0, 1, 7, 2**40):
        r = tf.constant(round_num, tf.int64)
        drawn = tf.function(lambda: queries.seeded_gaussian_noise(template, 0.7, key, r))()
        round_key = tf.random.experimental.stateless_fold_in(key, r, alg="philox")
        for index, (noise, value) in enumerate(zip(drawn, template)):
            seed = tf.random.experimental.stateless_fold_in(
                round_key, tf.constant(index, tf.int64), alg="philox")
            expected = tf.random.stateless_normal(
                tf.shape(value), seed=seed, stddev=tf.cast(0.7, value.dtype), dtype=value.dtype,
                alg="philox")
            assert noise.dtype == value.dtype
            np.testing.assert_array_equal(noise.numpy(), expected.numpy())


# ---------------------------------------------------------------- TFF aggregation processes


def test_clipping_bounds_one_clients_contribution():
    clip = 1.0
    process = _process("gaussian", dim=3, clip=clip, noise_multiplier=0.0)
    huge = np.array([3e6, -4e6, 0.0], np.float32)  # norm 5e6, direction (0.6, -0.8, 0)
    small = np.array([0.3, 0.0, 0.4], np.float32)  # norm 0.5 < clip: passes unchanged
    zero = np.zeros(3, np.float32)
    [with_huge] = _run(process, 1, [huge, zero, zero, zero])
    assert np.linalg.norm(with_huge) <= clip / CLIENTS + 1e-6
    np.testing.assert_allclose(with_huge, [0.6 / CLIENTS, -0.8 / CLIENTS, 0.0], atol=1e-6)
    [both] = _run(process, 1, [huge, small, zero, zero])
    np.testing.assert_allclose(both, (np.array([0.6, -0.8, 0.0]) + small) / CLIENTS, atol=1e-6)


def test_clip_mechanism_clips_without_noise():
    process = _process("clip", dim=2, clip=2.0)
    values = [np.array([0.0, 100.0], np.float32)] + [np.zeros(2, np.float32)] * 3
    [result] = _run(process, 1, values)
    np.testing.assert_allclose(result, [0.0, 2.0 / CLIENTS], atol=1e-6)


def test_noise_std_is_clip_times_z_over_denominator():
    clip, z = 2.0, 1.5
    [noise] = _run(_process("gaussian", clip=clip, noise_multiplier=z), 1)
    expected = clip * z / CLIENTS  # 0.75
    # The std of 10_000 normals has relative s.e. 1/sqrt(2 * 10_000) = 0.7%: 3% is over 4 s.e.,
    # and a missing denominator (x4) or clip (x0.5) is far outside it.
    assert np.std(noise) == pytest.approx(expected, rel=0.03)
    assert abs(np.mean(noise)) < 4 * expected / np.sqrt(DIM)
    [doubled] = _run(_process("gaussian", clip=clip, noise_multiplier=2 * z), 1)
    assert np.std(doubled) / np.std(noise) == pytest.approx(2.0, rel=0.03)


def test_noise_is_fresh_every_round():
    first, second, third = _run(_process("gaussian", clip=1.0, noise_multiplier=1.0), 3)
    assert not np.array_equal(first, second)
    # Independent draws: sample correlation of 10_000 pairs has s.e. 0.01.
    for a, b in ((first, second), (second, third), (first, third)):
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.05
    assert np.std(second) == pytest.approx(1.0 / CLIENTS, rel=0.03)


def test_same_seed_same_noise_sequence_other_seed_other_noise():
    runs = [
        _run(_process("gaussian", noise_seed=seed, noise_multiplier=1.0), 2)
        for seed in (11, 11, 12)
    ]
    for round_index in range(2):
        np.testing.assert_array_equal(runs[0][round_index], runs[1][round_index])
        assert abs(np.corrcoef(runs[0][round_index], runs[2][round_index])[0, 1]) < 0.05


@pytest.mark.parametrize(("mechanism", "params"), [
    ("gaussian", {"clip": 0.5, "noise_multiplier": 1.3}),
    ("clip", {"clip": 0.5}),
    ("adaptive", {"noise_multiplier": 0.5, "clipped_count_stddev": 1.0, "initial_clip": 0.5}),
])
def test_query_aggregator_matches_tffs_dp_factory(mechanism, params):
    """`QueryAggregatorFactory` is TFF's `DifferentiallyPrivateFactory` with fewer computations:
    same results, query states and metrics, round after round."""
    query = mechanisms.get_mechanism(mechanism).query_builder(
        clients_per_round=CLIENTS, noise_seed=5,
        **validate_params(mechanism, params),
    )
    value_type = tff.TensorType(np.float32, [100])
    ours = QueryAggregatorFactory(query).create(value_type)
    tffs = tff.aggregators.DifferentiallyPrivateFactory(query).create(value_type)
    values = [np.linspace(-1.0, 1.0, 100).astype(np.float32) * (i + 1) for i in range(CLIENTS)]
    our_state, tff_state = ours.initialize(), tffs.initialize()
    for _ in range(3):
        our_output, tff_output = ours.next(our_state, values), tffs.next(tff_state, values)
        our_state, tff_state = our_output.state, tff_output.state
        np.testing.assert_array_equal(our_output.result, tff_output.result)
        tf.nest.map_structure(np.testing.assert_array_equal,
                              StateLayout.of(tff_state.query_state).unpack(our_state),
                              tff_state.query_state)
        tf.nest.map_structure(np.testing.assert_array_equal,
                              dict(our_output.measurements["dp_query_metrics"]),
                              dict(tff_output.measurements["dp_query_metrics"]))


def test_state_layout_packs_one_vector_per_dtype_and_back():
    state = mechanisms.initial_query_state(
        "adaptive", clients_per_round=10, noise_seed=3, noise_multiplier=0.5)
    layout = StateLayout.of(state)
    packed = layout.pack(state)
    assert [(v.dtype, v.shape) for v in packed] == [(tf.float32, [10]), (tf.int64, [6])]
    unpacked = layout.unpack(packed)
    tf.nest.assert_same_structure(unpacked, state)
    for got, want in zip(tf.nest.flatten(unpacked), tf.nest.flatten(state)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_query_aggregator_refuses_a_query_that_does_not_sum_records():
    with pytest.raises(TypeError, match="SumAggregationDPQuery"):
        QueryAggregatorFactory(tfp.NestedQuery([tfp.NoPrivacySumQuery()]))  # not a sum of records


@pytest.mark.parametrize(
    ("mechanism", "params"),
    [
        ("adaptive", {"noise_multiplier": 1.0, "clipped_count_stddev": 1.0}),
        ("tree", {"noise_multiplier": 1.0}),
        ("tree", {"noise_multiplier": 1.0, "efficient": False}),
    ],
)
def test_other_noisy_mechanisms_are_fresh_and_reproducible(mechanism, params):
    first = _run(_process(mechanism, noise_seed=5, dim=1000, **params), 2)
    again = _run(_process(mechanism, noise_seed=5, dim=1000, **params), 2)
    other = _run(_process(mechanism, noise_seed=6, dim=1000, **params), 2)
    for round_index in range(2):
        np.testing.assert_array_equal(first[round_index], again[round_index])
        assert not np.array_equal(first[round_index], other[round_index])
        assert np.std(first[round_index]) > 0
    assert not np.array_equal(first[0], first[1])


def test_adaptive_clip_moves_towards_target_quantile():
    # All four updates have norm 10 >> initial clip 0.1: every client is clipped, so the clip
    # grows geometrically (by about exp(0.2 * 0.5) per round with no noise).
    process = _process("adaptive", dim=2, noise_multiplier=0.0, initial_clip=0.1)
    values = [np.array([6.0, 8.0], np.float32)] * CLIENTS
    state = process.initialize()
    clips = []
    for _ in range(3):
        output = process.next(state, values)
        state = output.state
        clips.append(float(output.measurements["dp_query_metrics"]["clip"]))
    np.testing.assert_allclose(clips, 0.1 * np.exp(0.2 * 0.5 * np.arange(1, 4)), rtol=1e-5)
    # Noise-free round 1 aggregate: every update clipped to 0.1, averaged over 4 clients.
    [first] = _run(process, 1, values)
    np.testing.assert_allclose(first, [0.06, 0.08], atol=1e-6)


@pytest.mark.parametrize("mechanism, built_with, run_with", [
    ("gaussian", {"clip": 1.0, "noise_multiplier": 1.0}, {"clip": 0.3, "noise_multiplier": 2.0}),
    ("clip", {"clip": 1.0}, {"clip": 0.2}),
    ("adaptive", {"noise_multiplier": 0.5, "clipped_count_stddev": 1.0},
     {"noise_multiplier": 0.8, "initial_clip": 0.5, "target_unclipped_quantile": 0.7,
      "clip_learning_rate": 0.1, "clipped_count_stddev": 2.0}),
])
def test_a_process_built_for_other_parameters_runs_as_its_own_build_after_the_state_swap(
    mechanism, built_with, run_with
):
    """What lets the runner build a DP learning process once for every seed and setting."""
    values = [np.linspace(-1.0, 2.0, DIM).astype(np.float32) * (i + 1) for i in range(CLIENTS)]
    fresh = build_aggregator(mechanism, clients_per_round=CLIENTS, noise_seed=11, **run_with)
    fresh = fresh.create(tff.TensorType(np.float32, [DIM]))
    # built for other parameters, another noise seed and another denominator (cohort size)
    reused = build_aggregator(mechanism, clients_per_round=2 * CLIENTS, noise_seed=0, **built_with)
    reused = reused.create(tff.TensorType(np.float32, [DIM]))
    query_state = mechanisms.initial_query_state(
        mechanism, clients_per_round=CLIENTS, noise_seed=11, **run_with
    )
    expected, swapped, state = [], [], fresh.initialize()
    reused_state = with_query_state(reused.initialize(), query_state)
    for _ in range(3):
        output = fresh.next(state, values)
        state = output.state
        expected.append(output.result)
        output = reused.next(reused_state, values)
        reused_state = output.state
        swapped.append(output.result)
    np.testing.assert_array_equal(np.array(expected), np.array(swapped))
    unswapped = reused.next(reused.initialize(), values).result
    assert not np.array_equal(unswapped, expected[0])  # the swap mattered


def test_the_query_state_swap_refuses_a_state_of_another_layout():
    gaussian = mechanisms.initial_query_state("gaussian", clients_per_round=4, noise_seed=1)
    adaptive_process = _process("adaptive", dim=2, noise_multiplier=0.0)
    with pytest.raises(ValueError, match=r"must hold \(dtype, size\) \[\('float32', 3\), \('int64', 3\)\]"):
        with_query_state(adaptive_process.initialize(), gaussian)
    with pytest.raises(ValueError, match="not a DP query"):
        mechanisms.initial_query_state("tree", clients_per_round=4, noise_seed=1)
