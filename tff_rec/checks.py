"""Checks of a task against its data: everything that can fail before training, checked first.

`tff_rec.spec` validates what a task file says on its own (types, ranges, combinations). Some
rules need the data: the number of items (evaluation negatives), the users left after filtering,
the clients a partition yields (cohort size, DP-FTRL's single pass, δ's default). `check_task`
applies them to the task's split before a run takes its lock or writes a folder, and raises
SpecError naming the task file, the key, the bad value and what is allowed. `check_study` does so
for every task of a study before its manifest is written.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from tff_rec import seeds
from tff_rec.algorithm_registry import get_algorithm
from tff_rec.data.types import LeaveOneOutSplit
from tff_rec.spec import SpecError, StudySpec, TaskSpec

if TYPE_CHECKING:
    from tff_rec.partition import Partition


def check_task(task: TaskSpec, seed: int, split: Optional[LeaveOneOutSplit] = None) -> None:
    """Raise SpecError if `task` cannot run on its data at `seed` (the split is prepared, or
    taken from the memo, when not given)."""
    from tff_rec.prepare import prepare_split

    split = prepare_split(task) if split is None else split
    check_split(task, split)
    if get_algorithm(task["algorithm"]["name"]) is not None:  # built in or a plugin's
        check_clients(task, build_partition(task, seed, split))


def check_split(task: TaskSpec, split: LeaveOneOutSplit) -> None:
    """The split has users to evaluate, and enough items for the evaluation's negatives."""
    source = task.source
    items = split.data.num_items
    if split.evaluation_users().size == 0:
        filters = task["data"]
        raise SpecError(
            f"{source}: keys 'data.min_user_interactions' ({filters['min_user_interactions']}) "
            f"and 'data.min_item_interactions' ({filters['min_item_interactions']}) leave no user "
            f"with the 3 interactions leave-one-out evaluation needs (train, validation, test "
            f"item) among {split.data.num_users} users; allowed: data and filters that keep such "
            f"users."
        )
    negatives = task["evaluation"]["num_negatives"]
    if negatives > items - 1:
        allowed = f"1 to {items - 1}" if items > 1 else "none (a catalogue of one item)"
        raise SpecError(
            f"{source}: key 'evaluation.num_negatives' is larger than the catalogue: the data has "
            f"{items} items after filtering, so a target has at most {items - 1} negatives. "
            f"Found {negatives}; allowed: {allowed}."
        )


def build_partition(task: TaskSpec, seed: int, split: LeaveOneOutSplit) -> "Partition":
    """The task's partition of its split at `seed`; SpecError naming the task file and key when
    the data cannot satisfy the scheme's parameters."""
    from tff_rec.partition import partition
    from tff_rec.rules import keyed

    section = task["partition"]
    try:
        return partition(split, section["scheme"], seed=seeds.derive(seed, "partition"),
                         **section["params"])
    except ValueError as error:
        raise SpecError(
            f"{task.source}: {keyed(str(error))} (partition.scheme = {section['scheme']!r})"
        ) from None


def check_clients(task: TaskSpec, partition: "Partition") -> None:
    """The cohort and the DP accounting fit the partition's clients."""
    from tff_rec.privacy import accounting

    source = task.source
    scheme = f"partition.scheme = {task['partition']['scheme']!r}"
    clients = partition.num_clients
    algorithm = task["algorithm"]
    cohort = algorithm["clients_per_round"]
    if cohort > clients:
        raise SpecError(
            f"{source}: key 'algorithm.clients_per_round' is larger than the number of clients "
            f"({clients} with {scheme}). Found {cohort}; allowed: 1 to {clients}."
        )
    privacy = task["privacy"]
    if privacy["mechanism"] == "none":
        return
    if privacy["delta"] is None and clients < 2:
        raise SpecError(
            f"{source}: key 'privacy.delta' is not set, and its default N^-1.1 needs N >= 2 "
            f"clients; {scheme} gives {clients}. Set privacy.delta in (0, 1) or use more clients."
        )
    from tff_rec.privacy import nominal  # privacy.noise_cohort_size / privacy.population

    try:
        nominal.resolve(privacy, algorithm, clients)
    except nominal.NominalError as error:
        raise SpecError(f"{source}: {error} ({scheme}.)") from None
    if privacy["mechanism"] == "tree":
        try:
            accounting.check_tree_participation(
                population=clients, clients_per_round=cohort, rounds=algorithm["rounds"],
                sampling=algorithm["sampling"],
            )
        except ValueError as error:
            raise SpecError(f"{source}: {error} ({scheme}.)") from None


def check_study(study: StudySpec) -> None:
    """`check_task` for every distinct task of a study, at its first seed (what the checks test
    does not depend on the seed: client counts, items and users are fixed by the task)."""
    checked = set()
    for task in study.tasks:
        if task.hash not in checked:
            check_task(task, study.seeds[0])
            checked.add(task.hash)
