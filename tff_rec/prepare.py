"""The data stages of a task, run once and shared by every run that needs the same data.

dataset → preprocessing → leave-one-out split → training examples (built the way the task's model
trains: `models.example_recipe`); then the partition into clients (cached as SQLite ClientData).
Memoized per process, so a study's variants reuse them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from tff_rec import data as data_stage
from tff_rec import models
from tff_rec.data import registry
from tff_rec.data.errors import DataError
from tff_rec.data.types import LeaveOneOutSplit
from tff_rec.evaluation import popularity_scores
from tff_rec.spec import SpecError, TaskSpec


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """A split plus the arrays training and evaluation read."""

    split: LeaveOneOutSplit
    train_inputs: np.ndarray  # int32 [num_users × examples_per_user, max_len], a user's rows consecutive
    train_targets: np.ndarray  # int32, as train_inputs; 0 = ignored
    item_popularity: np.ndarray  # float [num_items + 1] counts in training prefixes
    max_len: int
    identity: str  # canonical JSON naming the data stage's inputs
    examples: str  # the `models.EXAMPLES` builder of the training examples

    @property
    def num_items(self) -> int:
        return self.split.data.num_items

    def user_examples(self) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) int32 [num_users, examples_per_user, max_len]: row u is user u's."""
        shape = (len(self.split.train), -1, self.max_len)
        return self.train_inputs.reshape(shape), self.train_targets.reshape(shape)

    def history_inputs(self, histories: Sequence[np.ndarray], max_len: int) -> np.ndarray:
        """int32 [n, max_len]: the model inputs whose last position scores each history's next item."""
        return models.EXAMPLES[self.examples].history_inputs(histories, max_len, self.num_items)


def _freeze(mapping: Mapping[str, Any]) -> str:
    return json.dumps(mapping, sort_keys=True, default=str)


def data_identity(task: TaskSpec, seed: int) -> str:
    section, model = task["data"], task["model"]
    path = section["path"] or registry.default_path(section["dataset"])  # $TFF_REC_DATA/...
    return _freeze(
        {
            "dataset": section["dataset"],
            "path": str(Path(path).resolve()) if path else None,
            "params": section["params"],
            "min_user_interactions": section["min_user_interactions"],
            "min_item_interactions": section["min_item_interactions"],
            "max_len": model["params"]["max_len"],
            "examples": models.example_recipe(model["name"], seed, **model["params"]),
        }
    )


def prepare(task: TaskSpec, seed: int) -> PreparedData:
    """Load, filter, split and build training examples for a task at a task seed (memoized;
    runs whose examples do not depend on the seed share them).

    Bad data (a missing or malformed file, nothing left after filtering) raises SpecError naming
    the task file and the key that chose it, before anything is written.
    """
    with _naming_the_task(task):
        return _prepare(data_identity(task, seed))


def prepare_split(task: TaskSpec) -> LeaveOneOutSplit:
    """The task's leave-one-out split alone (memoized; no training examples): what the
    data-dependent checks of `tff_rec.checks` need."""
    with _naming_the_task(task):
        return _split(_split_identity(json.loads(data_identity(task, 0))))


def _split_identity(fields: Mapping[str, Any]) -> str:
    return _freeze({key: fields[key] for key in SPLIT_FIELDS})


SPLIT_FIELDS = ("dataset", "path", "params", "min_user_interactions", "min_item_interactions")


class _StageError(DataError):
    """A data-stage error with the task keys that chose the failing input."""

    def __init__(self, keys: str, error: DataError, loading: bool = False):
        super().__init__(str(error))
        self.keys = keys
        self.loading = loading  # from reading the dataset (not from filtering it)


@contextlib.contextmanager
def _naming_the_task(task: TaskSpec) -> Iterator[None]:
    try:
        yield
    except _StageError as error:
        keys, message, dataset = error.keys, str(error), task["data"]["dataset"]
        if error.loading and not task["data"]["path"]:  # any path came from $TFF_REC_DATA
            keys = f"key 'data.dataset' ({dataset!r}, no data.path)"
            message += registry.missing_note(dataset)
        raise SpecError(f"{task.source}: {keys}: {message}") from None


@functools.lru_cache(maxsize=4)
def _split(identity: str) -> LeaveOneOutSplit:
    fields = json.loads(identity)
    if fields["path"]:
        keys = f"key 'data.path' ({fields['path']!r}, data.dataset = {fields['dataset']!r})"
    else:
        keys = f"key 'data.dataset' ({fields['dataset']!r}, no data.path)"
    try:
        interactions = data_stage.load(fields["dataset"], fields["path"], fields["params"])
    except DataError as error:
        raise _StageError(keys, error, loading=True) from None
    try:
        sequences = data_stage.to_sequences(
            interactions,
            min_user_interactions=fields["min_user_interactions"],
            min_item_interactions=fields["min_item_interactions"],
        )
    except DataError as error:
        raise _StageError(
            f"keys 'data.min_user_interactions' ({fields['min_user_interactions']}) and "
            f"'data.min_item_interactions' ({fields['min_item_interactions']})", error
        ) from None
    return data_stage.leave_one_out(sequences)


@functools.lru_cache(maxsize=4)
def _prepare(identity: str) -> PreparedData:
    fields = json.loads(identity)
    split = _split(_split_identity(fields))
    max_len = fields["max_len"]
    recipe = dict(fields["examples"])
    builder = recipe.pop("builder")
    inputs, targets = models.EXAMPLES[builder].build(
        list(split.train), split.data.num_items, max_len, **recipe
    )
    popularity = popularity_scores(list(split.train), split.data.num_items)
    return PreparedData(
        split=split, train_inputs=inputs, train_targets=targets,
        item_popularity=popularity, max_len=max_len, identity=identity, examples=builder,
    )
