"""Sampled vs full softmax: time of one training step of tff-rec's models on a large catalogue.

Per configuration (model, loss, num_sampled): the model is built by `models.build_model`, its
training loss is `models.training_loss` (what the trainers use), and a plain-TensorFlow
`tf.function` step (forward, loss, gradients, Adam update) runs on random next-item batches of
the given size. Reported: median wall time per step over `--steps` steps after `--warmup` steps,
and the speed-up over the full softmax of the same model. Not a test: nothing asserts a timing.

    uv run python benchmarks/sampled_softmax.py [--items 20000] [--dim 64] [--batch-size 64]
        [--max-len 50] [--num-sampled 100 1000] [--models sasrec] [--steps 20]

Prints a Markdown table, then the same rows as one JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Optional, Sequence

from tff_rec import quiet

quiet.silence()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tff_rec import models  # noqa: E402


def step_seconds(model_name: str, args: argparse.Namespace, hparams: dict[str, Any]) -> list[float]:
    """Wall seconds of each timed training step of one configuration."""
    model = models.build_model(
        model_name, args.items, seed=0, embedding_dim=args.dim, max_len=args.max_len,
        dropout=0.0, **hparams,
    )
    loss_fn = models.training_loss(model)
    optimizer = tf.keras.optimizers.Adam(1e-3)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, args.items + 1, size=args.max_len + 1) for _ in range(args.batch_size)]
    inputs, targets = (tf.constant(a) for a in models.make_training_examples(sequences, args.max_len))

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(targets, model(inputs, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
        return loss

    for _ in range(args.warmup):
        step().numpy()
    times = []
    for _ in range(args.steps):
        began = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - began)
    return times


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for model_name in args.models:
        configs = [("softmax", None)] + [("sampled_softmax", n) for n in args.num_sampled]
        full = None
        for loss, num_sampled in configs:
            hparams = {"loss": loss, **({"num_sampled": num_sampled} if num_sampled else {})}
            times = step_seconds(model_name, args, hparams)
            median = statistics.median(times)
            full = full or median
            rows.append({"model": model_name, "loss": loss, "num_sampled": num_sampled,
                         "ms_per_step": 1000 * median, "speedup": full / median,
                         "step_seconds": times})
            print(f"{model_name} {loss} {num_sampled or '-'}: {1000 * median:.1f} ms/step",
                  file=sys.stderr, flush=True)
    return rows


def markdown(rows: Sequence[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.items} items, d = {args.dim}, batch {args.batch_size} × max_len {args.max_len}, "
        f"{os.cpu_count()} cores; medians of {args.steps} steps after {args.warmup} warm-up steps.",
        "",
        "| model | loss | num_sampled | ms/step | speed-up vs softmax |",
        "|:--|:--|--:|--:|--:|",
    ]
    for row in rows:
        lines.append(f"| {row['model']} | {row['loss']} | {row['num_sampled'] or '–'} | "
                     f"{row['ms_per_step']:.1f} | {row['speedup']:.2f}× |")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20000, help="catalogue size")
    parser.add_argument("--dim", type=int, default=64, help="embedding_dim d")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--num-sampled", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--models", nargs="+", default=["sasrec"], choices=sorted(models.MODELS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (tracing)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    rows = run(args)
    print(markdown(rows, args))
    print(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
