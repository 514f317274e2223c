"""Faults: nothing lost, nothing orphaned, no traceback.

Every fault is made for real on the tiny task of `test_end_to_end`: kill -9 and Ctrl-C of `tff-rec`
processes, a killed TFF worker, corrupt checkpoint and record files, a full disk (a small tmpfs),
an interrupted centralized run. Runs that are interrupted are compared, metric for metric, with an
uninterrupted run of the same task.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_end_to_end import ROOT, metric_rows, task_text
from tff_rec import cli, record, runner, runtime
from tff_rec.training import checkpoints

ROUNDS = 6
CENTRALIZED = ["--set", "algorithm.name=centralized", "--set", "algorithm.centralized.epochs=6",
               "--set", "algorithm.centralized.optimizer=adam", "--set", "run.checkpoint_every=2"]


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("task") / "task.toml"
    path.write_text(task_text(rounds=str(ROUNDS)))  # a checkpoint every round
    return path


@pytest.fixture(scope="module")
def fresh(task, tmp_path_factory) -> Path:
    """An uninterrupted run of the task: the metrics every interrupted one must end with."""
    out = tmp_path_factory.mktemp("fresh")
    assert cli.main(["run", str(task), "--out", str(out), "--no-progress"]) == 0
    return the_run(out)


def the_run(out: Path) -> Path:
    [run] = out.glob("runs/*/seed-0")
    return run


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default, as a terminal's command gets it.
    A test session started in the background of a non-interactive shell (`cmd &`) ignores
    SIGINT, an ignored signal stays ignored across exec, and the command would then rightly
    ignore the Ctrl-C these tests send."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def command(*args: str, session: bool = False) -> subprocess.Popen:
    """`tff-rec args` in a child process (`session`: leading its own process group)."""
    executable = shutil.which("tff-rec") or str(Path(sys.executable).parent / "tff-rec")
    return subprocess.Popen([executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=session,
                            preexec_fn=_default_sigint)


def wait_for(condition, child: subprocess.Popen | None = None, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert child is None or child.poll() is None, "the command ended before the fault"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def children(pid: int, name: str | None = None) -> list[int]:
    """Live child processes of `pid` (with command name `name`)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            comm = (entry / "comm").read_text().strip()
        except (OSError, ValueError):
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z" and (name is None or comm == name):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it is dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone_within(pids: list[int], seconds: float = 5.0) -> list[int]:
    """The pids still alive `seconds` from now (at most)."""
    deadline = time.monotonic() + seconds
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def checkpoint_exists(out: Path, round_number: int):
    return lambda: bool(list(out.glob(f"runs/*/seed-0/checkpoints/{checkpoints.PREFIX}{round_number}")))


def intact_checkpoints(run: Path) -> list[int]:
    """Rounds of the run's checkpoints, each verified against its checksums (no leftovers)."""
    folder = run / record.CHECKPOINTS
    names = sorted(p.name for p in folder.iterdir())
    assert all(re.fullmatch(rf"{checkpoints.PREFIX}\d+", name) for name in names), names
    saved = sorted(int(name[len(checkpoints.PREFIX):]) for name in names)
    for version in saved:
        assert checkpoints._verify(folder / f"{checkpoints.PREFIX}{version}", version) is None
    return saved


def no_leftovers(out: Path) -> None:
    """No lock file, temporary file or staging folder anywhere below `out`."""
    left = [p for p in out.rglob("*") if p.suffix in (".lock", ".tmp") or p.name.startswith(".staging-")]
    assert left == []


@pytest.fixture
def stop_after(monkeypatch):
    """`stop_after(n)`: the next run raises KeyboardInterrupt (as Ctrl-C) right after saving the
    checkpoint of round n. Restores the SIGINT handler the CLI sets aside."""
    handler = signal.getsignal(signal.SIGINT)
    save = checkpoints.Checkpoints.save

    def arm(round_number: int) -> None:
        def save_then_stop(self, state, number, rows):
            save(self, state, number, rows)
            if number == round_number:
                raise KeyboardInterrupt

        monkeypatch.setattr(checkpoints.Checkpoints, "save", save_then_stop)

    yield arm
    signal.signal(signal.SIGINT, handler)


# ------------------------------------------------------------------ killed and interrupted commands


def test_kill_9_of_a_run_leaves_no_worker(task, tmp_path):
    child = command("run", str(task), "--out", str(tmp_path), "--no-progress")
    try:
        wait_for(checkpoint_exists(tmp_path, 1), child)
        [worker] = children(child.pid, runtime.WORKER_NAME)
        child.kill()
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert gone_within([worker]) == [], "the TFF worker outlived its killed driver"


def test_ctrl_c_prints_one_line_exits_130_and_the_rerun_resumes(task, fresh, tmp_path, capsys):
    child = command("run", str(task), "--out", str(tmp_path), "--no-progress")
    try:
        wait_for(checkpoint_exists(tmp_path, 2), child)
        [worker] = children(child.pid, runtime.WORKER_NAME)
        child.send_signal(signal.SIGINT)  # a terminal's Ctrl-C under `uv run` arrives twice
        time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130
    [line] = stderr.strip().splitlines()
    assert re.fullmatch(r"tff-rec: interrupted; .*checkpoint of round \d+", line), line
    assert gone_within([worker]) == []
    run = the_run(tmp_path)
    assert not record.is_complete(run)
    saved = intact_checkpoints(run)
    assert saved and saved[-1] >= 2 and line.endswith(f"round {saved[-1]}")
    no_leftovers(tmp_path)

    assert cli.main(["run", str(task), "--out", str(tmp_path), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert f"resumed from the checkpoint of round {saved[-1]}" in captured.out
    assert "warning" not in captured.err
    assert metric_rows(run) == metric_rows(fresh)


@pytest.mark.parametrize("fault", ["kill -9", "Ctrl-C"])
def test_a_parallel_study_killed_or_interrupted_leaves_no_job_and_no_worker(fault, tmp_path):
    """kill -9 of the study process, or a terminal's Ctrl-C (SIGINT to its whole process group):
    its jobs and their TFF workers end within 5 s; Ctrl-C also prints one line and exits 130."""
    study = tmp_path / "study.toml"
    study.write_text('name = "pair"\n[study]\nseeds = [0]\n'
                     '[[study.variant]]\nlabel = "a"\n'
                     '[[study.variant]]\nlabel = "b"\nset = { "algorithm.client.learning_rate" = 0.3 }\n'
                     + task_text(rounds="60").replace('name = "tiny"', ""))
    out = tmp_path / "out"
    child = command("study", str(study), "--out", str(out), "--no-progress", "--jobs", "2",
                    session=True)
    try:
        def two_workers() -> bool:
            return len([w for job in children(child.pid) for w in children(job, runtime.WORKER_NAME)]) == 2

        wait_for(two_workers, child, timeout=300)
        jobs = [job for job in children(child.pid) if children(job, runtime.WORKER_NAME)]
        workers = [w for job in jobs for w in children(job, runtime.WORKER_NAME)]
        if fault == "kill -9":
            child.kill()
        else:
            os.killpg(child.pid, signal.SIGINT)
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert gone_within(jobs + workers) == [], "a job or a TFF worker outlived the study"
    if fault == "Ctrl-C":
        assert child.returncode == 130
        [line] = stderr.strip().splitlines()
        assert line.startswith("tff-rec: interrupted; ")
        assert not list(out.rglob(record.FAILED)), "an interruption is not a failure of the runs"
        no_leftovers(out)


# ------------------------------------------------------------------ a TFF worker that dies


def test_a_killed_worker_fails_its_run_and_the_retry_resumes(task, fresh, tmp_path, capsys):
    study = tmp_path / "study.toml"
    study.write_text('name = "one"\n[study]\nseeds = [0]\n[[study.variant]]\nlabel = "fedavg"\n'
                     + task_text(rounds=str(ROUNDS)).replace('name = "tiny"', ""))
    out = tmp_path / "out"
    killed = []

    def kill_the_worker() -> None:
        wait_for(checkpoint_exists(out, 2))
        for pid in runtime.worker_pids():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_the_worker, daemon=True)
    killer.start()
    assert cli.main(["study", str(study), "--out", str(out), "--no-progress"]) == 1
    killer.join(timeout=10)
    assert len(killed) == 1
    run = the_run(out)
    error = json.loads((run / record.FAILED).read_text())["error"]
    assert re.fullmatch(rf"WorkerDied: TFF worker \(pid {killed[0]}\) died during round (\d+) \(killed by SIGKILL\)",
                        error), error
    assert not record.is_complete(run)
    capsys.readouterr()

    assert cli.main(["study", str(study), "--out", str(out), "--no-progress", "--retry-failed"]) == 0
    summary = json.loads((run / record.SUMMARY).read_text())
    assert summary["resumed_from_round"] >= 2 and not (run / record.FAILED).exists()
    assert metric_rows(run) == metric_rows(fresh)


# ------------------------------------------------------------------ corrupt checkpoints and records


@pytest.fixture(scope="module")
def interrupted(task, tmp_path_factory) -> Path:
    """Results of a run interrupted (Ctrl-C) after its checkpoint of round 3: checkpoints 2, 3."""
    out = tmp_path_factory.mktemp("interrupted")
    handler = signal.getsignal(signal.SIGINT)
    save = checkpoints.Checkpoints.save

    def save_then_stop(self, state, number, rows):
        save(self, state, number, rows)
        if number == 3:
            raise KeyboardInterrupt

    checkpoints.Checkpoints.save = save_then_stop
    try:
        assert cli.main(["run", str(task), "--out", str(out), "--no-progress"]) == 130
    finally:
        checkpoints.Checkpoints.save = save
        signal.signal(signal.SIGINT, handler)
    assert intact_checkpoints(the_run(out)) == [2, 3]
    return out


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "variables.data truncated": ("variables/variables.data-00000-of-00001", truncate),
    "saved_model.pb garbled": ("saved_model.pb", garble),
    "rows.json truncated": ("rows.json", truncate),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_corrupt_checkpoint_falls_back_to_the_previous_one_with_one_warning(
        case, interrupted, fresh, tmp_path, task, capsys):
    out = tmp_path / "out"
    shutil.copytree(interrupted, out)
    name, damage = CORRUPTIONS[case]
    damaged = the_run(out) / record.CHECKPOINTS / f"{checkpoints.PREFIX}3" / name
    damage(damaged)
    assert cli.main(["run", str(task), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    [warning] = captured.err.strip().splitlines()
    assert warning.startswith(f"tff-rec: warning: checkpoint file {damaged} is ")
    assert warning.endswith("resuming from the checkpoint of round 2")
    assert "resumed from the checkpoint of round 2" in captured.out
    assert metric_rows(the_run(out)) == metric_rows(fresh)


def test_when_no_checkpoint_is_usable_the_run_restarts_from_round_0(interrupted, fresh, tmp_path, task, capsys):
    out = tmp_path / "out"
    shutil.copytree(interrupted, out)
    folder = the_run(out) / record.CHECKPOINTS
    truncate(folder / f"{checkpoints.PREFIX}3" / "saved_model.pb")
    garble(folder / f"{checkpoints.PREFIX}2" / "variables" / "variables.data-00000-of-00001")
    assert cli.main(["run", str(task), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    [warning] = captured.err.strip().splitlines()
    assert "saved_model.pb" in warning and "variables.data" in warning
    assert warning.endswith("no usable checkpoint, restarting the run from round 0")
    assert json.loads((the_run(out) / record.SUMMARY).read_text())["resumed_from_round"] == 0
    assert metric_rows(the_run(out)) == metric_rows(fresh)


RECORD_DAMAGE = {
    "summary.json truncated": (record.SUMMARY, truncate),
    "metrics.csv with a cut line": (record.METRICS, lambda p: p.write_text(p.read_text()[:-40])),
    "metrics.csv missing a row": (record.METRICS, lambda p: p.write_text(
        "".join(p.read_text().splitlines(keepends=True)[:-1]))),
}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """A study of two complete runs (popularity, 3 rounds of FedAvg): its file and results."""
    folder = tmp_path_factory.mktemp("two")
    study = folder / "study.toml"
    study.write_text('name = "two"\n[study]\nseeds = [0]\n'
                     '[[study.variant]]\nlabel = "popularity"\nset = { "algorithm.name" = "popularity" }\n'
                     '[[study.variant]]\nlabel = "fedavg"\n'
                     + task_text(rounds="3").replace('name = "tiny"', ""))
    assert cli.main(["study", str(study), "--out", str(folder / "results"), "--no-progress"]) == 0
    return study, folder / "results"


@pytest.mark.parametrize("case", sorted(RECORD_DAMAGE))
def test_a_damaged_record_is_left_out_of_compare_and_remade_by_the_study(case, two_runs, tmp_path, capsys):
    """One damaged record of a two-run study: `compare` warns (naming the file) and shows the
    other; the study re-makes it, equal to the original."""
    study, original = two_runs
    out = tmp_path / "results"
    shutil.copytree(original, out, ignore=shutil.ignore_patterns(".cache"))
    [run] = [path for path in out.glob("runs/*/seed-0") if json.loads(
        (path / record.SUMMARY).read_text())["algorithm"] == "fedavg"]
    fresh = original / run.relative_to(out)
    name, damage = RECORD_DAMAGE[case]
    damage(run / name)
    capsys.readouterr()

    assert cli.main(["compare", str(out / "two")]) == 0
    captured = capsys.readouterr()
    assert "| popularity | 1 |" in captured.out and "| fedavg |" not in captured.out
    [warning] = [line for line in captured.err.splitlines() if str(run) in line]  # one, naming it
    assert warning.startswith(f"tff-rec: warning: {run / name}: ")
    assert cli.main(["study", str(study), "--out", str(out), "--dry-run"]) == 0
    assert re.search(r"fedavg\s+\w+\s+seed 0\s+damaged", capsys.readouterr().out)

    assert cli.main(["study", str(study), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "| fedavg | 1 |" in captured.out
    assert f"{run / name}: " in captured.err and "making it again" in captured.err
    assert record.is_complete(run) and metric_rows(run) == metric_rows(fresh)


def test_the_run_lock_is_exclusive_and_its_file_goes_with_the_last_holder(tmp_path):
    """Three holders in turn, the second and third waiting on the first one's file (which it
    removes): one holds the lock at a time, the path exists while it is held, and no lock file
    is left. (Locking a removed file would let two hold it at once.)"""
    lock = tmp_path / ".cache" / "run-x-seed-0.lock"
    holding, log, errors = threading.Lock(), [], []
    first_in, release_first = threading.Event(), threading.Event()

    def hold(name: str) -> None:
        try:
            with runner._exclusive(lock):
                if not holding.acquire(blocking=False):
                    errors.append(f"{name} got the lock while another held it")
                    return
                try:
                    log.append(name)
                    if not lock.exists():
                        errors.append(f"{name} holds a lock whose file is gone")
                    if name == "first":
                        first_in.set()
                        release_first.wait(timeout=30)
                    time.sleep(0.05)
                finally:
                    holding.release()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(f"{name}: {error!r}")

    first = threading.Thread(target=hold, args=("first",))
    first.start()
    assert first_in.wait(timeout=30)
    waiters = [threading.Thread(target=hold, args=(name,)) for name in ("second", "third")]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.2)  # both have opened the first holder's file and wait on its lock
    assert log == ["first"]
    release_first.set()
    for thread in [first, *waiters]:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(log) == ["first", "second", "third"]
    assert not lock.exists()


# ------------------------------------------------------------------ a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (needs root, as in the development container)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> None:
    """Take every free byte of the disk."""
    handle = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(handle, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    finally:
        os.close(handle)


FULL_WHILE = {  # when the disk fills: the hook to wrap, the file the error names, checkpoints left
    "building the partition": ("partition", r".*/\.cache/[0-9a-f]+\.sqlite", []),
    "saving a checkpoint": ("checkpoint", rf".*/checkpoints/{checkpoints.PREFIX}2", [1]),
    "writing the record": ("record", r".*/seed-0/config\.toml", [2, 3]),
}


@pytest.mark.parametrize("moment", sorted(FULL_WHILE))
def test_a_full_disk_exits_2_naming_the_path_and_leaves_nothing_half_written(
        moment, small_disk, task, tmp_path, monkeypatch, capsys):
    from tff_rec.partition import store
    from tff_rec.training import federated

    hook, named, kept = FULL_WHILE[moment]
    if hook == "partition":
        monkeypatch.setattr(federated, "_CLIENT_DATA", {})
        ensure = store.ensure_database
        monkeypatch.setattr(store, "ensure_database", lambda *a: (fill(small_disk), ensure(*a))[1])
    elif hook == "checkpoint":
        save = checkpoints.Checkpoints.save

        def fill_then_save(self, state, number, rows):
            if number == 2:
                fill(small_disk)
            save(self, state, number, rows)

        monkeypatch.setattr(checkpoints.Checkpoints, "save", fill_then_save)
    else:
        write = runner._write_record
        monkeypatch.setattr(runner, "_write_record", lambda *a: (fill(small_disk), write(*a))[1])
    out = small_disk / "results"
    three = ["--set", "algorithm.rounds=3"]
    assert cli.main(["run", str(task), "--out", str(out), "--no-progress", *three]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    found = re.fullmatch(r"tff-rec: error: no space left on device writing (.*)", line)
    assert found and re.fullmatch(named, found.group(1)), line
    assert found.group(1).startswith(str(out))
    no_leftovers(out)
    for run in out.glob("runs/*/seed-0"):  # no record file, only complete checkpoints
        assert sorted(p.name for p in run.iterdir()) in ([], [record.CHECKPOINTS])
        assert (intact_checkpoints(run) if (run / record.CHECKPOINTS).exists() else []) == kept

    if hook == "checkpoint":  # space again: the run resumes from its checkpoint
        monkeypatch.undo()
        (small_disk / "filler").unlink()
        assert cli.main(["run", str(task), "--out", str(out), "--no-progress", *three]) == 0
        assert "resumed from the checkpoint of round 1" in capsys.readouterr().out


# ------------------------------------------------------------------ centralized runs


def test_an_interrupted_centralized_run_resumes_to_the_metrics_of_an_uninterrupted_one(
        task, tmp_path, stop_after, capsys):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert cli.main(["run", str(task), "--out", str(whole), "--no-progress", *CENTRALIZED]) == 0
    stop_after(4)
    assert cli.main(["run", str(task), "--out", str(parts), "--no-progress", *CENTRALIZED]) == 130
    assert "checkpoint of round 4" in capsys.readouterr().err
    run = the_run(parts)
    assert intact_checkpoints(run) == [2, 4]
    assert (run / record.CHECKPOINTS / f"{checkpoints.PREFIX}4" / "state.npz").is_file()
    assert cli.main(["run", str(task), "--out", str(parts), "--no-progress", *CENTRALIZED]) == 0
    assert "resumed from the checkpoint of round 4" in capsys.readouterr().out
    resumed, uninterrupted = metric_rows(run), metric_rows(the_run(whole))
    assert [row["round"] for row in resumed] == [str(n) for n in range(1, 7)]
    assert resumed == uninterrupted
    assert len({row["loss"] for row in resumed}) == 6  # it trained: every epoch's loss differs
