"""Population scale: the vectorized data stage and partition store equal per-user references.

The pipeline at 10^6 users runs compiled and vectorized code (synthetic walks, k-core, split,
partition, store); each test here recomputes a stage the straightforward way, one user at a time,
on a small population and demands exactly the same result. Timings are in
benchmarks/population_scale.py, never here.
"""
from __future__ import annotations

import collections
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tff_rec import models, prepare, spec
from tff_rec.data import preprocess, split as split_stage, synthetic
from tff_rec.data.errors import DataError
from tff_rec.data.types import Interactions, events_frame
from tff_rec.partition import partition, store

USERS = 20_000  # the reduced population of the end-to-end test


# --- synthetic generation: the per-user loop it replaced ------------------------------------------


def reference_generate(seed, users=1000, items=300, mean_length=30, categories=10, groups=4):
    """`synthetic.generate`'s log as the per-user Python loop drew it (users, items, timestamps)."""
    rng = np.random.default_rng(seed)
    category = rng.permutation(np.arange(items) % categories)
    popularity = synthetic._popularity(rng, category, categories)
    taste = rng.dirichlet(np.full(categories, synthetic.TASTE_CONCENTRATION), size=groups)
    successors, transition = synthetic._transitions(rng, category, popularity)
    group = rng.permutation(np.arange(users) % groups)
    extra = mean_length - 3
    lengths = 3 + rng.negative_binomial(
        synthetic.LENGTH_DISPERSION,
        synthetic.LENGTH_DISPERSION / (synthetic.LENGTH_DISPERSION + extra), size=users)
    lengths = np.minimum(lengths, items)
    jump_weights = taste[:, category] * popularity

    def draw(weights):
        cumulative = np.cumsum(weights)
        return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))

    def walk(length, weights):
        unseen = np.ones(len(weights), dtype=bool)
        sequence = np.empty(length, dtype=np.int64)
        sequence[0] = draw(weights)
        unseen[sequence[0]] = False
        for step in range(1, length):
            current = sequence[step - 1]
            follow = transition[current] * unseen[successors[current]]
            if follow.any() and rng.random() < synthetic.FOLLOW:
                sequence[step] = successors[current][draw(follow)]
            else:
                sequence[step] = draw(weights * unseen)
            unseen[sequence[step]] = False
        return sequence

    sequences = [walk(length, jump_weights[g]) for length, g in zip(lengths, group)]
    timestamps = [
        synthetic.START_TIME + rng.integers(0, synthetic.YEAR)
        + np.cumsum(rng.integers(1, synthetic.MAX_GAP, length))
        for length in lengths
    ]
    return (np.repeat(np.arange(1, users + 1), lengths), np.concatenate(sequences) + 1,
            np.concatenate(timestamps))


SIZES = [
    {},  # the default size every shipped task uses
    {"users": 3000, "items": 40, "mean_length": 12, "categories": 4, "groups": 3},
    {"users": 800, "items": 9, "mean_length": 6, "categories": 2, "groups": 2},  # walks exhaust items
    {"users": 200, "items": 1000, "mean_length": 200, "categories": 20, "groups": 7},
    {"users": 300, "items": 12, "mean_length": 5, "categories": 1, "groups": 2},  # one category
]


@pytest.mark.parametrize("block", [None, 257])
@pytest.mark.parametrize("sizes", SIZES)
def test_generated_log_equals_the_per_user_loop(sizes, block, monkeypatch):
    """Same seed, same draws: bit-identical users, items and timestamps, across block boundaries."""
    if block is not None:
        monkeypatch.setattr(synthetic, "_BLOCK", block)
    seed = 3 + len(sizes)
    users, items, timestamps = reference_generate(seed, **sizes)
    events = synthetic.generate(seed, **sizes).events
    np.testing.assert_array_equal(events["user"].astype(str).to_numpy(), users.astype(str))
    np.testing.assert_array_equal(events["item"].astype(str).to_numpy(), items.astype(str))
    np.testing.assert_array_equal(events["timestamp"].to_numpy(), timestamps)


def test_generation_continues_the_generator_exactly_after_the_walks():
    """The rewind after each block leaves the generator where the loop left it, including a
    buffered 32-bit half, so the timestamps that follow are the loop's."""
    for has_half in (False, True):
        rng, reference = np.random.default_rng(11), np.random.default_rng(11)
        if has_half:
            rng.integers(0, 10, dtype=np.uint32), reference.integers(0, 10, dtype=np.uint32)
        block_state = rng.bit_generator.state
        rng.random(1000)
        synthetic._rewind(rng, block_state, 37)
        reference.random(37)
        assert rng.bit_generator.state == reference.bit_generator.state
        lengths = np.array([3, 5, 4])
        expected = np.concatenate([
            synthetic.START_TIME + reference.integers(0, synthetic.YEAR)
            + np.cumsum(reference.integers(1, synthetic.MAX_GAP, n)) for n in lengths])
        np.testing.assert_array_equal(synthetic._timestamps(rng, lengths), expected)


# --- preprocessing and split: per-user references --------------------------------------------------


def reference_sequences(events: pd.DataFrame, min_user: int, min_item: int) -> dict[str, list[str]]:
    """user id → item ids in time order (ties in row order), after the k-core, one user at a time."""
    rows = [(str(u), str(i), int(t), k) for k, (u, i, t) in
            enumerate(zip(events["user"], events["item"], events["timestamp"]))]
    while True:
        users = collections.Counter(r[0] for r in rows)
        items = collections.Counter(r[1] for r in rows)
        kept = [r for r in rows if users[r[0]] >= min_user and items[r[1]] >= min_item]
        if len(kept) == len(rows):
            break
        rows = kept
    by_user: dict[str, list] = collections.defaultdict(list)
    for user, item, time, k in rows:
        by_user[user].append((time, k, item))
    return {user: [item for _, _, item in sorted(entries)] for user, entries in by_user.items()}


def numeric_key(name: str):
    return (int(name), name) if name.isdecimal() else (0, name)


def random_logs():
    rng = np.random.default_rng(5)
    for k in range(12):
        n = int(rng.integers(200, 900))
        users, items, times = rng.integers(0, 80, n), rng.integers(0, 25, n), rng.integers(0, 30, n)
        if k % 3 == 0:
            yield pd.DataFrame({"user": [f"u{u}" for u in users], "item": items.astype(str), "timestamp": times})
        elif k % 3 == 1:  # decimal ids, some with leading zeros (same value, other id)
            yield pd.DataFrame({"user": [("0" if u % 7 == 0 else "") + str(u) for u in users],
                                "item": items.astype(str), "timestamp": times})
        else:
            yield events_frame(users, items, times)
    yield synthetic.generate(1, users=400, items=30, mean_length=8, categories=3).events


@pytest.mark.parametrize("thresholds", [(5, 5), (2, 3), (0, 0)])
def test_sequences_and_split_equal_per_user_references(thresholds):
    for events in random_logs():
        reference = reference_sequences(events, *thresholds)
        if not reference:
            with pytest.raises(DataError, match="no interactions left"):
                preprocess.to_sequences(Interactions(events), *thresholds)
            continue
        data = preprocess.to_sequences(Interactions(events), *thresholds)
        assert sorted(data.users, key=numeric_key) == list(data.users) and set(data.users) == set(reference)
        for u, user in enumerate(data.users):
            assert [data.item_ids[i - 1] for i in data.sequences[u]] == reference[user]
            assert data.sequences[u].dtype == np.int32
        items, offsets = data.flat()
        np.testing.assert_array_equal(items, np.concatenate(data.sequences))
        split = split_stage.leave_one_out(data)
        for u, sequence in enumerate(data.sequences):
            held = len(sequence) >= 3
            np.testing.assert_array_equal(split.train[u], sequence[:-2] if held else sequence)
            assert split.validation[u] == (sequence[-2] if held else 0)
            assert split.test[u] == (sequence[-1] if held else 0)
        train_items, train_offsets = split.train_flat()
        np.testing.assert_array_equal(np.diff(train_offsets), [len(t) for t in split.train])
        np.testing.assert_array_equal(train_items, np.concatenate(split.train))


# --- the reduced-size pipeline: task file → prepared data → partition → store ---------------------

TASK = f"""name = "population"
[data]
dataset = "synthetic"
users = {USERS}
[partition]
scheme = "natural"
[model]
name = "sasrec"
max_len = 20
embedding_dim = 8
num_blocks = 1
num_heads = 1
[algorithm]
name = "fedavg"
rounds = 1
clients_per_round = 100
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A 20,000-user task's prepared data, natural partition and store (built once)."""
    directory = tmp_path_factory.mktemp("population")
    (directory / "task.toml").write_text(TASK)
    task = spec.load_task(directory / "task.toml")
    data = prepare.prepare(task, seed=0)
    parts = partition(data.split, "natural", seed=0)
    inputs, targets = data.user_examples()
    path = store.ensure_database(parts, inputs, targets, directory / "cache", "population")
    return data, parts, path


def test_reduced_population_end_to_end(pipeline):
    data, parts, path = pipeline
    split = data.split
    assert split.data.num_users > 0.95 * USERS
    # examples: the per-user builder on each training prefix
    recipe = models.example_recipe("sasrec", 0, max_len=data.max_len)
    assert recipe["builder"] == data.examples
    for u in np.random.default_rng(0).choice(split.data.num_users, 200, replace=False):
        expected = models.make_training_example(split.train[u], data.max_len)
        np.testing.assert_array_equal(data.train_inputs[u], expected[0])
        np.testing.assert_array_equal(data.train_targets[u], expected[1])
    # partition: one client per training user, named by the user's id
    expected = {split.data.users[u]: [u] for u in range(split.data.num_users) if len(split.train[u])}
    assert {cid: members.tolist() for cid, members in parts.clients.items()} == expected
    with closing(sqlite3.connect(path)) as connection:
        (rows,) = connection.execute("SELECT COUNT(*) FROM examples").fetchone()
    assert rows == len(expected)


def test_store_returns_exactly_each_cohort_clients_rows(pipeline):
    data, parts, path = pipeline
    inputs, targets = data.user_examples()
    clients = store.open_clients(path, data.max_len, in_memory_limit=0)
    assert isinstance(clients, store.SqlClients)
    assert sorted(clients.client_ids) == sorted(parts.clients)
    cohort = list(np.random.default_rng(1).choice(sorted(parts.clients), 700, replace=False))
    read = clients.cohort_examples(cohort)  # 700 ids: more than one IN (...) query
    assert list(read) == cohort
    for cid in cohort:
        members = parts.clients[cid]
        np.testing.assert_array_equal(read[cid][0], inputs[members].reshape(-1, data.max_len))
        np.testing.assert_array_equal(read[cid][1], targets[members].reshape(-1, data.max_len))
        assert read[cid][0].dtype == np.int32
    single = clients.examples(cohort[0])
    np.testing.assert_array_equal(single[0], read[cohort[0]][0])
    with pytest.raises(KeyError, match="no client"):
        clients.cohort_examples(["no such client"])


def test_cohort_query_uses_the_client_index(pipeline):
    _, _, path = pipeline
    with closing(sqlite3.connect(path)) as connection:
        plan = " ".join(row[-1] for row in connection.execute(
            "EXPLAIN QUERY PLAN SELECT client_id, serialized_example_proto FROM examples "
            "WHERE client_id IN (?, ?) ORDER BY rowid", ("1", "2")))
    assert "USING INDEX examples_by_client" in plan, plan


def test_several_examples_per_user_and_clients_of_many_users(tmp_path):
    """3-D inputs (several examples per user) and iid clients: rows in user order, per client."""
    rng = np.random.default_rng(2)
    data = preprocess.to_sequences(synthetic.generate(2, users=300, items=30, mean_length=8), 2, 2)
    split = split_stage.leave_one_out(data)
    parts = partition(split, "iid", seed=1, num_clients=40)
    inputs = rng.integers(0, 31, size=(data.num_users, 3, 5)).astype(np.int32)
    targets = rng.integers(0, 31, size=(data.num_users, 3, 5)).astype(np.int32)
    path = store.ensure_database(parts, inputs, targets, tmp_path, "iid")
    read = store.SqlClients(path, 5).cohort_examples(sorted(parts.clients))
    for cid, members in parts.clients.items():
        np.testing.assert_array_equal(read[cid][0], inputs[members].reshape(-1, 5))
        np.testing.assert_array_equal(read[cid][1], targets[members].reshape(-1, 5))
    in_memory = store.load_in_memory(path, 5)
    for cid in parts.clients:
        np.testing.assert_array_equal(in_memory.examples(cid)[0], read[cid][0])


def test_encoded_examples_parse_as_tf_examples():
    rng = np.random.default_rng(3)
    inputs = rng.integers(-3, 2**20, size=(40, 7)).astype(np.int32)
    targets = rng.integers(0, 2**40, size=(40, 7))
    rows = rng.permutation(40)[:25]
    protos = store.encode_examples(inputs, targets, rows)
    features = {name: tf.io.FixedLenFeature([7], tf.int64) for name in store.FEATURES}
    parsed = tf.io.parse_example(protos, features)
    np.testing.assert_array_equal(parsed["inputs"].numpy(), inputs[rows])
    np.testing.assert_array_equal(parsed["targets"].numpy(), targets[rows])


def reference_content_sha256(parts, inputs, targets) -> str:
    """The store's content checksum as the per-client loop computed it."""
    import hashlib
    import json

    digest = hashlib.sha256(f"{store.FORMAT_VERSION}|{inputs.shape[-1]}".encode())
    per_user = inputs.shape[1] if inputs.ndim == 3 else 1
    if per_user > 1:
        digest.update(f"|{per_user} per user".encode())
    for cid, members in sorted(parts.clients.items()):
        digest.update(json.dumps(cid).encode())
        for array in (members, inputs[members], targets[members]):
            digest.update(np.ascontiguousarray(array, dtype="<i8").tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("ids", ["plain", "quoted"])
@pytest.mark.parametrize("shape", [(6,), (2, 6)])
def test_content_checksum_equals_the_per_client_loop(ids, shape, monkeypatch):
    monkeypatch.setattr(store, "_HASH_CHUNK", 200)  # many chunks
    data = preprocess.to_sequences(synthetic.generate(6, users=150, items=20, mean_length=6, categories=3), 2, 2)
    parts = partition(split_stage.leave_one_out(data), "iid", seed=0, num_clients=12)
    if ids == "quoted":  # ids json.dumps escapes
        parts = type(parts)(parts.scheme, {f'c"{k}\\é\n': m for k, m in parts.clients.items()},
                            parts.privacy_unit, parts.params)
    rng = np.random.default_rng(6)
    inputs = rng.integers(0, 21, size=(data.num_users, *shape)).astype(np.int32)
    targets = rng.integers(0, 21, size=(data.num_users, *shape)).astype(np.int32)
    assert store._content_sha256(parts, inputs, targets) == reference_content_sha256(parts, inputs, targets)


def test_database_written_by_tffs_writer_is_reused(tmp_path):
    """A database the per-client TFF writer built (before the bulk writer) has the same content
    checksum and examples checksum, so it is reused, not rebuilt."""
    import tensorflow_federated as tff

    data = preprocess.to_sequences(synthetic.generate(4, users=120, items=20, mean_length=6, categories=3), 2, 2)
    split = split_stage.leave_one_out(data)
    parts = partition(split, "iid", seed=0, num_clients=15)
    rng = np.random.default_rng(4)
    inputs = rng.integers(0, 21, size=(data.num_users, 6)).astype(np.int32)
    targets = rng.integers(0, 21, size=(data.num_users, 6)).astype(np.int32)
    path = tmp_path / "old.sqlite"

    def dataset_fn(cid):
        members = parts.clients[cid]
        return tf.data.Dataset.from_tensor_slices(
            {"inputs": inputs[members].astype(np.int64), "targets": targets[members].astype(np.int64)})

    tff.simulation.datasets.save_to_sql_client_data(sorted(parts.clients), dataset_fn, str(path))
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("CREATE INDEX examples_by_client ON examples (client_id)")
        connection.execute(f"CREATE TABLE {store.METADATA_TABLE} (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        metadata = {"format_version": store.FORMAT_VERSION,
                    "content_sha256": reference_content_sha256(parts, inputs, targets),
                    "examples_sha256": store._examples_sha256(connection)}
        connection.executemany(f"INSERT INTO {store.METADATA_TABLE} VALUES (?, ?)", metadata.items())
    before = path.stat().st_mtime_ns
    store.ensure_database(parts, inputs, targets, tmp_path, "old")
    assert path.stat().st_mtime_ns == before  # reused
    fresh = store.ensure_database(parts, inputs, targets, tmp_path / "fresh", "old")
    with closing(sqlite3.connect(path)) as old, closing(sqlite3.connect(fresh)) as new:
        query = "SELECT split_name, client_id, serialized_example_proto FROM examples ORDER BY rowid"
        assert old.execute(query).fetchall() == new.execute(query).fetchall()
        query = "SELECT client_id, split_name, num_examples FROM client_metadata ORDER BY rowid"
        assert old.execute(query).fetchall() == new.execute(query).fetchall()
