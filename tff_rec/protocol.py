"""A run's evaluation protocol: which users validation ranks, and the seeded negatives of every
evaluation (by stage and round), so that a run, its resume and a reloaded model (`saved`) rank
exactly the same candidates."""
from __future__ import annotations

import numpy as np

from tff_rec import evaluation, seeds
from tff_rec.evaluation import ScoreFn
from tff_rec.prepare import PreparedData
from tff_rec.spec import TaskSpec

EVALUATION_STAGES = {"validation": 0, "test": 1}


def validation_users(task: TaskSpec, seed: int, data: PreparedData) -> np.ndarray:
    """The users every validation of a run ranks: a sample of `evaluation.validation_users`
    seeded by the task seed (the same at every validation), or all users with held-out items."""
    return evaluation.user_sample(
        data.split.evaluation_users(), task["evaluation"].get("validation_users"),
        seeds.derive(seed, "validation_users"),
    )


def evaluator(task: TaskSpec, seed: int, data: PreparedData, validation_users: np.ndarray):
    """evaluate(score_fn, stage, round): validation on `validation_users` (`validation_users`),
    test on all users, in memory-bounded batches of at most `evaluation.batch_size` users; with
    `with_ranks=True`, (metrics, `evaluation.Ranks`)."""
    section = task["evaluation"]
    sampled = section.get("validation_users") is not None
    users = {"validation": validation_users if sampled else None, "test": None}

    def evaluate(score_fn: ScoreFn, stage: str, round_number: int, with_ranks: bool = False):
        rng = np.random.default_rng(
            [seeds.derive(seed, "evaluation"), EVALUATION_STAGES[stage], round_number]
        )
        metrics, ranks = evaluation.evaluate_with_ranks(
            score_fn, data.split, stage, max_len=data.max_len, ks=tuple(section["ks"]),
            history_inputs=data.history_inputs,
            num_negatives=section["num_negatives"],
            negative_sampling=section["negative_sampling"], rng=rng,
            item_popularity=data.item_popularity, batch_size=section["batch_size"],
            users=users[stage],
        )
        return (metrics, ranks) if with_ranks else metrics

    return evaluate
