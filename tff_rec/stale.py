"""Stale records: complete run records made by other code than the code running now.

A record's numbers are a function of its task, its seed and the code. The task hash names the
first two; the code is named by `code_sha256()`, a SHA-256 over the package's source files and the
project's `uv.lock` (the package versions), which every record keeps in env.json. A complete
record whose hash differs from the running code's is stale: `run` and `study` still reuse it by
default, with a warning that counts them, and re-make it with `--rerun-stale`; `compare` marks
it. Edits outside the package (README, tests, tasks) change no number and make nothing stale.
Records older than the hash compare their git commit instead (stale when it differs, or when
the tree they came from was dirty).
"""
from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any, Optional

PACKAGE = Path(__file__).resolve().parent
LOCK_FILE = PACKAGE.parent / "uv.lock"
ENV = "env.json"  # record.ENV (not imported: record imports this module)


@functools.lru_cache(maxsize=1)
def code_sha256() -> str:
    """SHA-256 over every .py file of the package (path and bytes, in path order) and uv.lock."""
    digest = hashlib.sha256()
    files = sorted(PACKAGE.rglob("*.py"))
    if LOCK_FILE.is_file():
        files.append(LOCK_FILE)
    for path in files:
        name = path.relative_to(PACKAGE.parent).as_posix()
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit and dirtiness of the code's git checkout, or nulls outside one.

    Read once per process, at the first run: the code a process runs is the code it loaded, even
    if the checkout changes while a long study goes on.
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _environment(directory: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads((directory / ENV).read_text())
    except (OSError, ValueError):
        return None


def is_stale(directory: Path) -> bool:
    """Whether the record in `directory` was made by other code than the running code (a record
    without a readable env.json cannot show its code, and counts as stale)."""
    environment = _environment(directory)
    if not isinstance(environment, dict):
        return True
    if "code_sha256" in environment:
        return environment["code_sha256"] != code_sha256()
    made, now = environment.get("git") or {}, git_state()
    return made.get("dirty") is not False or made.get("commit") != now.get("commit")


def warning(stale: int, complete: int, where: str) -> str:
    """The one line `run` and `study` print when they reuse stale records."""
    return (f"{stale} of {complete} complete records of {where} are stale (made by other code "
            f"than this); reused as they are: --rerun-stale re-makes them")
