"""What a TFF worker process is started with and how its end is told, shared by the local worker
(`runtime`), the worker service command (`workers`, `tff-rec worker`) and the remote context
(`composing`); standard library only, importing no other tff_rec module."""
from __future__ import annotations

import ctypes
import os
import signal

WORKER_NAME = "worker_binary"


def worker_environment(calls: int) -> dict[str, str]:
    """What a worker running `calls` computations at once reads when it starts: its environment
    is ours plus these (ARCHITECTURE.md, Performance notes).

    - One intra-op thread: each op runs on one thread, so a reduction's order and the results do
      not depend on the machine (`threads` fixes the driver's for the same reason).
    - `calls` inter-op threads: TF's sessions in the worker share one process-wide pool that runs
      their ops; with one thread the concurrent computations (a round's clients) took turns on it
      and the worker used ~1.1 cores whatever its concurrency. Inter-op threads run independent
      ops side by side and never split one, so results are unchanged.
    - `calls` glibc malloc arenas, one per computation: with one in all, the computations queued
      on its lock; with more (glibc's default is 8 per core), freed memory stayed resident in
      them (+31% RSS between rounds 50 and 500 with 2 per computation, +8% with one; it
      levels off, README, Performance).
    """
    return {
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": str(calls),
        "MALLOC_ARENA_MAX": str(calls),
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
