"""The centralized reference: the same Keras model trained on the pooled training data."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tff_rec import algorithms, models, seeds
from tff_rec.evaluation import score_last_position
from tff_rec.training.context import Outcome, RunContext, initial_model


def train_centralized(context: RunContext) -> Outcome:
    """Plain Keras training for `algorithm.centralized.epochs`, validating every N epochs."""
    task, data = context.task, context.data
    config = task["algorithm.centralized"]
    model = initial_model(context)
    tf.keras.utils.set_random_seed(seeds.derive(context.seed, "centralized"))  # dropout stream
    model.compile(
        optimizer=algorithms.KERAS_OPTIMIZERS[config["optimizer"]](config["learning_rate"]),
        loss=models.training_loss(model),
    )
    users = np.flatnonzero((data.train_targets > 0).any(axis=1))
    inputs, targets = data.train_inputs[users], data.train_targets[users]
    order_rng = np.random.default_rng(seeds.derive(context.seed, "centralized"))
    batch_size = config["batch_size"]
    every = task["evaluation"]["every"]

    def score_fn(batch: np.ndarray) -> np.ndarray:
        return score_last_position(model, batch, task["evaluation"]["batch_size"])

    for epoch in range(1, config["epochs"] + 1):
        order = order_rng.permutation(len(users))
        history = model.fit(
            inputs[order], targets[order], batch_size=batch_size, epochs=1,
            shuffle=False, verbose=0,
        )
        row = {"round": epoch, "loss": float(history.history["loss"][-1])}
        if epoch % every == 0 or epoch == config["epochs"]:
            metrics = context.evaluate(score_fn, "validation", epoch)
            row.update({f"val_{k}": v for k, v in metrics.items()})
        context.report(row)
    return Outcome(score_fn=score_fn)
