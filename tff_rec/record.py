"""Run records on disk: results/runs/<task-hash>/seed-<n>/, and study manifests.

A run record belongs to its task, not to a study: two studies (or `tff-rec run`s) of one task
share its records. A study folder results/<study>/ holds only its manifest, study.json: the
variants' labels, task hashes and grid coordinates, and the seeds; tables read runs through it.

A record holds config.toml (the resolved task), metrics.csv (per round), summary.json (final
metrics, ε, wall time), privacy.json (the ε ledger), env.json (package versions, git commit) and
tensorboard/ (TensorBoard event files of the metrics rows, `tff_rec.board`); test_ranks.npz (each
test user's rank of the held-out item, `tff_rec.saved`) and, for runs with a Keras model,
model/ (the final weights, and the selected round's with `evaluation.select = "best"`).
`tff-rec privacy audit` adds audit.json (empirical ε lower bound beside the accountant's ε, for
the task's mechanism at that seed) to the record of the same task and seed, made or not yet made:
it is not part of the run, which neither reads nor removes it.
Every file is written to a temporary name and renamed. summary.json is written last: a run is
complete exactly when it exists, and a complete run is never rewritten. While a run goes, its
metrics.csv grows a row per round (rewritten whole and renamed: a reader sees whole rows only),
and so do its TensorBoard events (`runner`); they are not a record until summary.json exists.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tff_rec import faults, stale

SUMMARY = "summary.json"
METRICS = "metrics.csv"
CONFIG = "config.toml"
PRIVACY = "privacy.json"
ENV = "env.json"
FAILED = "failed.json"  # a study run that raised: its error, until it is retried
CHECKPOINTS = "checkpoints"  # in-progress state; removed when the run completes
TENSORBOARD = "tensorboard"  # event files of the metrics rows (not compared: they hold wall times)
CHECKPOINT_ROWS = "rows.json"  # in each checkpoint folder: the metrics rows up to its round
MODEL = "model"  # model/model.json, final.npz, best.npz (`tff_rec.saved`)
RANKS = "test_ranks.npz"  # per test user: the held-out item's ranks (`tff_rec.saved`)
AUDIT = "audit.json"  # the privacy audit of the run's mechanism (`tff-rec privacy audit`), if made
RUNS = "runs"  # results/runs/<task-hash>/seed-<n>/
MANIFEST = "study.json"  # results/<study>/study.json
PACKAGES = (
    "tff-rec", "tensorflow", "tensorflow-federated", "tensorflow-privacy", "dp-accounting",
    "keras-nlp", "tensorflow-text", "numpy", "pandas",
)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def run_dir(out: Path, task_hash: str, seed: int) -> Path:
    """The record folder of a task (by hash) at one seed."""
    return Path(out) / RUNS / task_hash / f"seed-{seed}"


def manifest_path(out: Path, study: str) -> Path:
    return Path(out) / study / MANIFEST


def write_manifest(out: Path, manifest: Mapping[str, Any]) -> None:
    """Write a study's manifest (see `study_manifest`) to results/<study>/study.json."""
    write_json(manifest_path(out, manifest["name"]), manifest)


def study_manifest(name: str, source: str, seeds: Sequence[int], metrics: Sequence[str],
                   variants: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A manifest: variants are {label, task_hash, axes, overrides} dicts, in table order."""
    return {"name": name, "source": source, "seeds": list(seeds), "metrics": list(metrics),
            "variants": [dict(v) for v in variants]}


def add_to_manifest(out: Path, study: str, variant: Mapping[str, Any], seed: int) -> None:
    """Add one variant and seed to a study's manifest (creating it): what `tff-rec run` records.

    A variant with the same label is replaced (a task file edited and re-run keeps its name).
    """
    path = manifest_path(out, study)
    manifest = read_manifest(path.parent) if path.is_file() else study_manifest(study, "tff-rec run", [], [], [])
    manifest["variants"] = [v for v in manifest["variants"] if v["label"] != variant["label"]] + [dict(variant)]
    manifest["seeds"] = sorted(set(manifest["seeds"]) | {seed})
    write_manifest(out, manifest)


def read_manifest(study_dir: Path) -> dict[str, Any]:
    """The manifest of a study folder; ValueError naming the file when it is malformed."""
    path = Path(study_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable study manifest ({error})") from None
    well_formed = isinstance(manifest, dict) and {"name", "seeds", "variants"} <= manifest.keys() and all(
        isinstance(v, dict) and {"label", "task_hash"} <= v.keys() for v in manifest["variants"]
    )
    if not well_formed:
        raise ValueError(f"{path}: not a study manifest: it needs name, seeds, and variants with label and task_hash")
    return manifest


def is_complete(path: Path) -> bool:
    """A finished record: summary.json exists, and it and metrics.csv read (`damage`)."""
    return (Path(path) / SUMMARY).is_file() and damage(path) is None


def damage(path: Path) -> str | None:
    """What is wrong with a record's summary.json or metrics.csv (naming the file), or None.

    A damaged record (a truncated or garbled file, say after a crash of the machine) counts as
    incomplete: a run re-makes it, tables leave it out with a warning.
    """
    summary_path, metrics_path = Path(path) / SUMMARY, Path(path) / METRICS
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as error:
        return f"{summary_path}: unreadable ({error})"
    if not isinstance(summary, dict) or not all(
            isinstance(summary.get(key), dict) for key in ("test", "validation")):
        return f"{summary_path}: not a run summary (test and validation metrics missing)"
    try:
        with open(metrics_path, newline="") as stream:
            header, *rows = list(csv.reader(stream)) or [[]]
    except (OSError, ValueError, csv.Error) as error:
        return f"{metrics_path}: unreadable ({error})"
    ragged = next((n for n, row in enumerate(rows, 2) if len(row) != len(header)), None)
    if ragged is not None:
        return f"{metrics_path}: line {ragged} has not the {len(header)} columns of the header"
    rounds = summary.get("rounds")
    if isinstance(rounds, int) and rounds > 0:
        numbers = [row[header.index("round")] for row in rows] if "round" in header else []
        if numbers != [str(n) for n in range(1, rounds + 1)]:
            return f"{metrics_path}: rounds 1 to {rounds} expected, {len(rows)} rows found"
    return None


def write_atomic(path: Path, text: str, sync: bool = True) -> None:
    """Write text to path through a temporary file in the same folder and a rename.

    A full disk raises `faults.DiskFull` naming `path`, and leaves no temporary file. `sync`:
    fsync the file before the rename (off for files rewritten every round while a run goes).
    """
    with faults.writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; records are ordinary files
            with os.fdopen(handle, "w") as stream:
                stream.write(text)
                stream.flush()
                if sync:
                    os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def write_arrays(path: Path, arrays: Mapping[str, Any]) -> None:
    """Write named arrays as an .npz file (`np.load` reads it) atomically, with the same bytes
    for the same arrays: members in the given order, stored uncompressed, every timestamp fixed
    (`np.savez` stamps each member with the time of writing)."""
    import zipfile

    import numpy as np

    with faults.writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.chmod(temporary, 0o666 & ~_UMASK)
            with os.fdopen(handle, "wb") as stream:
                with zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                    for name, value in arrays.items():
                        member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                        member.external_attr = 0o644 << 16
                        with archive.open(member, "w", force_zip64=True) as entry:
                            np.lib.format.write_array(entry, np.asarray(value),
                                                      allow_pickle=False)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# metrics.csv's columns come in this order, then val_*, test_* and the rest, each by name
# (`metrics_columns`): the same whatever order a row's keys have (rows resumed from a
# checkpoint's rows.json come with sorted keys), so a resumed run writes the same bytes.
METRICS_FIRST = ("round", "clients", "epsilon", "clip", "loss", "bytes_down", "bytes_up",
                 "seconds", "rss_mb", "worker_rss_mb")


def metrics_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns of metrics rows, in metrics.csv's order (`METRICS_FIRST`)."""
    names = {k for row in rows for k in row}

    def key(name: str) -> tuple:
        if name in METRICS_FIRST:
            return (0, METRICS_FIRST.index(name))
        group = 1 if name.startswith("val_") else 2 if name.startswith("test_") else 3
        # by name, numbers by value: hr@5 before hr@10
        return (group, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)])

    return sorted(names, key=key)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], sync: bool = True,
              columns: Sequence[str] | None = None) -> None:
    """Write rows (dicts) as CSV; columns: `columns`, or the union of keys in first-seen order."""
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue(), sync=sync)


def read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as stream:
        return [
            {k: _parse_number(v) for k, v in row.items()} for row in csv.DictReader(stream)
        ]


def _parse_number(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def to_toml(table: Mapping[str, Any]) -> str:
    """Serialize a nested dict of TOML-compatible values (a resolved task) with tomli-w.

    TOML has no null: keys whose value is None are left out (an absent key means "default
    (none)"), at any depth. Arrays are written one element per line (tomli-w's layout).
    """
    import tomli_w

    return tomli_w.dumps(_without_none(table))


def _without_none(table: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _without_none(value) if isinstance(value, Mapping) else value
            for key, value in table.items() if value is not None}


def environment() -> dict[str, Any]:
    """Package versions, Python, platform, CPU model and count, git commit and dirtiness, uv.lock hash."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    from tff_rec import usage

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": usage.cpu_model(),
        "cpu_features": usage.cpu_features(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "packages": versions,
        "git": stale.git_state(),
        "uv_lock_sha256": _file_sha256(_repo_root() / "uv.lock"),
        "code_sha256": stale.code_sha256(),  # the package's sources and uv.lock: see `stale`
    }


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _file_sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def find_runs(roots: Iterable[Path]) -> list[Path]:
    """Complete run folders (those holding summary.json) below the given folders."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if is_complete(root):
            found.add(root)
        found.update(p.parent for p in root.rglob(SUMMARY))
    return sorted(found)
