"""Ranking metrics and the leave-one-out evaluation protocol.

Scores are float arrays [n, V] over the vocabulary V = num_items + 1; column 0 is the padding id
and is never ranked. Each row has one held-out target item.

Rank: 1 + the number of candidate items whose score is >= the target's score. Ties count
against the target (pessimistic), so a model that scores every item alike ranks each target
last instead of first; with float logits of a trained model exact ties are rare and the rule
changes nothing. Candidates are items 1..V-1 except the target and the user's excluded (history)
items, which are removed from the comparison altogether. The target itself is never excluded,
even if the user saw it before (repeat consumption is a legitimate next item).

Metrics, averaged over users: HR@K = [rank <= K]; NDCG@K = 1 / log2(rank + 1) if rank <= K else 0
(one relevant item, so the ideal DCG is 1); MRR = 1 / rank without cut-off.

Protocol (`evaluate`): each evaluated user's history (validation: the train prefix; test: the train
prefix + the validation item) becomes model inputs whose last position is scored
(`score_last_position` computes only that position's logits, [b, d] → [b, V]). Users are ranked in batches of at most
`evaluation.batch_size` rows, fewer when V is large, so that the [b, V] arrays of one batch stay
within `MEMORY_CAP_BYTES` (512 MiB; see `batch_rows`). Sampled negatives never depend on how
users are split into batches: uniform negatives come from one stream per user (a child seed per
evaluated user, drawn from the rng once up front; `uniform_negatives`), O(num_negatives + history)
per user; weighted (popularity) negatives from one rng stream of Gumbel keys consumed in user
order, O(V) per user (`sample_negatives`). Validation may use a seeded sample of users
(`user_sample`, `evaluation.validation_users`); test uses all.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tff_rec.data.types import PADDING_ITEM, LeaveOneOutSplit
from tff_rec.models import HistoryInputs, left_pad

ScoreFn = Callable[[np.ndarray], np.ndarray]

# Bytes one score column costs a batch under weighted (popularity) sampling: float32 scores
# twice (the model's output and a NumPy copy, if one is made: 8), the comparison and candidate
# masks and a negated mask (3), and the float64 Gumbel keys, argpartition's float64 copy of them
# and its int64 indices (24): 35, rounded up to 40.
BYTES_PER_SCORE = 40
# Under uniform sampling or none: the scores twice (8) and the comparison mask (1); uniform
# negatives cost [b, O(num_negatives)] arrays, not [b, V] (`uniform_negatives`): 9, rounded up to 16.
BYTES_PER_SCORE_UNIFORM = 16
MEMORY_CAP_BYTES = 512 * 2**20  # per batch: rows × V × bytes per score stays below it


@dataclasses.dataclass(frozen=True)
class Exclusions:
    """Per-row excluded item ids in CSR form: row r's are items[offsets[r]:offsets[r + 1]].

    Within a row the ids may repeat and come in any order (only membership counts). Indexing
    with an int gives a row's ids; with a slice (step 1), the rows' Exclusions.
    """

    items: np.ndarray  # int64 [total]
    offsets: np.ndarray  # int64 [n + 1], offsets[0] = 0, non-decreasing, offsets[-1] = total

    def __post_init__(self) -> None:
        items, offsets = np.asarray(self.items, np.int64), np.asarray(self.offsets, np.int64)
        if (
            items.ndim != 1 or offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0
            or offsets[-1] != len(items) or (np.diff(offsets) < 0).any()
        ):
            raise ValueError(
                "exclusions need items [total] and non-decreasing offsets [n + 1] from 0 to total."
            )
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "offsets", offsets)

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray]) -> "Exclusions":
        """The CSR form of one id array per row."""
        lengths = np.fromiter((np.size(a) for a in arrays), np.int64, count=len(arrays))
        return cls(_concat_ids(arrays), np.concatenate([[0], np.cumsum(lengths)]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: Union[int, slice]) -> Union[np.ndarray, "Exclusions"]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("Exclusions slices must be contiguous (step 1).")
            stop = max(start, stop)
            begin, end = self.offsets[start], self.offsets[stop]
            return Exclusions(self.items[begin:end], self.offsets[start : stop + 1] - begin)
        row = range(len(self))[index]  # IndexError when out of range
        return self.items[self.offsets[row] : self.offsets[row + 1]]

    def row_ids(self) -> np.ndarray:
        """int64 [total]: the row of each entry of items."""
        return np.repeat(np.arange(len(self)), np.diff(self.offsets))


ExcludeArg = Optional[Union[Sequence[np.ndarray], Exclusions]]


# ---------------------------------------------------------------- ranks


def _concat_ids(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """int64 [total]: the item ids of several arrays, one after another."""
    parts = [np.asarray(a, np.int64).ravel() for a in arrays]
    return np.concatenate([np.zeros(0, np.int64)] + parts)


def _check_scores(scores: np.ndarray, targets: np.ndarray) -> None:
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(
            f"scores must be [n, V] and targets [n]. Found {scores.shape} and {targets.shape}."
        )
    if scores.size and np.isnan(scores.max()):  # max propagates NaN: one pass, no [n, V] temporary
        raise ValueError("scores contain NaN (did training diverge?); ranks would be meaningless.")
    _check_targets(targets, scores.shape[1])


def _check_targets(targets: np.ndarray, num_columns: int) -> None:
    bad = (targets < 1) | (targets >= num_columns)
    if bad.any():
        raise ValueError(f"targets must be item ids in 1..{num_columns - 1}. Found {targets[bad][0]}.")


def candidate_mask(num_columns: int, targets: np.ndarray, exclude: ExcludeArg = None) -> np.ndarray:
    """bool [n, V]: True for the items a row's target is compared with.

    That is items 1..V-1 minus the target and minus exclude[u] (the user's history): one id array
    per row, or their CSR form (`Exclusions`).
    """
    targets = np.asarray(targets)
    _check_targets(targets, num_columns)
    n = len(targets)
    mask = np.ones((n, num_columns), dtype=bool)
    mask[:, PADDING_ITEM] = False
    if exclude is not None:
        if len(exclude) != n:
            raise ValueError(f"exclude must have one entry per row. Found {len(exclude)} for {n}.")
        if not isinstance(exclude, Exclusions):
            exclude = Exclusions.from_arrays(exclude)
        rows, columns = exclude.row_ids(), exclude.items
        if ((columns < 0) | (columns >= num_columns)).any():
            raise ValueError(f"exclude holds ids outside 0..{num_columns - 1}.")
        mask[rows, columns] = False
    mask[np.arange(n), targets] = False
    return mask


def full_ranks(scores: np.ndarray, targets: np.ndarray, exclude: ExcludeArg = None) -> np.ndarray:
    """int [n]: each target's rank among all candidate items (ties pessimistic, see module doc)."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    _check_scores(scores, targets)
    return _ranks_among(scores, targets, candidate_mask(scores.shape[1], targets, exclude))


def _ranks_among(scores: np.ndarray, targets: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """int64 [n]: 1 + the candidates scoring >= the target (one bool [n, V] temporary)."""
    at_least = scores >= scores[np.arange(len(targets)), targets][:, None]
    at_least &= candidates
    return 1 + np.count_nonzero(at_least, axis=1).astype(np.int64)


def _ranks_excluding(scores: np.ndarray, targets: np.ndarray, exclude: Exclusions) -> np.ndarray:
    """`full_ranks` without a candidate mask: the items scoring >= the target, minus the
    padding column, the excluded ids and the target itself (ids assumed in range)."""
    rows = np.arange(len(targets))
    at_least = scores >= scores[rows, targets][:, None]
    at_least[:, PADDING_ITEM] = False
    at_least[exclude.row_ids(), exclude.items] = False
    at_least[rows, targets] = False
    return 1 + np.count_nonzero(at_least, axis=1).astype(np.int64)


def sample_negatives(
    targets: np.ndarray,
    weights: np.ndarray,
    num_negatives: int,
    rng: np.random.Generator,
    exclude: ExcludeArg = None,
) -> np.ndarray:
    """int [n, num_negatives]: per row, negatives drawn without replacement ∝ weights.

    weights: float [V], non-negative; weights[0] is ignored. Only candidates (see
    `candidate_mask`) with positive weight can be drawn; rows with fewer of them than
    num_negatives get them all and 0 (padding) in the unused slots. Same rng state and inputs →
    same negatives.

    Equal positive weights on items 1..V-1 (uniform sampling): `uniform_negatives` with one child
    seed per row drawn from rng up front (`row_seeds`), O(num_negatives + history) per row.
    Other weights: successive sampling without replacement, done for all rows at once with the
    Gumbel-top-k trick (the k largest log(w_i) + Gumbel noise): a float64 key for every item of
    every row, O(V) per row.
    """
    weights = _check_sampling(weights, num_negatives)
    if _is_uniform(weights):
        targets = np.asarray(targets)
        return uniform_negatives(
            len(weights), targets, _exclusions(exclude, len(targets)), row_seeds(rng, len(targets)),
            num_negatives,
        )
    eligible = candidate_mask(len(weights), targets, exclude)
    return _negatives_among(eligible, weights, num_negatives, rng)


def _is_uniform(weights: np.ndarray) -> bool:
    """Whether weights (checked, float [V]) weigh items 1..V-1 alike and above 0."""
    items = weights[1:]
    return bool(items.size) and items[0] > 0 and bool((items == items[0]).all())


def _exclusions(exclude: ExcludeArg, n: int) -> Exclusions:
    """exclude as `Exclusions` of n rows (none when None)."""
    if exclude is None:
        return Exclusions(np.zeros(0, np.int64), np.zeros(n + 1, np.int64))
    if len(exclude) != n:
        raise ValueError(f"exclude must have one entry per row. Found {len(exclude)} for {n}.")
    return exclude if isinstance(exclude, Exclusions) else Exclusions.from_arrays(exclude)


# SplitMix64 (Steele, Lea & Flood 2014): output j of the stream seeded s is mix(s + (j + 1) γ).
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX = (np.uint64(30), np.uint64(0xBF58476D1CE4E5B9), np.uint64(27), np.uint64(0x94D049BB133111EB),
        np.uint64(31))


def row_seeds(rng: np.random.Generator, n: int) -> np.ndarray:
    """uint64 [n]: one child seed per row, drawn from rng in one call (`uniform_negatives`)."""
    return rng.integers(0, 2**64, size=n, dtype=np.uint64)


def _row_streams(seeds: np.ndarray, length: int) -> np.ndarray:
    """uint64 [n, length]: the first `length` outputs of SplitMix64 seeded with each row's seed.

    Counter-based: row r's outputs depend on seeds[r] alone, so rows drawn together in any
    grouping get the same streams. Two of n rows' streams of length m overlap with probability
    below n² m / 2^64 (negligible for any evaluation).
    """
    shift1, mul1, shift2, mul2, shift3 = _MIX
    z = np.arange(1, length + 1, dtype=np.uint64)[None, :] * _GAMMA  # uint64 arrays wrap
    z = z + np.asarray(seeds, np.uint64)[:, None]
    z ^= z >> shift1
    z *= mul1
    z ^= z >> shift2
    z *= mul2
    z ^= z >> shift3
    return z


def _initial_draws(candidates: np.ndarray, items: int, k: int) -> int:
    """Draws per row of a first rejection pass: the largest expected number needed to keep k of
    c candidates among `items` (items × (H(c) − H(c − k)) ≈ items × ln((c + ½) / (c − k + ½))),
    plus 4 standard deviations of the rejections and 8. Short rows are redrawn longer, so this
    sets the cost only, never the negatives."""
    c = np.asarray(candidates, np.float64)
    expected = float(np.max(items * np.log((c + 0.5) / (c - k + 0.5))))
    return int(np.ceil(expected + 4 * np.sqrt(max(expected - k, 0.0)) + 8))


def uniform_negatives(
    num_columns: int,
    targets: np.ndarray,
    exclude: Exclusions,
    seeds: np.ndarray,
    num_negatives: int,
) -> np.ndarray:
    """int64 [n, num_negatives]: per row, num_negatives distinct candidates drawn uniformly
    without replacement; rows with fewer candidates get them all and 0 in the unused slots.

    Candidates: items 1..V-1 minus the target and the row's exclusions (as `candidate_mask`).
    Row r's negatives are a function of (seeds[r], targets[r], exclude[r], V, num_negatives)
    only: they do not depend on the other rows or on how rows are split into calls.

    - Rejection (rows with c >= 2 num_negatives candidates and c >= (V - 1) / 2): the row's
      stream, read as uniform items of 1..V-1 (64-bit values mapped exactly: the top partial
      range is rejected), is scanned in order, skipping excluded items and repeats of an earlier
      draw; the first num_negatives kept are the negatives. Sequential rejection from a uniform
      stream is an exact uniform sample without replacement. Rows are scanned together, a
      [b, m] block of draws with m a little above the expected number needed; rows that come up
      short are scanned again with twice m (the same stream, longer), so m changes cost only.
      Exclusions are looked up by binary search in the batch's sorted (row, item) keys: no [b, V]
      array. Cost O((num_negatives + history) log) per row: expected draws are below 4 ×
      num_negatives under these bounds.
    - Fallback (fewer candidates): the row's candidates are listed (O(V), a 1-D array) and the
      num_negatives with the smallest 64-bit keys of its stream are kept (a uniformly random
      subset, up to ties of 64-bit keys), or all of them when they are not more than num_negatives.
    """
    targets = np.asarray(targets, np.int64)
    n, k, items = len(targets), int(num_negatives), num_columns - 1
    if k < 1:
        raise ValueError(f"num_negatives must be positive. Found {num_negatives}.")
    _check_targets(targets, num_columns)
    if len(exclude) != n or np.shape(seeds) != (n,):
        raise ValueError(f"exclude and seeds must have one entry per row ({n}).")
    if exclude.items.size and (exclude.items.min() < 0 or exclude.items.max() >= num_columns):
        raise ValueError(f"exclude holds ids outside 0..{num_columns - 1}.")
    negatives = np.zeros((n, k), np.int64)
    if n == 0:
        return negatives
    # Sorted distinct (row, item) keys of everything a row may not draw: its exclusions, its target.
    forbidden = np.unique(np.concatenate([
        exclude.row_ids() * num_columns + exclude.items, np.arange(n) * num_columns + targets,
    ]))
    forbidden_rows = forbidden // num_columns
    real = forbidden % num_columns != PADDING_ITEM
    candidates = items - np.bincount(forbidden_rows[real], minlength=n)
    small = (candidates < 2 * k) | (2 * candidates < items)
    bounds = np.searchsorted(forbidden_rows, np.arange(n + 1))
    for row in np.flatnonzero(small).tolist():
        allowed = np.ones(num_columns, bool)
        allowed[PADDING_ITEM] = False
        allowed[forbidden[bounds[row] : bounds[row + 1]] % num_columns] = False
        among = np.flatnonzero(allowed)
        if len(among) > k:
            keys = _row_streams(seeds[row : row + 1], len(among))[0]
            among = among[np.sort(np.argpartition(keys, k - 1)[:k])]
        negatives[row, : len(among)] = among
    todo = np.flatnonzero(~small)
    length = _initial_draws(candidates[todo], items, k) if todo.size else 0
    limit = (2**64 // items) * items  # values >= limit are rejected: exact uniform residues
    while todo.size:
        stream = _row_streams(seeds[todo], length)
        valid = stream < np.uint64(limit) if limit < 2**64 else np.ones(stream.shape, bool)
        draws = (stream % np.uint64(items)).astype(np.int64) + 1
        keys = todo[:, None] * num_columns + draws
        found = np.minimum(np.searchsorted(forbidden, keys), len(forbidden) - 1)
        valid &= forbidden[found] != keys
        # Repeats: within a row, a valid draw equal to an earlier valid one. Codes item × length +
        # position (invalid draws: negative) sorted per row put a row's copies of an item next to
        # each other, earliest first; every copy after the first is invalid.
        positions = np.arange(length)
        code = np.where(valid, draws * length + positions, -1 - positions)
        code.sort(axis=1)
        copy_rows, copy_columns = np.nonzero(
            (code[:, 1:] >= 0) & (code[:, 1:] // length == code[:, :-1] // length)
        )
        valid[copy_rows, code[copy_rows, copy_columns + 1] % length] = False
        kept = np.cumsum(valid, axis=1)
        done = kept[:, -1] >= k
        chosen = valid[done] & (kept[done] <= k)
        negatives[todo[done]] = draws[done][chosen].reshape(-1, k)
        todo, length = todo[~done], 2 * length
    return negatives


def _check_sampling(weights: np.ndarray, num_negatives: int) -> np.ndarray:
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be positive. Found {num_negatives}.")
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or (weights < 0).any():
        raise ValueError("sampling weights must be a non-negative vector of length V.")
    return weights


def _negatives_among(
    candidates: np.ndarray, weights: np.ndarray, num_negatives: int, rng: np.random.Generator
) -> np.ndarray:
    """`sample_negatives` given the candidate mask (changed in place: weight-0 items removed).

    Draws rng.gumbel of shape [n, V], so a batch split of the rows consumes the stream alike.
    """
    candidates &= (weights > 0)[None, :]
    keys = rng.gumbel(size=candidates.shape)  # negated keys below: in place, one [n, V] float64
    keys += np.log(np.where(weights > 0, weights, 1.0))
    np.negative(keys, out=keys)
    keys[~candidates] = np.inf
    k = min(num_negatives, len(weights))
    chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]
    drawn = np.take_along_axis(keys, chosen, axis=1) < np.inf
    negatives = np.where(drawn, chosen, PADDING_ITEM)
    return np.pad(negatives, ((0, 0), (0, num_negatives - k)))


def sampled_ranks(scores: np.ndarray, targets: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """int [n]: each target's rank among its row of negatives (0 entries = no negative)."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    _check_scores(scores, targets)
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    negative_scores = np.take_along_axis(scores, negatives, axis=1)
    return 1 + np.sum((negatives != PADDING_ITEM) & (negative_scores >= target_scores), axis=1)


# ---------------------------------------------------------------- metrics


def metrics_from_ranks(
    ranks: np.ndarray, ks: Sequence[int] = (10,), prefix: str = ""
) -> dict[str, float]:
    """{prefix}hr@K, {prefix}ndcg@K for each K, and {prefix}mrr, averaged over rows."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no ranks to average: nothing was evaluated.")
    metrics = {}
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"evaluation.ks must hold positive integers. Found {k!r}.")
        hit = ranks <= k
        metrics[f"{prefix}hr@{k}"] = float(np.mean(hit))
        metrics[f"{prefix}ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 1), 0.0)))
    metrics[f"{prefix}mrr"] = float(np.mean(1.0 / ranks))
    return metrics


def ranking_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    ks: Sequence[int] = (10,),
    exclude: Optional[Sequence[np.ndarray]] = None,
) -> dict[str, float]:
    """Full-ranking hr@K, ndcg@K, mrr of targets [n] under scores [n, V] (see module doc)."""
    return metrics_from_ranks(full_ranks(scores, targets, exclude), ks)


def _uniform_weights(num_columns: int, item_popularity: Optional[np.ndarray]) -> np.ndarray:
    return np.ones(num_columns)


def _popularity_weights(num_columns: int, item_popularity: Optional[np.ndarray]) -> np.ndarray:
    if item_popularity is None or np.shape(item_popularity) != (num_columns,):
        found = None if item_popularity is None else np.shape(item_popularity)
        raise ValueError(
            f"popularity sampling needs item_popularity of shape ({num_columns},). Found {found}."
        )
    return np.asarray(item_popularity, dtype=np.float64)


NEGATIVE_SAMPLING: dict[str, Callable[[int, Optional[np.ndarray]], np.ndarray]] = {
    "uniform": _uniform_weights,
    "popularity": _popularity_weights,
}


def sampling_weights(
    sampling: str, num_columns: int, item_popularity: Optional[np.ndarray] = None
) -> np.ndarray:
    """float [V]: the weights negatives are drawn with, for a `NEGATIVE_SAMPLING` name."""
    if sampling not in NEGATIVE_SAMPLING:
        raise ValueError(
            f"negative sampling must be one of {', '.join(sorted(NEGATIVE_SAMPLING))}. "
            f"Found {sampling!r}."
        )
    return NEGATIVE_SAMPLING[sampling](num_columns, item_popularity)


def sampled_ranking_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    ks: Sequence[int] = (10,),
    *,
    rng: np.random.Generator,
    num_negatives: int = 100,
    sampling: str = "uniform",
    item_popularity: Optional[np.ndarray] = None,
    exclude: Optional[Sequence[np.ndarray]] = None,
) -> dict[str, float]:
    """sampled_hr@K, sampled_ndcg@K, sampled_mrr: each target ranked against sampled negatives.

    Negatives: `num_negatives` per row without replacement, never the target or an excluded
    item, uniformly or ∝ item_popularity [V] (see `sample_negatives`).
    """
    scores, targets = np.asarray(scores), np.asarray(targets)
    weights = sampling_weights(sampling, scores.shape[1], item_popularity)
    negatives = sample_negatives(targets, weights, num_negatives, rng, exclude)
    return metrics_from_ranks(sampled_ranks(scores, targets, negatives), ks, prefix="sampled_")


# ---------------------------------------------------------------- scoring


def score_last_position(
    model: tf.keras.Model, inputs: np.ndarray, batch_size: int = 512
) -> np.ndarray:
    """float32 [n, V]: the model's logits at the last position of inputs [n, max_len].

    Runs in inference mode (dropout off), batch_size rows at a time; only the last position is
    scored (`model.logits` of its hidden state [b, d]), so a batch holds b × V logits, not
    b × max_len × V. `evaluate` calls it with at most batch_size rows: one batch, no copy.
    """
    if len(inputs) == 0:
        raise ValueError("no inputs to score.")
    score = _last_position_scorer(model)
    batches = [
        score(np.asarray(inputs[start : start + batch_size], np.int32)).numpy()
        for start in range(0, len(inputs), batch_size)
    ]
    scores = batches[0] if len(batches) == 1 else np.concatenate(batches)
    return scores.astype(np.float32, copy=False)


def _last_position_scorer(model: tf.keras.Model) -> Callable[[np.ndarray], tf.Tensor]:
    """The model's last-position logits as one traced function per model (kept on the model).

    Eager calls of the Keras model kept about 13 MB per scoring pass alive (measured with
    benchmarks/memory_growth.py: +20% driver memory over 500 rounds); a function traced once for
    any batch size does not. It encodes the inputs and scores only the last hidden state
    (`ItemSequenceModel.encode`, then `logits` on [b, d]); models without `encode` are called
    whole and their last position kept.
    """
    scorer = getattr(model, "_tff_rec_last_position_scorer", None)
    if scorer is None:
        if hasattr(model, "encode") and hasattr(model, "logits"):
            def last(inputs: tf.Tensor) -> tf.Tensor:
                return model.logits(model.encode(inputs, training=False)[:, -1, :])
        else:
            def last(inputs: tf.Tensor) -> tf.Tensor:
                return model(inputs, training=False)[:, -1, :]
        scorer = tf.function(  # traced as written, like the model's call (ARCHITECTURE.md)
            last, input_signature=[tf.TensorSpec([None, None], tf.int32)], autograph=False
        )
        object.__setattr__(model, "_tff_rec_last_position_scorer", scorer)  # untracked by Keras
    return scorer


def popularity_scores(train_sequences: Sequence[np.ndarray], num_items: int) -> np.ndarray:
    """int64 [num_items + 1]: how often each item occurs in the training sequences (0 for id 0)."""
    items = _concat_ids(train_sequences)
    if ((items < 1) | (items > num_items)).any():
        raise ValueError(f"training sequences hold ids outside 1..{num_items}.")
    return np.bincount(items, minlength=num_items + 1)


# ---------------------------------------------------------------- protocol


STAGES = ("validation", "test")


def batch_rows(
    num_columns: int,
    batch_size: int,
    memory_cap: int = MEMORY_CAP_BYTES,
    bytes_per_score: int = BYTES_PER_SCORE,
) -> int:
    """Rows per evaluation batch: at most batch_size, and rows × V × bytes_per_score <= memory_cap.

    bytes_per_score: `BYTES_PER_SCORE` (40) under weighted sampling, `BYTES_PER_SCORE_UNIFORM`
    (16) under uniform sampling or none. At least one row: only when a single row exceeds the
    cap (V > cap / 40, 13.4M columns at 512 MiB and 40 bytes) does a batch exceed it.
    """
    for label, value in (("batch_size", batch_size), ("memory_cap", memory_cap)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{label} must be a positive integer. Found {value!r}.")
    return int(max(1, min(batch_size, memory_cap // (num_columns * bytes_per_score))))


def user_sample(users: np.ndarray, size: Optional[int], seed: int) -> np.ndarray:
    """A seeded sample of `size` of users, in their order (all of them when size is None or
    at least len(users)). Same users and seed → same sample."""
    users = np.asarray(users)
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1
    ):
        raise ValueError(f"evaluation.validation_users must be a positive integer. Found {size!r}.")
    if size is None or size >= len(users):
        return users
    chosen = np.random.default_rng(seed).choice(len(users), size=size, replace=False)
    return users[np.sort(chosen)]


def _flat_histories(
    split: LeaveOneOutSplit, stage: str, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items, offsets [n + 1], targets [n]): the users' histories one after another."""
    train = [split.train[u] for u in users.tolist()]
    lengths = np.fromiter((len(t) for t in train), np.int64, count=len(train))
    items = np.concatenate([np.zeros(0, np.int32)] + [np.asarray(t, np.int32) for t in train])
    if stage == "validation":
        return items, np.concatenate([[0], np.cumsum(lengths)]), split.validation[users]
    # test: the validation item appended to each train prefix
    offsets = np.concatenate([[0], np.cumsum(lengths + 1)])
    history = np.empty(len(items) + len(users), np.int32)
    ends = offsets[1:] - 1
    history[ends] = split.validation[users]
    keep = np.ones(len(history), bool)
    keep[ends] = False
    history[keep] = items
    return history, offsets, split.test[users]


def evaluation_inputs(
    split: LeaveOneOutSplit,
    stage: str,
    max_len: int,
    history_inputs: HistoryInputs = left_pad,
    users: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Exclusions]:
    """(users [n], inputs int32 [n, max_len], targets int64 [n], exclude) for a stage.

    validation: history = train prefix, target = validation item; test: history = train prefix +
    validation item, target = test item. users: the users to evaluate (default: every user with
    held-out items, `split.evaluation_users()`). inputs = history_inputs(histories, max_len): by
    default the history's last max_len items, left-padded (a model's own builder, e.g.
    BERT4Rec's, appends its [MASK]); exclude (CSR, `Exclusions`): every item of the full history
    except the target. Built from flat arrays: no per-user set operations.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(sorted(STAGES))}. Found {stage!r}.")
    held_out = split.evaluation_users()
    if users is None:
        users = held_out
    else:
        users = np.asarray(users, np.int64)
        if users.ndim != 1 or not np.isin(users, held_out).all():
            raise ValueError("users must be a list of users with held-out items.")
    history, offsets, targets = _flat_histories(split, stage, users)
    targets = np.asarray(targets, np.int64)
    histories = np.split(history, offsets[1:-1]) if len(users) else []
    rows = np.repeat(np.arange(len(users)), np.diff(offsets))
    kept = history != targets[rows]
    exclude = Exclusions(
        history[kept], np.concatenate([[0], np.cumsum(np.bincount(rows[kept], minlength=len(users)))])
    )
    inputs = history_inputs(histories, max_len) if len(users) else np.zeros((0, max_len), np.int32)
    return users, inputs, targets, exclude


@dataclasses.dataclass(frozen=True)
class Ranks:
    """Per evaluated user (in `evaluation_inputs` order): the user's index in the split, the
    held-out target item, its full-ranking rank and its rank among the sampled negatives (None
    without sampled metrics). `metrics_from_ranks` of them gives `evaluate`'s metrics."""

    users: np.ndarray  # int64 [n]
    targets: np.ndarray  # int64 [n]
    full: np.ndarray  # int [n], 1 = first
    sampled: Optional[np.ndarray]  # int [n], or None

    def metrics(self, ks: Sequence[int] = (10,)) -> dict[str, float]:
        """`evaluate`'s metrics from the ranks (without `users`)."""
        metrics = metrics_from_ranks(self.full, ks)
        if self.sampled is not None:
            metrics.update(metrics_from_ranks(self.sampled, ks, prefix="sampled_"))
        return metrics


def evaluate(
    score_fn: ScoreFn,
    split: LeaveOneOutSplit,
    stage: str,
    max_len: int,
    ks: Sequence[int] = (10,),
    num_negatives: int = 100,
    negative_sampling: str = "uniform",
    rng: Optional[np.random.Generator] = None,
    item_popularity: Optional[np.ndarray] = None,
    batch_size: int = 512,
    history_inputs: HistoryInputs = left_pad,
    users: Optional[np.ndarray] = None,
    memory_cap: int = MEMORY_CAP_BYTES,
) -> dict[str, float]:
    """Full-ranking and sampled metrics of a stage, plus `users` (how many were evaluated).

    score_fn maps inputs int32 [b, max_len] (built by history_inputs, see `evaluation_inputs`)
    to scores [b, V] (e.g. `score_last_position` of a model). users: a subset of the users with
    held-out items (default: all). Users are scored `batch_rows(V, batch_size, memory_cap, bytes)`
    at a time, so a batch's [b, V] arrays (scores, masks, and under popularity sampling the Gumbel
    keys) stay within memory_cap bytes (512 MiB by default); bytes per score: 16 under uniform
    sampling or none, 40 under weighted sampling. Sampled metrics need rng and are skipped when
    num_negatives is 0. Uniform negatives: one child seed per evaluated user, drawn from rng up
    front (`row_seeds`), then `uniform_negatives` per batch; weighted: Gumbel keys drawn from rng
    batch after batch. The negatives do not depend on the batch size, nor do the ranks when a
    row's scores do not (a float model's may differ in the last bit between batch shapes, so a
    record fixes its batch size: it follows from the task and memory_cap).
    """
    return evaluate_with_ranks(
        score_fn, split, stage, max_len, ks, num_negatives, negative_sampling, rng,
        item_popularity, batch_size, history_inputs, users, memory_cap,
    )[0]


def evaluate_with_ranks(
    score_fn: ScoreFn,
    split: LeaveOneOutSplit,
    stage: str,
    max_len: int,
    ks: Sequence[int] = (10,),
    num_negatives: int = 100,
    negative_sampling: str = "uniform",
    rng: Optional[np.random.Generator] = None,
    item_popularity: Optional[np.ndarray] = None,
    batch_size: int = 512,
    history_inputs: HistoryInputs = left_pad,
    users: Optional[np.ndarray] = None,
    memory_cap: int = MEMORY_CAP_BYTES,
) -> tuple[dict[str, float], Ranks]:
    """`evaluate`'s metrics, and the ranks they average (`Ranks`)."""
    if num_negatives and rng is None:
        raise ValueError(
            "sampled metrics need an rng (np.random.Generator); pass one or set num_negatives = 0."
        )
    users, inputs, targets, exclude = evaluation_inputs(split, stage, max_len, history_inputs, users)
    if len(users) == 0:
        raise ValueError(f"no users with held-out items to evaluate on ({stage}).")
    num_columns = split.data.num_items + 1
    if exclude.items.size and (exclude.items.min() < 0 or exclude.items.max() >= num_columns):
        raise ValueError(f"histories hold ids outside 0..{num_columns - 1} (num_items + 1 columns).")
    weights, seeds = None, None
    if num_negatives:
        weights = _check_sampling(
            sampling_weights(negative_sampling, num_columns, item_popularity), num_negatives
        )
        if _is_uniform(weights):
            seeds = row_seeds(rng, len(users))
    weighted = weights is not None and seeds is None
    rows_per_batch = batch_rows(
        num_columns, batch_size, memory_cap, BYTES_PER_SCORE if weighted else BYTES_PER_SCORE_UNIFORM
    )
    full, sampled = [], []
    for start in range(0, len(users), rows_per_batch):
        rows = slice(start, start + rows_per_batch)
        scores = np.asarray(score_fn(inputs[rows]))
        if scores.shape != (len(targets[rows]), num_columns):
            raise ValueError(
                f"score_fn must return scores [{len(targets[rows])}, {num_columns}] for this batch "
                f"(V = num_items + 1). Found {scores.shape}."
            )
        _check_scores(scores, targets[rows])
        full.append(_ranks_excluding(scores, targets[rows], exclude[rows]))
        if seeds is not None:
            negatives = uniform_negatives(
                num_columns, targets[rows], exclude[rows], seeds[rows], num_negatives
            )
            sampled.append(sampled_ranks(scores, targets[rows], negatives))
        elif weights is not None:
            candidates = candidate_mask(num_columns, targets[rows], exclude[rows])
            negatives = _negatives_among(candidates, weights, num_negatives, rng)
            sampled.append(sampled_ranks(scores, targets[rows], negatives))
            del candidates
        del scores
    ranks = Ranks(users, targets, np.concatenate(full),
                  np.concatenate(sampled) if num_negatives else None)
    metrics = ranks.metrics(ks)
    metrics["users"] = len(users)
    return metrics, ranks
