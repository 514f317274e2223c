"""End to end: wall time, CPU time and peak memory of whole studies, as a user runs them.

Runs `tff-rec study STUDY --out <fresh folder> [--jobs N]` in a child process for each study and
jobs setting (a fresh results folder each time, so nothing is skipped), and reports:

- wall seconds of the command;
- CPU seconds of the command and everything it started (TFF workers, study jobs), from
  `RUSAGE_CHILDREN`; CPU / (wall × cores) is how busy it kept the machine;
- peak resident memory: of the largest single process (`ru_maxrss` of the children) and, from the
  run records, the largest driver and TFF-worker peak of any run;
- the speed-up of each `--jobs` setting over `--jobs 1` for the same study.

    uv run python benchmarks/end_to_end.py [--studies tasks/quickstart.toml ...] [--jobs 1 2]
        [--keep DIR] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_study(study: Path, jobs: int, keep: Optional[Path]) -> dict[str, Any]:
    """One timed `tff-rec study` in a fresh results folder (kept under `keep` if given)."""
    from tff_rec import results

    if keep is not None:
        out = keep / f"{study.stem}-jobs{jobs}"
        if out.exists():
            raise FileExistsError(f"{out} exists: the benchmark needs a fresh results folder")
    else:
        out = Path(tempfile.mkdtemp(prefix="tff-rec-e2e-"))
    executable = shutil.which("tff-rec") or str(Path(sys.executable).parent / "tff-rec")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(
        [executable, "study", str(study), "--out", str(out), "--jobs", str(jobs), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True,
    )
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"tff-rec study {study} failed:\n{done.stderr}")
    runs = results.load_runs([out])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row = {
        "study": study.stem, "jobs": jobs, "runs": len(runs), "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1), "busy": round(cpu / (wall * len(os.sched_getaffinity(0))), 2),
        "largest_process_peak_mb": round(after.ru_maxrss / 1024),
        "run_driver_peak_mb": round(runs["peak_rss_mb"].max()),
        "run_worker_peak_mb": round(runs["worker_peak_rss_mb"].max()),
    }
    if keep is None:
        shutil.rmtree(out, ignore_errors=True)
    return row


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="+", type=Path, default=[ROOT / "tasks" / "quickstart.toml"])
    parser.add_argument("--jobs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the records in KEEP/<study>-jobs<N> (default: a deleted temp folder)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from tff_rec import record

    rows = []
    for study in args.studies:
        serial = None
        for jobs in args.jobs:
            print(f"{study.stem}, --jobs {jobs} ...", file=sys.stderr, flush=True)
            row = run_study(study, jobs, args.keep)
            serial = row["wall_s"] if jobs == 1 else serial
            row["speed_up"] = round(serial / row["wall_s"], 2) if serial else None
            rows.append(row)
    environment = record.environment()
    machine = {k: environment[k] for k in ("cpu_model", "cpu_count", "python", "packages")}
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
    else:
        print(f"machine: {machine['cpu_model']}, {machine['cpu_count']} cores")
        print(markdown(rows))


if __name__ == "__main__":
    main()
