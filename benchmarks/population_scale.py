"""Population scale: the data stage and the partition store at 10^5 and 10^6 users.

Times (wall and CPU) and the process's peak RSS after each stage, for the synthetic source and a
plain sequence file of the same log, then optionally the end-to-end time from a task file to the
first federated round (`--first-round`). Nothing here asserts a time (ARCHITECTURE.md, Conventions).

    uv run python benchmarks/population_scale.py                      # 10^5 and 10^6 users
    uv run python benchmarks/population_scale.py --users 100000 --json
    uv run python benchmarks/population_scale.py --users 1000000 --first-round 1000000

Stages (each takes the previous stage's value, as `tff_rec.prepare` and the runner chain them):
generate (`synthetic.generate`, or reading the sequence file), filter (`to_sequences`, 5-core),
split (`leave_one_out`), examples (the SASRec builder, max_len 30), partition (`natural`: one
client per user), store build (`ensure_database` into an empty directory), store open (the cached
database checked and opened), cohort read (1,000 seeded clients read from the open store).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAX_LEN = 30
COHORT = 1000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stages:
    """Runs named stages, recording wall and CPU seconds and the peak RSS after each."""

    def __init__(self, label: str):
        self.label = label
        self.rows: list[dict[str, Any]] = []

    def __call__(self, name: str, function: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        value = function()
        row = {
            "stage": name,
            "wall_s": round(time.perf_counter() - wall, 2),
            "cpu_s": round(time.process_time() - cpu, 2),
            "peak_rss_mb": round(peak_rss_mb()),
        }
        self.rows.append(row)
        print(f"  {self.label} {name}: {row['wall_s']} s wall, {row['cpu_s']} s CPU, "
              f"peak RSS {row['peak_rss_mb']} MB", file=sys.stderr, flush=True)
        return value


def write_sequence_file(interactions, path: Path) -> None:
    """The log as a sequence file: 'user item' lines, each user's lines in time order."""
    events = interactions.events
    order = np.lexsort((events["timestamp"].to_numpy(), events["user"].cat.codes.to_numpy()))
    users = events["user"].astype(str).to_numpy()[order]
    items = events["item"].astype(str).to_numpy()[order]
    with open(path, "w") as handle:
        for start in range(0, len(users), 1_000_000):
            stop = start + 1_000_000
            handle.write("\n".join(np.char.add(np.char.add(users[start:stop].astype("U"), " "),
                                               items[start:stop].astype("U"))))
            handle.write("\n")


def pipeline(users: int, source: str, workdir: Path) -> list[dict[str, Any]]:
    """One population through every stage; returns the stage rows."""
    from tff_rec import data as data_stage
    from tff_rec import models
    from tff_rec.data import synthetic
    from tff_rec.data.sequence_file import load_sequences
    from tff_rec.partition import partition
    from tff_rec.partition import store

    stages = Stages(f"{source} {users:,}")
    if source == "synthetic":
        interactions = stages("generate", lambda: synthetic.generate(0, users=users))
    else:
        path = workdir / f"sequences-{users}.txt"
        if not path.exists():  # in another process, so its memory is not this one's peak
            subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, %r); import population_scale as b; "
                            "from tff_rec.data import synthetic; from pathlib import Path; "
                            "b.write_sequence_file(synthetic.generate(0, users=%d), Path(%r))"
                            % (str(Path(__file__).parent), users, str(path))], check=True)
        interactions = stages("read file", lambda: load_sequences(path))
    sequences = stages("filter", lambda: data_stage.to_sequences(interactions, 5, 5))
    del interactions
    split = stages("split", lambda: data_stage.leave_one_out(sequences))
    recipe = models.example_recipe("sasrec", 0, max_len=MAX_LEN)
    builder = recipe.pop("builder")
    inputs, targets = stages("examples", lambda: models.EXAMPLES[builder].build(
        list(split.train), split.data.num_items, MAX_LEN, **recipe))
    parts = stages("partition", lambda: partition(split, "natural", seed=0))
    cache = workdir / f"store-{source}-{users}"
    key = f"population-{users}"
    stages("store build", lambda: store.ensure_database(parts, inputs, targets, cache, key))
    clients = stages("store open", lambda: store.open_clients(
        store.ensure_database(parts, inputs, targets, cache, key), MAX_LEN))
    cohort = sorted(np.random.default_rng(1).choice(clients.client_ids, COHORT, replace=False))
    read = stages(f"cohort read ({COHORT})", lambda: clients.cohort_examples(cohort))
    assert all(np.array_equal(read[cid][0], inputs[parts.clients[cid]].reshape(-1, MAX_LEN))
               for cid in cohort[:50])
    rows = stages.rows
    for row in rows:
        row.update(users=users, source=source)
    return rows


FIRST_ROUND_TASK = """name = "population-{users}"
[data]
dataset = "synthetic"
users = {users}
[partition]
scheme = "natural"
[model]
name = "sasrec"
max_len = {max_len}
embedding_dim = 8
num_blocks = 1
num_heads = 1
dropout = 0.0
[algorithm]
name = "fedavg"
rounds = 2
clients_per_round = 100
[evaluation]
every = 1000
"""

# Runs `tff-rec run` and stops it when the runner reports its first round (round 1 trains only:
# validation comes at round `every` or the last round), printing the time; the runner's `finally`
# stops the TFF worker on the way out.
_FIRST_ROUND_CHILD = """
import sys, time
from tff_rec import cli, runner

def update(self, row, resumed=False):
    print("FIRST_ROUND", time.time(), flush=True)
    raise SystemExit(0)

runner.RunProgress.update = update
cli.main(["run", sys.argv[1], "--out", sys.argv[2], "--no-progress"])
"""


def first_round(users: int, workdir: Path) -> dict[str, Any]:
    """Wall time from starting `tff-rec run TASK` (a fresh process) to its first round's report."""
    task = workdir / f"first-round-{users}.toml"
    task.write_text(FIRST_ROUND_TASK.format(users=users, max_len=MAX_LEN))
    start, children = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [sys.executable, "-c", _FIRST_ROUND_CHILD, str(task), str(workdir / f"results-{users}")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    done = [line for line in result.stdout.splitlines() if line.startswith("FIRST_ROUND")]
    if not done:
        print(result.stderr[-3000:], file=sys.stderr)
        return {"users": users, "first_round_s": None}
    seconds = round(float(done[0].split()[1]) - start, 1)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run and its TFF worker, to exit
    cpu = round(after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime, 1)
    print(f"  task file → first round at {users:,} users: {seconds} s wall, {cpu} s CPU (driver "
          f"and worker, until they exited)", file=sys.stderr, flush=True)
    return {"users": users, "first_round_s": seconds, "cpu_s": cpu}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--sources", nargs="+", default=["synthetic", "sequences"],
                        choices=["synthetic", "sequences"])
    parser.add_argument("--first-round", type=int, nargs="*", default=[], metavar="USERS",
                        help="also time `tff-rec run` from the task file to the first round at these sizes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows, ends = [], []
    with tempfile.TemporaryDirectory(prefix="population-scale-") as directory:
        workdir = Path(directory)
        for users in args.users:
            for source in args.sources:
                rows.extend(_in_subprocess(users, source, workdir))
        for users in args.first_round:
            ends.append(first_round(users, workdir))
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "stages": rows, "first_round": ends}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("| users | source | stage | wall s | CPU s | peak RSS MB |")
    print("|---:|---|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['users']:,} | {row['source']} | {row['stage']} | {row['wall_s']} | "
              f"{row['cpu_s']} | {row['peak_rss_mb']} |")
    for end in ends:
        print(f"\ntask file → first round at {end['users']:,} users: {end['first_round_s']} s wall, "
              f"{end.get('cpu_s')} s CPU")


def _in_subprocess(users: int, source: str, workdir: Path) -> list[dict[str, Any]]:
    """Each population in a fresh process, so peak RSS is that population's own."""
    code = ("import json, sys; from pathlib import Path; sys.path.insert(0, %r); "
            "import population_scale as b; "
            "print('ROWS' + json.dumps(b.pipeline(%d, %r, Path(%r))))"
            % (str(Path(__file__).parent), users, source, str(workdir)))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if result.returncode:
        raise SystemExit(f"population {users} ({source}) failed with exit code {result.returncode}")
    line = [line for line in result.stdout.splitlines() if line.startswith("ROWS")][-1]
    return json.loads(line[4:])


if __name__ == "__main__":
    main()
