"""Faults the runner turns into clear outcomes: a full disk, a damaged file, a warning.

A full disk (ENOSPC, EDQUOT) anywhere while writing becomes `DiskFull` naming the path being
written: the command stops with exit 2 (`cli.main`), a study stops too (every later run would
fail the same way), and nothing half-written is left (records and checkpoints are written to
temporary names and renamed, and the run's lock file is removed).
"""
from __future__ import annotations

import contextlib
import errno
import sqlite3
import sys
from pathlib import Path
from typing import Iterator

FULL = (errno.ENOSPC, errno.EDQUOT)
_FULL_MESSAGES = ("no space left on device", "disk quota exceeded", "database or disk is full")


class DiskFull(Exception):
    """No space left on the device (or quota) while writing `path`."""

    def __init__(self, path: str | Path):
        super().__init__(str(path))
        self.path = str(path)

    def __str__(self) -> str:
        return f"no space left on device writing {self.path}"


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` says the disk (or quota) is full: an OSError with ENOSPC or EDQUOT, or a
    TensorFlow or SQLite error whose message says so."""
    if isinstance(error, DiskFull):
        return True
    if isinstance(error, OSError) and error.errno in FULL:
        return True
    if isinstance(error, sqlite3.Error) or type(error).__module__.startswith("tensorflow"):
        return any(text in str(error).lower() for text in _FULL_MESSAGES)
    return False


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a full-disk error raised inside into `DiskFull(path)`."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as error:  # noqa: BLE001 - re-raised unless it is a full disk
        if is_disk_full(error):
            raise DiskFull(path) from error
        raise


def warn(message: str) -> None:
    """One line on stderr: `tff-rec: warning: <message>`."""
    print(f"tff-rec: warning: {message}", file=sys.stderr, flush=True)
