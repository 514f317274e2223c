"""A synthetic interaction log with learnable sequential structure, for quick offline studies.

The generative story, all drawn from ``np.random.default_rng(seed)``:

- Items are spread evenly over ``categories``; within a category, item popularity follows a
  mild Zipf law (weight ``1 / rank**POPULARITY_EXPONENT``), so popularity is informative but
  far from decisive.
- Users are spread evenly over ``groups``; each group has its own taste over categories,
  drawn from a sparse Dirichlet (``TASTE_CONCENTRATION``), so groups differ in category mix.
- Every item has ``SUCCESSORS`` likely successors (``SAME_CATEGORY_SUCCESSORS`` of them in its
  own category), with random transition probabilities.
- A user's sequence starts with a "jump" (category from the group taste, item by popularity).
  Each next item follows a transition of the current item with probability ``FOLLOW``, and
  otherwise is another jump. Users never repeat an item (like rating logs); a transition whose
  successors were all seen becomes a jump.
- Lengths are ``3 + NegativeBinomial`` with mean ``mean_length`` (capped at ``items``), so
  every user has at least 3 interactions and lengths vary widely. Timestamps increase per user.

A first-order Markov predictor therefore beats item popularity by a wide margin (see
``tests/test_synthetic.py``), and the group taste rewards models that read the whole history.
"""
from __future__ import annotations

from typing import Optional

import numba
import numpy as np
import pandas as pd

from tff_rec.data.errors import DataError
from tff_rec.params import NONNEGATIVE, Param, Range
from tff_rec.data.types import Interactions, events_frame

DEFAULT_SIZES = {"users": 1000, "items": 300, "mean_length": 30, "categories": 10, "groups": 4}
SUCCESSORS = 3  # likely next items per item
SAME_CATEGORY_SUCCESSORS = 2
FOLLOW = 0.7  # chance that the next item follows a transition rather than the group taste
POPULARITY_EXPONENT = 0.8  # Zipf exponent within a category; higher favours popularity
TASTE_CONCENTRATION = 0.7  # Dirichlet parameter; lower makes group tastes more distinct
LENGTH_DISPERSION = 2  # negative-binomial n: smaller means more varied lengths
START_TIME = 1_600_000_000  # 2020-09-13, seconds; users start within the following year
YEAR = 365 * 24 * 3600
MAX_GAP = 3 * 24 * 3600  # largest gap, in seconds, between two interactions of a user
# Size bounds, checked before anything is allocated (see `size_problem`).
MAX_USERS = 10_000_000
MAX_ITEMS = 1_000_000
MAX_MEAN_LENGTH = 10_000
MAX_GROUPS = 10_000
MAX_INTERACTIONS = 100_000_000  # expected events (users × mean_length), 5× MovieLens-20M
IN_MEMORY = "the log is generated in memory"

# The task keys of `data.dataset = "synthetic"`; `size_problem` adds the rules between them.
PARAMS = (
    Param("seed", int, 0, "seed of the generated log (not the task seed)", NONNEGATIVE),
    Param("users", int, DEFAULT_SIZES["users"], "users", Range(1, MAX_USERS), bound=IN_MEMORY),
    Param("items", int, DEFAULT_SIZES["items"], "catalogue size", Range(SUCCESSORS + 1, MAX_ITEMS),
          bound=IN_MEMORY),
    Param("mean_length", int, DEFAULT_SIZES["mean_length"],
          "mean interactions per user (at most items)", Range(3, MAX_MEAN_LENGTH), bound=IN_MEMORY),
    Param("categories", int, DEFAULT_SIZES["categories"],
          "item categories (at most items // 3: room for same-category successors)", Range(1)),
    Param("groups", int, DEFAULT_SIZES["groups"], "user taste groups (at most users)",
          Range(1, MAX_GROUPS), bound=IN_MEMORY),
)


def generate(
    seed: int,
    users: int = DEFAULT_SIZES["users"],
    items: int = DEFAULT_SIZES["items"],
    mean_length: int = DEFAULT_SIZES["mean_length"],
    categories: int = DEFAULT_SIZES["categories"],
    groups: int = DEFAULT_SIZES["groups"],
) -> Interactions:
    """Generate the log; the same arguments always give the same data.

    Users and items are named "1", "2", ...; categories "c0", "c1", ... and groups "g0", ...
    (zero-padded to sort correctly). User groups are in ``user_attributes["group"]``.
    """
    _check_sizes(users, items, mean_length, categories, groups)
    rng = np.random.default_rng(seed)
    category = rng.permutation(np.arange(items) % categories)
    popularity = _popularity(rng, category, categories)
    taste = rng.dirichlet(np.full(categories, TASTE_CONCENTRATION), size=groups)
    successors, transition = _transitions(rng, category, popularity)
    group = rng.permutation(np.arange(users) % groups)
    extra = mean_length - 3
    lengths = 3 + rng.negative_binomial(
        LENGTH_DISPERSION, LENGTH_DISPERSION / (LENGTH_DISPERSION + extra), size=users
    )
    lengths = np.minimum(lengths, items)
    jump_weights = taste[:, category] * popularity  # [groups, items]
    items_drawn = _walks(rng, lengths, group, jump_weights, successors, transition)
    timestamps = _timestamps(rng, lengths)
    user_ids = np.repeat(np.arange(1, users + 1), lengths)
    events = events_frame(user_ids, items_drawn + 1, timestamps)
    category_names = _names("c", categories)
    group_names = _names("g", groups)
    item_categories = pd.Series(
        category_names[category],
        index=pd.Index([str(i) for i in range(1, items + 1)], name="item"),
        name="category",
    )
    user_attributes = pd.DataFrame(
        {"group": group_names[group]},
        index=pd.Index([str(u) for u in range(1, users + 1)], name="user"),
        dtype=str,
    )
    return Interactions(events, item_categories, user_attributes)


def _check_sizes(users: int, items: int, mean_length: int, categories: int, groups: int) -> None:
    """Integers only, within the bounds of `size_problem`."""
    problem = size_problem(
        users=users, items=items, mean_length=mean_length, categories=categories, groups=groups
    )
    if problem is not None:
        raise DataError(f"synthetic: {problem[0]} {problem[1]}")


def size_problem(**sizes: object) -> Optional[tuple[str, str]]:
    """(parameter, what is wrong) for the first size out of range, or None when all are fine.

    Each category needs room for its same-category successors. The upper bounds keep the log
    in memory (every user's sequence, the groups × items taste table) before anything is drawn.
    """
    sizes = {**DEFAULT_SIZES, **sizes}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            return name, f"must be an integer, found {value!r}"
    users, items = int(sizes["users"]), int(sizes["items"])
    limits = {
        "users": (1, MAX_USERS, "sequences are generated and held in memory"),
        "items": (SUCCESSORS + 1, MAX_ITEMS, "each item draws its successors from all items"),
        "mean_length": (3, min(items, MAX_MEAN_LENGTH), f"at most items and {MAX_MEAN_LENGTH}"),
        "categories": (1, items // (SAME_CATEGORY_SUCCESSORS + 1), "items // 3: room for each "
                       "category's same-category successors"),
        "groups": (1, min(users, MAX_GROUPS), f"at most users and {MAX_GROUPS}"),
    }
    for name, (low, high, why) in limits.items():
        value = int(sizes[name])
        if not low <= value <= high:
            return name, f"must be between {low} and {high}, found {value} ({why})"
    expected = users * int(sizes["mean_length"])
    if expected > MAX_INTERACTIONS:
        return "users", (
            f"× mean_length = {users} × {sizes['mean_length']} = {expected} expected interactions; "
            f"at most {MAX_INTERACTIONS} are allowed (the log is generated in memory)"
        )
    if int(sizes["groups"]) * items > MAX_INTERACTIONS:
        return "groups", (
            f"× items = {sizes['groups']} × {items} taste weights; at most {MAX_INTERACTIONS} "
            f"are allowed (the table is held in memory)"
        )
    return None


def _popularity(rng: np.random.Generator, category: np.ndarray, categories: int) -> np.ndarray:
    """Zipf-like weights, normalised to sum 1 within each category."""
    weights = np.empty(len(category))
    for c in range(categories):
        members = np.flatnonzero(category == c)
        ranks = rng.permutation(len(members)) + 1
        weights[members] = ranks**-POPULARITY_EXPONENT / np.sum(ranks**-POPULARITY_EXPONENT)
    return weights


def _transitions(
    rng: np.random.Generator, category: np.ndarray, popularity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's successors [items, SUCCESSORS] and their probabilities (rows sum to 1)."""
    items = len(category)
    successors = np.empty((items, SUCCESSORS), dtype=np.int64)
    for item in range(items):
        same = (category == category[item]) & (np.arange(items) != item)
        other = category != category[item]
        # with a single category all successors are necessarily in the same category
        same_count = SAME_CATEGORY_SUCCESSORS if other.any() else SUCCESSORS
        successors[item, :same_count] = _pick(rng, same, popularity, same_count)
        successors[item, same_count:] = _pick(rng, other, popularity, SUCCESSORS - same_count)
    return successors, rng.dirichlet(np.full(SUCCESSORS, 2.0), size=items)


def _pick(
    rng: np.random.Generator, allowed: np.ndarray, popularity: np.ndarray, count: int
) -> np.ndarray:
    """``count`` distinct allowed items, drawn by popularity (none, and no draw, for count 0)."""
    if count == 0:  # a single category: no other-category successors
        return np.empty(0, dtype=np.int64)
    candidates = np.flatnonzero(allowed)
    weights = popularity[candidates]
    return rng.choice(candidates, size=count, replace=False, p=weights / weights.sum())


# --- the walks and timestamps, compiled -----------------------------------------------------------
#
# The walks used to be a Python loop per user and step (12 µs a step: 36 s for 10^5 users). They now
# run in compiled kernels that replay exactly the draws the loop made, in the same order, so a seed
# gives the same log as before (tests/test_population_scale.py keeps the loop as the reference):
#
# - a user's walk draws one `rng.random()` for its first item, then per step one more for the
#   follow/jump choice when a successor is still unseen, and one for the item. `Generator.random(n)`
#   returns the same doubles as n single calls, so the kernel reads them from blocks; after a block
#   the generator is rewound to the doubles actually used (`_rewind`).
# - a draw by weights is `searchsorted(c, r * c[-1], side="right")` with c = cumsum(w); the kernel
#   sums in the same order (numpy's cumsum is sequential), so every comparison sees the same floats.
#   A jump still costs O(items), as it did.
# - timestamps were `rng.integers(0, YEAR)` and `rng.integers(1, MAX_GAP, length)` per user; both
#   are numpy's 32-bit Lemire rejection sampler over the generator's stream of 32-bit halves,
#   which the kernel replays from `random_raw` (they are the last draws, so no rewind is needed).

_BLOCK = 1 << 22  # doubles or 32-bit words per block: 32 MB / 16 MB, whatever the population


@numba.njit(cache=True, nogil=True)
def _jump(weights, unseen, uniform):
    """``searchsorted(cumsum(weights * unseen), uniform * total, side="right")``, same floats."""
    total = 0.0
    for item in range(weights.shape[0]):
        if unseen[item]:
            total += weights[item]
    target = uniform * total
    cumulative = 0.0
    for item in range(weights.shape[0]):
        if unseen[item]:
            cumulative += weights[item]
        if cumulative > target:
            return item
    raise ValueError("synthetic: a draw by weights fell past the last item")


@numba.njit(cache=True, nogil=True)
def _walk_block(uniforms, lengths, group, jump_weights, successors, transition, user, offset, out):
    """Walk users from ``user`` on (their items go to ``out[offset:]``) while ``uniforms`` surely
    suffices (a user uses at most 2 × length - 1); returns (next user, uniforms used)."""
    num_items = jump_weights.shape[1]
    width = successors.shape[1]
    unseen = np.ones(num_items, dtype=np.bool_)
    follow = np.empty(width)
    every_successor = np.ones(width, dtype=np.bool_)  # seen successors already weigh 0 in `follow`
    used = 0
    while user < lengths.shape[0]:
        length = lengths[user]
        if used + 2 * length - 1 > uniforms.shape[0]:
            break
        weights = jump_weights[group[user]]
        current = _jump(weights, unseen, uniforms[used])
        used += 1
        out[offset] = current
        unseen[current] = False
        for step in range(1, length):
            any_unseen = False
            for k in range(width):
                follow[k] = transition[current, k] if unseen[successors[current, k]] else 0.0
                any_unseen = any_unseen or follow[k] != 0.0
            follows = False
            if any_unseen:
                follows = uniforms[used] < FOLLOW
                used += 1
            if follows:
                current = successors[current, _jump(follow, every_successor, uniforms[used])]
            else:
                current = _jump(weights, unseen, uniforms[used])
            used += 1
            out[offset + step] = current
            unseen[current] = False
        for step in range(length):
            unseen[out[offset + step]] = True
        offset += length
        user += 1
    return user, used


def _walks(rng, lengths, group, jump_weights, successors, transition) -> np.ndarray:
    """All users' walks, concatenated (0-based items): the draws of the per-user loop."""
    out = np.empty(int(lengths.sum()), dtype=np.int64)
    lengths = lengths.astype(np.int64)
    group = group.astype(np.int64)
    user, offset = 0, 0
    while user < len(lengths):
        state = rng.bit_generator.state
        block = rng.random(max(_BLOCK, 2 * int(lengths[user])))
        next_user, used = _walk_block(
            block, lengths, group, jump_weights, successors, transition, user, offset, out
        )
        _rewind(rng, state, used)
        offset += int(lengths[user:next_user].sum())
        user = next_user
    return out


def _rewind(rng: np.random.Generator, state: dict, used: int) -> None:
    """Set ``rng`` to ``state`` advanced by ``used`` 64-bit draws, keeping its buffered 32-bit half
    (which doubles do not touch, but ``advance`` clears)."""
    bit_generator = rng.bit_generator
    bit_generator.state = state
    bit_generator.advance(used)
    advanced = bit_generator.state
    advanced["has_uint32"], advanced["uinteger"] = state["has_uint32"], state["uinteger"]
    bit_generator.state = advanced


@numba.njit(cache=True, nogil=True)
def _lemire(words, position, bound):
    """numpy's ``buffered_bounded_lemire_uint32``: a value in [0, bound) from ``words[position:]``;
    returns (value, next position), or (0, -1) when ``words`` runs out."""
    bound = np.uint64(bound)
    threshold = (np.uint64(0x100000000) - bound) % bound
    if position >= words.shape[0]:
        return np.uint64(0), -1
    product = np.uint64(words[position]) * bound
    position += 1
    if (product & np.uint64(0xFFFFFFFF)) < bound:
        while (product & np.uint64(0xFFFFFFFF)) < threshold:
            if position >= words.shape[0]:
                return np.uint64(0), -1
            product = np.uint64(words[position]) * bound
            position += 1
    return product >> np.uint64(32), position


@numba.njit(cache=True, nogil=True)
def _timestamp_block(words, lengths, user, offset, out):
    """Timestamps of users from ``user`` on while ``words`` lasts; returns (next user, words used)."""
    position = 0
    while user < lengths.shape[0]:
        start = position
        value, position = _lemire(words, position, YEAR)
        if position < 0:
            return user, start
        time = START_TIME + np.int64(value)
        for step in range(lengths[user]):
            gap, position = _lemire(words, position, MAX_GAP - 1)
            if position < 0:
                return user, start
            time += 1 + np.int64(gap)
            out[offset + step] = time
        offset += lengths[user]
        user += 1
    return user, position


def _timestamps(rng: np.random.Generator, lengths: np.ndarray) -> np.ndarray:
    """Per user ``START_TIME + rng.integers(0, YEAR) + cumsum(rng.integers(1, MAX_GAP, length))``."""
    out = np.empty(int(lengths.sum()), dtype=np.int64)
    lengths = lengths.astype(np.int64)
    state = rng.bit_generator.state
    words = np.array([state["uinteger"]] if state["has_uint32"] else [], dtype=np.uint32)
    user, offset = 0, 0
    while user < len(lengths):
        wanted = max(_BLOCK, 4 * (int(lengths[user]) + 1))
        raw = rng.bit_generator.random_raw((wanted - len(words) + 1) // 2)
        words = np.concatenate([words, raw.astype("<u8").view("<u4")])  # low half first
        next_user, used = _timestamp_block(words, lengths, user, offset, out)
        offset += int(lengths[user:next_user].sum())
        user, words = next_user, words[used:]
    return out


def _names(prefix: str, count: int) -> np.ndarray:
    """prefix + zero-padded index, so that names sort in index order."""
    width = len(str(count - 1))
    return np.array([f"{prefix}{k:0{width}d}" for k in range(count)], dtype=object)
