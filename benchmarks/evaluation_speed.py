"""One evaluation pass at scale: tff-rec's protocol before and after scoring only the last position.

Per dataset, one process times four ways of ranking every evaluated user's test item with the
same untrained SASRec (`models.build_model`; ranks of random weights cost what trained ones do):

- before: `tff_rec/evaluation.py` as of commit `--baseline-commit` (read with `git show`): the full
  model's logits at all max_len positions, the last kept; per-user lists and `np.setdiff1d`;
  evaluate batches of 1,024 users (the runner's call then), scored 512 at a time. Slow: by default
  it runs on the first `--before-users` users only, and its time is scaled per 10^5 users.
- after: `tff_rec.evaluation.evaluate` as the runner calls it (batch_size 512, memory cap 512 MiB),
  with the default 100 uniform sampled negatives (`uniform_negatives`: O(num_negatives + history)
  per user), with none (full ranking only), and with 100 negatives ∝ training popularity
  (`negative_sampling = "popularity"`: the Gumbel-top-k sampler, O(V) per user, which uniform
  sampling also used before the per-user sampler).
- plain floor: a plain tf.function of the same model's last-position logits and NumPy full ranks
  (history masked, ties pessimistic), no protocol code; compare it with "after, full only".

Reported per row: users, wall s, s per 10^5 users, the time spent building inputs (protocol,
timed separately), the peak RSS while the row ran (VmHWM reset before it) and how far above the
resident memory at its start it went, and the time per user relative to the floor. Every scorer
is traced before it is timed.
The after and plain rows must agree on the full-ranking metrics, and so must the before and
after rows on the same users (checked: "same" column; their sampled metrics differ, as uniform
negatives are drawn by another sampler since). Not a test: nothing asserts a time.

    uv run python benchmarks/evaluation_speed.py                       # synthetic 10^5 users
    uv run python benchmarks/evaluation_speed.py --items 300 20000 --games data/external/Video.txt

Datasets: synthetic random histories (`--users`, each `--items`; lengths 3 + geometric, mean
`--mean-length`, items drawn ∝ 1/rank^0.8: vectorized, not `tff_rec.data.generate`, which takes
minutes at 10^5 users), and the SASRec paper's Games file when `--games` is given (the
`sequences` source, no k-core). Prints a Markdown table, then JSON.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable, Optional

from tff_rec import quiet

quiet.silence()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tff_rec import data as data_stage  # noqa: E402
from tff_rec import evaluation, models, usage  # noqa: E402
from tff_rec.data.types import LeaveOneOutSplit, SequenceData  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCORER_ATTRIBUTE = "_tff_rec_last_position_scorer"  # both versions cache their scorer there


def baseline_module(commit: str) -> types.ModuleType:
    """tff_rec/evaluation.py as of `commit`, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{commit}:tff_rec/evaluation.py"], cwd=ROOT, check=True,
        capture_output=True, text=True,
    ).stdout
    module = types.ModuleType("evaluation_before")
    exec(compile(source, f"{commit}:tff_rec/evaluation.py", "exec"), module.__dict__)
    return module


def synthetic_split(users: int, items: int, mean_length: int, seed: int = 0) -> LeaveOneOutSplit:
    rng = np.random.default_rng(seed)
    lengths = 3 + rng.geometric(1 / max(1, mean_length - 2), size=users)
    popularity = 1 / np.arange(1, items + 1) ** 0.8
    flat = rng.choice(np.arange(1, items + 1, dtype=np.int32), size=int(lengths.sum()),
                      p=popularity / popularity.sum())
    sequences = tuple(np.split(flat, np.cumsum(lengths)[:-1]))
    sequence_data = SequenceData(
        users=tuple(map(str, range(users))), sequences=sequences, num_items=items,
        item_ids=tuple(map(str, range(1, items + 1))),
    )
    return data_stage.leave_one_out(sequence_data)


def games_split(path: str) -> LeaveOneOutSplit:
    interactions = data_stage.load("sequences", path, {})
    return data_stage.leave_one_out(data_stage.to_sequences(interactions, 0, 0))


def first_users(split: LeaveOneOutSplit, count: Optional[int]) -> LeaveOneOutSplit:
    """The split restricted to its first `count` users (all when None or 0)."""
    if not count or count >= len(split.train):
        return split
    return LeaveOneOutSplit(split.data, split.train[:count], split.validation[:count],
                            split.test[:count])


def plain_scorer(model: tf.keras.Model) -> Callable[[np.ndarray], tf.Tensor]:
    """A plain tf.function of the model's last-position logits."""
    return tf.function(lambda x: model.logits(model.encode(x, training=False)[:, -1, :]),
                       input_signature=[tf.TensorSpec([None, None], tf.int32)])


def plain_floor(score: Callable[[np.ndarray], tf.Tensor], split: LeaveOneOutSplit, max_len: int,
                batch_size: int = 512) -> dict[str, float]:
    """Full-ranking metrics with a plain scorer and NumPy: last-position logits, history
    (minus the target) and padding masked, ties against the target."""
    users = split.evaluation_users()
    histories = [np.append(split.train[u], split.validation[u]) for u in users]
    targets = split.test[users].astype(np.int64)
    lengths = np.array([len(h) for h in histories])
    flat = np.concatenate(histories)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    inputs = models.left_pad(histories, max_len)
    ranks = []
    for start in range(0, len(users), batch_size):
        stop = min(start + batch_size, len(users))
        scores = score(inputs[start:stop]).numpy()
        rows = np.arange(stop - start)
        target_scores = scores[rows, targets[start:stop]][:, None]
        history = flat[offsets[start]:offsets[stop]]
        scores[np.repeat(rows, lengths[start:stop]), history] = -np.inf
        scores[:, 0] = -np.inf
        scores[rows, targets[start:stop]] = -np.inf  # the target is not its own competitor
        ranks.append(1 + np.count_nonzero(scores >= target_scores, axis=1))
    return evaluation.metrics_from_ranks(np.concatenate(ranks), (10,))


def timed(label: str, users: int, run: Callable[[], dict[str, float]],
          inputs: Callable[[], Any]) -> dict[str, Any]:
    """Wall time and peak RSS of run(), and the time of inputs() (its protocol part) alone."""
    began = time.perf_counter()
    inputs()
    inputs_seconds = time.perf_counter() - began
    usage.reset_peak()
    resident = usage.rss_mb()
    began = time.perf_counter()
    metrics = run()
    seconds = time.perf_counter() - began
    peak = usage.peak_rss_mb()
    row = {"way": label, "users": users, "seconds": round(seconds, 2),
           "s_per_1e5_users": round(seconds * 1e5 / users, 1),
           "inputs_seconds": round(inputs_seconds, 2), "peak_rss_mb": peak,
           "added_peak_mb": round(peak - resident, 1), "metrics": metrics}
    print(f"  {label}: {seconds:.1f} s for {users} users, peak {row['peak_rss_mb']} MB",
          file=sys.stderr, flush=True)
    return row


def measure(name: str, split: LeaveOneOutSplit, args: argparse.Namespace,
            before: types.ModuleType) -> list[dict[str, Any]]:
    num_items = split.data.num_items
    print(f"{name}: {len(split.evaluation_users())} evaluated users, {num_items + 1} columns",
          file=sys.stderr, flush=True)
    model = models.build_model("sasrec", num_items, seed=0, embedding_dim=args.dim,
                               num_blocks=2, num_heads=1, max_len=args.max_len, dropout=0.0)
    sample = np.zeros((2, args.max_len), np.int32)
    common = dict(max_len=args.max_len, ks=(10,), negative_sampling="uniform")
    small = first_users(split, args.before_users)
    small_users = len(small.evaluation_users())
    all_users = len(split.evaluation_users())
    # The before path runs last: TensorFlow keeps the memory of its [b, max_len, V] logits.
    vars(model).pop(SCORER_ATTRIBUTE, None)
    evaluation.score_last_position(model, sample)  # trace outside the timing
    after = []
    for negatives, label in ((100, "after"), (0, "after, full only")):
        after.append(timed(
            label, all_users,
            lambda negatives=negatives: evaluation.evaluate(
                lambda b: evaluation.score_last_position(model, b, 512), split, "test",
                num_negatives=negatives, rng=np.random.default_rng(0), batch_size=512, **common),
            lambda: evaluation.evaluation_inputs(split, "test", args.max_len)))
    popularity = evaluation.popularity_scores(split.train, num_items).astype(np.float64)
    after.append(timed(
        "after, popularity negatives", all_users,
        lambda: evaluation.evaluate(
            lambda b: evaluation.score_last_position(model, b, 512), split, "test",
            num_negatives=100, rng=np.random.default_rng(0), batch_size=512,
            **{**common, "negative_sampling": "popularity"}, item_popularity=popularity),
        lambda: evaluation.evaluation_inputs(split, "test", args.max_len)))
    if small is not split:  # the before path's users, to compare metrics
        after.insert(0, timed(
            "after (before's users)", small_users,
            lambda: evaluation.evaluate(lambda b: evaluation.score_last_position(model, b, 512),
                                        small, "test", num_negatives=100,
                                        rng=np.random.default_rng(0), batch_size=512, **common),
            lambda: evaluation.evaluation_inputs(small, "test", args.max_len)))
    score = plain_scorer(model)
    score(sample)
    floor_row = timed("plain floor (full only)", all_users,
                      lambda: plain_floor(score, split, args.max_len), lambda: None)
    vars(model).pop(SCORER_ATTRIBUTE, None)
    before.score_last_position(model, sample)
    before_row = timed(
        "before", small_users,
        lambda: before.evaluate(lambda b: before.score_last_position(model, b, 512), small, "test",
                                num_negatives=100, rng=np.random.default_rng(0), **common),
        lambda: before.evaluation_inputs(small, "test", args.max_len))
    rows = [before_row, *after, floor_row]
    floor = rows[-1]
    same_users = rows[1] if small is not split else rows[-4]
    for row in rows:
        row["dataset"], row["columns"] = name, num_items + 1
        row["vs_floor"] = round(row["s_per_1e5_users"] / floor["s_per_1e5_users"], 2)

    def full_of(metrics: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in metrics.items() if not k.startswith("sampled_") and k != "users"}

    # rows: before, [after (before's users)], after, after full only, after popularity, floor
    rows[0]["same"] = full_of(rows[0]["metrics"]) == full_of(same_users["metrics"])
    full = full_of(rows[-3]["metrics"])  # after, full only
    rows[-4]["same"] = full_of(rows[-4]["metrics"]) == full  # after, uniform negatives
    rows[-2]["same"] = full_of(rows[-2]["metrics"]) == full  # after, popularity negatives
    rows[-1]["same"] = {k: floor["metrics"][k] for k in full} == full
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| dataset | columns | way | users | s | s / 10^5 users | inputs s | peak RSS MB | added MB | × floor | same |",
             "|:--|--:|:--|--:|--:|--:|--:|--:|--:|--:|:-:|"]
    for r in rows:
        same = {True: "yes", False: "NO"}.get(r.get("same"), "")
        lines.append(f"| {r['dataset']} | {r['columns']:,} | {r['way']} | {r['users']:,} | "
                     f"{r['seconds']} | {r['s_per_1e5_users']} | {r['inputs_seconds']} | "
                     f"{r['peak_rss_mb']:,.0f} | {r['added_peak_mb']:,.0f} | {r['vs_floor']} | {same} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, nargs="+", default=[300, 20_000])
    parser.add_argument("--mean-length", type=int, default=10)
    parser.add_argument("--games", help="the Games file (user item lines), e.g. data/external/Video.txt")
    parser.add_argument("--before-users", type=int, default=10_000,
                        help="users the before path ranks (0 = all)")
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--baseline-commit", default="a0f94e6")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    before = baseline_module(args.baseline_commit)
    rows: list[dict[str, Any]] = []
    for items in args.items:
        split = synthetic_split(args.users, items, args.mean_length)
        rows += measure(f"synthetic {args.users:,} users", split, args, before)
    if args.games:
        rows += measure("Games", games_split(args.games), args, before)
    print(f"Machine: {usage.cpu_model()}, {len(__import__('os').sched_getaffinity(0))} cores; "
          f"TF {tf.__version__}; SASRec d={args.dim}, 2 blocks, max_len {args.max_len}; "
          f"before = {args.baseline_commit}; total {time.perf_counter() - began:.0f} s.\n")
    print(table(rows))
    print()
    print(json.dumps({"settings": vars(args), "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
