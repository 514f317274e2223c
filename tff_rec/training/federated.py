"""Federated training: TFF learning process, seeded client sampling, checkpoints, ε ledger.

Each round samples a cohort (fixed-size without replacement, Poisson, or consecutive blocks of a
shuffled pass for DP-FTRL), runs one `next` of the learning process, and records the training
loss and — for DP runs — ε after that round from the analysis that matches the sampler. Every `run.checkpoint_every` rounds the
learning-process state is saved with `tff.program.FileProgramStateManager` (`checkpoints`); a
re-run resumes from the last usable one and replays nothing. A TFF worker that dies under a round
fails the run (`runtime.WorkerDied`, naming the round).
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from typing import Any, Callable, Optional

import numpy as np
import tensorflow_federated as tff

from tff_rec import aggregation, communication, faults, runtime, seeds
from tff_rec.evaluation import score_last_position
from tff_rec.partition import heterogeneity, partition
from tff_rec.partition import store as partition_store
from tff_rec.privacy import accounting, mechanisms
from tff_rec.privacy import nominal as nominal_cohort
from tff_rec.spec import SpecError
from tff_rec.training import cardinality, checkpoints, processes
from tff_rec.training.context import Outcome, RunContext, initial_model


@dataclasses.dataclass(frozen=True)
class PrivacyPlan:
    """The DP setting a run trains with, and the ε each round costs."""

    mechanism: str
    params: dict[str, Any]
    target_epsilon: Optional[float]  # when set, params["noise_multiplier"] was calibrated to it
    delta: Optional[float]
    accountant: str
    sampling: str
    population: int
    clients_per_round: int
    ledger: tuple[Optional[float], ...]
    reason: Optional[str]  # why ε is not reported, when it is not
    # Noise and ε calibrated for a nominal cohort (privacy/nominal.py): then `population` is the
    # accounted one, `clients_per_round` the trained cohort, and ε is for the nominal setting.
    nominal: Optional[nominal_cohort.NominalCohort] = None

    @property
    def noise_cohort_size(self) -> Optional[int]:
        """C_nom when the noise is calibrated for a nominal cohort, else None."""
        return None if self.nominal is None else self.nominal.noise_cohort_size

    def to_record(self) -> dict[str, Any]:
        simulated = {} if self.nominal is None else {
            "simulated": self.nominal.to_record(self.params.get("noise_multiplier"))}
        return {
            "mechanism": self.mechanism, "params": self.params,
            "target_epsilon": self.target_epsilon, "delta": self.delta,
            "accountant": self.accountant, "sampling": self.sampling,
            "privacy_unit_population": self.population,
            "clients_per_round": self.clients_per_round,
            "epsilon": self.ledger[-1] if self.ledger else None,
            "epsilon_by_round": list(self.ledger), "reason": self.reason, **simulated,
        }


def plan_privacy(context: RunContext, population: int) -> Optional[PrivacyPlan]:
    """Resolve noise (calibrating to a target ε if asked), δ and the per-round ε ledger.

    ε comes from the analysis that matches the mechanism and the runner's sampler; where none
    does, the ledger holds None and `reason` says why (no number is made up).

    With `privacy.noise_cohort_size` / `privacy.population` (`privacy/nominal.py`), the noise is
    calibrated and ε accounted for the nominal cohort out of the nominal population; δ's default
    comes from the nominal population. `population` is the partition's number of clients.
    """
    task = context.task
    section, algorithm = task["privacy"], task["algorithm"]
    if section["mechanism"] == "none":
        return None
    try:
        nominal = nominal_cohort.resolve(section, algorithm, population)
    except nominal_cohort.NominalError as error:
        raise SpecError(f"{task.source}: {error}") from None
    accounted_population = population if nominal is None else nominal.population
    accounted_cohort = algorithm["clients_per_round"] if nominal is None else nominal.noise_cohort_size
    mechanism = mechanisms.get_mechanism(section["mechanism"])
    params = mechanisms.validate_params(section["mechanism"], section["params"])
    delta = section["delta"] or accounting.default_delta(accounted_population)
    common = dict(
        population=accounted_population, clients_per_round=accounted_cohort,
        delta=delta, sampling=algorithm["sampling"], accountant=section["accountant"],
    )
    if section["target_epsilon"] is not None:
        params["noise_multiplier"], _ = accounting.analysis_of(mechanism).calibrate(
            target_epsilon=section["target_epsilon"], rounds=algorithm["rounds"], **common
        )
    ledger, reason = accounting.mechanism_ledger(mechanism, params, algorithm["rounds"], common)
    return PrivacyPlan(
        mechanism=section["mechanism"], params=params, target_epsilon=section["target_epsilon"],
        delta=delta,
        accountant=section["accountant"], sampling=algorithm["sampling"],
        population=accounted_population, clients_per_round=algorithm["clients_per_round"],
        ledger=tuple(ledger), reason=reason, nominal=nominal,
    )


def _fixed(n: int, task_seed: int, round_number: int, size: int) -> np.ndarray:
    """`size` distinct clients drawn uniformly without replacement, afresh every round."""
    rng = seeds.round_rng(task_seed, "sampling", round_number)
    return np.sort(rng.choice(n, size=size, replace=False))


def _poisson(n: int, task_seed: int, round_number: int, size: int) -> np.ndarray:
    """Each client independently with probability size / n (the cohort size varies)."""
    rng = seeds.round_rng(task_seed, "sampling", round_number)
    return np.flatnonzero(rng.random(n) < size / n)


def _shuffle(n: int, task_seed: int, round_number: int, size: int) -> np.ndarray:
    """Consecutive blocks of one random permutation per pass: each client once per pass."""
    blocks_per_pass = n // size
    epoch, block = divmod(round_number - 1, blocks_per_pass)
    order = seeds.round_rng(task_seed, "sampling", epoch).permutation(n)
    return np.sort(order[block * size:(block + 1) * size])


SAMPLERS: dict[str, Callable[[int, int, int, int], np.ndarray]] = {
    "fixed": _fixed, "poisson": _poisson, "shuffle": _shuffle,
}


def sample_cohort(client_ids: list[str], task_seed: int, round_number: int, size: int,
                  sampling: str) -> list[str]:
    """The round's cohort under the task's sampling scheme, seeded by (task seed, round)."""
    chosen = SAMPLERS[sampling](len(client_ids), task_seed, round_number, size)
    return [client_ids[i] for i in chosen]


def cohort_sizes(population: int, task_seed: int, rounds: int, size: int, sampling: str) -> list[int]:
    """The cohort size of every round of a run, round 1 first (the samplers are seeded)."""
    return [len(SAMPLERS[sampling](population, task_seed, r, size)) for r in range(1, rounds + 1)]


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


def train_federated(context: RunContext) -> Outcome:
    """Run FedAvg (or DP-FedAvg) for the task's rounds, resuming from a checkpoint if present."""
    task, data = context.task, context.data
    algorithm = task["algorithm"]
    client_split = partition(
        data.split, task["partition"]["scheme"], seed=seeds.derive(context.seed, "partition"),
        **task["partition"]["params"],
    )
    client_ids = sorted(client_split.clients)
    if algorithm["clients_per_round"] > len(client_ids):
        raise ValueError(
            f"{task.source}: key 'algorithm.clients_per_round' ({algorithm['clients_per_round']}) "
            f"is larger than the number of clients ({len(client_ids)})"
        )
    plan = plan_privacy(context, population=len(client_ids))
    # Keyed by content: seeds that yield the same split (e.g. `natural`) share one database.
    key = partition_store.partition_key(
        data.identity, {cid: users.tolist() for cid, users in client_split.clients.items()}
    )
    client_data = _client_data(client_split, data, context.cache_dir, key)
    runtime.configure()  # after every input check: bad input fails before TFF starts
    built = processes.get(task, data.num_items, plan, context.seed)
    process, traffic = built.process, built.traffic
    runtime.check_splittable(process.next, task.source)  # --workers: refused before round 1
    read_aggregator = processes.aggregator_reader(plan)
    # Rounds at a few fixed cardinalities: the TFF worker keeps an executor per cohort size.
    run_next = cardinality.padded_next(process, cohort_sizes(
        len(client_ids), context.seed, algorithm["rounds"], algorithm["clients_per_round"],
        algorithm["sampling"]), task["run"]["subcohort_size"])
    keras_model = initial_model(context)
    state = processes.initial_state(
        process, task, plan, context.seed, tff.learning.models.ModelWeights.from_model(keras_model)
    )
    saved = _checkpoints(context, structure=state)
    state, start = _resume(saved, state, context)
    client = task["algorithm.client"]
    every = task["evaluation"]["every"]

    def score_fn(batch: np.ndarray) -> np.ndarray:
        return score_last_position(keras_model, batch, task["evaluation"]["batch_size"])

    def sync_model() -> None:
        process.get_model_weights(state).assign_weights_to(keras_model)

    for round_number in range(start + 1, algorithm["rounds"] + 1):
        runtime.exit_if_terminated()  # a SIGTERM during the last checkpoint's gc.collect() lands here
        began = time.perf_counter()
        cohort = sample_cohort(
            client_ids, context.seed, round_number, algorithm["clients_per_round"],
            algorithm["sampling"],
        )
        row: dict[str, Any] = {"round": round_number, "clients": len(cohort)}
        if plan is not None:
            row["epsilon"] = plan.ledger[round_number - 1]
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
        if round_number % every == 0 or round_number == algorithm["rounds"]:
            sync_model()
            row.update(context.validation_columns(score_fn, round_number, keras_model))
        context.report(row)
        if round_number % task["run"]["checkpoint_every"] == 0:
            _checkpoint(saved, state, round_number, context)
    sync_model()
    return Outcome(
        score_fn=score_fn, model=keras_model,
        summary={"communication": communication_record(
            task, process, traffic, context.completed_rows)},
        privacy={**plan.to_record(), "privacy_unit": client_split.privacy_unit} if plan else None,
        partition={
            "scheme": client_split.scheme, "privacy_unit": client_split.privacy_unit,
            "params": client_split.params, **heterogeneity(data.split, client_split),
        },
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


def _checkpoint(saved: checkpoints.Checkpoints, state, round_number: int, context: RunContext) -> None:
    """Save the process state with the metrics rows so far."""
    saved.save(state, round_number, context.completed_rows)
    # The SavedModel written by the save traces a function whose graph sits in reference cycles
    # until a full collection, which CPython runs rarely: ~15 MB per checkpoint stayed resident.
    gc.collect()


def _resume(saved: checkpoints.Checkpoints, state, context: RunContext):
    """Load the latest usable checkpoint, if any, with the rows recorded up to it."""
    loaded, version, rows = saved.load()
    if loaded is None:
        return state, 0
    for row in rows:
        context.report(row, resumed=True)
    return loaded, version
