"""Client sampling: which clients train in each round, drawn from (task seed, round).

Three schemes (`algorithm.sampling`): `fixed` — a cohort of the given size drawn uniformly
without replacement, afresh every round; `poisson` — each client independently with probability
size / population (the cohort size varies); `shuffle` — consecutive blocks of one random
permutation per pass, so each client trains once per pass (DP-FTRL's single-pass setting). The
privacy accountant's sampling assumption is the same name (`privacy.planning`), so ε always
matches the cohorts a run really drew. Numpy only: plans, the audit and `--dry-run` use it
without TensorFlow; importing it imports no numpy (the task schema and the CLI read the names).
`SAMPLERS` is the one place the names live: the task key `algorithm.sampling`, the privacy
commands' `--sampling` and the audit read it.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

from tff_rec.registry import Registry

if TYPE_CHECKING:
    import numpy as np


def _fixed(n: int, task_seed: int, round_number: int, size: int) -> "np.ndarray":
    """`size` distinct clients drawn uniformly without replacement, afresh every round."""
    import numpy as np

    from tff_rec import seeds

    rng = seeds.round_rng(task_seed, "sampling", round_number)
    return np.sort(rng.choice(n, size=size, replace=False))


def _poisson(n: int, task_seed: int, round_number: int, size: int) -> "np.ndarray":
    """Each client independently with probability size / n (the cohort size varies)."""
    import numpy as np

    from tff_rec import seeds

    rng = seeds.round_rng(task_seed, "sampling", round_number)
    return np.flatnonzero(rng.random(n) < size / n)


def _shuffle(n: int, task_seed: int, round_number: int, size: int) -> "np.ndarray":
    """Consecutive blocks of one random permutation per pass: each client once per pass."""
    import numpy as np

    from tff_rec import seeds

    blocks_per_pass = n // size
    epoch, block = divmod(round_number - 1, blocks_per_pass)
    order = seeds.round_rng(task_seed, "sampling", epoch).permutation(n)
    return np.sort(order[block * size:(block + 1) * size])


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A sampling scheme: `draw(population, task seed, round, cohort size)` → the round's sorted
    client indices; `description` for the task reference and `--help`. Its size is the task's
    algorithm.clients_per_round: it adds no keys of its own (`params`)."""

    name: str
    draw: Callable[[int, int, int, int], "np.ndarray"]
    description: str
    params: tuple = ()


SAMPLERS: Registry[Sampler] = Registry("client sampler", "algorithm.sampling", entries=(
    Sampler("fixed", _fixed, "C clients drawn uniformly without replacement, afresh every round"),
    Sampler("poisson", _poisson, "each client independently with probability C/N (the cohort "
                                 "size varies; C is its expectation)"),
    Sampler("shuffle", _shuffle, "consecutive blocks of C of one permutation per pass: each "
                                 "client once per pass (DP-FTRL's single pass)"),
))


@dataclasses.dataclass(frozen=True)
class CohortSampler:
    """A run's client sampling: `scheme` over `population` clients, `size` a round (the
    expected size under Poisson sampling), seeded by the task seed."""

    scheme: str
    population: int
    size: int
    task_seed: int

    def __post_init__(self) -> None:
        if self.scheme not in SAMPLERS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLERS)}. Found {self.scheme!r}.")

    def indices(self, round_number: int) -> "np.ndarray":
        """Sorted indices (into the population) of round `round_number`'s cohort (1-based)."""
        return SAMPLERS[self.scheme].draw(self.population, self.task_seed, round_number, self.size)

    def cohort(self, client_ids: list[str], round_number: int) -> list[str]:
        """The ids of round `round_number`'s cohort, `client_ids` being the population in order."""
        return [client_ids[i] for i in self.indices(round_number)]

    def sizes(self, rounds: int) -> list[int]:
        """The cohort size of every round of a run, round 1 first."""
        return [len(self.indices(r)) for r in range(1, rounds + 1)]


def sample_cohort(client_ids: list[str], task_seed: int, round_number: int, size: int,
                  sampling: str) -> list[str]:
    """The round's cohort under the task's sampling scheme, seeded by (task seed, round)."""
    return CohortSampler(sampling, len(client_ids), size, task_seed).cohort(client_ids, round_number)
