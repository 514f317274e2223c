"""Memory over a long run: resident memory of the driver and the TFF worker, round 50 vs round 500.

Runs one federated task (the quickstart's model and data, FedAvg, a cohort of 10 users, validation
every 50 rounds) for 500 rounds in this process through the suite's runner, which records each
round's resident memory (`rss_mb`, `worker_rss_mb`) in the run's metrics.csv, and reports the
growth between round 50 (after warm-up: processes built, first evaluations done) and the last round.
Target: ≤ 5% growth of each. Add `--dp` for the gaussian aggregator.

    uv run python benchmarks/memory_growth.py [--rounds 500] [--cohort 10] [--dp] [--json]
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

from tff_rec import quiet  # noqa: E402

quiet.silence()

from tff_rec import record, results, runner, spec  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--cohort", type=int, default=10)
    parser.add_argument("--dp", action="store_true", help="gaussian aggregator, clip 1, z 1")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    base = spec.read_toml(ROOT / "tasks" / "quickstart.toml")
    base.pop("study")
    overrides = {
        "algorithm.rounds": args.rounds, "algorithm.clients_per_round": args.cohort,
        "algorithm.sampling": "fixed", "evaluation.every": 50, "run.checkpoint_every": 100,
    }
    if args.dp:
        overrides.update({"privacy.mechanism": "gaussian", "privacy.clip": 1.0, "privacy.noise_multiplier": 1.0})
    task = spec.resolve_task(spec.apply_overrides(base, overrides), source="memory_growth")
    out = Path(tempfile.mkdtemp(prefix="tff-rec-memory-"))
    began = time.perf_counter()
    result = runner.run_task(task, 0, out, progress=sys.stderr.isatty())
    rows = results.load_metrics(result.path).set_index("round")
    early, last = min(50, args.rounds), args.rounds
    report = {"rounds": args.rounds, "cohort": args.cohort, "dp": args.dp,
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
