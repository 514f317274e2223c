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


class _Trainers(dict):
    """Name → trainer; a federated algorithm registered by a plugin (`tff_rec.plugins`) trains
    with the federated trainer too."""

    def __missing__(self, name: str) -> Callable[[RunContext], Outcome]:
        from tff_rec.algorithm_registry import get_algorithm

        if isinstance(name, str) and get_algorithm(name) is not None:
            return _federated
        raise KeyError(name)


TRAINERS: dict[str, Callable[[RunContext], Outcome]] = _Trainers({
    **{name: _federated for name in FEDERATED_ALGORITHMS},
    "centralized": _centralized,
    "popularity": _popularity,
})
