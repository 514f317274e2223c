"""Same task + same seed → same record, whatever the load.

Two copies of one tiny run start at the same time; from the first round either of them finishes,
two busy loops keep both cores loaded as well. Their metrics.csv (less the wall-time and memory
columns) and summary metrics must be identical. (The loads start with the rounds, not before:
spinning through both copies' TensorFlow import and process build would double this test's CPU
time and load nothing that matters.)
Before the fix, concurrent client computations in the TFF worker drew dropout masks from shared
RNG state and the copies differed. (`--jobs`: tests/test_end_to_end.py's parallel-study test;
kill and resume: tests/test_faults.py.)
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from test_end_to_end import ROOT, metric_rows, task_text

from tff_rec import record, threads


@contextlib.contextmanager
def busy_cores(count: int, seconds: int = 600) -> Iterator[None]:
    """`count` processes spinning on the CPU (each ends by itself after `seconds` at most)."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    loops = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def _start_run(path: Path, out: Path) -> subprocess.Popen:
    executable = str(Path(sys.executable).parent / "tff-rec")
    return subprocess.Popen(
        [executable, "run", str(path), "--out", str(out), "--no-progress"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_a_round(outs: list[Path], children: list[subprocess.Popen], timeout: float = 300) -> None:
    """Until either run has written the metrics of its first round (both still running)."""
    deadline = time.monotonic() + timeout
    while not any(any(out.glob(f"runs/*/seed-0/{record.METRICS}")) for out in outs):
        for child in children:
            if child.poll() is not None:
                pytest.fail(f"a run ended before its first round: {child.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "no round within the timeout"
        time.sleep(0.05)


def _measured(summary: dict) -> dict:
    """What a summary says about the learning (not about the machine or the clock)."""
    return {key: summary[key] for key in ("validation", "test", "epsilon", "delta", "users")}


def test_two_copies_of_a_run_at_once_on_busy_cores_give_identical_records(tmp_path):
    """DP-FedAvg with dropout: both copies' TFF workers run client computations concurrently."""
    path = tmp_path / "task.toml"
    path.write_text(task_text(rounds="8", dropout="0.3", clients_per_round="12") + (
        '[privacy]\nmechanism = "gaussian"\nclip = 0.5\nnoise_multiplier = 1.0\n'))
    outs = [tmp_path / "first", tmp_path / "second"]
    children = [_start_run(path, out) for out in outs]
    try:
        _wait_for_a_round(outs, children)
        with busy_cores(2):
            outputs = [child.communicate(timeout=600) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (stdout, stderr) in zip(children, outputs):
        assert child.returncode == 0, stderr
    runs = [next(out.glob("runs/*/seed-0")) for out in outs]
    first, second = (json.loads((run / record.SUMMARY).read_text()) for run in runs)
    assert first["epsilon"] is not None and first["task_hash"] == second["task_hash"]
    assert _measured(first) == _measured(second)
    assert metric_rows(runs[0]) == metric_rows(runs[1])
    assert len(metric_rows(runs[0])) == 8
    assert json.loads((runs[0] / record.ENV).read_text())["intra_op_threads"] == threads.INTRA_OP_THREADS
