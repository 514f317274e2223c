"""Partitioners: coverage, disjointness, determinism, client counts, scheme shapes and input errors."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partition_splits import make_split, splits, synthetic_split
from tff_rec.partition import SCHEMES, Partition, partition, resolve_params, scheme_params
from tff_rec.partition.users import attribute_values, dominant_categories, training_users

PROPERTY_SETTINGS = settings(max_examples=25, deadline=None)


def _client_count(split) -> st.SearchStrategy[int]:
    return st.integers(1, len(training_users(split)))


def _group_count(split) -> int:
    return len(set(attribute_values(split.data, "group")[training_users(split)]))


@st.composite
def _pathological_params(draw: st.DrawFn, split) -> dict:
    n = len(training_users(split))
    per_client = draw(st.integers(1, min(n, len(split.data.category_names))))
    return {"classes_per_client": per_client, "num_clients": draw(st.integers(1, n // per_client))}


# Scheme → strategy of parameters the scheme can satisfy on a split.
VALID_PARAMS = {
    "natural": lambda split: st.just({}),
    "iid": lambda split: st.fixed_dictionaries({"num_clients": _client_count(split)}),
    "dirichlet": lambda split: st.fixed_dictionaries(
        {"num_clients": _client_count(split), "alpha": st.sampled_from([0.01, 0.1, 1.0, 100.0])}
    ),
    "quantity": lambda split: st.fixed_dictionaries(
        {"num_clients": _client_count(split), "law": st.sampled_from(["power", "lognormal"]), "skew": st.floats(0, 3)}
    ),
    "attribute": lambda split: st.fixed_dictionaries(
        {"attribute": st.just("group"), "num_clients": st.none() | st.integers(1, _group_count(split))}
    ),
    "pathological": _pathological_params,
}


def _expected_clients(scheme: str, split, params: dict) -> int:
    if scheme == "natural":
        return len(training_users(split))
    if scheme == "attribute" and params["num_clients"] is None:
        return _group_count(split)
    return params["num_clients"]


def _same(a: Partition, b: Partition) -> bool:
    return (
        (a.scheme, a.privacy_unit, a.params) == (b.scheme, b.privacy_unit, b.params)
        and list(a.clients) == list(b.clients)
        and all(np.array_equal(a.clients[c], b.clients[c]) for c in a.clients)
    )


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@PROPERTY_SETTINGS
@given(data=st.data(), split=splits(), seed=st.integers(0, 2**32 - 1))
def test_every_training_user_in_exactly_one_nonempty_client(scheme, data, split, seed):
    params = data.draw(VALID_PARAMS[scheme](split), label="params")
    result = partition(split, scheme, seed, **params)

    members = np.concatenate(list(result.clients.values()))
    assert np.array_equal(np.sort(members), training_users(split))  # covered, and no user twice
    assert all(m.size > 0 and m.dtype == np.int64 and np.all(np.diff(m) > 0) for m in result.clients.values())
    assert result.num_clients == _expected_clients(scheme, split, params)
    assert result.privacy_unit == SCHEMES[scheme].privacy_unit
    assert result.params == resolve_params(scheme, params)
    assert _same(result, partition(split, scheme, seed, **params))


def test_client_ids_are_zero_padded_or_user_ids():
    split = synthetic_split(30)
    assert list(partition(split, "iid", 0, num_clients=3).clients) == ["client-0000", "client-0001", "client-0002"]
    natural = partition(split, "natural", 0)
    assert natural.privacy_unit == "user"
    assert sorted(natural.clients) == sorted(split.data.users)
    assert all(split.data.users[natural.clients[cid][0]] == cid for cid in natural.clients)


@pytest.mark.parametrize(("scheme", "params"), [("natural", {}), ("iid", {"num_clients": 3})])
def test_users_without_training_prefix_are_left_out(scheme, params):
    split = make_split([[1, 2, 3], [], [2], [3, 1, 2, 1]], num_items=3, item_category=[0, 1, 1], groups=["a"] * 4)
    assert np.array_equal(partition(split, scheme, 0, **params).users(), [0, 2, 3])


@pytest.mark.parametrize(
    ("scheme", "params"),
    [
        ("iid", {"num_clients": 4}),
        ("dirichlet", {"num_clients": 4, "alpha": 0.3}),
        ("quantity", {"num_clients": 4, "skew": 2.0}),
        ("attribute", {"attribute": "group", "num_clients": 2}),
        ("pathological", {"num_clients": 4, "classes_per_client": 2}),
    ],
)
def test_held_out_items_do_not_influence_the_partition(scheme, params):
    split = synthetic_split(60, seed=1)
    rng = np.random.default_rng(7)
    # Same training prefixes, different validation/test items (and sequence tails).
    tails = rng.integers(1, split.data.num_items + 1, size=(split.data.num_users, 2)).astype(np.int32)
    sequences = tuple(np.concatenate([t, tail]) for t, tail in zip(split.train, tails))
    other = dataclasses.replace(
        split,
        data=dataclasses.replace(split.data, sequences=sequences),
        validation=tails[:, 0],
        test=tails[:, 1],
    )
    assert _same(partition(split, scheme, 3, **params), partition(other, scheme, 3, **params))


@PROPERTY_SETTINGS
@given(split=splits(min_users=2), data=st.data())
def test_iid_client_sizes_differ_by_at_most_one(split, data):
    k = data.draw(st.integers(1, len(training_users(split))))
    sizes = [len(m) for m in partition(split, "iid", 0, num_clients=k).clients.values()]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("law", ["power", "lognormal"])
def test_quantity_without_skew_is_balanced(law):
    sizes = [len(m) for m in partition(synthetic_split(103), "quantity", 5, num_clients=10, law=law, skew=0).clients.values()]
    assert max(sizes) - min(sizes) <= 1


@PROPERTY_SETTINGS
@given(split=splits(min_users=2), data=st.data())
def test_attribute_clients_never_share_a_value(split, data):
    users = training_users(split)
    values = attribute_values(split.data, "group")
    num_values = len(set(values[users]))
    k = data.draw(st.none() | st.integers(1, num_values))
    result = partition(split, "attribute", 0, attribute="group", num_clients=k)
    value_sets = [set(values[m]) for m in result.clients.values()]
    assert sum(len(s) for s in value_sets) == num_values  # each value in exactly one client
    if k is None:
        assert all(len(s) == 1 for s in value_sets)
        assert [next(iter(s)) for s in value_sets] == sorted(set(values[users]))


def test_attribute_merges_the_smallest_values_first():
    # Value sizes a:5, b:1, c:2, d:3: first b+c (1 + 2), then {b, c}+d (3 + 3); clients ordered by value.
    groups = ["a"] * 5 + ["b"] + ["c"] * 2 + ["d"] * 3
    split = make_split([[1]] * len(groups), num_items=1, groups=groups)
    three = partition(split, "attribute", 0, attribute="group", num_clients=3)
    assert [sorted(set(np.array(groups)[m])) for m in three.clients.values()] == [["a"], ["b", "c"], ["d"]]
    two = partition(split, "attribute", 0, attribute="group", num_clients=2)
    assert [sorted(set(np.array(groups)[m])) for m in two.clients.values()] == [["a"], ["b", "c", "d"]]


def test_zip_region_is_the_first_digit_of_the_zip_code():
    zips = ["55117", "55455-1234", "02139", "T8H1N", None]
    split = make_split([[1]] * 5, num_items=1, zips=zips)
    result = partition(split, "attribute", 0, attribute="zip_region")
    assert [m.tolist() for m in result.clients.values()] == [[2], [0, 1], [4], [3]]  # 0, 5, <missing>, other


@pytest.mark.parametrize(("num_clients", "classes_per_client"), [(4, 2), (2, 2), (8, 1), (2, 4)])
def test_pathological_clients_hold_at_most_classes_per_client_categories(num_clients, classes_per_client):
    # 4 categories × 8 single-category users: every shard lies inside one category.
    sequences = [[c + 1] * 3 for c in range(4) for _ in range(8)]
    split = make_split(sequences, num_items=4, item_category=[0, 1, 2, 3])
    result = partition(split, "pathological", 11, num_clients=num_clients, classes_per_client=classes_per_client)
    dominant = dominant_categories(split)
    assert result.num_clients == num_clients
    assert all(1 <= len(set(dominant[m])) <= classes_per_client for m in result.clients.values())


def test_dirichlet_fills_empty_clients():
    split = synthetic_split(25)
    for seed in range(10):
        result = partition(split, "dirichlet", seed, num_clients=20, alpha=0.01)
        assert result.num_clients == 20 and min(len(m) for m in result.clients.values()) >= 1


def test_dirichlet_small_alpha_concentrates_each_category():
    split = synthetic_split(400)
    dominant = dominant_categories(split)

    def top_client_share(alpha: float) -> float:
        result = partition(split, "dirichlet", 0, num_clients=10, alpha=alpha)
        owner = np.empty(split.data.num_users, dtype=np.int64)
        for k, members in enumerate(result.clients.values()):
            owner[members] = k
        return float(np.mean([np.bincount(owner[dominant == c]).max() / np.sum(dominant == c) for c in range(10)]))

    assert top_client_share(0.01) > 0.9 > top_client_share(100.0)


def test_seed_changes_the_partition():
    split = synthetic_split(50)
    a, b = (partition(split, "iid", seed, num_clients=5) for seed in (0, 1))
    assert not _same(a, b)


def test_scheme_params_lists_defaults():
    assert scheme_params("natural") == {}
    assert scheme_params("iid") == {"num_clients": 10}
    assert scheme_params("dirichlet") == {"num_clients": 10, "alpha": 0.5}
    assert scheme_params("quantity") == {"num_clients": 10, "law": "power", "skew": 1.0}
    assert scheme_params("attribute") == {"attribute": None, "num_clients": None}
    assert scheme_params("pathological") == {"num_clients": 10, "classes_per_client": 2}
    assert resolve_params("dirichlet", {"alpha": 2}) == {"num_clients": 10, "alpha": 2}


SPLIT = synthetic_split(943)
NO_CATEGORIES = make_split([[1, 2, 3]] * 5, num_items=3, groups=["a"] * 5)


@pytest.mark.parametrize(
    ("split", "scheme", "params", "message"),
    [
        (SPLIT, "dirichlet", {"alpha": 0}, "partition.alpha must be positive. Found 0."),
        (SPLIT, "dirichlet", {"alpha": float("nan")}, "partition.alpha must be finite. Found nan."),
        (SPLIT, "iid", {"num_clients": 5000},
         "partition.num_clients (5000) is larger than the number of training users (943)."),
        (SPLIT, "iid", {"num_clients": 0}, "partition.num_clients must be at least 1. Found 0."),
        (SPLIT, "iid", {"num_clients": 2.5}, "partition.num_clients must be an integer. Found 2.5."),
        (SPLIT, "iid", {"num_client": 3}, "partition.num_client is not a parameter of partition scheme 'iid'. Allowed: num_clients."),
        (SPLIT, "natural", {"num_clients": 3}, "partition.num_clients is not a parameter of partition scheme 'natural'. It takes none."),
        (SPLIT, "quantity", {"skew": -1}, "partition.skew must be nonnegative. Found -1."),
        (SPLIT, "quantity", {"law": "zipf"}, "partition.law must be one of power, lognormal. Found 'zipf'."),
        (SPLIT, "attribute", {"attribute": "occupation"},
         "partition.attribute 'occupation' is not a user attribute of this dataset; available: group."),
        (SPLIT, "attribute", {}, "partition.attribute is required; available: group."),
        (NO_CATEGORIES, "attribute", {"attribute": "age"},
         "partition.attribute 'age' is not a user attribute of this dataset; available: group."),
        (SPLIT, "attribute", {"attribute": "group", "num_clients": 5},
         "partition.num_clients (5) is larger than the number of 'group' values (4)."),
        (SPLIT, "pathological", {"classes_per_client": 11},
         "partition.classes_per_client (11) is larger than the number of item categories (10)."),
        (SPLIT, "pathological", {"num_clients": 500},
         "partition.num_clients × partition.classes_per_client (1000) is larger than the number of training users (943)."),
        (NO_CATEGORIES, "dirichlet", {}, "partition.scheme 'dirichlet' needs item categories, but this dataset has none."),
        (NO_CATEGORIES, "pathological", {},
         "partition.scheme 'pathological' needs item categories, but this dataset has none."),
        (SPLIT, "kmeans", {},
         "partition.scheme must be one of attribute, dirichlet, iid, natural, pathological, quantity. Found 'kmeans'."),
    ],
)
def test_bad_input_names_the_task_key(split, scheme, params, message):
    with pytest.raises(ValueError) as raised:
        partition(split, scheme, 0, **params)
    assert str(raised.value) == message


def test_attribute_on_dataset_without_attributes_lists_none():
    split = make_split([[1, 2, 3]] * 3, num_items=3)
    with pytest.raises(ValueError, match=r"available: none\.$"):
        partition(split, "attribute", 0, attribute="group")


def test_bad_seed_is_rejected():
    with pytest.raises(ValueError, match="seed must be a non-negative integer. Found -1."):
        partition(SPLIT, "iid", -1)
