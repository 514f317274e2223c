"""Trainers by plan (`plan.RunPlan.trainer`): each takes a RunContext and is a loop that
yields the run's metrics rows (a resumed run's checkpointed rows first, as `Resumed`), then
returns its Outcome (`training.context`)."""
from __future__ import annotations

from typing import Callable

from tff_rec.training.context import RunContext, Training


def _federated(context: RunContext) -> Training:
    from tff_rec.training.federated import train_federated  # imports TFF: only when needed

    return (yield from train_federated(context))


def _centralized(context: RunContext) -> Training:
    from tff_rec.training.centralized import train_centralized

    return (yield from train_centralized(context))


def _popularity(context: RunContext) -> Training:
    from tff_rec.training.popularity import train_popularity

    return (yield from train_popularity(context))


# `plan.trainer_name` picks the entry: every federated algorithm (built in or a plugin's) trains
# with the federated trainer.
TRAINERS: dict[str, Callable[[RunContext], Training]] = {
    "federated": _federated, "centralized": _centralized, "popularity": _popularity,
}
