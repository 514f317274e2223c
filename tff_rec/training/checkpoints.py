"""A run's checkpoints: each one complete or absent, verified before use, never a dead end.

<run>/checkpoints/program_state_<round>/ is the checkpoint of a round: the trainer's state
(federated: the SavedModel `tff.program.FileProgramStateManager` writes, saved_model.pb and
variables/; centralized: the model's and optimizer's variables, state.npz), rows.json (the
metrics rows up to that round), with `evaluation.select = "best"` best.npz (the best validated
round's weights so far, `context.Selection`), and checkpoint.json (the round and the sha256 of
every other file). It is built in a staging folder and renamed into place, so a process killed
while saving leaves the checkpoints as they were; the newest `KEEP` are kept.

`load` takes the newest checkpoint whose files match their checksums and load; one that does not
(a truncated or corrupt file, a missing one, a state of another shape) is skipped with one
warning naming the file, and the run resumes from the previous checkpoint, or restarts from
round 0 when none is usable.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from tff_rec import faults, record

PREFIX = "program_state_"  # FileProgramStateManager's: a checkpoint folder is one of its versions
MANIFEST = "checkpoint.json"
KEEP = 2  # the newest and the one before, to fall back to
_STAGING = ".staging-"

_latest: Optional[int] = None  # the round of this process's current run's newest checkpoint

Writer = Callable[[Any, Path, int], None]  # (state, folder to create, round)
Reader = Callable[[Path, int], Any]  # (folder, round) -> state


def latest_round() -> Optional[int]:
    """The round of the newest checkpoint the current run saved or resumed from (None: none)."""
    return _latest


class Checkpoints:
    """The checkpoints of one run; `write` and `read` store the trainer's state in a folder."""

    def __init__(self, run_dir: Path, write: Writer, read: Reader, selection: Any = None):
        """`selection`: the run's `context.Selection`, saved with each checkpoint and restored
        from the one the run resumes from."""
        global _latest
        self.root = Path(run_dir) / record.CHECKPOINTS
        self._write, self._read, self._selection = write, read, selection
        _latest = None

    def versions(self) -> list[int]:
        """Rounds of the checkpoints present, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            number = entry.name[len(PREFIX):]
            if entry.name.startswith(PREFIX) and number.isdigit() and entry.is_dir():
                found.append(int(number))
        return sorted(found)

    def _folder(self, version: int) -> Path:
        return self.root / f"{PREFIX}{version}"

    def save(self, state: Any, round_number: int, rows: list[dict[str, Any]]) -> None:
        """Write the checkpoint of `round_number` (state and metrics rows so far), then drop all
        but the newest `KEEP`. A full disk raises `faults.DiskFull` and leaves no partial one."""
        global _latest
        staging = self.root / f"{_STAGING}{round_number}"
        folder, final = staging / f"{PREFIX}{round_number}", self._folder(round_number)
        try:
            with faults.writing(final):
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
                self._write(state, folder, round_number)
                if self._selection is not None:
                    self._selection.save(folder)
                record.write_json(folder / record.CHECKPOINT_ROWS, rows)
                record.write_json(folder / MANIFEST, {"round": round_number, "sha256": _checksums(folder)})
                if final.exists():  # left by a run that restarted from an earlier round
                    shutil.rmtree(final)
                os.replace(folder, final)
                _latest = round_number
        except faults.DiskFull as error:
            if error.path == str(final):
                raise
            raise faults.DiskFull(final) from error  # not the staging folder's file: the checkpoint
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for old in self.versions()[:-KEEP]:
            shutil.rmtree(self._folder(old), ignore_errors=True)

    def load(self) -> tuple[Any, int, list[dict[str, Any]]]:
        """(state, round, rows) of the newest usable checkpoint, or (None, 0, []) without one."""
        global _latest
        self._clear_leftovers()
        problems: list[str] = []
        for version in reversed(self.versions()):
            folder = self._folder(version)
            try:
                problem = _verify(folder, version)
                if problem is None:
                    rows = _rows(folder / record.CHECKPOINT_ROWS, version)
                    state = self._read(folder, version)
                    if self._selection is not None:
                        self._selection.restore(rows, folder)
            except Exception as error:  # noqa: BLE001 - any failure to load makes it unusable
                problem = f"{folder} does not load ({type(error).__name__}: {_first_line(error)})"
            if problem is None:
                self._drop(lambda v: v > version)
                if problems:
                    faults.warn(f"{'; '.join(problems)}: resuming from the checkpoint of round {version}")
                _latest = version
                return state, version, rows
            problems.append(problem)
        if problems:
            faults.warn(f"{'; '.join(problems)}: no usable checkpoint, restarting the run from round 0")
            self._drop(lambda v: True)
        return None, 0, []

    def _drop(self, which: Callable[[int], bool]) -> None:
        for version in self.versions():
            if which(version):
                shutil.rmtree(self._folder(version), ignore_errors=True)

    def _clear_leftovers(self) -> None:
        """Staging folders (and FileProgramStateManager's temporary ones) of interrupted saves."""
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.name.startswith(_STAGING) or (entry.name.startswith(PREFIX) and "_temp" in entry.name):
                    shutil.rmtree(entry, ignore_errors=True)


def _checksums(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): _sha256(path)
        for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MANIFEST
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(folder: Path, version: int) -> Optional[str]:
    """What is wrong with the checkpoint's files, naming the file; None when they match."""
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        expected = manifest["sha256"]
        if manifest["round"] != version or not isinstance(expected, dict):
            raise ValueError(f"not the manifest of round {version}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"checkpoint file {manifest_path} is unreadable ({_first_line(error)})"
    for name, checksum in sorted(expected.items()):
        path = folder / name
        if not path.is_file():
            return f"checkpoint file {path} is missing"
        if _sha256(path) != checksum:
            return f"checkpoint file {path} is corrupt (its checksum does not match)"
    if record.CHECKPOINT_ROWS not in expected:
        return f"checkpoint file {folder / record.CHECKPOINT_ROWS} is missing"
    return None


def _rows(path: Path, version: int) -> list[dict[str, Any]]:
    """The metrics rows of rounds 1 to `version` (ValueError if rows.json holds anything else)."""
    rows = json.loads(path.read_text())
    if not isinstance(rows, list) or [row.get("round") for row in rows if isinstance(row, dict)] != list(
            range(1, version + 1)):
        raise ValueError(f"{path} does not hold the rows of rounds 1 to {version}")
    return rows


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
