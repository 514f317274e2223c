"""SQLite ClientData store: exact round trip, no held-out items, cache reuse, rebuild on corruption."""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import tensorflow_federated as tff
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partition_splits import make_split
from tff_rec.partition import Partition, partition
from tff_rec.partition import store as partition_store
from tff_rec.partition.store import client_data, load_in_memory, partition_key

MAX_LEN = 6
SENTINEL = -7  # fills rows of users outside the partition; must never be stored


def next_item_examples(split, max_len: int = MAX_LEN) -> tuple[np.ndarray, np.ndarray]:
    """A minimal example builder from training prefixes only: shift by one, left-pad with 0.

    Users without a training prefix get SENTINEL rows, which the store must not write.
    """
    inputs = np.full((split.data.num_users, max_len), SENTINEL, dtype=np.int32)
    targets = inputs.copy()
    for u, prefix in enumerate(split.train):
        if len(prefix):
            history, future = prefix[:-1][-max_len:], prefix[1:][-max_len:]
            inputs[u] = np.pad(history, (max_len - len(history), 0))
            targets[u] = np.pad(future, (max_len - len(future), 0))
    return inputs, targets


def read_back(data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Client id → (inputs, targets) stacked in stored order."""
    out = {}
    for cid in data.client_ids:
        elements = list(data.create_tf_dataset_for_client(cid).as_numpy_iterator())
        out[cid] = tuple(np.array([e[k] for e in elements]).reshape(-1, MAX_LEN) for k in ("inputs", "targets"))
    return out


def assert_holds_exactly(data, parts: Partition, inputs: np.ndarray, targets: np.ndarray) -> None:
    stored = read_back(data)
    assert sorted(stored) == sorted(parts.clients)
    for cid, members in parts.clients.items():
        assert np.array_equal(stored[cid][0], inputs[members]) and np.array_equal(stored[cid][1], targets[members])
        assert stored[cid][0].dtype == np.int64


def held_out_split(sequences: list[list[int]], num_items: int):
    """Split whose validation/test items are ids num_items+1.. that never occur in a training prefix."""
    next_id = num_items + 1
    extended = []
    for seq in sequences:
        if len(seq) >= 1:  # give every non-empty user two fresh held-out items
            seq = [*seq, next_id, next_id + 1]
            next_id += 2
        extended.append(seq)
    split = make_split(extended, num_items=next_id - 1)
    return split, set(range(num_items + 1, next_id))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sequences=st.lists(st.lists(st.integers(1, 9), max_size=9), min_size=1, max_size=12).filter(any),
    scheme=st.sampled_from(["natural", "iid", "quantity"]),
    seed=st.integers(0, 99),
)
def test_round_trip_holds_exactly_the_partition_rows_and_no_held_out_item(tmp_path, sequences, scheme, seed):
    split, held_out = held_out_split(sequences, num_items=9)
    n = int(sum(len(t) > 0 for t in split.train))
    parts = partition(split, scheme, seed, **({} if scheme == "natural" else {"num_clients": min(3, n)}))
    inputs, targets = next_item_examples(split)
    key = partition_key("test", sequences, scheme, seed)

    data = client_data(parts, inputs, targets, tmp_path, key)

    assert_holds_exactly(data, parts, inputs, targets)
    in_memory = load_in_memory(tmp_path / f"{key}.sqlite", MAX_LEN)
    assert sorted(in_memory.client_ids) == sorted(parts.clients)
    for cid, members in parts.clients.items():  # the arrays the runner passes, in stored order
        got_inputs, got_targets = in_memory.examples(cid)
        assert got_inputs.dtype == np.int32
        np.testing.assert_array_equal(got_inputs, inputs[members])
        np.testing.assert_array_equal(got_targets, targets[members])
    stored = np.concatenate([np.concatenate(pair).ravel() for pair in read_back(data).values()])
    assert SENTINEL not in stored and not held_out & set(stored.tolist())


@pytest.fixture
def stored(tmp_path) -> dict:
    """Arguments of a client_data call whose database already exists in tmp_path."""
    split = make_split([[1, 2, 3, 4], [2, 3], [4, 4, 1, 2, 3], [3], [1, 1, 1]], num_items=4)
    inputs, targets = next_item_examples(split)
    args = {
        "partition": partition(split, "iid", 0, num_clients=2),
        "inputs": inputs,
        "targets": targets,
        "cache_dir": tmp_path,
        "key": partition_key({"dataset": "tiny"}, "iid", {"num_clients": 2}, 0, MAX_LEN),
    }
    client_data(**args)
    return args


def _path(args: dict) -> Path:
    return args["cache_dir"] / f"{args['key']}.sqlite"


def _fingerprint(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_ino, status.st_mtime_ns


def test_cached_database_is_reused_without_rewriting(stored):
    before = _fingerprint(_path(stored))
    data = client_data(**stored)
    assert _fingerprint(_path(stored)) == before
    assert_holds_exactly(data, stored["partition"], stored["inputs"], stored["targets"])
    assert [p.name for p in stored["cache_dir"].iterdir()] == [_path(stored).name]  # no temporary files left


def _truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a database" * 100)


def _tamper_example(path: Path) -> None:
    """A file SQLite still opens but whose stored example differs (silent corruption)."""
    with closing(sqlite3.connect(path)) as connection, connection:
        proto = connection.execute("SELECT serialized_example_proto FROM examples LIMIT 1").fetchone()[0]
        connection.execute("UPDATE examples SET serialized_example_proto = ? WHERE rowid = 1", (proto[:-1] + b"\x01",))


def _drop_metadata(path: Path) -> None:
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("DROP TABLE tff_rec_metadata")


@pytest.mark.parametrize("corrupt", [_truncate, _garbage, _tamper_example, _drop_metadata, Path.unlink])
def test_damaged_or_missing_database_is_rebuilt(stored, corrupt):
    corrupt(_path(stored))
    data = client_data(**stored)
    assert_holds_exactly(data, stored["partition"], stored["inputs"], stored["targets"])


def test_same_key_with_other_content_is_rebuilt_not_reused(stored):
    data = client_data(**{**stored, "inputs": stored["inputs"] + 1})
    assert_holds_exactly(data, stored["partition"], stored["inputs"] + 1, stored["targets"])


def test_failed_build_leaves_no_file(stored, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(partition_store, "_insert_rows", fail)
    with pytest.raises(OSError, match="disk full"):
        client_data(**{**stored, "key": "other-key"})
    assert not [p.name for p in stored["cache_dir"].iterdir() if "other-key" in p.name]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {"targets": a["targets"][:, :-1]}, "must be 2-D arrays of one shape"),
        (lambda a: {"inputs": a["inputs"].astype(float)}, "inputs must hold integers"),
        (lambda a: {"inputs": a["inputs"][:2], "targets": a["targets"][:2]}, r"must lie in \[0, 2\)"),
        (lambda a: {"partition": Partition("x", {"it's": np.array([0])}, "silo", {})}, "single quote"),
        (lambda a: {"key": "../escape"}, "cache key must match"),
    ],
)
def test_bad_store_input_is_rejected(stored, change, message):
    with pytest.raises(ValueError, match=message):
        client_data(**{**stored, **change(stored)})


def test_partition_key_is_canonical():
    base = partition_key({"dataset": "ml-1m", "k_core": 5}, "dirichlet", {"alpha": 0.5, "num_clients": 10}, 0, 50)
    assert base == partition_key({"k_core": 5, "dataset": "ml-1m"}, "dirichlet", {"num_clients": 10, "alpha": 0.5}, 0, 50)
    assert base == partition_key({"dataset": "ml-1m", "k_core": np.int64(5)}, "dirichlet", {"alpha": 0.5, "num_clients": 10}, 0, 50)
    assert base != partition_key({"dataset": "ml-1m", "k_core": 5}, "dirichlet", {"alpha": 0.5, "num_clients": 10}, 1, 50)
    assert len(base) == 64 and int(base, 16) >= 0
    with pytest.raises(TypeError, match="cannot encode"):
        partition_key(object())
