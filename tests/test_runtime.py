"""The TFF runtime's worker: started with its own environment, stopped on demand."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowing
def test_a_sigterm_swallowed_in_a_gc_callback_still_ends_the_run(monkeypatch):
    """The handler's SystemExit is lost when it runs inside a garbage-collection callback (as
    after a checkpoint's gc.collect()); the training loop's next check raises it again."""
    import gc

    monkeypatch.setattr(runtime, "_terminated_by", None)
    runtime.exit_if_terminated()  # no signal yet: nothing happens

    def sigterm_during_collection(phase: str, info: dict) -> None:
        if phase == "start":
            runtime._exit_on_sigterm(15, None)

    gc.callbacks.append(sigterm_during_collection)
    try:
        gc.collect()  # Python prints "Exception ignored" and carries on
    finally:
        gc.callbacks.remove(sigterm_during_collection)
    with pytest.raises(SystemExit) as ended:
        runtime.exit_if_terminated()
    assert ended.value.code == 128 + 15
