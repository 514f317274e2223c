"""What a TFF worker process is started with and how its end is told, shared by the local worker
(`runtime`), the worker service command (`workers`, `tff-rec worker`) and the remote context
(`composing`); standard library only, importing no other tff_rec module."""
from __future__ import annotations

import ctypes
import os
import signal

WORKER_NAME = "worker_binary"
# Read by the worker when it starts: its environment is ours plus these.
WORKER_ENVIRONMENT = {
    # one intra- and one inter-op thread per computation (ARCHITECTURE.md, Performance notes)
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    # one glibc malloc arena: with the default (8 per core) the worker's freed memory stayed
    # resident in up to 15 extra arenas, +23-45% RSS between rounds 50 and 500; with one, +0.5-3.5%
    # at unchanged speed and bit-identical results (README, Performance)
    "MALLOC_ARENA_MAX": "1",
}
START_SECONDS = 120  # a worker not serving by then is reported, not waited for forever
_PR_SET_PDEATHSIG = 1


class WorkerDied(RuntimeError):
    """The TFF worker process ended while a computation needed it (killed, crashed, out of
    memory), or a remote worker service stopped answering."""


def describe_exit(pid: int, returncode: int | None, during: str = "") -> str:
    """'TFF worker (pid N) died [during round R] (killed by SIGKILL)' and the like."""
    if returncode is not None and returncode < 0:
        try:
            how = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
    else:
        how = f"exit status {returncode}"
    return f"TFF worker (pid {pid}) died {during + ' ' if during else ''}({how})"


def die_with(parent: int):
    """A preexec_fn: the child gets SIGKILL when the thread that forked it ends (PR_SET_PDEATHSIG),
    and exits at once if that happened before the prctl took effect."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    except (OSError, AttributeError):  # not Linux: the worker is stopped at exit only
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:
            os._exit(1)

    return preexec
