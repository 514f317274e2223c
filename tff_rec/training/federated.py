"""Federated training: the plan's rounds through a TFF learning process, with checkpoints.

Each round takes the plan's cohort (`sampling.CohortSampler`: fixed-size without replacement,
Poisson, or consecutive blocks of a shuffled pass for DP-FTRL), runs one `next` of the learning
process, and yields the round's row: the training loss and — for DP runs — ε after that round
from the plan's ledger (`privacy.planning`: the analysis that matches the sampler). Every
`run.checkpoint_every` rounds the learning-process state is saved with `tff.program.FileProgramStateManager` (`checkpoints`); a
re-run resumes from the last usable one and replays nothing. A TFF worker that dies under a round
fails the run (`runtime.WorkerDied`, naming the round).
"""
from __future__ import annotations

import asyncio
import gc
import time
from typing import Any, Optional

import numpy as np
import tensorflow_federated as tff

from tff_rec import aggregation, communication, faults, runtime
from tff_rec.evaluation import score_last_position
from tff_rec.partition import store as partition_store
from tff_rec.training import cardinality, checkpoints, processes
from tff_rec.training.context import Outcome, Resumed, RunContext, Training


def current_clip(aggregator_state: Any) -> Optional[float]:
    """The L2 clip a DP aggregator will apply next (it moves under adaptive clipping).

    tensorflow-privacy keeps it as `l2_norm_clip` in the query's global state; this finds the
    first such field in the nested state, or None when the aggregator has none.
    """
    if hasattr(aggregator_state, "_asdict"):
        aggregator_state = aggregator_state._asdict()
    elif hasattr(aggregator_state, "__attrs_attrs__"):
        aggregator_state = {a.name: getattr(aggregator_state, a.name) for a in aggregator_state.__attrs_attrs__}
    if isinstance(aggregator_state, dict):
        if "l2_norm_clip" in aggregator_state:
            return float(np.asarray(aggregator_state["l2_norm_clip"]))
        children = list(aggregator_state.values())
    elif isinstance(aggregator_state, (list, tuple)):
        children = list(aggregator_state)
    else:
        return None
    for child in children:
        found = current_clip(child)
        if found is not None:
            return found
    return None


_CLIENT_DATA: dict[str, tff.simulation.datasets.ClientData] = {}


def _client_data(client_split, data, cache_dir, key: str) -> tff.simulation.datasets.ClientData:
    """The partition's clients, read once per process from their SQLite store (built if needed)."""
    if key not in _CLIENT_DATA:
        with faults.writing(cache_dir / f"{key}.sqlite"):
            path = partition_store.ensure_database(client_split, *data.user_examples(), cache_dir, key)
        _CLIENT_DATA.clear()  # keep one partition in memory at a time
        _CLIENT_DATA[key] = partition_store.open_clients(path, data.max_len)  # large: read per cohort
    return _CLIENT_DATA[key]


def communication_record(task, process, traffic: communication.Traffic,
                         rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run summary's `communication` entry: per-client and total bytes, bits per parameter."""
    trainable, total = communication.model_parameters(process)
    section = task["aggregation"]
    return {
        "aggregation": section["method"], "aggregation_params": section["params"],
        "trainable_parameters": trainable, "model_parameters": total,
        "bytes_down_per_client": traffic.down, "bytes_up_per_client": traffic.up,
        "bytes_down_by_intrinsic": traffic.down_by_intrinsic,
        "bytes_up_by_intrinsic": traffic.up_by_intrinsic,
        "bytes_down_total": sum(row.get("bytes_down", 0) for row in rows),
        "bytes_up_total": sum(row.get("bytes_up", 0) for row in rows),
        # nominal: what the uplink aggregator encodes a model-update value with; effective: every
        # uplink byte (update, weight, metrics, aggregator inputs) per trainable parameter.
        "uplink_bits_per_parameter": aggregation.nominal_bits(
            section["method"], section["params"], communication.trainable_sizes(process)
        ),
        "uplink_bits_per_parameter_effective": round(8 * traffic.up / trainable, 4),
        "counted": communication.COUNTED,
    }


def train_federated(context: RunContext) -> Training:
    """FedAvg (or DP-FedAvg, or another federated algorithm) for the plan's rounds, resuming
    from a checkpoint if present: yields each round's metrics row."""
    plan, task, data = context.plan, context.task, context.data
    privacy = plan.privacy
    client_ids = plan.client_ids
    # Keyed by content: seeds that yield the same split (e.g. `natural`) share one database.
    key = partition_store.partition_key(
        data.identity, {cid: users.tolist() for cid, users in plan.partition.clients.items()}
    )
    client_data = _client_data(plan.partition, data, context.cache_dir, key)
    runtime.configure()  # after every input check: bad input fails before TFF starts
    built = processes.get(task, data.num_items, privacy, context.seed)
    process, traffic = built.process, built.traffic
    runtime.check_splittable(process.next, task.source)  # --workers: refused before round 1
    read_aggregator = processes.aggregator_reader(privacy)
    # Rounds at a few fixed cardinalities: the TFF worker keeps an executor per cohort size.
    run_next = cardinality.padded_next(process, plan.sampler.sizes(plan.rounds),
                                       task["run"]["subcohort_size"], task.source)
    keras_model = plan.model.build()
    state = processes.initial_state(
        process, task, privacy, context.seed, tff.learning.models.ModelWeights.from_model(keras_model)
    )
    saved = _checkpoints(context, structure=state)
    state, start, rows = _resume(saved, state)
    for row in rows:
        yield Resumed(row)
    client = task["algorithm.client"]
    every = task["evaluation"]["every"]

    def score_fn(batch: np.ndarray) -> np.ndarray:
        return score_last_position(keras_model, batch, task["evaluation"]["batch_size"])

    def sync_model() -> None:
        process.get_model_weights(state).assign_weights_to(keras_model)

    # What exists now (TF, TFF, the built process: ~600,000 objects) is left out of the full
    # collection each checkpoint runs (`_checkpoint`), which would otherwise scan it every time.
    gc.freeze()
    try:
        for round_number in range(start + 1, plan.rounds + 1):
            runtime.exit_if_terminated()  # a SIGTERM during the last checkpoint's gc.collect() lands here
            began = time.perf_counter()
            cohort = plan.sampler.cohort(client_ids, round_number)
            row: dict[str, Any] = {"round": round_number, "clients": len(cohort)}
            if privacy is not None:
                row["epsilon"] = privacy.ledger[round_number - 1]
                clip = current_clip(read_aggregator(state.aggregator))  # the clip this round applies
                if clip is not None:
                    row["clip"] = clip
            if cohort:  # Poisson sampling can draw no one; the round's ε is still charged
                try:
                    result = run_next(state, processes.client_arguments(
                        client_data, cohort, client["batch_size"], client["local_epochs"]))
                except Exception:
                    runtime.check_worker(f"during round {round_number}")  # the cause, if it was that
                    raise
                state = result.state
                row["loss"] = float(result.metrics["client_work"]["train"]["loss"])
            row["bytes_down"], row["bytes_up"] = traffic.round_bytes(len(cohort))
            row["seconds"] = round(time.perf_counter() - began, 4)
            if round_number % every == 0 or round_number == plan.rounds:
                sync_model()
                row.update(context.validation_columns(score_fn, round_number, keras_model))
            rows.append(row)
            yield row
            if round_number % task["run"]["checkpoint_every"] == 0:
                _checkpoint(saved, state, round_number, rows)
    finally:
        gc.unfreeze()
    sync_model()
    return Outcome(
        score_fn=score_fn, model=keras_model,
        summary={"communication": communication_record(task, process, traffic, rows)},
    )


def _checkpoints(context: RunContext, structure) -> checkpoints.Checkpoints:
    """The run's checkpoints, each a `tff.program.FileProgramStateManager` version."""

    def write(state, folder, version: int) -> None:
        manager = tff.program.FileProgramStateManager(str(folder.parent), prefix=checkpoints.PREFIX)
        asyncio.run(manager.save(state, version))

    def read(folder, version: int):
        manager = tff.program.FileProgramStateManager(str(folder.parent), prefix=checkpoints.PREFIX)
        return asyncio.run(manager.load(version, structure))

    return checkpoints.Checkpoints(context.run_dir, write, read, context.selection)


def _checkpoint(saved: checkpoints.Checkpoints, state, round_number: int,
                rows: list[dict[str, Any]]) -> None:
    """Save the process state with the metrics rows so far."""
    saved.save(state, round_number, rows)
    # The SavedModel written by the save traces a function whose graph sits in reference cycles
    # until a full collection, which CPython runs rarely: ~15 MB per checkpoint stayed resident.
    gc.collect()


def _resume(saved: checkpoints.Checkpoints, state) -> tuple[Any, int, list[dict[str, Any]]]:
    """The latest usable checkpoint's state, round and rows; (state, 0, []) without one."""
    loaded, version, rows = saved.load()
    if loaded is None:
        return state, 0, []
    return loaded, version, list(rows)
