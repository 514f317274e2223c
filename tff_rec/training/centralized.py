"""The centralized reference: the same Keras model trained on the pooled training data.

A loop that yields a metrics row per epoch. Each epoch visits the users in an order drawn from (task seed, epoch); its metrics row has the
epoch's training time in `seconds` (without validation, as a federated round's). Every
`run.checkpoint_every` epochs the model's and the optimizer's variables are checkpointed
(`checkpoints`), and a re-run resumes from the last usable checkpoint with the metrics of an
uninterrupted run.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from tff_rec import algorithms, models, runtime, seeds
from tff_rec.evaluation import score_last_position
from tff_rec.training import checkpoints
from tff_rec.training.context import Outcome, Resumed, RunContext, Training

STATE_FILE = "state.npz"


def train_centralized(context: RunContext) -> Training:
    """Plain Keras training for `algorithm.centralized.epochs`, validating every N epochs:
    yields each epoch's metrics row."""
    task, data = context.task, context.data
    config = task["algorithm.centralized"]
    model = context.plan.model.build()
    tf.keras.utils.set_random_seed(seeds.derive(context.seed, "centralized"))  # dropout stream
    compile_model(model, config)
    users = np.flatnonzero((data.train_targets > 0).any(axis=1))
    inputs, targets = data.train_inputs[users], data.train_targets[users]
    batch_size = config["batch_size"]
    every = task["evaluation"]["every"]

    def score_fn(batch: np.ndarray) -> np.ndarray:
        return score_last_position(model, batch, task["evaluation"]["batch_size"])

    saved = _checkpoints(context, model)
    _, start, loaded = saved.load()  # restores the variables in place
    rows = list(loaded)
    for row in rows:
        yield Resumed(row)
    for epoch in range(start + 1, context.plan.rounds + 1):
        runtime.exit_if_terminated()  # a signal swallowed in a gc callback or __del__ lands here
        began = time.perf_counter()
        order = seeds.round_rng(context.seed, "centralized", epoch).permutation(len(users))
        row = {"round": epoch, "loss": train_epoch(model, inputs[order], targets[order], batch_size)}
        row["seconds"] = round(time.perf_counter() - began, 4)  # a measurement, not a result
        if epoch % every == 0 or epoch == context.plan.rounds:
            row.update(context.validation_columns(score_fn, epoch, model))
        rows.append(row)
        yield row
        if epoch % task["run"]["checkpoint_every"] == 0:
            saved.save(None, epoch, rows)
    return Outcome(score_fn=score_fn, model=model)


def compile_model(model: tf.keras.Model, config: Mapping[str, Any]) -> None:
    """Compile `model` with the [algorithm.centralized] section's optimizer and the model's
    training loss, and build the optimizer's variables (now rather than at the first step, so
    that a checkpoint can restore them)."""
    model.compile(optimizer=algorithms.keras_optimizer(config), loss=models.training_loss(model))
    model.optimizer.build(model.trainable_variables)


def train_epoch(model: tf.keras.Model, inputs: np.ndarray, targets: np.ndarray,
                batch_size: int) -> float:
    """One pass over (inputs, targets) in their order, in batches of `batch_size`; returns
    Keras's epoch loss (the mean of the batch losses). `benchmarks/centralized_speed.py` times
    exactly this."""
    history = model.fit(inputs, targets, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return float(history.history["loss"][-1])


def _variables(model: tf.keras.Model) -> list[tf.Variable]:
    """Everything training changes: the model's weights and the optimizer's step and slots."""
    return list(model.weights) + list(model.optimizer.variables)


def _checkpoints(context: RunContext, model: tf.keras.Model) -> checkpoints.Checkpoints:
    """The run's checkpoints: the model's and optimizer's variables in one .npz file."""

    def write(state, folder: Path, epoch: int) -> None:
        folder.mkdir(parents=True)
        with open(folder / STATE_FILE, "wb") as stream:
            np.savez(stream, *[variable.numpy() for variable in _variables(model)])

    def read(folder: Path, epoch: int) -> None:
        variables = _variables(model)
        with np.load(folder / STATE_FILE, allow_pickle=False) as stored:
            values = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        if len(values) != len(variables) or any(
                value.shape != tuple(variable.shape) or value.dtype != variable.dtype.as_numpy_dtype
                for value, variable in zip(values, variables)):
            raise ValueError(f"{folder / STATE_FILE} does not hold this model's variables")
        for variable, value in zip(variables, values):  # all checked first: all or nothing
            variable.assign(value)

    return checkpoints.Checkpoints(context.run_dir, write, read, context.selection)
