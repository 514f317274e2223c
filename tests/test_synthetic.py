"""The synthetic source: deterministic, well-formed, and sequentially learnable."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from tff_rec.data import DataError, generate, leave_one_out, load, to_sequences
from tff_rec.data.synthetic import DEFAULT_SIZES


@pytest.fixture(scope="module")
def default_log():
    return generate(0)


def hit_rate_at_10(split, score) -> float:
    """HR@10 of the test item, ranking all items except padding and the user's history.

    Ties count against the target (its rank is the number of items scoring at least as high).
    """
    hits = []
    for user in split.evaluation_users():
        history = np.append(split.train[user], split.validation[user])
        scores = score(history).astype(float)
        scores[0] = -np.inf
        scores[history] = -np.inf
        target = split.test[user]
        rank = np.sum(scores >= scores[target]) - 1
        hits.append(rank < 10)
    return float(np.mean(hits))


def test_markov_predictor_beats_popularity_by_far(default_log):
    split = leave_one_out(to_sequences(default_log))
    size = split.data.num_items + 1
    popularity = np.zeros(size)
    bigrams = np.zeros((size, size))
    for sequence in split.train:
        np.add.at(popularity, sequence, 1)
        np.add.at(bigrams, (sequence[:-1], sequence[1:]), 1)
    # popularity breaks ties among unseen successors, scaled so it never outranks a count
    tie_break = popularity / (popularity.max() + 1)

    popularity_hr = hit_rate_at_10(split, lambda history: popularity)
    markov_hr = hit_rate_at_10(split, lambda history: bigrams[history[-1]] + tie_break)

    # measured with seed 0: popularity 0.18, Markov 0.75
    assert 0.05 < popularity_hr < 0.3
    assert markov_hr > 0.6
    assert markov_hr > 3 * popularity_hr


def test_groups_differ_in_category_mix(default_log):
    events = default_log.events
    group = default_log.user_attributes["group"].reindex(events["user"].astype(str)).to_numpy()
    category = default_log.item_categories.reindex(events["item"].astype(str)).to_numpy()
    mix = pd.crosstab(group, category, normalize="index")
    assert list(mix.index) == ["g0", "g1", "g2", "g3"]
    assert list(mix.columns) == [f"c{k}" for k in range(10)]
    # measured with seed 0: total variation distances 0.14 to 0.22 between group pairs
    for first, second in itertools.combinations(mix.index, 2):
        total_variation = 0.5 * np.abs(mix.loc[first] - mix.loc[second]).sum()
        assert total_variation > 0.1, (first, second, total_variation)


def test_default_shape(default_log):
    events = default_log.events
    lengths = events.groupby("user", observed=True).size()
    assert len(lengths) == DEFAULT_SIZES["users"]
    assert events["item"].nunique() == DEFAULT_SIZES["items"]
    assert lengths.min() >= 3
    assert abs(lengths.mean() - DEFAULT_SIZES["mean_length"]) < 2
    assert lengths.std() > 10  # lengths vary, not all close to the mean
    assert set(default_log.item_categories) == {f"c{k}" for k in range(10)}
    assert default_log.user_attributes["group"].value_counts().to_dict() == {
        "g0": 250, "g1": 250, "g2": 250, "g3": 250,
    }
    item_counts = events["item"].value_counts()
    assert item_counts.nlargest(10).sum() / len(events) < 0.2  # popularity is not dominant
    for _, rows in events.groupby("user", observed=True):
        assert rows["timestamp"].is_monotonic_increasing
        assert rows["timestamp"].is_unique
        assert rows["item"].is_unique  # no repeated items within a user


def test_same_seed_same_data_other_seed_other_data():
    first, again, other = generate(7, users=60), generate(7, users=60), generate(8, users=60)
    pd.testing.assert_frame_equal(first.events, again.events)
    pd.testing.assert_series_equal(first.item_categories, again.item_categories)
    pd.testing.assert_frame_equal(first.user_attributes, again.user_attributes)
    assert not first.events.equals(other.events)
    assert not first.item_categories.equals(other.item_categories)


def test_sizes_are_honoured_and_names_sort():
    log = generate(3, users=30, items=40, mean_length=5, categories=12, groups=3)
    assert log.events["user"].nunique() == 30
    assert sorted(set(log.item_categories)) == [f"c{k:02d}" for k in range(12)]
    assert set(log.user_attributes["group"]) == {"g0", "g1", "g2"}
    assert list(log.user_attributes.index) == [str(u) for u in range(1, 31)]


def test_registry_passes_params():
    via_registry = load("synthetic", None, {"seed": 5, "users": 20, "items": 30})
    direct = generate(5, users=20, items=30)
    pd.testing.assert_frame_equal(via_registry.events, direct.events)


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"users": 0}, "users must be between 1 and 10000000, found 0"),
        ({"users": 10**15}, "users must be between 1 and 10000000, found 1000000000000000"),
        ({"users": 10**6, "mean_length": 200}, "expected interactions; at most 100000000"),
        ({"mean_length": 2}, "mean_length must be between 3 and 300, found 2"),
        (
            {"items": 20, "mean_length": 10, "categories": 7},
            "categories must be between 1 and 6, found 7",
        ),
        ({"groups": 2.5}, "groups must be an integer, found 2.5"),
    ],
)
def test_bad_sizes(sizes, message):
    with pytest.raises(DataError, match=message):
        generate(0, **sizes)
