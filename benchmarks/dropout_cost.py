"""What reproducible dropout costs: training steps with input-seeded stateless masks
(`tff_rec.models.dropout`, what the suite uses) against Keras's own stateful dropout.

Both models have the same weights and see the same batches; steps of the two alternate, so that
the machine's drift hits both alike. Reported: median step time of each and their ratio. Not a
test: nothing asserts a timing.

    uv run python benchmarks/dropout_cost.py [--dims 50 64] [--batch-size 16 128] [--max-len 50]
        [--dropout 0.2] [--steps 200] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from tff_rec import quiet, threads

quiet.silence()
threads.fix()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tff_rec import models  # noqa: E402
from tff_rec.models.losses import MaskedNextItemLoss  # noqa: E402

NUM_ITEMS = 3000


def _train_step(model: tf.keras.Model):
    optimizer = tf.keras.optimizers.SGD(0.1)
    loss_fn = MaskedNextItemLoss()

    @tf.function
    def step(inputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(targets, model(inputs, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
        return loss

    return step


def measure(dim: int, batch_size: int, max_len: int, dropout: float, steps: int) -> dict:
    params = {"embedding_dim": dim, "max_len": max_len, "dropout": dropout}
    seeded = models.build_model("sasrec", NUM_ITEMS, seed=0, **params)
    keras_own = models.build_model("sasrec", NUM_ITEMS, seed=0, **params)
    for layer in keras_own._flatten_modules(include_self=False):  # back to Keras's stateful masks
        if isinstance(layer, tf.keras.layers.Dropout):
            layer._random_generator = tf.keras.layers.Dropout(dropout)._random_generator
    keras_own.set_weights(seeded.get_weights())
    rng = np.random.default_rng(0)
    batches = [tf.constant(rng.integers(1, NUM_ITEMS + 1, (batch_size, max_len + 1)), tf.int32)
               for _ in range(16)]
    timings: dict[str, list[float]] = {"seeded": [], "keras": []}
    runners = {"seeded": _train_step(seeded), "keras": _train_step(keras_own)}
    for index in range(steps + 2):  # the first two steps trace
        batch = batches[index % len(batches)]
        for name, step in runners.items():
            began = time.perf_counter()
            step(batch[:, :-1], batch[:, 1:]).numpy()
            if index >= 2:
                timings[name].append(time.perf_counter() - began)
    seeded_ms = 1000 * statistics.median(timings["seeded"])
    keras_ms = 1000 * statistics.median(timings["keras"])
    return {"d": dim, "batch_size": batch_size, "max_len": max_len, "dropout": dropout,
            "seeded_ms": round(seeded_ms, 3), "keras_ms": round(keras_ms, 3),
            "ratio": round(seeded_ms / keras_ms, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[50])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(d, b, args.max_len, args.dropout, args.steps)
            for d in args.dims for b in args.batch_size]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"SASRec (2 blocks, 1 head), {NUM_ITEMS} items, full softmax; medians of {args.steps} "
          f"alternating steps; {threads.INTRA_OP_THREADS} intra-op threads.\n")
    print("| d | batch | max_len | dropout | seeded ms/step | Keras ms/step | seeded / Keras |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['d']} | {row['batch_size']} | {row['max_len']} | {row['dropout']} | "
              f"{row['seeded_ms']:.2f} | {row['keras_ms']:.2f} | {row['ratio']:.3f} |")


if __name__ == "__main__":
    main()
