"""What a trainer receives from the runner, and what it gives back."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

from tff_rec import models, seeds
from tff_rec.prepare import PreparedData
from tff_rec.spec import TaskSpec

# A function from left-padded input sequences [n, max_len] to scores over items [n, num_items + 1].
ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class RunContext:
    """One run: a task at one seed, its prepared data, and the runner's hooks.

    evaluate(score_fn, stage) returns the ranking metrics on validation or test users.
    report(row, resumed=False) records a per-round metrics row and updates the progress bar;
    resumed rows come from a checkpoint and are not trained again.
    """

    task: TaskSpec
    seed: int
    data: PreparedData
    run_dir: Path
    cache_dir: Path
    evaluate: Callable[[ScoreFn, str, int], dict[str, float]]
    report: Callable[..., None]
    completed_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def validation_columns(self, score_fn: ScoreFn, round_number: int) -> dict[str, float]:
        """The metrics row's validation columns (`val_*`) after round (epoch) `round_number`,
        and, with `evaluation.test_curve`, the test users' (`test_*`) for a learning curve:
        nothing is chosen by them."""
        columns = {
            f"val_{k}": v
            for k, v in self.evaluate(score_fn, "validation", round_number).items()
        }
        if self.task["evaluation"].get("test_curve"):
            test = self.evaluate(score_fn, "test", round_number)
            columns.update({f"test_{k}": v for k, v in test.items()})
        return columns


@dataclasses.dataclass
class Outcome:
    """What training produced: the final scorer and extra summary fields (privacy, partition)."""

    score_fn: ScoreFn
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    privacy: Optional[dict[str, Any]] = None
    partition: Optional[dict[str, Any]] = None


def initial_model(context: RunContext) -> tf.keras.Model:
    """The run's Keras model at its seeded initial weights (the same for every algorithm)."""
    section = context.task["model"]
    return models.build_model(
        section["name"], context.data.num_items,
        seed=seeds.derive(context.seed, "init") + section["seed_offset"], **section["params"],
    )
