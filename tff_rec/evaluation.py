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
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_rec.data.types import PADDING_ITEM, LeaveOneOutSplit
from tff_rec.models import HistoryInputs, left_pad

ScoreFn = Callable[[np.ndarray], np.ndarray]


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
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN (did training diverge?); ranks would be meaningless.")
    _check_targets(targets, scores.shape[1])


def _check_targets(targets: np.ndarray, num_columns: int) -> None:
    bad = (targets < 1) | (targets >= num_columns)
    if bad.any():
        raise ValueError(f"targets must be item ids in 1..{num_columns - 1}. Found {targets[bad][0]}.")


def candidate_mask(
    num_columns: int, targets: np.ndarray, exclude: Optional[Sequence[np.ndarray]] = None
) -> np.ndarray:
    """bool [n, V]: True for the items a row's target is compared with.

    That is items 1..V-1 minus the target and minus exclude[u] (the user's history).
    """
    targets = np.asarray(targets)
    _check_targets(targets, num_columns)
    n = len(targets)
    mask = np.ones((n, num_columns), dtype=bool)
    mask[:, PADDING_ITEM] = False
    if exclude is not None:
        if len(exclude) != n:
            raise ValueError(f"exclude must have one entry per row. Found {len(exclude)} for {n}.")
        rows = np.repeat(np.arange(n), [len(e) for e in exclude])
        columns = _concat_ids(exclude)
        if ((columns < 0) | (columns >= num_columns)).any():
            raise ValueError(f"exclude holds ids outside 0..{num_columns - 1}.")
        mask[rows, columns] = False
    mask[np.arange(n), targets] = False
    return mask


def full_ranks(
    scores: np.ndarray, targets: np.ndarray, exclude: Optional[Sequence[np.ndarray]] = None
) -> np.ndarray:
    """int [n]: each target's rank among all candidate items (ties pessimistic, see module doc)."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    _check_scores(scores, targets)
    candidates = candidate_mask(scores.shape[1], targets, exclude)
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    return 1 + np.sum(candidates & (scores >= target_scores), axis=1)


def sample_negatives(
    targets: np.ndarray,
    weights: np.ndarray,
    num_negatives: int,
    rng: np.random.Generator,
    exclude: Optional[Sequence[np.ndarray]] = None,
) -> np.ndarray:
    """int [n, num_negatives]: per row, negatives drawn without replacement ∝ weights.

    weights: float [V], non-negative; weights[0] is ignored. Only candidates (see
    `candidate_mask`) with positive weight can be drawn; rows with fewer of them than
    num_negatives get them all and 0 (padding) in the unused slots. Successive sampling
    without replacement, done for all rows at once with the Gumbel-top-k trick: the k largest
    log(w_i) + Gumbel noise. Same rng state and inputs → same negatives.
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be positive. Found {num_negatives}.")
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or (weights < 0).any():
        raise ValueError("sampling weights must be a non-negative vector of length V.")
    eligible = candidate_mask(len(weights), targets, exclude) & (weights > 0)[None, :]
    log_weights = np.log(np.where(weights > 0, weights, 1.0))
    keys = np.where(eligible, log_weights + rng.gumbel(size=eligible.shape), -np.inf)
    k = min(num_negatives, len(weights))
    chosen = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    drawn = np.take_along_axis(keys, chosen, axis=1) > -np.inf
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

    Runs in inference mode (dropout off), batch by batch; each batch materializes the logits of
    all positions, batch_size × max_len × V floats.
    """
    if len(inputs) == 0:
        raise ValueError("no inputs to score.")
    score = _last_position_scorer(model)
    batches = [
        score(np.asarray(inputs[start : start + batch_size], np.int32))
        for start in range(0, len(inputs), batch_size)
    ]
    return np.concatenate([b.numpy() for b in batches]).astype(np.float32)


def _last_position_scorer(model: tf.keras.Model) -> Callable[[np.ndarray], tf.Tensor]:
    """The model's last-position logits as one traced function per model (kept on the model).

    Eager calls of the Keras model kept about 13 MB per scoring pass alive (measured with
    benchmarks/memory_growth.py: +20% driver memory over 500 rounds); a function traced once for
    any batch size does not.
    """
    scorer = getattr(model, "_tff_rec_last_position_scorer", None)
    if scorer is None:
        scorer = tf.function(
            lambda inputs: model(inputs, training=False)[:, -1, :],
            input_signature=[tf.TensorSpec([None, None], tf.int32)],
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


def _validation_case(split: LeaveOneOutSplit, user: int) -> tuple[np.ndarray, int]:
    return split.train[user], int(split.validation[user])


def _test_case(split: LeaveOneOutSplit, user: int) -> tuple[np.ndarray, int]:
    history = np.append(split.train[user], split.validation[user]).astype(np.int32)
    return history, int(split.test[user])


STAGES: dict[str, Callable[[LeaveOneOutSplit, int], tuple[np.ndarray, int]]] = {
    "validation": _validation_case,
    "test": _test_case,
}


def evaluation_inputs(
    split: LeaveOneOutSplit, stage: str, max_len: int, history_inputs: HistoryInputs = left_pad
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """(users [n], inputs int32 [n, max_len], targets [n], exclude) for a stage.

    validation: history = train prefix, target = validation item; test: history = train prefix +
    validation item, target = test item. Only users with held-out items. inputs =
    history_inputs(histories, max_len): by default the history's last max_len items, left-padded
    (a model's own builder, e.g. BERT4Rec's, appends its [MASK]); exclude[u] = every item of the
    full history except the target.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(sorted(STAGES))}. Found {stage!r}.")
    users = split.evaluation_users()
    cases = [STAGES[stage](split, int(u)) for u in users]
    histories = [history for history, _ in cases]
    targets = np.array([target for _, target in cases], dtype=np.int64)
    exclude = [np.setdiff1d(h, [t]) for h, t in zip(histories, targets)]
    return users, history_inputs(histories, max_len), targets, exclude


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
    batch_size: int = 1024,
    history_inputs: HistoryInputs = left_pad,
) -> dict[str, float]:
    """Full-ranking and sampled metrics of a stage, plus `users` (how many were evaluated).

    score_fn maps inputs int32 [b, max_len] (built by history_inputs, see `evaluation_inputs`)
    to scores [b, V] (e.g. `score_last_position` of a model). Users are scored batch_size at a
    time, so memory stays at batch_size × V. Sampled metrics need rng and are skipped when
    num_negatives is 0.
    """
    if num_negatives and rng is None:
        raise ValueError(
            "sampled metrics need an rng (np.random.Generator); pass one or set num_negatives = 0."
        )
    users, inputs, targets, exclude = evaluation_inputs(split, stage, max_len, history_inputs)
    if len(users) == 0:
        raise ValueError(f"no users with held-out items to evaluate on ({stage}).")
    full, sampled = [], []
    for start in range(0, len(users), batch_size):
        rows = slice(start, start + batch_size)
        scores = np.asarray(score_fn(inputs[rows]))
        full.append(full_ranks(scores, targets[rows], exclude[rows]))
        if num_negatives:
            weights = sampling_weights(negative_sampling, scores.shape[1], item_popularity)
            negatives = sample_negatives(targets[rows], weights, num_negatives, rng, exclude[rows])
            sampled.append(sampled_ranks(scores, targets[rows], negatives))
    metrics = metrics_from_ranks(np.concatenate(full), ks)
    if num_negatives:
        metrics.update(metrics_from_ranks(np.concatenate(sampled), ks, prefix="sampled_"))
    metrics["users"] = len(users)
    return metrics
