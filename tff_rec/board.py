"""TensorBoard event files of a run: every numeric column of its metrics rows, step = round.

A run writes them to `<record>/tensorboard/<label>/` while it goes (`runner`), with `tf.summary`:
one scalar per numeric column of each metrics.csv row, tagged with the column's name (loss,
clients, epsilon, clip, bytes_down, bytes_up, seconds, rss_mb, worker_rss_mb, val_ndcg@10, ...;
centralized runs: per epoch), at step = the row's round. `tensorboard --logdir results/runs` shows
every run side by side as `<task-hash>/seed-<n>/tensorboard/<label>` (`--logdir results/runs/<hash>`:
one task's seeds). Values are float32, as TensorBoard keeps scalars; metrics.csv has them exactly.
Event files hold wall times, the host name and the process id: they are not part of a record's
reproducible content (which is metrics.csv and summary.json's metrics: README, Reproducibility).
"""
from __future__ import annotations

import numbers
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from tff_rec import faults, record


def folder(run_dir: Path, label: str) -> Path:
    """The event folder of a run labelled `label`: <record>/tensorboard/<label as a folder name>/."""
    name = re.sub(r"[/\\\0]", "_", label).strip()
    return Path(run_dir) / record.TENSORBOARD / (name if name not in ("", ".", "..") else "run")


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's numeric columns but `round` (the step): what goes to TensorBoard."""
    return {column: float(value) for column, value in row.items()
            if column != "round" and isinstance(value, numbers.Real) and not isinstance(value, bool)}


class EventLog:
    """An open event file in `path`: `write(rows)` adds their scalars and flushes."""

    def __init__(self, path: Path):
        import tensorflow as tf

        self._tf, self.path = tf, Path(path)
        with faults.writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
            # flushed after every write (below); the queue and timer only bound what a crash loses
            self._writer = tf.summary.create_file_writer(str(self.path), max_queue=1000,
                                                         flush_millis=10_000)

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        tf = self._tf
        with faults.writing(self.path), self._writer.as_default():
            for row in rows:
                step = int(row["round"])
                for tag, value in scalars(row).items():
                    tf.summary.scalar(tag, value, step=step)
            self._writer.flush()

    def close(self) -> None:
        with faults.writing(self.path):
            self._writer.close()
