"""The TFF runtime's worker: started with its own environment, stopped on demand."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tff_rec import runtime, worker_process


def _environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def _calls(pid: int) -> int:
    """The worker's --max_concurrent_computation_calls, from its command line."""
    [flag] = [arg for arg in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
              if arg.startswith("--max_concurrent_computation_calls=")]
    return int(flag.split("=")[1])


@pytest.mark.parametrize("calls", [1, 3])
def test_the_worker_starts_with_its_settings_and_the_driver_keeps_its_environment(calls):
    """One intra-op thread, and as many inter-op threads and malloc arenas as computations at
    once; the driver's own environment is left alone."""
    keys = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "MALLOC_ARENA_MAX")
    assert set(worker_process.worker_environment(calls)) == set(keys)
    before = {key: os.environ.get(key) for key in keys}
    runtime.stop_workers()
    runtime.configure(calls)
    try:
        [worker] = runtime.worker_pids()
        started_with = _environment(worker)
        assert _calls(worker) == calls
        assert {key: started_with.get(key) for key in keys} == {
            "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": str(calls),
            "MALLOC_ARENA_MAX": str(calls)}
        assert {key: os.environ.get(key) for key in keys} == before
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
