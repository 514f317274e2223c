"""Learning processes, built once per Python process and shared by every run they can serve.

Building a process costs seconds (ARCHITECTURE.md, Performance notes). Runs that differ only in values
the process keeps in its state share one build, and each run starts from its own state:
- optimizer hyperparameters (learning rates, momentum, Adam's and Yogi's betas and ε, FedProx's
  mu) go in through TFF's `process.set_hparams`, where the process exposes them
  (`algorithms.settable_hparams`);
- a query mechanism's noise seed, clip, noise multiplier (scaled for a nominal cohort,
  `privacy/nominal.py`) and cohort denominator go into the DP aggregator's state
  (`aggregator.with_query_state`);
- batch size and local epochs shape only the client datasets.
Everything else is the build key (`build_key`). `initial_state` sets a run's values and checks
that the process now holds exactly what a build for this run would have started from.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rec import aggregation, algorithms, communication, models, seeds
from tff_rec.privacy import aggregator as dp_aggregator
from tff_rec.privacy import mechanisms
from tff_rec.spec import TaskSpec


@dataclasses.dataclass(frozen=True)
class Built:
    """A built learning process and its per-client traffic (sized once from its types)."""

    process: tff.learning.templates.LearningProcess
    traffic: communication.Traffic


_BUILT: dict[str, Built] = {}


def _algorithm_sections(task: TaskSpec) -> tuple[str, Any, Any, dict[str, Any]]:
    return (task["algorithm"]["name"], task["algorithm.client"], task["algorithm.server"],
            {"mu": task["algorithm.fedprox"]["mu"]})


def _swaps_query_state(plan) -> bool:
    return plan is not None and mechanisms.get_mechanism(plan.mechanism).query_builder is not None


def _build_noise_seed(seed: int, plan) -> Optional[int]:
    """The noise seed a process is built with: 0 when the run's goes into the state, else the run's."""
    if plan is None:
        return None
    return 0 if _swaps_query_state(plan) else seeds.derive(seed, "dp-noise")


def build_key(task: TaskSpec, num_items: int, plan, seed: int) -> str:
    """What a learning process is built from, less what a run sets into its state."""
    model = task["model"]
    if plan is None:
        privacy = None
    elif _swaps_query_state(plan):
        privacy = [plan.mechanism]
    else:
        privacy = [plan.mechanism, plan.params, plan.clients_per_round, _build_noise_seed(seed, plan)]
        if plan.noise_cohort_size is not None:  # the tree's noise is scaled at build time
            privacy.append(plan.noise_cohort_size)
    return json.dumps(
        [model["name"], model["params"], num_items, privacy,
         algorithms.build_key(*_algorithm_sections(task)), task["aggregation"]],
        sort_keys=True, default=str,
    )


def get(task: TaskSpec, num_items: int, plan, seed: int) -> Built:
    """The learning process for this run: built now, or reused from an earlier run."""
    key = build_key(task, num_items, plan, seed)
    if key not in _BUILT:
        _BUILT[key] = _build(task, num_items, plan, seed)
    return _BUILT[key]


def _build(task: TaskSpec, num_items: int, plan, seed: int) -> Built:
    model_section = task["model"]
    max_len = model_section["params"]["max_len"]
    spec = models.batch_spec(max_len)

    def model_fn() -> tff.learning.models.VariableModel:
        keras_model = models.build_model(model_section["name"], num_items, seed=0, **model_section["params"])
        return tff.learning.models.from_keras_model(
            keras_model, loss=models.training_loss(keras_model), input_spec=spec
        )

    aggregator = None
    if plan is not None:
        aggregator = mechanisms.build_aggregator(
            plan.mechanism, clients_per_round=plan.clients_per_round,
            noise_seed=_build_noise_seed(seed, plan), noise_cohort_size=plan.noise_cohort_size,
            **plan.params,
        )
    name, client, server, params = _algorithm_sections(task)
    section = task["aggregation"]
    process = algorithms.build_process(algorithms.FederatedSetup(
        model_fn=model_fn, client=client, server=server, aggregator=aggregator,
        uplink=aggregation.uplink(section["method"], section["params"]), algorithm=name, params=params,
    ))
    return Built(taking_arrays(process, max_len), communication.traffic(process))


def taking_arrays(process: tff.learning.templates.LearningProcess,
                  max_len: int) -> tff.learning.templates.LearningProcess:
    """`process` whose `next` takes each client's `client_arguments` instead of a dataset.

    TFF's `compose_dataset_computation_with_learning_process`: the worker builds each client's
    dataset (`algorithms.client_dataset`) from its arrays, so the driver sends tensors (~0.02 ms
    a client) instead of building and serializing a tf.data dataset per client (~0.6 ms, while
    the worker waits). Batch size and local epochs are arguments, not part of the build.
    """
    examples = tff.TensorType(np.int32, [None, max_len])

    @tff.tensorflow.computation(examples, examples, np.int64, np.int64)
    def client_dataset(inputs, targets, batch_size, local_epochs):
        return algorithms.client_dataset(
            tf.data.Dataset.from_tensor_slices((inputs, targets)), batch_size, local_epochs
        )

    return tff.simulation.compose_dataset_computation_with_learning_process(client_dataset, process)


def client_arguments(client_data, cohort: list[str], batch_size: int,
                     local_epochs: int) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """What `next` of a `taking_arrays` process takes for `cohort`: per client (inputs, targets,
    batch size, local epochs). The cohort's arrays are read at once (`cohort_examples`: one query
    per cohort from a partition kept in SQLite, `partition.store.SqlClients`)."""
    arrays = client_data.cohort_examples(cohort)
    return [(*arrays[cid], batch_size, local_epochs) for cid in cohort]


def initial_state(process: tff.learning.templates.LearningProcess, task: TaskSpec, plan, seed: int,
                  weights: tff.learning.models.ModelWeights) -> Any:
    """The run's initial state: its model weights, optimizer hyperparameters and DP query state."""
    state = process.set_model_weights(process.initialize(), weights)
    state = with_hparams(process, state, algorithms.settable_hparams(*_algorithm_sections(task)))
    if _swaps_query_state(plan):
        state = state._replace(  # LearningAlgorithmState is a NamedTuple
            aggregator=dp_aggregator.with_query_state(state.aggregator, _query_state(plan, seed)))
    return state


def _query_state(plan, seed: int) -> Any:
    return mechanisms.initial_query_state(
        plan.mechanism, clients_per_round=plan.clients_per_round,
        noise_seed=seeds.derive(seed, "dp-noise"), noise_cohort_size=plan.noise_cohort_size,
        **plan.params,
    )


def aggregator_reader(plan) -> Callable[[Any], Any]:
    """From a learning process's aggregator state to what the runner reads there (the clip): a
    query mechanism's packed state unpacked into the query's global state, others as they are."""
    if not _swaps_query_state(plan):
        return lambda aggregator_state: aggregator_state
    return dp_aggregator.StateLayout.of(_query_state(plan, seed=0)).unpack


def with_hparams(process, state, wanted: dict[str, dict[str, Any]]) -> Any:
    """`state` with the `wanted` sections of hyperparameters set, checked after setting."""
    hparams = process.get_hparams(state)
    for section, values in wanted.items():
        if values and set(hparams[section]) != set(values):
            raise RuntimeError(  # build_key left out a value the process does not take from state
                f"the learning process's {section} hyperparameters are {sorted(hparams[section])}; "
                f"the task's optimizer has {sorted(values)}"
            )
        hparams[section].update(values)
    state = process.set_hparams(state, hparams)
    now = process.get_hparams(state)
    for section, values in wanted.items():
        for name, value in values.items():
            if np.float32(now[section][name]) != np.float32(value):
                raise RuntimeError(f"set_hparams left {section}.{name} at {now[section][name]}, not {value}")
    return state
