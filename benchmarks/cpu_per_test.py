"""A pytest plugin: the CPU time each test costs, and each test file's share of the suite's.

The suite's wall time on 2 cores is about its CPU time over 2 (README, the 10-minute target), and
this machine's speed varies by tens of percent between runs, so a file's *share* of the CPU is
what compares across runs. A test's CPU is its test process's plus every live descendant's
(TFF workers, `tff-rec` children, Ray nodes), from /proc, before and after the test (setup and
teardown included, so a module fixture counts in its first test). Children reaped by someone
other than their parent are missed.

    PYTHONPATH=benchmarks uv run --locked --extra test pytest -p cpu_per_test

prints, at the end, the suite's CPU seconds, the files by share and the costliest tests.
"""
from __future__ import annotations

import collections
import json
import os
import tempfile
from pathlib import Path

import pytest

TICKS = os.sysconf("SC_CLK_TCK")
FOLDER = Path(os.environ.get("TFF_REC_TEST_CPU_DIR") or tempfile.gettempdir()) / "tff-rec-test-cpu"
SHOWN = 15


def _processes() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, CPU ticks of it and its reaped children) of every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return found


def cpu_seconds() -> float:
    """CPU seconds of this process and its live descendants (with their reaped children)."""
    processes, tree, grew = _processes(), {os.getpid()}, True
    while grew:
        children = {pid for pid, (parent, _) in processes.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return sum(processes[pid][1] for pid in tree if pid in processes) / TICKS


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")  # xdist's workers have it


def pytest_configure(config: pytest.Config) -> None:
    if _is_controller(config):
        FOLDER.mkdir(parents=True, exist_ok=True)
        for old in FOLDER.glob("*.jsonl"):
            old.unlink()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    before = cpu_seconds()
    yield
    with open(FOLDER / f"{os.getpid()}.jsonl", "a") as out:
        out.write(json.dumps([item.nodeid, cpu_seconds() - before]) + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    if not _is_controller(config):
        return
    tests = [json.loads(line) for path in FOLDER.glob("*.jsonl") for line in path.read_text().splitlines()]
    if not tests:
        return
    files: collections.Counter = collections.Counter()
    for nodeid, seconds in tests:
        files[nodeid.split("::")[0]] += seconds
    total = sum(files.values())
    write = terminalreporter.write_line
    write(f"CPU of {len(tests)} tests: {total:.0f} s (test processes and their descendants)")
    for name, seconds in files.most_common(SHOWN):
        write(f"  {seconds:7.1f} s  {100 * seconds / total:5.1f}%  {name}")
    write("costliest tests:")
    for nodeid, seconds in sorted(tests, key=lambda t: -t[1])[:SHOWN]:
        write(f"  {seconds:7.1f} s  {nodeid}")
