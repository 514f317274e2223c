"""What a trainer receives from the runner, what it yields, and what it gives back."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Generator, Optional, Union

import numpy as np
import tensorflow as tf

from tff_rec.evaluation import ScoreFn
from tff_rec.plan import RunPlan
from tff_rec.prepare import PreparedData
from tff_rec.spec import TaskSpec

SELECTED_WEIGHTS = "best.npz"  # in a checkpoint folder: the best round's weights so far


@dataclasses.dataclass
class Selection:
    """The model a run reports (`evaluation.select`): "last", the final round's; "best", the
    validated round with the highest validation full-ranking ndcg@K (K: the first of
    `evaluation.ks`), the earliest on ties. Only validated rounds (every `evaluation.every`, and
    the last) are candidates. With "best", a copy of the best model's weights is kept, saved with
    every checkpoint and restored from it (`save`, `restore`), so a resumed run chooses the same
    round with the same weights."""

    mode: str
    metric: str  # the validation column's metric, e.g. "ndcg@10"
    round: Optional[int] = None  # the best validated round so far ("best" only)
    value: Optional[float] = None
    weights: Optional[list[np.ndarray]] = None  # the best round's weights (models only)

    @classmethod
    def for_task(cls, task: TaskSpec) -> "Selection":
        section = task["evaluation"]
        return cls(section.get("select", "last"), f"ndcg@{section['ks'][0]}")

    def _better(self, value: float) -> bool:
        return self.round is None or value > self.value

    def offer(self, round_number: int, columns: dict[str, float],
              model: Optional[tf.keras.Model]) -> None:
        """A validated round's `val_*` columns and model (None: no Keras model)."""
        value = columns[f"val_{self.metric}"]
        if self.mode == "best" and self._better(value):
            self.round, self.value = round_number, value
            self.weights = None if model is None else [w.copy() for w in model.get_weights()]

    def save(self, folder: Path) -> None:
        """Into a checkpoint folder being written: the best weights so far (if any)."""
        if self.mode == "best" and self.weights is not None:
            from tff_rec import record

            record.write_arrays(folder / SELECTED_WEIGHTS, weight_arrays(self.weights))

    def restore(self, rows: list[dict[str, Any]], folder: Path) -> None:
        """The best round as of a checkpoint: chosen again from its rows, its weights read from
        the folder (ValueError if they are missing: the checkpoint is unusable)."""
        if self.mode != "best":
            return
        best = Selection(self.mode, self.metric)
        for row in rows:
            if f"val_{self.metric}" in row:
                best.offer(row["round"], row, None)
        path = folder / SELECTED_WEIGHTS
        if best.round is not None and not path.is_file():
            raise ValueError(f"{path} is missing: the weights of the best round ({best.round})")
        weights = read_weight_arrays(path) if best.round is not None else None
        self.round, self.value, self.weights = best.round, best.value, weights


def weight_arrays(weights: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Named arrays of a model's `get_weights()`, in order (w0000, w0001, ...)."""
    return {f"w{index:04d}": value for index, value in enumerate(weights)}


def read_weight_arrays(path: Path) -> list[np.ndarray]:
    """The weights `weight_arrays` named, in their order."""
    with np.load(path, allow_pickle=False) as stored:
        return [stored[f"w{index:04d}"] for index in range(len(stored.files))]


@dataclasses.dataclass(frozen=True)
class Resumed:
    """A metrics row read back from a checkpoint: recorded before, not trained again."""

    row: dict[str, Any]


# What a trainer yields: every new row as it is made, a resumed run's checkpointed rows first.
# The consumer (the runner) may add columns to a new row before it asks for the next one (its
# memory columns); the trainer's checkpoints keep the rows as they are then.
Row = Union[dict[str, Any], Resumed]
Training = Generator[Row, None, "Outcome"]


@dataclasses.dataclass
class RunContext:
    """One run as a trainer sees it: its plan (`tff_rec.plan`), its record folder (checkpoints),
    the partition store's folder, and the model selection; `data` and `evaluate` (the plan's
    evaluation protocol: evaluate(score_fn, stage, round), with `with_ranks=True` also the
    `evaluation.Ranks`) are set from the plan."""

    plan: RunPlan
    run_dir: Path
    cache_dir: Path
    selection: Optional[Selection] = None  # default: `Selection.for_task(task)`
    data: PreparedData = dataclasses.field(init=False)
    evaluate: Callable[..., Any] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.data = self.plan.data.get()
        self.evaluate = self.plan.evaluation.evaluator(self.plan.task, self.data)
        if self.selection is None:
            self.selection = Selection.for_task(self.task)

    @property
    def task(self) -> TaskSpec:
        return self.plan.task

    @property
    def seed(self) -> int:
        return self.plan.seed

    def validation_columns(self, score_fn: ScoreFn, round_number: int,
                           model: Optional[tf.keras.Model] = None) -> dict[str, float]:
        """The metrics row's validation columns (`val_*`) after round (epoch) `round_number`,
        and, with `evaluation.test_curve`, the test users' (`test_*`) for a learning curve:
        nothing is chosen by them. The validation is offered to `selection` with `model` (the
        model `score_fn` scores with; None: none to keep)."""
        columns = {
            f"val_{k}": v
            for k, v in self.evaluate(score_fn, "validation", round_number).items()
        }
        self.selection.offer(round_number, columns, model)
        if self.task["evaluation"].get("test_curve"):
            test = self.evaluate(score_fn, "test", round_number)
            columns.update({f"test_{k}": v for k, v in test.items()})
        return columns


@dataclasses.dataclass
class Outcome:
    """What training produced: the final scorer, the model it scores with, extra summary fields."""

    score_fn: ScoreFn
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The Keras model score_fn scores with, at its final weights (None: no model, popularity);
    # the runner saves its weights and sets the selected round's to evaluate the test users.
    model: Optional[tf.keras.Model] = None


