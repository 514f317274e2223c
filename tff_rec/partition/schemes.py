"""Partitioning schemes: which training users form which client.

A partition assigns whole users to clients (a user's interactions are never split), so user-level
and client-level privacy units stay well defined. Each scheme is one seeded partitioner registered
in ``SCHEMES`` with its parameters, their defaults and checks; ``partition`` validates, dispatches
and wraps the result in a ``Partition``.
"""
from __future__ import annotations

import dataclasses
import heapq
import numbers
from typing import Any, Callable, Literal, Mapping, Optional

import numpy as np

from tff_rec.params import AT_LEAST_ONE, NONNEGATIVE, POSITIVE, Param
from tff_rec.data.types import LeaveOneOutSplit
from tff_rec.partition import users as user_view
from tff_rec.registry import Registry

PrivacyUnit = Literal["user", "silo"]


@dataclasses.dataclass(frozen=True, eq=False)
class Partition:
    """Clients of a split: client id → sorted int64 indices into ``split.data.users``.

    Only users with a non-empty training prefix appear, each in exactly one client; a client's data
    is its users' training prefixes. ``params`` are the resolved scheme parameters (defaults filled).
    Not comparable with ``==`` (it holds arrays).
    """

    scheme: str
    clients: dict[str, np.ndarray]
    privacy_unit: PrivacyUnit
    params: dict[str, Any]

    @property
    def num_clients(self) -> int:
        return len(self.clients)

    def users(self) -> np.ndarray:
        """Sorted indices of all users in the partition."""
        return np.sort(np.concatenate([np.empty(0, np.int64), *self.clients.values()]))


def _label(name: str) -> str:
    return f"partition.{name}"


# --- partitioners -------------------------------------------------------------------------------
# Each takes the split, its training users (sorted), a seeded generator and the resolved params,
# and returns the clients' user groups (data-dependent checks live here, next to the data).


def _check_num_clients(num_clients: int, num_users: int) -> None:
    if num_clients > num_users:
        raise ValueError(
            f"{_label('num_clients')} ({num_clients}) is larger than the number of training users ({num_users})."
        )


def _natural(split: LeaveOneOutSplit, users: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One client per user, named by the user's original id."""
    return {split.data.users[u]: np.array([u], dtype=np.int64) for u in users}


def _iid(split: LeaveOneOutSplit, users: np.ndarray, rng: np.random.Generator, *, num_clients: int) -> list[np.ndarray]:
    """Users shuffled and cut into ``num_clients`` groups whose sizes differ by at most one."""
    _check_num_clients(num_clients, len(users))
    return np.array_split(rng.permutation(users), num_clients)


def _fill_empty(groups: list[list[int]]) -> list[list[int]]:
    """Give every empty group the last user of the currently largest group (lowest index on ties)."""
    for k in range(len(groups)):
        if not groups[k]:
            donor = max(range(len(groups)), key=lambda j: (len(groups[j]), -j))
            groups[k].append(groups[donor].pop())
    return groups


def _dirichlet(
    split: LeaveOneOutSplit, users: np.ndarray, rng: np.random.Generator, *, num_clients: int, alpha: float
) -> list[np.ndarray]:
    """Label skew by dominant category: per category c, p_c ~ Dir(alpha·1_K) splits c's users over clients.

    Small alpha concentrates each category on few clients, so clients' category mixes diverge;
    large alpha approaches IID. Empty clients then take one user from the largest client.
    """
    _check_num_clients(num_clients, len(users))
    dominant = user_view.dominant_categories(split)[users]
    groups: list[list[int]] = [[] for _ in range(num_clients)]
    for category in np.unique(dominant):
        members = rng.permutation(users[dominant == category])
        shares = rng.dirichlet(np.full(num_clients, float(alpha)))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for group, part in zip(groups, np.split(members, cuts)):
            group.extend(part.tolist())
    return [np.array(g, dtype=np.int64) for g in _fill_empty(groups)]


def _power_weights(rng: np.random.Generator, size: int, skew: float) -> np.ndarray:
    """Pareto draws U^(-skew), U ~ Uniform(0, 1]: tail index 1/skew; skew 0 gives equal weights."""
    return (1.0 - rng.random(size)) ** (-skew)


def _lognormal_weights(rng: np.random.Generator, size: int, skew: float) -> np.ndarray:
    """exp(skew·Z), Z ~ N(0, 1): log-normal with sigma = skew; skew 0 gives equal weights."""
    return np.exp(skew * rng.standard_normal(size))


SIZE_LAWS: dict[str, Callable[[np.random.Generator, int, float], np.ndarray]] = {
    "power": _power_weights,
    "lognormal": _lognormal_weights,
}


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer sizes ≥ 1 summing to ``total``, proportional to weights beyond the first user each.

    Largest-remainder rounding; ties go to the lower index.
    """
    spare = total - len(weights)
    quotas = spare * weights / weights.sum()
    sizes = np.floor(quotas).astype(np.int64)
    leftover = spare - int(sizes.sum())
    order = np.argsort(-(quotas - sizes), kind="stable")
    sizes[order[:leftover]] += 1
    return sizes + 1


def _quantity(
    split: LeaveOneOutSplit, users: np.ndarray, rng: np.random.Generator, *, num_clients: int, law: str, skew: float
) -> list[np.ndarray]:
    """Quantity skew: client sizes drawn from ``law`` with ``skew``, users shuffled into them."""
    _check_num_clients(num_clients, len(users))
    sizes = _apportion(len(users), SIZE_LAWS[law](rng, num_clients, float(skew)))
    return np.split(rng.permutation(users), np.cumsum(sizes)[:-1])


def _merge_smallest(groups: list[tuple[str, np.ndarray]], target: int) -> list[np.ndarray]:
    """Merge the two smallest groups (fewest users, then smallest value) until ``target`` remain.

    Returns the groups ordered by their smallest attribute value.
    """
    heap = [(len(members), value, members) for value, members in groups]
    heapq.heapify(heap)
    while len(heap) > target:
        size_a, value_a, members_a = heapq.heappop(heap)
        size_b, value_b, members_b = heapq.heappop(heap)
        heapq.heappush(heap, (size_a + size_b, min(value_a, value_b), np.concatenate([members_a, members_b])))
    return [members for _, _, members in sorted(heap, key=lambda entry: entry[1])]


def _attribute(
    split: LeaveOneOutSplit,
    users: np.ndarray,
    rng: np.random.Generator,
    *,
    attribute: Optional[str],
    num_clients: Optional[int],
) -> list[np.ndarray]:
    """One client per value of a user attribute (sorted by value), smallest merged down to num_clients."""
    available = user_view.available_attributes(split.data)
    if attribute not in available:
        choices = ", ".join(available) or "none"
        shown = "is required" if attribute is None else f"{attribute!r} is not a user attribute of this dataset"
        raise ValueError(f"{_label('attribute')} {shown}; available: {choices}.")
    values = user_view.attribute_values(split.data, attribute)[users]
    groups = [(value, users[values == value]) for value in np.unique(values)]
    if num_clients is None:
        return [members for _, members in groups]
    if num_clients > len(groups):
        raise ValueError(
            f"{_label('num_clients')} ({num_clients}) is larger than the number of {attribute!r} values ({len(groups)})."
        )
    return _merge_smallest(groups, num_clients)


def _pathological(
    split: LeaveOneOutSplit, users: np.ndarray, rng: np.random.Generator, *, num_clients: int, classes_per_client: int
) -> list[np.ndarray]:
    """Shard split: users sorted by dominant category, cut into K·c shards, c random shards per client.

    A client then holds users of at most c categories, plus one more wherever a shard straddles a
    category boundary (as in McMahan et al.'s pathological non-IID split).
    """
    categories = user_view.num_categories(split.data)
    if classes_per_client > categories:
        raise ValueError(
            f"{_label('classes_per_client')} ({classes_per_client}) is larger than the number of item categories "
            f"({categories})."
        )
    num_shards = num_clients * classes_per_client
    if num_shards > len(users):
        raise ValueError(
            f"{_label('num_clients')} × {_label('classes_per_client')} ({num_shards}) is larger than the number "
            f"of training users ({len(users)})."
        )
    shuffled = rng.permutation(users)
    dominant = user_view.dominant_categories(split)[shuffled]
    shards = np.array_split(shuffled[np.argsort(dominant, kind="stable")], num_shards)
    order = rng.permutation(num_shards).reshape(num_clients, classes_per_client)
    return [np.concatenate([shards[s] for s in row]) for row in order]


# --- registry -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scheme:
    """A registered partitioning scheme.

    params: the keys it adds to [partition] (`tff_rec.params.Param`), checked at task load; what
      depends on the data (K at most the number of users, ...) the partitioner checks.
    partitioner(split, users, rng, **params) returns either numbered groups (named client-0000,
      …) or named clients.
    """

    name: str
    privacy_unit: PrivacyUnit
    params: tuple[Param, ...]
    description: str
    partitioner: Callable[..., Any]
    needs_categories: bool = False


NUM_CLIENTS = Param("num_clients", int, 10, "number of clients K", AT_LEAST_ONE)

SCHEMES: Registry[Scheme] = Registry("partition scheme", "partition.scheme", group="tff_rec.partitioners", entries=(
    Scheme("natural", "user", (), "One client per user (cross-device, user-level privacy).", _natural),
    Scheme("iid", "silo", (NUM_CLIENTS,), "Users shuffled into K equal-size clients.", _iid),
    Scheme(
        "dirichlet",
        "silo",
        (NUM_CLIENTS, Param("alpha", float, 0.5, "Dirichlet concentration: smaller is more skewed", POSITIVE)),
        "Category label skew: each category's users split over K clients by Dirichlet(alpha) shares.",
        _dirichlet,
        needs_categories=True,
    ),
    Scheme(
        "quantity",
        "silo",
        (
            NUM_CLIENTS,
            Param("law", str, "power", "client-size law", choices=tuple(SIZE_LAWS)),
            Param("skew", float, 1.0, "size skew (0 = equal sizes)", NONNEGATIVE),
        ),
        "Quantity skew: K client sizes drawn from a power or log-normal law (skew 0 = equal).",
        _quantity,
    ),
    Scheme(
        "attribute",
        "silo",
        (Param("attribute", str, None, "the user attribute whose values are the clients (required)", optional=True),
         Param("num_clients", int, None, "merge the smallest values down to this many clients (unset: one client per value)",
               AT_LEAST_ONE, optional=True)),
        "One client per value of a user attribute; smallest values merged down to num_clients if set.",
        _attribute,
    ),
    Scheme(
        "pathological",
        "silo",
        (NUM_CLIENTS, Param("classes_per_client", int, 2, "categories per client", AT_LEAST_ONE)),
        "Shard split by dominant category: each client holds users of about classes_per_client categories.",
        _pathological,
        needs_categories=True,
    ),
))


def scheme_params(name: str) -> dict[str, Any]:
    """The parameters scheme ``name`` accepts, with their defaults."""
    return SCHEMES.defaults(name)


def resolve_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``params`` for scheme ``name`` without data and fill defaults; ValueError on bad input."""
    return SCHEMES.validate(name, params)


def _client_ids(count: int) -> list[str]:
    width = max(4, len(str(count - 1)))
    return [f"client-{k:0{width}d}" for k in range(count)]


def partition(split: LeaveOneOutSplit, scheme: str, seed: int, **params: Any) -> Partition:
    """Partition the split's training users into clients with ``scheme``; same seed → same partition.

    Raises ValueError naming the task key (``partition.<param>``) for bad parameters or parameters the
    dataset cannot satisfy.
    """
    chosen = SCHEMES.entry(scheme)
    resolve_params(scheme, params)  # as written (TOML `alpha = 1` stays 1 in records), defaults filled
    resolved = {**scheme_params(scheme), **params}
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"partition seed must be a non-negative integer. Found {seed!r}.")
    if chosen.needs_categories and not user_view.has_categories(split.data):
        raise ValueError(f"{_label('scheme')} {scheme!r} needs item categories, but this dataset has none.")
    users = user_view.training_users(split)
    if users.size == 0:
        raise ValueError("partition needs at least one user with a non-empty training prefix; found none.")
    result = chosen.partitioner(split, users, np.random.default_rng(seed), **resolved)
    named = result if isinstance(result, dict) else dict(zip(_client_ids(len(result)), result))
    clients = {cid: np.sort(np.asarray(named[cid], dtype=np.int64)) for cid in sorted(named)}
    return Partition(scheme=scheme, clients=clients, privacy_unit=chosen.privacy_unit, params=resolved)
