"""The run plan: everything a run of (task, seed) decides before it trains, resolved once.

`resolve(task, seed)` turns a task and a task seed into a frozen `RunPlan`: the prepared data
(a handle, prepared on first use and memoized per process), the partition into clients, the
client sampler, the privacy plan (mechanism + accountant + sampler, `privacy.planning`), the
model to build, the learning process to build, the evaluation protocol and the derived seeds.
Every data-dependent check runs while resolving (`checks`), so a plan that exists can run.

`tasks describe`, `data partition`, `study --dry-run` and the trainers all read the plan; a
trainer is a loop that yields the plan's rows (`training`). A plan is picklable (its data handle
pickles as (task, seed) and prepares again where it lands), so it can be shipped to another
process or machine. ARCHITECTURE.md, "The run plan".
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from tff_rec import seeds
from tff_rec.algorithm_registry import get_algorithm
from tff_rec.privacy.planning import PrivacyPlan, plan_privacy
from tff_rec.sampling import CohortSampler
from tff_rec.spec import TaskSpec

if TYPE_CHECKING:
    from tff_rec.partition import Partition
    from tff_rec.prepare import PreparedData


@dataclasses.dataclass(frozen=True)
class DataHandle:
    """The task's prepared data (`prepare.prepare`), prepared when first asked for and memoized
    per process; pickles as (task, seed) alone."""

    task: TaskSpec
    seed: int

    def get(self) -> "PreparedData":
        from tff_rec.prepare import prepare

        return prepare(self.task, self.seed)


@dataclasses.dataclass(frozen=True)
class ModelPlan:
    """The Keras model a run trains: registry name, catalogue size, resolved hyperparameters and
    the seed of its initial weights (the same for every algorithm of one task seed)."""

    name: str
    num_items: int
    params: dict[str, Any]
    init_seed: int

    def build(self) -> Any:
        """The model at its seeded initial weights (imports TensorFlow)."""
        from tff_rec import models

        return models.build_model(self.name, self.num_items, seed=self.init_seed, **self.params)


@dataclasses.dataclass(frozen=True, eq=False)
class EvaluationPlan:
    """Which users validation ranks (a seeded sample with `evaluation.validation_users`, else
    every user with held-out items) and the seed of every evaluation's negatives
    (`protocol.evaluator`)."""

    validation_users: np.ndarray
    task_seed: int  # the evaluation stage's seeds derive from it (`protocol.evaluator`)

    def evaluator(self, task: TaskSpec, data: "PreparedData"):
        """evaluate(score_fn, stage, round[, with_ranks]) of the run (`protocol.evaluator`)."""
        from tff_rec import protocol

        return protocol.evaluator(task, self.task_seed, data, self.validation_users)


@dataclasses.dataclass(frozen=True, eq=False)
class RunPlan:
    """One run, resolved: read by the trainers, `tasks describe`, `data partition` and
    `study --dry-run` (module docstring)."""

    task: TaskSpec
    seed: int
    data: DataHandle
    trainer: str  # "federated" | "centralized" | "popularity" (`training.TRAINERS`)
    rounds: int  # rounds (federated), epochs (centralized), 0 (popularity)
    num_items: int
    model: Optional[ModelPlan]  # None: no Keras model (popularity)
    partition: Optional["Partition"]  # the clients (federated algorithms only)
    sampler: Optional[CohortSampler]  # the cohorts (federated algorithms only)
    privacy: Optional[PrivacyPlan]  # None: no DP
    evaluation: EvaluationPlan

    @property
    def label(self) -> str:
        return f"{self.task.name} seed {self.seed}"

    @property
    def client_ids(self) -> list[str]:
        """The partition's clients in the sampler's order."""
        return sorted(self.partition.clients) if self.partition is not None else []

    def client_updates(self) -> int:
        """Client updates the run trains: rounds × cohort, drawn as the sampler draws them."""
        return sum(self.sampler.sizes(self.rounds)) if self.sampler is not None else 0

    def partition_record(self) -> Optional[dict[str, Any]]:
        """The summary's `heterogeneity` entry: scheme, privacy unit, parameters, statistics."""
        if self.partition is None:
            return None
        from tff_rec.partition import heterogeneity

        split = self.partition
        return {"scheme": split.scheme, "privacy_unit": split.privacy_unit, "params": split.params,
                **heterogeneity(self.data.get().split, split)}

    def privacy_record(self) -> Optional[dict[str, Any]]:
        """privacy.json: the privacy plan's record with the partition's privacy unit."""
        if self.privacy is None:
            return None
        return {**self.privacy.to_record(), "privacy_unit": self.partition.privacy_unit}


def model_plan(task: TaskSpec, seed: int, num_items: int) -> ModelPlan:
    """The task's `[model]` at task seed `seed` for a catalogue of `num_items` items."""
    section = task["model"]
    return ModelPlan(section["name"], num_items, dict(section["params"]),
                     seeds.derive(seed, "init") + section["seed_offset"])


def trainer_name(task: TaskSpec) -> str:
    """Which trainer runs the task: its algorithm's own (centralized, popularity), or the
    federated trainer for every federated algorithm (built in or a plugin's)."""
    name = task["algorithm"]["name"]
    if name in ("centralized", "popularity"):
        return name
    if get_algorithm(name) is None:
        raise KeyError(name)
    return "federated"


def planned_rounds(task: TaskSpec) -> int:
    """Rounds of a federated run, epochs of a centralized one, 0 for popularity."""
    name = trainer_name(task)
    if name == "centralized":
        return task["algorithm.centralized"]["epochs"]
    return 0 if name == "popularity" else task["algorithm"]["rounds"]


def resolve(task: TaskSpec, seed: int, partition: bool = False) -> RunPlan:
    """The plan of `task` at task seed `seed`, after every check the data allows (SpecError
    naming the task file and key otherwise). The partition is built for federated runs, and for
    others with `partition=True` (what `tasks describe` shows)."""
    from tff_rec import checks, protocol

    data = DataHandle(task, seed)
    prepared = data.get()  # bad data fails here, naming the task file and key
    trainer = trainer_name(task)
    federated = trainer == "federated"
    checks.check_split(task, prepared.split)
    clients = checks.build_partition(task, seed, prepared.split) if federated or partition else None
    sampler = privacy = None
    if federated:
        checks.check_clients(task, clients)
        algorithm = task["algorithm"]
        sampler = CohortSampler(algorithm["sampling"], clients.num_clients,
                                algorithm["clients_per_round"], seed)
        privacy = plan_privacy(task, clients.num_clients, seed)
    model = None if trainer == "popularity" else model_plan(task, seed, prepared.num_items)
    return RunPlan(
        task=task, seed=seed, data=data, trainer=trainer, rounds=planned_rounds(task),
        num_items=prepared.num_items, model=model, partition=clients, sampler=sampler,
        privacy=privacy,
        evaluation=EvaluationPlan(protocol.validation_users(task, seed, prepared), seed),
    )
