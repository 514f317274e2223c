"""Shared test setup: quiet TF logs; the heaviest test files first; stop TFF's workers when the
session ends."""
import atexit
import os
import signal
from pathlib import Path

from tff_rec import runtime, threads
from tff_rec.quiet import silence

silence()
threads.fix()  # as the CLI does: before TensorFlow starts
atexit.register(runtime.shutdown)


# The heaviest files first (their share of one full run's test time, largest first). xdist hands
# whole files to its processes in collection order (`--dist loadfile --no-loadscope-reorder`,
# pyproject.toml): a long file handed out last would run alone at the end.
HEAVY_FIRST = (
    "test_end_to_end.py", "test_ray_engine.py", "test_faults.py", "test_cardinality.py",
    "test_notebooks.py", "test_reference.py", "test_determinism.py", "test_workers.py",
    "test_plan.py", "test_algorithms.py", "test_privacy_accounting.py", "test_extending.py",
    "test_subcohort.py", "test_saved_models.py", "test_privacy_audit.py", "test_noise_cohort.py",
    "test_plugins.py", "test_live_outputs.py", "test_algorithm_tasks.py", "test_fast_commands.py",
    "test_models_training.py", "test_models.py", "test_losses.py", "test_api.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: position for position, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


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
