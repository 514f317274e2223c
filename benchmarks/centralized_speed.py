"""Centralized epoch speed: tff-rec's centralized trainer against a plain tf.keras + keras-nlp loop.

One epoch of SASRec with the paper's settings (Kang & McAuley 2018, Amazon Games: d = 50, 2 blocks,
1 head, feed-forward width 50, dropout 0.5, max_len 50, Adam lr 1e-3 β2 0.98, batch 128, loss bce:
one negative per target position) over the same arrays, both sides in this process:

- tff-rec: the model from `models.build_model` (stateless input-seeded dropout), compiled by
  `training.centralized.compile_model` (`algorithms.keras_optimizer` + `models.training_loss`)
  and trained by `training.centralized.train_epoch` (Keras `fit`), exactly as the centralized
  trainer runs an epoch.
- plain: a SASRec written here with the same keras-nlp layers (token + position embedding,
  dropout, pre-norm `TransformerDecoder`s, final layer norm, tied item scores), Keras's own
  dropout, one uniform negative per position (`tf.random.uniform`, shifted past the target), a
  `tf.function` train step and a Python loop over `tf.data` batches: what a user would write.

Epochs alternate (tff-rec, plain, tff-rec, ...), in the same user order per epoch, so the
machine's drift hits both alike; the first epoch of each side (tracing) is not timed. Reported:
medians of the timed epochs and their ratio. Other tff-rec losses (`--losses bce sampled_softmax
softmax`) are timed the same way, each against the plain bce epoch it alternates with;
`--max-batches` times only the first N batches of an epoch (the full softmax takes ~1,000 s an
epoch on Games). Not a test: nothing asserts a timing.

    uv run python benchmarks/centralized_speed.py [--data games|synthetic] [--path FILE]
        [--losses bce sampled_softmax] [--num-negatives 1] [--epochs 3] [--max-batches N] [--json]

Data: `--data games` reads the SASRec authors' Games file (`data/external/Video.txt`: lines
"user item", chronological per user; 31,013 users, 23,715 items), keeps each user's sequence but
the last two items (the paper's validation and test items), and builds the training examples with
`models.make_training_examples`. `--data synthetic` generates sequences of the same shape (31,013
users, 23,715 items, 5 + geometric lengths averaging ≈ 9.3) for machines without the file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tff_rec import quiet, threads

quiet.silence()
threads.fix()  # as the CLI does: the trainer's thread count

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tff_rec import models  # noqa: E402
from tff_rec.models.base import keras_nlp  # noqa: E402
from tff_rec.training import centralized  # noqa: E402

GAMES = Path(__file__).resolve().parent.parent / "data" / "external" / "Video.txt"
USERS, ITEMS, INTERACTIONS = 31_013, 23_715, 287_107  # the Games file's shape
PAPER = dict(embedding_dim=50, num_blocks=2, num_heads=1, intermediate_dim=50, dropout=0.5, max_len=50)
OPTIMIZER = {"optimizer": "adam", "learning_rate": 1e-3, "beta_2": 0.98}
BATCH_SIZE = 128


# ---------------------------------------------------------------- data


def games_sequences(path: Path) -> tuple[list[np.ndarray], int]:
    """Each user's items in file order, and the number of items (ids are 1..N in the file)."""
    pairs = np.loadtxt(path, dtype=np.int64, ndmin=2)
    order = np.argsort(pairs[:, 0], kind="stable")
    users, items = pairs[order, 0], pairs[order, 1].astype(np.int32)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return np.split(items, starts[1:]), int(items.max())


def synthetic_sequences(seed: int = 0) -> tuple[list[np.ndarray], int]:
    """USERS sequences of 5 + geometric lengths (mean ≈ INTERACTIONS / USERS), uniform items."""
    rng = np.random.default_rng(seed)
    extra = INTERACTIONS / USERS - 5
    lengths = 5 + rng.geometric(1 / (extra + 1), size=USERS) - 1
    items = rng.integers(1, ITEMS + 1, size=int(lengths.sum()), dtype=np.int32)
    return np.split(items, np.cumsum(lengths)[:-1]), ITEMS


def training_arrays(sequences: Sequence[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) int32 [users, max_len] of every user with a training target: the
    sequence without its last two items (fewer than 3 items: all of it), as the paper splits."""
    train = [s[:-2] if len(s) >= 3 else s for s in sequences]
    inputs, targets = models.make_training_examples(train, max_len)
    keep = (targets > 0).any(axis=1)
    return inputs[keep], targets[keep]


# ---------------------------------------------------------------- the plain floor


class PlainSASRec(tf.keras.Model):
    """SASRec as a plain keras-nlp script writes it: hidden states [batch, L, d]."""

    def __init__(self, num_items: int, embedding_dim: int, num_blocks: int, num_heads: int,
                 intermediate_dim: int, dropout: float, max_len: int) -> None:
        super().__init__()
        self.embedding = keras_nlp.layers.TokenAndPositionEmbedding(
            vocabulary_size=num_items + 1, sequence_length=max_len, embedding_dim=embedding_dim)
        self.dropout = tf.keras.layers.Dropout(dropout)
        self.blocks = [
            keras_nlp.layers.TransformerDecoder(intermediate_dim=intermediate_dim, num_heads=num_heads,
                                                dropout=dropout, normalize_first=True)
            for _ in range(num_blocks)
        ]
        self.norm = tf.keras.layers.LayerNormalization(epsilon=1e-5)

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        mask = tf.not_equal(inputs, 0)
        x = self.dropout(self.embedding(inputs), training=training)
        for block in self.blocks:
            x = block(x, decoder_padding_mask=mask, training=training)
        return self.norm(x)


class PlainLoop:
    """The floor: a `tf.function` BCE train step (one negative per position) and a Python loop."""

    def __init__(self, num_items: int, seed: int) -> None:
        tf.keras.utils.set_random_seed(seed)
        self.num_items = num_items
        self.model = PlainSASRec(num_items, **PAPER)
        self.model(tf.zeros([1, PAPER["max_len"]], tf.int32))
        self.optimizer = tf.keras.optimizers.Adam(OPTIMIZER["learning_rate"], beta_2=OPTIMIZER["beta_2"])

    @tf.function
    def step(self, inputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        table = self.model.embedding.token_embedding.embeddings
        with tf.GradientTape() as tape:
            hidden = self.model(inputs, training=True)
            negatives = tf.random.uniform(tf.shape(targets), 1, self.num_items, tf.int32)
            negatives += tf.cast(negatives >= targets, tf.int32)
            positive = tf.reduce_sum(hidden * tf.gather(table, targets), -1)
            negative = tf.reduce_sum(hidden * tf.gather(table, negatives), -1)
            mask = tf.cast(targets > 0, tf.float32)
            per_position = tf.nn.softplus(-positive) + tf.nn.softplus(negative)
            loss = tf.reduce_sum(per_position * mask) / tf.reduce_sum(mask)
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def epoch(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        dataset = tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(BATCH_SIZE)
        losses = [self.step(x, y) for x, y in dataset]
        return float(tf.reduce_mean(losses))


# ---------------------------------------------------------------- tff-rec


class TffRecTrainer:
    """tff-rec's centralized trainer on one epoch (its model, compile and fit)."""

    def __init__(self, num_items: int, loss: str, seed: int, num_negatives: int = 1) -> None:
        self.model = models.build_model("sasrec", num_items, seed=seed, loss=loss,
                                        num_negatives=num_negatives, **PAPER)
        centralized.compile_model(self.model, OPTIMIZER)

    def epoch(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        return centralized.train_epoch(self.model, inputs, targets, BATCH_SIZE)


# ---------------------------------------------------------------- timing


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(work: Callable[[], float]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, the epoch's loss)."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    loss = work()
    return time.perf_counter() - wall, cpu_seconds() - cpu, loss


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    began = time.perf_counter()
    if args.data == "games":
        sequences, num_items = games_sequences(Path(args.path))
    else:
        sequences, num_items = synthetic_sequences()
    inputs, targets = training_arrays(sequences, PAPER["max_len"])
    if args.max_batches:
        inputs, targets = inputs[: args.max_batches * BATCH_SIZE], targets[: args.max_batches * BATCH_SIZE]
    info = {"users": len(sequences), "training_users": len(inputs), "items": num_items,
            "batches_per_epoch": -(-len(inputs) // BATCH_SIZE),
            "targets": int((targets > 0).sum())}
    print(f"{args.data}: {info}", file=sys.stderr, flush=True)
    rows = []
    for loss in args.losses:
        plain = PlainLoop(num_items, seed=0)
        ours = TffRecTrainer(num_items, loss, seed=0, num_negatives=args.num_negatives)
        times: dict[str, list[tuple[float, float, float]]] = {"tff-rec": [], "plain": []}
        for epoch in range(args.epochs + 1):  # epoch 0: warm-up (tracing), not timed
            order = np.random.default_rng(epoch).permutation(len(inputs))
            x, y = inputs[order], targets[order]
            sides = [("tff-rec", ours), ("plain", plain)]
            for name, side in sides if epoch % 2 == 0 else sides[::-1]:
                wall, cpu, value = timed(lambda: side.epoch(x, y))
                print(f"{loss} epoch {epoch} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU, "
                      f"loss {value:.4f}", file=sys.stderr, flush=True)
                if epoch > 0:
                    times[name].append((wall, cpu, value))
        median = {name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
                  for name, ts in times.items()}
        label = f"{loss} (k {args.num_negatives})" if loss in ("bce", "gbce") else loss
        rows.append({
            "loss": label, "tff_rec_s": median["tff-rec"][0], "plain_s": median["plain"][0],
            "wall_ratio": median["tff-rec"][0] / median["plain"][0],
            "tff_rec_cpu_s": median["tff-rec"][1], "plain_cpu_s": median["plain"][1],
            "cpu_ratio": median["tff-rec"][1] / median["plain"][1],
            "tff_rec_epochs": times["tff-rec"], "plain_epochs": times["plain"],
        })
    info["seconds"] = time.perf_counter() - began
    return rows, info


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "load": os.getloadavg(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "intra_op_threads": threads.INTRA_OP_THREADS}


def markdown(rows: Sequence[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any]) -> str:
    span = f"first {args.max_batches} batches of an epoch" if args.max_batches else "one epoch"
    lines = [
        f"{args.data}: {info['training_users']} training users, {info['items']} items, "
        f"{info['batches_per_epoch']} batches of {BATCH_SIZE} ({span}); SASRec d 50, 2 blocks, "
        f"1 head, ffn 50, dropout 0.5, max_len 50, Adam 1e-3 β2 0.98; medians of {args.epochs} "
        f"timed epochs after 1 warm-up; {info['cores']} cores, load {info['load'][0]:.1f}.",
        "",
        "| tff-rec loss | tff-rec s | plain bce s | wall ratio | tff-rec CPU s | plain CPU s | CPU ratio |",
        "|:--|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['loss']} | {row['tff_rec_s']:.2f} | {row['plain_s']:.2f} | "
            f"**{row['wall_ratio']:.2f}** | {row['tff_rec_cpu_s']:.2f} | {row['plain_cpu_s']:.2f} | "
            f"{row['cpu_ratio']:.2f} |")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("games", "synthetic"), default="games")
    parser.add_argument("--path", default=str(GAMES), help="the Games file (--data games)")
    parser.add_argument("--losses", nargs="+", default=["bce"],
                        choices=("bce", "gbce", "sampled_softmax", "softmax"))
    parser.add_argument("--num-negatives", type=int, default=1,
                        help="model.num_negatives of tff-rec's bce and gbce (the plain loop: 1)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per side (after a warm-up)")
    parser.add_argument("--max-batches", type=int, default=0, help="time only the first N batches")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    if args.data == "games" and not Path(args.path).is_file():
        parser.error(f"{args.path}: no such file; pass --path, or --data synthetic")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    rows, info = run(args)
    info.update(machine())
    if args.json:
        print(json.dumps({"settings": vars(args), "machine": info, "rows": rows}, indent=2))
    else:
        print(markdown(rows, args, info))
    print(f"total {info['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
