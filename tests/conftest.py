"""Shared test setup: quiet TF logs; stop TFF's workers when the session ends."""
import atexit
import os
import signal
from pathlib import Path

from tff_rec import runtime, threads
from tff_rec.quiet import silence

silence()
threads.fix()  # as the CLI does: before TensorFlow starts
atexit.register(runtime.shutdown)


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def pytest_sessionfinish(session, exitstatus):
    """Safety net: kill TFF workers orphaned by processes this session started.

    The CLI stops its worker on exit and SIGTERM (tests check it), but a child killed outright
    leaves its worker to init; that worker must not outlive the test session. It is recognised by
    its name, parent 1, and a start time after this session's.
    """
    session_start = int(_stat(os.getpid())[19])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != runtime.WORKER_NAME:
                continue
            fields = _stat(int(entry.name))
        except OSError:
            continue
        if int(fields[1]) == 1 and int(fields[19]) >= session_start:
            os.kill(int(entry.name), signal.SIGKILL)
