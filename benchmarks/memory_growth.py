"""Memory over a long run: resident memory of the driver and the TFF worker, round 50 vs round 500.

Runs one federated task for 500 rounds in this process through the suite's runner, which records
each round's resident memory (`rss_mb`, `worker_rss_mb`) in the run's metrics.csv, and reports the
growth between round 50 (after warm-up: processes built, first evaluations done) and the last round.
Target: ≤ 5% growth of each. Cases (`--case`):

- `quickstart` (default): the quickstart's model and data, FedAvg, fixed cohorts of 10 users.
- `ml100k`: a catalogue of MovieLens-100K's size: synthetic data with 943 users and 1,682 items
  (106 interactions per user on average, as ML-100K; 1,680 items after filtering), the task
  format's default model (SASRec "base": d = 50, 2 blocks, max_len 50, dropout 0.2) and FedAvg
  settings (cohorts of 32, client SGD 0.5, server SGD 1), with Poisson sampling: cohort sizes
  that vary from round to round are what grew the TFF worker (`training/cardinality.py`).

Validation every 50 rounds, a checkpoint every 100. `--sampling` overrides the case's sampling,
`--dp` adds the gaussian aggregator (clip 1, z 1), `--unpadded` runs every round at its own cohort
size, as the runner did before `training/cardinality.py` (to see the growth it removed).

    uv run python benchmarks/memory_growth.py [--case quickstart|ml100k] [--rounds 500] [--cohort N]
                                              [--sampling fixed|poisson] [--dp] [--unpadded] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tff_rec import quiet, threads  # noqa: E402

quiet.silence()
threads.fix()  # before TensorFlow starts, as the CLI does (the runner checks it)

from tff_rec import record, results, runner, spec  # noqa: E402
from tff_rec.training import cardinality  # noqa: E402

# A task whose catalogue has MovieLens-100K's size; every other key takes the task format's default.
ML100K = {
    "name": "memory-ml100k",
    "data": {"dataset": "synthetic", "users": 943, "items": 1682, "mean_length": 106,
             "min_item_interactions": 1},
}
CASES = {  # case -> (base task, its cohort size and sampling)
    "quickstart": (lambda: spec.read_toml(ROOT / "tasks" / "quickstart.toml"), 10, "fixed"),
    "ml100k": (lambda: dict(ML100K), 32, "poisson"),
}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), default="quickstart")
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--cohort", type=int, help="clients per round (default: the case's)")
    parser.add_argument("--sampling", choices=["fixed", "poisson"], help="default: the case's")
    parser.add_argument("--dp", action="store_true", help="gaussian aggregator, clip 1, z 1")
    parser.add_argument("--unpadded", action="store_true",
                        help="every round at its own cohort size (one TFF executor per size)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.unpadded:
        cardinality.padded_next = lambda process, sizes: process.next
    make_base, cohort, sampling = CASES[args.case]
    base = make_base()
    base.pop("study", None)
    overrides = {
        "algorithm.rounds": args.rounds, "algorithm.clients_per_round": args.cohort or cohort,
        "algorithm.sampling": args.sampling or sampling, "evaluation.every": 50,
        "run.checkpoint_every": 100,
    }
    if args.dp:
        overrides.update({"privacy.mechanism": "gaussian", "privacy.clip": 1.0, "privacy.noise_multiplier": 1.0})
    task = spec.resolve_task(spec.apply_overrides(base, overrides), source="memory_growth")
    out = Path(tempfile.mkdtemp(prefix="tff-rec-memory-"))
    began = time.perf_counter()
    result = runner.run_task(task, 0, out, progress=sys.stderr.isatty())
    rows = results.load_metrics(result.path).set_index("round")
    early, last = min(50, args.rounds), args.rounds
    summary = json.loads((Path(result.path) / "summary.json").read_text())
    sizes = [int(n) for n in rows["clients"]]
    report = {"case": args.case, "items": summary.get("items"), "rounds": args.rounds,
              "cohort": args.cohort or cohort, "sampling": args.sampling or sampling, "dp": args.dp,
              "unpadded": args.unpadded,
              "cohort_sizes": f"{min(sizes)}-{max(sizes)} ({len(set(sizes))} distinct)",
              # what the runner ran them at (`training.cardinality`)
              "cardinalities": sorted(set(sizes) if args.unpadded else set(cardinality.plan(
                  sizes, cardinality.MOST, cardinality.SETTLED_BY).values())),
              "wall_s": round(time.perf_counter() - began, 1)}
    for column in ("rss_mb", "worker_rss_mb"):
        at_early, at_last = float(rows.loc[early, column]), float(rows.loc[last, column])
        report[f"{column}@{early}"] = at_early
        report[f"{column}@{last}"] = at_last
        report[f"{column}_growth_percent"] = round(100 * (at_last / at_early - 1), 2)
        report[f"{column}_max"] = float(rows[column].max())
    environment = record.environment()
    report["machine"] = f"{environment['cpu_model']}, {environment['cpu_count']} cores"
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:<28} {value}")


if __name__ == "__main__":
    main()
