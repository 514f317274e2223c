"""Rounds aggregated in sub-cohorts (`[run] subcohort_size`, `training.subcohort`).

The learning processes are the runner's (`processes.taking_arrays` around `algorithms.build_process`)
on the tiny SASRec of `test_cardinality` and its in-memory clients, and the runner on the tiny task
of `test_end_to_end`. A round split into sub-cohorts must give the unsplit round's state, metrics
and ε up to the rounding of the split sums, for FedAvg and for Gaussian DP-FedAvg, and run every
sub-cohort at one CLIENTS cardinality.
"""
from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

from test_end_to_end import metric_rows, task_text
from test_cardinality import CLIENT, ITEMS, MAX_LEN, cardinalities_seen, clients, leaves
from test_workers import dependent_aggregations
from tff_rec import algorithms, cli, composing, models, record, spec
from tff_rec.spec import SpecError
from tff_rec.training import cardinality, processes, subcohort

# k partial sums merged instead of one fold over the clients: float32 rounding differs in the
# last bits (as across workers, tests/test_workers.py).
RTOL = 1e-4
ROUNDS = 2
# The server's SGD (the task-file default): Adam would turn the rounding noise of a coordinate whose
# update is ~0 into a step of ± its learning rate (m / √v), which no tolerance on the sums covers.
SERVER = {"optimizer": "sgd", "learning_rate": 1.0, "momentum": 0.0}


def model_fn() -> tff.learning.models.VariableModel:
    """The tiny SASRec without dropout and with the full softmax: its dropout masks and sampled
    negatives are seeded by a hash of the hidden states, so a last-bit difference in the weights
    would draw other masks and negatives, and the runs would part beyond any rounding tolerance."""
    keras = models.build_model("sasrec", ITEMS, seed=0, max_len=MAX_LEN, embedding_dim=8,
                               num_blocks=1, num_heads=1, dropout=0.0)
    return tff.learning.models.from_keras_model(
        keras, loss=models.MaskedNextItemLoss(), input_spec=models.batch_spec(MAX_LEN))


@functools.cache
def build():
    """The runner's FedAvg learning process taking arrays; built once, as the runner does."""
    return processes.taking_arrays(algorithms.build_process(algorithms.FederatedSetup(
        model_fn=model_fn, client=CLIENT, server=SERVER, aggregator=None)), MAX_LEN)


def assert_close(a, b) -> None:
    left, right = leaves(a), leaves(b)
    assert len(left) == len(right)
    for x, y in zip(left, right):
        assert x.dtype == y.dtype and x.shape == y.shape
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=RTOL, atol=1e-6)
        else:
            np.testing.assert_array_equal(x, y)


def test_sub_cohorts_are_as_many_as_needed_and_of_one_size():
    assert [subcohort.parts(n, 1000) for n in (1, 1000, 1001, 5000)] == [1, 1, 2, 5]
    assert subcohort.equal_total(5000, 1000) == 5000  # 5 × 1,000: no padding
    assert subcohort.equal_total(5001, 1000) == 5004  # 6 × 834
    assert subcohort.equal_total(7, 3) == 9 and subcohort.equal_total(6, 3) == 6


def test_a_fedavg_round_in_sub_cohorts_equals_the_unsplit_round():
    """FedAvg weighted by examples, 6 clients a round as 2 sub-cohorts of 3 (Gaussian DP-FedAvg
    and padding: `test_a_task_run_in_sub_cohorts_gives_the_unsplit_record_up_to_rounding`)."""
    cohort = 6
    process = build()
    split = cardinality.padded_next(process, [cohort], subcohort_size=3)
    everyone = clients()
    state = split_state = process.initialize()
    seen, restore = cardinalities_seen()
    split_cardinalities = set()
    try:
        for round_number in range(ROUNDS):
            members = everyone[round_number:round_number + cohort]
            unsplit = process.next(state, members)
            seen.clear()
            result = split(split_state, members)
            split_cardinalities.update(seen)
            seen.clear()
            assert type(result.state) is type(unsplit.state)
            assert_close(unsplit.state, result.state)
            assert_close(unsplit.metrics, result.metrics)
            state, split_state = unsplit.state, result.state
    finally:
        restore()
    # every sub-cohort at one cardinality (merge and the server step run without clients)
    assert split_cardinalities - {0, None} == {3}
    # the split changed the order of the sums, not what was summed; the loss saw every client
    assert float(result.metrics["client_work"]["train"]["num_examples"]) == sum(
        len(member[0]) for member in members)


def test_a_cohort_within_one_sub_cohort_runs_unsplit():
    process = build()
    members = clients()[:4]
    state = process.initialize()
    whole = process.next(state, members)
    seen, restore = cardinalities_seen()
    try:
        result = cardinality.padded_next(process, [4], subcohort_size=4)(state, members)
    finally:
        restore()
    assert seen == [4]
    for x, y in zip(leaves(whole.state), leaves(result.state)):
        assert x.tobytes() == y.tobytes()  # the same computation: bit for bit


def test_sub_cohorts_are_refused_with_remote_workers():
    before = context_stack_impl.context_stack.current
    context = composing.ComposingContext([composing.RemoteWorker("localhost:1")])  # never connected
    context_stack_impl.context_stack.set_default_context(context)
    try:
        with pytest.raises(SpecError, match=r"^task\.toml: key 'run\.subcohort_size' \(3\) .*--workers"):
            cardinality.padded_next(build(), [6], subcohort_size=3, source="task.toml")
    finally:
        context_stack_impl.context_stack.set_default_context(before)
        context.close()


@pytest.mark.parametrize("value, fragment", [(-1, "must be >= 0"), ("big", "integer"), (2.5, "integer")])
def test_bad_sizes_name_the_file_and_key(tmp_path, value, fragment):
    path = tmp_path / "task.toml"
    path.write_text(f"[run]\nsubcohort_size = {value!r}\n".replace("'", '"'))
    with pytest.raises(SpecError) as error:
        spec.load_task(path)
    message = str(error.value)
    for expected in ("task.toml", "run.subcohort_size", fragment):
        assert expected in message, message


def test_the_size_is_hashed_when_set_and_only_then(tmp_path):
    path = tmp_path / "task.toml"
    path.write_text("[data]\ndataset = 'synthetic'\n")
    plain = spec.load_task(path)
    assert plain["run"]["subcohort_size"] == 0
    assert spec.load_task(path, {"run.subcohort_size": 0}).hash == plain.hash
    split = spec.load_task(path, {"run.subcohort_size": 1000})
    assert split.hash != plain.hash
    assert split.hash != spec.load_task(path, {"run.subcohort_size": 500}).hash


def test_a_round_tff_cannot_split_is_refused_with_the_reason():
    with pytest.raises(SpecError, match=r"^task\.toml: key 'run\.subcohort_size' \(2\): "
                                        r".*cannot be split.*aggregat"):
        subcohort.invoke_in_parts(dependent_aggregations(), ([1.0, 2.0, 3.0],), 2, 2, "task.toml")


def test_a_task_run_in_sub_cohorts_gives_the_unsplit_record_up_to_rounding(tmp_path):
    """The runner's path (`[run] subcohort_size`, `--set`): the tiny task of `test_end_to_end`
    as Gaussian DP-FedAvg (noise multiplier 1, clip 1: noise added per sub-cohort instead of once
    would move the model far beyond the tolerance), 10 clients a round: 3 sub-cohorts of 4, two of
    them masked padding clients."""
    task = tmp_path / "tiny.toml"
    task.write_text(task_text(rounds="2"))
    dp = ["--set", "privacy.mechanism=gaussian", "--set", "privacy.clip=1.0",
          "--set", "privacy.noise_multiplier=1.0"]
    runs = []
    for label, extra in (("unsplit", []), ("split", ["--set", "run.subcohort_size=4"])):
        assert cli.main(["run", str(task), "--out", str(tmp_path / label), "--no-progress", *dp, *extra]) == 0
        [run] = (tmp_path / label).glob("runs/*/seed-0")
        runs.append(run)
    assert runs[0].parent.name != runs[1].parent.name  # hashed when set: a record of its own
    unsplit, split = metric_rows(runs[0]), metric_rows(runs[1])
    assert len(unsplit) == len(split) > 0
    for a, b in zip(unsplit, split):
        assert a.keys() == b.keys()
        for key in a:
            try:
                assert math.isclose(float(a[key]), float(b[key]), rel_tol=RTOL, abs_tol=1e-7), (key, a, b)
            except ValueError:
                assert a[key] == b[key]
    summaries = [json.loads((run / record.SUMMARY).read_text()) for run in runs]
    assert summaries[0]["epsilon"] == summaries[1]["epsilon"]  # the same mechanism, noise once a round
