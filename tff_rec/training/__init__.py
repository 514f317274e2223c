"""Trainers by algorithm name: each takes a RunContext and returns an Outcome."""
from __future__ import annotations

from typing import Callable

from tff_rec.spec import FEDERATED_ALGORITHMS
from tff_rec.training.context import Outcome, RunContext


def _federated(context: RunContext) -> Outcome:
    from tff_rec.training.federated import train_federated  # imports TFF: only when needed

    return train_federated(context)


def _centralized(context: RunContext) -> Outcome:
    from tff_rec.training.centralized import train_centralized

    return train_centralized(context)


def _popularity(context: RunContext) -> Outcome:
    from tff_rec.training.popularity import train_popularity

    return train_popularity(context)


TRAINERS: dict[str, Callable[[RunContext], Outcome]] = {
    **{name: _federated for name in FEDERATED_ALGORITHMS},
    "centralized": _centralized,
    "popularity": _popularity,
}
