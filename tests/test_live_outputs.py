"""Watching a run: progress lines on stderr, metrics.csv growing, TensorBoard events.

One DP-FedAvg run of the tiny task (`test_end_to_end`) is made in-process with `--progress lines`,
interrupted after round 2 and resumed, while a thread keeps reading its metrics.csv and every
checkpoint save looks at the record folder; the tests read what it printed and wrote (that a
resumed run's metrics.csv equals an uninterrupted one's: tests/test_faults.py). A centralized run
shows its epochs; parallel jobs' lines are checked on `RunProgress` in two processes.
"""
from __future__ import annotations

import contextlib
import csv
import io
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from test_end_to_end import ROOT, metric_rows, task_text
from tff_rec import board, cli, progress, record
from tff_rec.training import checkpoints

ROUNDS = 4
DP = ["--set", "privacy.mechanism=gaussian", "--set", "privacy.clip=1.0",
      "--set", "privacy.noise_multiplier=1.0"]
LINE = re.compile(r"tiny seed 0 · round (\d+)/4 · loss (\d+\.\d{4})( · ndcg@10 (\d\.\d{4}))?"
                  r" · ε (\d+\.\d\d) · \d+\.\d+ s")


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("task") / "task.toml"
    path.write_text(task_text(rounds=str(ROUNDS)))  # validation every 2 rounds, checkpoint every 1
    return path


def the_run(out: Path) -> Path:
    [run] = out.glob("runs/*/seed-0")
    return run


def read_events(run: Path) -> dict[str, dict[int, float]]:
    """tag → step → value of the run's TensorBoard event files (each (tag, step) once)."""
    import tensorflow as tf

    found: dict[str, dict[int, float]] = {}
    for path in sorted((run / record.TENSORBOARD).rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps = found.setdefault(value.tag, {})
                assert event.step not in steps, f"{value.tag} twice at step {event.step}"
                steps[event.step] = float(tf.make_ndarray(value.tensor))
    return found


def csv_scalars(run: Path) -> dict[str, dict[int, float]]:
    """The same from metrics.csv: every non-empty column but `round`, as float32."""
    expected: dict[str, dict[int, float]] = {}
    with open(run / record.METRICS, newline="") as stream:
        for row in csv.DictReader(stream):
            for column, text in row.items():
                if column != "round" and text != "":
                    expected.setdefault(column, {})[int(row["round"])] = float(np.float32(float(text)))
    return expected


@contextlib.contextmanager
def watching(run_glob: Path):
    """Read metrics.csv (under `run_glob`) over and over in a thread: yields the list of every
    distinct text it read."""
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for path in run_glob.glob(f"runs/*/seed-0/{record.METRICS}"):
                try:
                    text = path.read_text()
                except FileNotFoundError:
                    continue
                if not seen or seen[-1] != text:
                    seen.append(text)
            stop.wait(0.005)  # leave the run the interpreter

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield seen
    finally:
        stop.set()
        reader.join(timeout=10)


def look(run: Path) -> tuple[list[dict], bool, list[int]]:
    """The record folder now: metrics.csv's rows, whether summary.json exists, the events' steps."""
    with open(run / record.METRICS, newline="") as stream:
        rows = list(csv.DictReader(stream))
    return rows, (run / record.SUMMARY).exists(), sorted(read_events(run).get("loss", {}))


@pytest.fixture(scope="module")
def watched(task, tmp_path_factory):
    """A DP run with `--progress lines`, interrupted (as by Ctrl-C) after its checkpoint of round
    2 and run again to the end, while a thread reads its metrics.csv. Returns the results folder,
    the two attempts' stderr, the distinct metrics.csv texts the reader saw, what the record folder
    held at each checkpoint save (round → `look`) and after the interruption."""
    out = tmp_path_factory.mktemp("watched")
    saves = {}
    save = checkpoints.Checkpoints.save

    def look_then_save(self, state, number, rows):
        saves[number] = look(the_run(out))
        save(self, state, number, rows)
        if number == 2 and len(stderrs) == 1:  # the first attempt
            raise KeyboardInterrupt

    stderrs: list[io.StringIO] = []
    handler = signal.getsignal(signal.SIGINT)
    checkpoints.Checkpoints.save = look_then_save
    try:
        with watching(out) as seen:
            for code in (130, 0):
                stderrs.append(io.StringIO())
                if code == 0:
                    interrupted = look(the_run(out))
                with contextlib.redirect_stderr(stderrs[-1]):
                    command = ["run", str(task), "--out", str(out), "--progress", "lines", *DP]
                    assert cli.main(command) == code
    finally:
        checkpoints.Checkpoints.save = save
        signal.signal(signal.SIGINT, handler)
    return out, [s.getvalue().strip().splitlines() for s in stderrs], seen, saves, interrupted


def test_lines_mode_prints_a_line_per_round_with_the_metrics_of_metrics_csv(watched):
    out, (first, second), *_ = watched
    assert first[-1].startswith("tff-rec: interrupted; ")
    assert second[0] == "tiny seed 0 · resumed from the checkpoint of round 2"
    lines, done = first[:-1] + second[1:-1], second[-1]
    rows = list(csv.DictReader(open(the_run(out) / record.METRICS, newline="")))
    assert len(lines) == ROUNDS
    for line, row in zip(lines, rows):
        found = LINE.fullmatch(line)
        assert found, line
        assert found.group(1) == row["round"]
        assert found.group(2) == f"{float(row['loss']):.4f}"
        assert found.group(5) == f"{float(row['epsilon']):.2f}"
        validated = row["val_ndcg@10"] != ""
        assert (found.group(4) is not None) == validated, line  # validation every 2 rounds
        if validated:
            assert found.group(4) == f"{float(row['val_ndcg@10']):.4f}"
    assert re.fullmatch(r"tiny seed 0 · done · test ndcg@10 \d\.\d{4} · \d+\.\d+ s", done), done


def test_metrics_csv_grows_a_whole_row_per_round_before_the_record_is_complete(watched):
    out, _, seen, saves, interrupted = watched
    run = the_run(out)
    assert sorted(saves) == list(range(1, ROUNDS + 1))
    final = metric_rows(run)
    for number, (rows, complete, steps) in [*saves.items(), (2, interrupted)]:
        assert not complete, "summary.json is written last"
        assert [row["round"] for row in rows] == [str(n) for n in range(1, number + 1)]
        assert steps == list(range(1, number + 1)), "the events grow with metrics.csv"
        for row, expected in zip(rows, final):  # the rows as they will stay
            for column in ("seconds", "rss_mb", "worker_rss_mb"):
                row.pop(column, None)
            assert {k: v for k, v in row.items() if v} == {k: v for k, v in expected.items() if v}
    assert len(seen) >= 2, "the reader saw the file grow"
    counts = []
    for text in seen:  # whole lines, every one with the header's columns
        assert text.endswith("\n")
        header, *rows = list(csv.reader(io.StringIO(text)))
        assert all(len(row) == len(header) for row in rows)
        # one column order, before and after the resume (rows.json has its keys sorted)
        assert header == record.metrics_columns([dict.fromkeys(header)]) and header[0] == "round"
        counts.append(len(rows))
    assert counts == sorted(counts)
    assert seen[-1] == (run / record.METRICS).read_text()
    assert not list(run.glob(".*.tmp"))


def test_tensorboard_events_equal_metrics_csv(watched):
    """Also after the resume: the event files were begun again, with the checkpoint's rows."""
    run = the_run(watched[0])
    [folder] = (run / record.TENSORBOARD).iterdir()
    assert folder.name == "tiny" and len(list(folder.iterdir())) == 1  # one event file
    expected = csv_scalars(run)
    assert {"loss", "epsilon", "clip", "bytes_up", "bytes_down", "seconds", "rss_mb",
            "val_ndcg@10", "clients"} <= set(expected)
    assert read_events(run) == expected


def test_centralized_runs_time_every_epoch(task, tmp_path, capsys):
    centralized = ["--set", "algorithm.name=centralized", "--set", "algorithm.centralized.epochs=2"]
    assert cli.main(["run", str(task), "--out", str(tmp_path), "--progress", "lines", *centralized]) == 0
    run = the_run(tmp_path)
    rows = list(csv.DictReader(open(run / record.METRICS, newline="")))
    assert [row["round"] for row in rows] == ["1", "2"]
    assert all(float(row["seconds"]) > 0 for row in rows)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [re.fullmatch(r"tiny seed 0 · epoch (\d)/2 · loss \d+\.\d{4}.* · \d+\.\d+ s", line).group(1)
            for line in lines[:-1]] == ["1", "2"]
    assert read_events(run) == csv_scalars(run)


def test_progress_flags():
    parser = cli.build_parser()
    for command in (["run", "t.toml"], ["study", "s.toml"]):
        assert parser.parse_args(command).progress == "auto"
        assert parser.parse_args([*command, "--no-progress"]).progress == "none"
        assert parser.parse_args([*command, "--progress", "lines"]).progress == "lines"
    assert progress.resolve(False) == "none" and progress.resolve("bar") == "bar"
    assert progress.resolve("auto") == "lines"  # stderr is not a terminal under pytest
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "t.toml", "--progress", "loud"])


JOB = """
import sys
from tff_rec.progress import RunProgress
name = sys.argv[1]
with RunProgress(name, 2000, enabled="lines") as bar:
    for n in range(1, 2001):
        bar.update({"round": n, "loss": 1.0 / n, "val_ndcg@10": 0.5, "epsilon": n / 7, "seconds": 0.01})
"""


def test_lines_of_parallel_jobs_stay_whole_and_name_their_run():
    """Two processes writing their lines to one pipe at once, as a study's --jobs do on stderr."""
    reader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys\n"
         f"jobs = [subprocess.Popen([sys.executable, '-c', {JOB!r}, name]) for name in ('a b', 'c + d')]\n"
         "sys.exit(sum(job.wait() for job in jobs))"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True)
    _, stderr = reader.communicate(timeout=60)
    assert reader.returncode == 0
    lines = stderr.splitlines()
    assert len(lines) == 4000
    for name in ("a b", "c + d"):
        rounds = [int(found.group(1)) for line in lines
                  if (found := re.fullmatch(rf"{re.escape(name)} · round (\d+)/2000 · loss \d\.\d{{4}}"
                                            r" · ndcg@10 0\.5000 · ε \d+\.\d\d · 0\.01 s", line))]
        assert rounds == list(range(1, 2001)), name


def test_event_folder_names_are_single_folders(tmp_path):
    assert board.folder(tmp_path, "fedavg + DP") == tmp_path / record.TENSORBOARD / "fedavg + DP"
    assert board.folder(tmp_path, "a/b").name == "a_b"
    assert board.folder(tmp_path, "..").name == "run"
    assert board.scalars({"round": 3, "loss": 0.5, "note": "x", "flag": True, "clients": 2}) == {
        "loss": 0.5, "clients": 2.0}
