"""The TFF runtime's worker: started with its own environment, stopped on demand."""
from __future__ import annotations

import os
from pathlib import Path

from tff_rec import runtime


def _environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def test_the_worker_starts_with_its_settings_and_the_driver_keeps_its_environment():
    before = {key: os.environ.get(key) for key in runtime.WORKER_ENVIRONMENT}
    runtime.stop_workers()
    runtime.configure()
    try:
        [worker] = runtime.worker_pids()
        started_with = _environment(worker)
        for key, value in runtime.WORKER_ENVIRONMENT.items():
            assert started_with.get(key) == value, key
        assert {key: os.environ.get(key) for key in runtime.WORKER_ENVIRONMENT} == before
    finally:
        runtime.stop_workers()
    assert runtime.worker_pids() == []
