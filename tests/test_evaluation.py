"""Ranking metrics, negative sampling and the leave-one-out protocol, with hand-computed numbers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tff_rec import evaluation as ev
from tff_rec import models, results
from tff_rec.prepare import prepare
from tff_rec.data.types import LeaveOneOutSplit, SequenceData

# Items 1..5 score 0.1, 0.5, 0.3, 0.9, 0.2; the padding column 0 scores highest and must not count.
ROW = np.array([100.0, 0.1, 0.5, 0.3, 0.9, 0.2])


def test_rank_counts_only_higher_real_items() -> None:
    # Target 3 (0.3) is beaten by items 4 (0.9) and 2 (0.5): rank 3.
    metrics = ev.ranking_metrics(ROW[None], np.array([3]), ks=(1, 3))
    assert metrics == pytest.approx(
        {"hr@1": 0.0, "ndcg@1": 0.0, "hr@3": 1.0, "ndcg@3": 1 / math.log2(4), "mrr": 1 / 3}
    )


def test_ties_count_against_the_target() -> None:
    scores = ROW.copy()
    scores[3] = 0.5  # ties with item 2: pessimistic rank 1 + |{4, 2}| = 3
    assert ev.full_ranks(scores[None], np.array([3])).tolist() == [3]
    constant = np.zeros((1, 6))
    assert ev.full_ranks(constant, np.array([1])).tolist() == [5]  # last of 5 items


def test_exclusion_removes_history_but_never_the_target() -> None:
    # History {2, 4, 3}: items 2 and 4 no longer compete; the target 3 itself is still ranked.
    ranks = ev.full_ranks(ROW[None], np.array([3]), exclude=[np.array([2, 4, 3])])
    assert ranks.tolist() == [1]


def test_metrics_average_over_users() -> None:
    # Row 1: target 2 → rank 2 (behind 4). Row 2: target 4 → rank 1.
    metrics = ev.ranking_metrics(np.stack([ROW, ROW]), np.array([2, 4]), ks=(1, 2))
    assert metrics == pytest.approx(
        {
            "hr@1": 0.5,
            "ndcg@1": 0.5,
            "hr@2": 1.0,
            "ndcg@2": (1 / math.log2(3) + 1) / 2,
            "mrr": (1 / 2 + 1) / 2,
        }
    )


@pytest.mark.parametrize(
    "scores, targets",
    [
        (np.array([[0.0, np.nan, 1.0]]), np.array([2])),
        (np.zeros((1, 3)), np.array([0])),
        (np.zeros((1, 3)), np.array([3])),
    ],
)
def test_bad_scores_or_targets_are_rejected(scores: np.ndarray, targets: np.ndarray) -> None:
    with pytest.raises(ValueError):
        ev.ranking_metrics(scores, targets)


# ---------------------------------------------------------------- negative sampling


def test_negatives_are_all_candidates_when_few() -> None:
    # V = 6: items 1..5, minus the target and the history leave exactly the candidates below.
    targets = np.array([1, 3, 5])
    exclude = [np.array([2]), np.array([1, 2]), np.array([], np.int64)]
    negatives = ev.sample_negatives(targets, np.ones(6), 5, np.random.default_rng(0), exclude)
    drawn = [sorted(row[row > 0].tolist()) for row in negatives]
    assert drawn == [[3, 4, 5], [4, 5], [1, 2, 3, 4]]
    assert negatives.shape == (3, 5)


def test_negatives_are_distinct_and_never_target_or_history() -> None:
    rng = np.random.default_rng(1)
    targets = rng.integers(1, 50, size=200)
    exclude = [rng.choice(np.arange(1, 50), size=10, replace=False) for _ in targets]
    negatives = ev.sample_negatives(targets, np.ones(50), 20, rng, exclude)
    for target, history, row in zip(targets, exclude, negatives):
        assert len(set(row.tolist())) == 20 and 0 not in row
        assert target not in row and not set(history.tolist()) & set(row.tolist())


def test_sampled_rank_ignores_history_and_target() -> None:
    # History items score far above the target; sampled, they would push its rank down.
    scores = np.array([[0.0, 9.0, 9.0, 0.5, 0.1, 0.2, 0.3]])
    metrics = ev.sampled_ranking_metrics(
        scores, np.array([3]), ks=(1,), rng=np.random.default_rng(0), num_negatives=3,
        exclude=[np.array([1, 2])],
    )
    assert metrics == {"sampled_hr@1": 1.0, "sampled_ndcg@1": 1.0, "sampled_mrr": 1.0}


def test_popularity_sampling_follows_weights() -> None:
    # Target 5 for every row; items 1..4 weigh 1:2:3:4, item 6 weighs 0 and is never drawn.
    weights = np.array([0.0, 1, 2, 3, 4, 7, 0])
    n = 20_000
    negatives = ev.sample_negatives(np.full(n, 5), weights, 1, np.random.default_rng(2))
    frequencies = np.bincount(negatives[:, 0], minlength=7) / n
    np.testing.assert_allclose(frequencies[1:5], [0.1, 0.2, 0.3, 0.4], atol=0.015)
    assert frequencies[0] == frequencies[5] == frequencies[6] == 0


def _uniform_rows(num_columns: int, n: int, seed: int, history: int) -> tuple[np.ndarray, ev.Exclusions]:
    """n random targets and histories of up to `history` items (repeats and the target included)."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(1, num_columns, size=n)
    lengths = rng.integers(0, history + 1, size=n)
    exclude = ev.Exclusions(
        rng.integers(1, num_columns, size=int(lengths.sum())), np.concatenate([[0], np.cumsum(lengths)])
    )
    return targets, exclude


@pytest.mark.parametrize("num_columns, history", [(2_001, 40), (61, 30), (12, 11)])
def test_uniform_negatives_are_distinct_candidates(num_columns: int, history: int) -> None:
    # 2,001 columns: the rejection path; 61 with up to 30 history items: both paths (fewer than
    # 2 × 20 or than half the items left); 12: the fallback, every row short (padded with 0).
    k = 20
    targets, exclude = _uniform_rows(num_columns, 300, seed=num_columns, history=history)
    seeds = ev.row_seeds(np.random.default_rng(0), len(targets))
    negatives = ev.uniform_negatives(num_columns, targets, exclude, seeds, k)
    assert negatives.shape == (300, k) and negatives.dtype == np.int64
    candidates = ev.candidate_mask(num_columns, targets, exclude)
    for row, allowed in zip(negatives, candidates):
        drawn = row[row != 0]
        assert len(set(drawn.tolist())) == len(drawn) == min(k, allowed.sum())  # distinct, all used
        assert allowed[drawn].all() and ((drawn >= 1) & (drawn < num_columns)).all()
        assert (row[len(drawn):] == 0).all()  # padding only in the unused slots at the end
    counts = candidates.sum(axis=1)
    small = (counts < 2 * k) | (2 * counts < num_columns - 1)
    assert small.any() == (num_columns < 2_001) and (~small).any() == (num_columns > 12)


def _chi_square(samples: np.ndarray, cells: int) -> float:
    """Pearson's statistic of the rows of samples (sorted tuples) against equal frequencies."""
    _, counts = np.unique(np.sort(samples, axis=1), axis=0, return_counts=True)
    expected = len(samples) / cells
    missing = cells - len(counts)  # cells never drawn contribute their whole expectation
    return float(((counts - expected) ** 2 / expected).sum() + missing * expected)


@pytest.mark.parametrize(
    "num_columns, excluded, k, n",
    [(21, [5, 7, 11, 5], 4, 20_000), (13, [4], 8, 4_000)],  # rejection path; fallback path
)
def test_uniform_negatives_are_uniform_subsets(num_columns: int, excluded, k: int, n: int) -> None:
    """Every k-subset of a row's candidates equally likely: chi-square over all subsets."""
    target = 3
    candidates = sorted(set(range(1, num_columns)) - set(excluded) - {target})
    cells = math.comb(len(candidates), k)  # 1,820 subsets of 16; 45 of 10
    assert (len(candidates) < 2 * k) == (num_columns == 13)  # the second case falls back
    exclude = ev.Exclusions.from_arrays([np.array(excluded)] * n)
    seeds = ev.row_seeds(np.random.default_rng(11), n)
    negatives = ev.uniform_negatives(num_columns, np.full(n, target), exclude, seeds, k)
    assert np.isin(negatives, candidates).all()
    bound = cells + 6 * math.sqrt(2 * cells)  # df = cells - 1: mean ≈ cells, sd ≈ sqrt(2 cells)
    assert _chi_square(negatives, cells) < bound
    # Each item's frequency too (k / c of the rows).
    frequencies = np.bincount(negatives.ravel(), minlength=num_columns)[candidates] / n
    np.testing.assert_allclose(frequencies, k / len(candidates), atol=0.03)
    # The bound has power: a 20% tilt towards even items (weighted Gumbel draws) fails it.
    weights = np.array([0.0] + [1.2 if i % 2 == 0 else 1.0 for i in range(1, num_columns)])
    biased = ev.sample_negatives(
        np.full(n, target), weights, k, np.random.default_rng(11), [np.array(excluded)] * n
    )
    assert _chi_square(biased, cells) > bound


def test_uniform_negatives_do_not_depend_on_batches_or_first_pass_length(monkeypatch) -> None:
    num_columns, k = 301, 100  # histories up to 120 of 300 items: some rows fall back
    targets, exclude = _uniform_rows(num_columns, 500, seed=5, history=120)
    seeds = ev.row_seeds(np.random.default_rng(4), len(targets))
    counts = ev.candidate_mask(num_columns, targets, exclude).sum(axis=1)
    assert (counts < 2 * k).any() and (counts >= 2 * k).any()  # both paths
    whole = ev.uniform_negatives(num_columns, targets, exclude, seeds, k)
    parts = [
        ev.uniform_negatives(num_columns, targets[a:b], exclude[a:b], seeds[a:b], k)
        for a, b in [(0, 1), (1, 77), (77, 300), (300, 500)]
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(whole, ev.uniform_negatives(num_columns, targets, exclude, seeds, k))
    # A first pass of 1 draw per row: every row comes up short and is redrawn longer (doubling).
    monkeypatch.setattr(ev, "_initial_draws", lambda candidates, items, k: 1)
    np.testing.assert_array_equal(ev.uniform_negatives(num_columns, targets, exclude, seeds, k), whole)
    other = ev.uniform_negatives(num_columns, targets, exclude, seeds + np.uint64(1), k)
    assert (other != whole).any(axis=1).mean() > 0.9  # other seeds, other negatives


def test_uniform_sampling_uses_the_per_row_sampler() -> None:
    """sample_negatives with equal weights = uniform_negatives with rng's row seeds."""
    targets, exclude = _uniform_rows(500, 50, seed=6, history=20)
    negatives = ev.sample_negatives(targets, np.ones(500), 30, np.random.default_rng(8), exclude)
    seeds = ev.row_seeds(np.random.default_rng(8), 50)
    np.testing.assert_array_equal(negatives, ev.uniform_negatives(500, targets, exclude, seeds, 30))
    with pytest.raises(ValueError, match="outside"):
        ev.uniform_negatives(10, np.array([1]), ev.Exclusions.from_arrays([np.array([10])]),
                             seeds[:1], 3)


def test_sampled_metrics_are_seeded() -> None:
    scores = np.random.default_rng(3).normal(size=(40, 30))
    targets = np.arange(40) % 29 + 1

    def run(seed: int) -> dict[str, float]:
        return ev.sampled_ranking_metrics(
            scores, targets, ks=(5,), rng=np.random.default_rng(seed), num_negatives=10
        )

    assert run(7) == run(7)
    assert run(7) != run(8)
    assert set(run(7)) == {"sampled_hr@5", "sampled_ndcg@5", "sampled_mrr"}


def test_sampling_configuration_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="item_popularity"):
        ev.sampled_ranking_metrics(ROW[None], np.array([1]), rng=rng, sampling="popularity")
    with pytest.raises(ValueError, match="uniform"):
        ev.sampled_ranking_metrics(ROW[None], np.array([1]), rng=rng, sampling="zipf")


Case = tuple[np.ndarray, np.ndarray, list[np.ndarray]]  # scores [n, V], targets [n], exclude


@st.composite
def ranking_cases(draw: st.DrawFn) -> Case:
    """Small score matrices with many ties, targets and random histories."""
    n = draw(st.integers(1, 6))
    vocab = draw(st.integers(3, 12))
    values = st.integers(-3, 3)
    scores = np.array(draw(st.lists(values, min_size=n * vocab, max_size=n * vocab)), float)
    targets = np.array(draw(st.lists(st.integers(1, vocab - 1), min_size=n, max_size=n)))
    items = st.lists(st.integers(1, vocab - 1), max_size=vocab, unique=True)
    exclude = [np.array(draw(items), dtype=np.int64) for _ in range(n)]
    return scores.reshape(n, vocab), targets, exclude


@settings(max_examples=60, deadline=None)
@given(case=ranking_cases(), seed=st.integers(0, 2**16))
def test_metric_properties(case: Case, seed: int) -> None:
    scores, targets, exclude = case
    ks = (1, 2, 5)
    full = ev.ranking_metrics(scores, targets, ks, exclude)
    assert all(0 <= value <= 1 for value in full.values())
    for small, large in zip(ks, ks[1:]):
        assert full[f"hr@{small}"] <= full[f"hr@{large}"]
        assert full[f"ndcg@{small}"] <= full[f"ndcg@{large}"]
    assert all(full[f"ndcg@{k}"] <= full[f"hr@{k}"] for k in ks)
    weights = np.ones(scores.shape[1])
    negatives = ev.sample_negatives(targets, weights, 3, np.random.default_rng(seed), exclude)
    sampled = ev.sampled_ranks(scores, targets, negatives)
    ranks = ev.full_ranks(scores, targets, exclude)
    assert (sampled <= ranks).all()
    assert (ranks <= ev.candidate_mask(scores.shape[1], targets, exclude).sum(axis=1) + 1).all()


# ---------------------------------------------------------------- protocol


def _split() -> LeaveOneOutSplit:
    """Users 0 and 2 have held-out items; user 2's test item 2 is also in its history."""
    sequences = (np.array([1, 2, 3, 4, 5]), np.array([4]), np.array([2, 5, 2, 6, 2]))
    data = SequenceData(
        users=("a", "b", "c"), sequences=sequences, num_items=6, item_ids=tuple("uvwxyz")
    )
    train = (np.array([1, 2, 3]), np.array([4]), np.array([2, 5, 2]))
    return LeaveOneOutSplit(data, train, validation=np.array([4, 0, 6]), test=np.array([5, 0, 2]))


def test_validation_inputs() -> None:
    users, inputs, targets, exclude = ev.evaluation_inputs(_split(), "validation", max_len=2)
    assert users.tolist() == [0, 2]
    assert inputs.tolist() == [[2, 3], [5, 2]] and inputs.dtype == np.int32
    assert targets.tolist() == [4, 6]
    assert [sorted(set(e.tolist())) for e in exclude] == [[1, 2, 3], [2, 5]]


def test_test_inputs_append_the_validation_item_and_keep_the_target() -> None:
    # The window keeps the last 3 items; exclusion covers the whole history (item 1 included).
    users, inputs, targets, exclude = ev.evaluation_inputs(_split(), "test", max_len=3)
    assert inputs.tolist() == [[2, 3, 4], [5, 2, 6]]
    assert targets.tolist() == [5, 2]
    assert [sorted(set(e.tolist())) for e in exclude] == [[1, 2, 3, 4], [5, 6]]


def test_popularity_scores_count_training_items() -> None:
    counts = ev.popularity_scores(_split().train, num_items=6)
    assert counts.tolist() == [0, 1, 3, 1, 1, 1, 0]


def test_evaluate_popularity_baseline() -> None:
    split = _split()
    popularity = ev.popularity_scores(split.train, 6).astype(float)

    def score_fn(inputs: np.ndarray) -> np.ndarray:
        return np.tile(popularity, (len(inputs), 1))

    def run(batch_size: int) -> dict[str, float]:
        return ev.evaluate(
            score_fn, split, "test", max_len=3, ks=(1, 3), num_negatives=2,
            negative_sampling="popularity", rng=np.random.default_rng(5),
            item_popularity=popularity, batch_size=batch_size,
        )

    metrics = run(batch_size=1)
    # User 0, target 5 (count 1), history {1,2,3,4}: only item 6 (count 0) is left → rank 1.
    # User 2, target 2 (count 3), history {5, 6}: items 1, 3, 4 have count 1 → rank 1.
    assert metrics["hr@1"] == metrics["mrr"] == 1.0 and metrics["users"] == 2
    assert metrics == run(batch_size=100)  # draws form one stream: batching changes nothing
    assert set(metrics) >= {"sampled_hr@1", "sampled_ndcg@3", "sampled_mrr"}


def test_evaluate_requires_rng_for_sampled_metrics() -> None:
    with pytest.raises(ValueError, match="rng"):
        ev.evaluate(lambda x: np.zeros((len(x), 7)), _split(), "test", max_len=3)
    metrics = ev.evaluate(lambda x: np.zeros((len(x), 7)), _split(), "test", 3, num_negatives=0)
    assert "sampled_mrr" not in metrics


def test_score_last_position_matches_the_model() -> None:
    model = models.build_model("sasrec", 9, seed=0, embedding_dim=8, num_blocks=1, max_len=4)
    inputs = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [0, 0, 0, 9]], np.int32)
    scores = ev.score_last_position(model, inputs, batch_size=2)
    expected = model(inputs, training=False).numpy()[:, -1, :]
    assert scores.shape == (3, 10)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- at scale


def _random_split(users: int, num_items: int, seed: int = 0) -> LeaveOneOutSplit:
    """Random sequences of 1..25 items (some users too short to evaluate), repeats included."""
    from tff_rec.data import leave_one_out

    rng = np.random.default_rng(seed)
    sequences = tuple(
        rng.integers(1, num_items + 1, size=rng.integers(1, 26)).astype(np.int32)
        for _ in range(users)
    )
    data = SequenceData(
        users=tuple(map(str, range(users))), sequences=sequences, num_items=num_items,
        item_ids=tuple(map(str, range(num_items))),
    )
    return leave_one_out(data)


def _embedding_scores(num_items: int, seed: int = 1):
    """A numpy 'model': the last input item's embedding dotted with every item's, float32.

    The embeddings are integers below 1,000 in size, so every dot product is exact in float32
    whatever order BLAS sums it in: a batch of 25 rows and one of 400 (different kernels, and
    threads under load) give the same scores to the last bit, as a row-wise model should.
    """
    table = np.random.default_rng(seed).integers(-999, 1000, size=(num_items + 2, 8))
    table = table.astype(np.float32)

    def score_fn(inputs: np.ndarray) -> np.ndarray:
        return table[inputs[:, -1]] @ table[: num_items + 1].T

    return score_fn


def _per_user_inputs(split: LeaveOneOutSplit, stage: str, max_len: int):
    """The protocol as first written, one user at a time (the vectorized version must match)."""
    users = split.evaluation_users()
    histories, targets = [], []
    for u in users:
        if stage == "validation":
            history, target = split.train[u], int(split.validation[u])
        else:
            history = np.append(split.train[u], split.validation[u]).astype(np.int32)
            target = int(split.test[u])
        histories.append(history)
        targets.append(target)
    exclude = [np.setdiff1d(h, [t]) for h, t in zip(histories, targets)]
    return users, histories, np.array(targets), exclude


@pytest.mark.parametrize("stage", ["validation", "test"])
@pytest.mark.parametrize("masked", [False, True])
def test_vectorized_inputs_match_the_per_user_protocol(stage: str, masked: bool) -> None:
    split = _random_split(300, 40)
    builder = (
        (lambda h, length: models.masked_history_inputs(h, length, 40)) if masked else models.left_pad
    )
    users, inputs, targets, exclude = ev.evaluation_inputs(split, stage, 6, builder)
    expected_users, histories, expected_targets, expected_exclude = _per_user_inputs(split, stage, 6)
    assert users.tolist() == expected_users.tolist() and len(users) > 200
    assert targets.tolist() == expected_targets.tolist()
    np.testing.assert_array_equal(inputs, builder(histories, 6))
    assert isinstance(exclude, ev.Exclusions) and len(exclude) == len(users)
    assert [np.unique(e).tolist() for e in exclude] == [e.tolist() for e in expected_exclude]
    np.testing.assert_array_equal(
        ev.candidate_mask(41, targets, exclude), ev.candidate_mask(41, targets, expected_exclude)
    )


def test_exclusions_slice_and_validate() -> None:
    exclude = ev.Exclusions.from_arrays([np.array([1, 2]), np.array([], np.int64), np.array([3])])
    assert len(exclude) == 3 and exclude[2].tolist() == [3] and exclude[-3].tolist() == [1, 2]
    tail = exclude[1:]
    assert len(tail) == 2 and tail.offsets.tolist() == [0, 0, 1] and tail[1].tolist() == [3]
    assert len(exclude[5:]) == 0
    with pytest.raises(IndexError):
        exclude[3]
    with pytest.raises(ValueError, match="offsets"):
        ev.Exclusions(np.array([1, 2]), np.array([0, 3]))
    with pytest.raises(ValueError, match="offsets"):
        ev.Exclusions(np.array([1, 2]), np.array([1, 2]))


def test_batch_rows_follow_the_memory_cap() -> None:
    assert ev.batch_rows(301, batch_size=512) == 512  # small catalogue: batch_size decides
    # Games (23,716 columns) at 512 MiB: 565 rows; a million columns: 13; one row at least.
    assert ev.batch_rows(23_716, batch_size=100_000) == 2**29 // (23_716 * ev.BYTES_PER_SCORE) == 565
    assert ev.batch_rows(10**6, 512) == 13
    assert ev.batch_rows(10**9, 512) == 1
    # Uniform sampling or none: 16 bytes a score, 1,414 rows on Games.
    assert ev.batch_rows(23_716, 100_000, bytes_per_score=ev.BYTES_PER_SCORE_UNIFORM) == 1_414
    with pytest.raises(ValueError, match="memory_cap"):
        ev.batch_rows(10, 5, memory_cap=0)
    with pytest.raises(ValueError, match="batch_size"):
        ev.batch_rows(10, 0)


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_bounded_batches_give_the_metrics_of_one_unbounded_batch(sampling: str) -> None:
    num_items, max_len = 3_000, 8
    split = _random_split(400, num_items, seed=2)
    score = _embedding_scores(num_items)
    popularity = ev.popularity_scores(split.train, num_items).astype(float) + 1

    def run(batch_size: int, memory_cap: int) -> tuple[dict[str, float], list[int]]:
        sizes: list[int] = []

        def score_fn(inputs: np.ndarray) -> np.ndarray:
            sizes.append(len(inputs))
            return score(inputs)

        metrics = ev.evaluate(
            score_fn, split, "test", max_len, ks=(1, 10, 50), num_negatives=100,
            negative_sampling=sampling, rng=np.random.default_rng(9), item_popularity=popularity,
            batch_size=batch_size, memory_cap=memory_cap,
        )
        return metrics, sizes

    users = len(split.evaluation_users())
    unbounded, one = run(batch_size=users, memory_cap=2**40)
    per_score = ev.BYTES_PER_SCORE_UNIFORM if sampling == "uniform" else ev.BYTES_PER_SCORE
    cap = 25 * (num_items + 1) * per_score + 1  # 25 rows fit, 26 do not
    bounded, several = run(batch_size=users, memory_cap=cap)
    assert one == [users] and set(several[:-1]) == {25} and sum(several) == users
    assert bounded == unbounded  # exactly: same ranks, same negatives (per-user or one stream)
    assert unbounded["users"] == users
    _, inputs, targets, exclude = ev.evaluation_inputs(split, "test", max_len)
    full = ev.ranking_metrics(score(inputs), targets, (1, 10, 50), list(exclude))
    assert {k: v for k, v in unbounded.items() if k in full} == full  # as the candidate-mask path


@pytest.mark.parametrize("sampling, rows", [("uniform", 26), ("popularity", 10)])
def test_bounded_batches_stay_within_the_cap(sampling: str, rows: int) -> None:
    """NumPy's allocations (traced by tracemalloc) of a whole evaluation stay under the cap."""
    import tracemalloc

    num_items = 20_000
    split = _random_split(200, num_items, seed=3)
    score = _embedding_scores(num_items)
    popularity = ev.popularity_scores(split.train, num_items).astype(float) + 1
    cap = 8 * 2**20
    per_score = ev.BYTES_PER_SCORE_UNIFORM if sampling == "uniform" else ev.BYTES_PER_SCORE
    assert ev.batch_rows(num_items + 1, 512, cap, per_score) == rows
    tracemalloc.start()
    try:
        ev.evaluate(
            score, split, "test", 8, num_negatives=100, negative_sampling=sampling,
            rng=np.random.default_rng(0), item_popularity=popularity, memory_cap=cap,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < cap  # one unbounded batch of ~190 users would take ~130 MB


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "gru4rec"])
def test_last_position_scores_rank_like_the_full_model(name: str) -> None:
    num_items = 50
    model = models.build_model(name, num_items, seed=0, embedding_dim=16, max_len=6)
    rng = np.random.default_rng(4)
    inputs = rng.integers(0, num_items + 1, size=(40, 6)).astype(np.int32)
    inputs[:, -1] = rng.integers(1, num_items + 1, size=40)  # a real last item (or [MASK] below)
    if name == "bert4rec":
        inputs[:, -1] = models.mask_token(num_items)
    scores = ev.score_last_position(model, inputs, batch_size=16)
    expected = model(inputs, training=False).numpy()[:, -1, :]
    assert scores.shape == (40, num_items + 1) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    targets = rng.integers(1, num_items + 1, size=40)
    exclude = [row[row > 0] for row in inputs]
    exclude = [e[e <= num_items] for e in exclude]
    np.testing.assert_array_equal(
        ev.full_ranks(scores, targets, exclude), ev.full_ranks(expected, targets, exclude)
    )


def test_user_sample_is_seeded() -> None:
    users = np.arange(0, 2_000, 2)
    sample = ev.user_sample(users, 100, seed=5)
    assert len(sample) == 100 and np.isin(sample, users).all()
    assert (np.diff(sample) > 0).all()  # in the users' order, no repeats
    np.testing.assert_array_equal(sample, ev.user_sample(users, 100, seed=5))
    assert not np.array_equal(sample, ev.user_sample(users, 100, seed=6))
    np.testing.assert_array_equal(ev.user_sample(users, None, seed=5), users)
    np.testing.assert_array_equal(ev.user_sample(users, 5_000, seed=5), users)  # all, when fewer
    with pytest.raises(ValueError, match="validation_users"):
        ev.user_sample(users, 0, seed=5)


def test_evaluate_on_a_user_sample() -> None:
    split = _random_split(300, 40)
    score = _embedding_scores(40)
    sample = ev.user_sample(split.evaluation_users(), 50, seed=1)
    metrics = ev.evaluate(score, split, "validation", 6, num_negatives=0, users=sample)
    assert metrics["users"] == 50
    ranks_all = ev.full_ranks(*_scores_of(split, score, None))
    ranks_sample = ev.full_ranks(*_scores_of(split, score, sample))
    position = np.searchsorted(split.evaluation_users(), sample)
    np.testing.assert_array_equal(ranks_sample, ranks_all[position])
    assert metrics["mrr"] == pytest.approx(np.mean(1 / ranks_sample))
    with pytest.raises(ValueError, match="held-out"):
        ev.evaluate(score, split, "validation", 6, num_negatives=0, users=np.array([10**6]))


def _scores_of(split: LeaveOneOutSplit, score, users):
    _, inputs, targets, exclude = ev.evaluation_inputs(split, "validation", 6, users=users)
    return score(inputs), targets, exclude


def test_runner_validates_on_the_sample_and_tests_on_all(tmp_path) -> None:
    from tff_rec import protocol, runner, spec

    def run(seed: int, validation_users) -> dict:
        evaluation = {"ks": [10], "num_negatives": 20}
        if validation_users is not None:
            evaluation["validation_users"] = validation_users
        task = spec.resolve_task({
            "name": "sample", "data": {"dataset": "synthetic", "users": 150, "items": 40,
                                       "mean_length": 8},
            "algorithm": {"name": "popularity"}, "evaluation": evaluation,
        })
        return task, runner.run_task(task, seed, tmp_path, progress=False).summary

    task, summary = run(0, 30)
    untouched, _ = run(0, None)
    assert untouched.hash != task.hash  # a sample is another task; absent keeps the old hash
    assert "validation_users" not in json.dumps(spec._hashed_sections(untouched.sections))
    users = summary["users"]
    assert users["validated"] == summary["validation"]["users"] == 30
    assert users["evaluated"] == summary["test"]["users"] > 100
    data = prepare(task, 0)
    assert protocol.validation_users(task, 0, data).tolist() == protocol.validation_users(task, 0, data).tolist()
    assert protocol.validation_users(task, 0, data).tolist() != protocol.validation_users(task, 1, data).tolist()
    table = results.display_table(results.compare(results.load_runs([tmp_path])))
    assert set(table["validation users"]) == {f"30 of {users['evaluated']}", ""}
