"""`tff-rec worker` and `run --workers`: one run's rounds across TFF worker services.

Two `tff-rec worker` services on loopback ports this test picks run the tiny DP-FedAvg task of
`test_end_to_end` (6 rounds, Gaussian noise of multiplier 1, clip 1: noise added on each
worker instead of once after the merge would move the model far beyond the tolerance) next to the same task on the
local worker: same records up to the rounding of the split sums, the record naming its workers.
Then one worker is killed mid-run (the run fails naming its address) and the re-run, on a new
worker at the same address, resumes from the checkpoint to the numbers of the uninterrupted
two-worker run. Every worker_binary the test starts is gone at the end.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import portpicker
import pytest

from test_end_to_end import ROOT, metric_rows, task_text
from tff_rec import cli, record, runtime, worker_process, workers
from tff_rec.training import checkpoints

ROUNDS = 6
# A run on k workers adds each round's clients in k partial sums instead of one: float32 rounding
# can differ in the last bits, and a difference grows over rounds (README, Scaling out). Measured
# on this task: every column identical but round 3's training loss (1.1e-7 relative).
RTOL = 1e-4
DP = ["--set", "privacy.mechanism=gaussian", "--set", "privacy.clip=1.0",
      "--set", "privacy.noise_multiplier=1.0"]


def executable() -> str:
    return shutil.which("tff-rec") or str(Path(sys.executable).parent / "tff-rec")


def children(pid: int) -> list[int]:
    """Live (not zombie) children of `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Service:
    """One `tff-rec worker --port P` child process and its worker_binary."""

    def __init__(self, port: int, *extra: str):
        self.port = port
        self.process = subprocess.Popen(
            [executable(), "worker", "--port", str(port), *extra], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.line = self.process.stdout.readline()  # the one line, once it serves
        assert "serving" in self.line, (self.line, self.process.stderr.read())
        COMMANDS.append(self.process)
        [self.binary] = children(self.process.pid)
        STARTED.append(self.binary)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self.process.stdout.close()
        self.process.stderr.close()
        return code


STARTED: list[int] = []  # every worker_binary pid this module started
COMMANDS: list[subprocess.Popen] = []  # every `tff-rec worker` process it started


@pytest.fixture(scope="module")
def services():
    found = [Service(portpicker.pick_unused_port(), "--concurrency", "1") for _ in range(2)]
    yield found
    for service in found:
        service.stop()


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind():
    yield
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in STARTED) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in STARTED if alive(pid)]
    for command in COMMANDS:  # a test that failed before stopping its service: stop it here
        if command.poll() is None:
            command.kill()
            command.wait(timeout=30)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # gone with its command
            pass
    assert not left, "a worker_binary outlived the test"


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("task") / "tiny.toml"
    path.write_text(task_text(rounds=str(ROUNDS)))
    return path


@pytest.fixture(scope="module")
def local_run(task, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    assert cli.main(["run", str(task), "--out", str(out), "--no-progress", *DP]) == 0
    return the_run(out)


@pytest.fixture(scope="module")
def two_worker_run(task, services, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("remote")
    addresses = ",".join(s.address for s in services)
    assert cli.main(["run", str(task), "--out", str(out), "--no-progress", *DP,
                     "--workers", addresses]) == 0
    return the_run(out)


def the_run(out: Path) -> Path:
    [run] = out.glob("runs/*/seed-0")
    return run


def close(a: str, b: str) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return a == b
    return math.isclose(x, y, rel_tol=RTOL, abs_tol=1e-7)


# ------------------------------------------------------------------ the worker service


def test_a_worker_serves_with_the_local_settings_and_stops_on_sigterm_without_orphans():
    service = Service(portpicker.pick_unused_port())
    assert re.fullmatch(rf"tff-rec worker: serving TFF computations on port {service.port} .*\n",
                        service.line)
    environ = dict(entry.split("=", 1) for entry in
                   Path(f"/proc/{service.binary}/environ").read_bytes().decode().split("\0") if "=" in entry)
    for key, value in worker_process.worker_environment(len(os.sched_getaffinity(0))).items():
        assert environ.get(key) == value, key  # the local worker's settings, for its default concurrency
    binary = service.binary
    assert service.stop() == 0
    assert not alive(binary)


def test_a_killed_worker_command_takes_its_worker_binary_with_it():
    service = Service(portpicker.pick_unused_port())
    os.kill(service.process.pid, signal.SIGKILL)  # no clean-up runs: PR_SET_PDEATHSIG does it
    service.process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while alive(service.binary) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(service.binary)
    service.process.stdout.close()
    service.process.stderr.close()


def test_a_port_in_use_is_refused(services):
    done = subprocess.run([executable(), "worker", "--port", str(services[0].port)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert f"port {services[0].port} is in use" in done.stderr


@pytest.mark.parametrize("bad", ["localhost", "localhost:0", "a:1,a:1", "host:99999", "[zz]:5"])
def test_bad_worker_addresses_exit_2(bad, task, capsys):
    with pytest.raises(SystemExit) as ended:
        cli.main(["run", str(task), "--workers", bad])
    assert ended.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_addresses_parse_in_order():
    assert workers.parse_addresses("a:1, 10.0.0.2:5000,[::1]:7") == ["a:1", "10.0.0.2:5000", "[::1]:7"]


def test_an_unreachable_worker_fails_the_run_naming_it(task, tmp_path, capsys, monkeypatch):
    from tff_rec import composing

    monkeypatch.setattr(composing, "CONNECT_SECONDS", 1)
    nobody = f"127.0.0.1:{portpicker.pick_unused_port()}"
    assert cli.main(["run", str(task), "--out", str(tmp_path), "--no-progress", *DP,
                     "--workers", nobody]) == 1
    assert f"TFF worker at {nobody} is not reachable" in capsys.readouterr().err


def test_a_tasks_run_workers_key_is_used_and_not_hashed(task, tmp_path, capsys, monkeypatch):
    from tff_rec import composing, spec

    monkeypatch.setattr(composing, "CONNECT_SECONDS", 1)
    nobody = f"127.0.0.1:{portpicker.pick_unused_port()}"
    keyed = tmp_path / "keyed.toml"
    keyed.write_text(task.read_text().replace("[run]\n", f'[run]\nworkers = ["{nobody}"]\n'))
    assert spec.load_task(keyed).hash == spec.load_task(task).hash  # where, not what: same record
    assert cli.main(["run", str(keyed), "--out", str(tmp_path), "--no-progress", *DP]) == 1
    assert f"TFF worker at {nobody} is not reachable" in capsys.readouterr().err
    keyed.write_text(task.read_text().replace("[run]\n", '[run]\nworkers = ["no-port"]\n'))
    with pytest.raises(spec.SpecError, match="run.workers' must list TFF worker services: 'no-port'"):
        spec.load_task(keyed)


# ------------------------------------------------------------------ a run on two workers


def test_two_workers_give_the_single_worker_record_up_to_rounding(local_run, two_worker_run, services):
    local, remote = metric_rows(local_run), metric_rows(two_worker_run)
    assert [r["round"] for r in remote] == [r["round"] for r in local] == [str(r) for r in range(1, ROUNDS + 1)]
    for a, b in zip(local, remote):
        assert a.keys() == b.keys()
        for key in a:
            assert close(a[key], b[key]), (a["round"], key, a[key], b[key])
    # the first round starts from the same model: its sums differ at most in the last bit
    assert local[0]["loss"] == remote[0]["loss"] or close(local[0]["loss"], remote[0]["loss"])
    summaries = [json.loads((run / record.SUMMARY).read_text()) for run in (local_run, two_worker_run)]
    for key in ("test", "validation"):
        for metric, value in summaries[0][key].items():
            assert close(str(value), str(summaries[1][key][metric])), (key, metric)
    assert summaries[0]["epsilon"] == summaries[1]["epsilon"]  # the same mechanism, noise added once
    environment = [json.loads((run / record.ENV).read_text()) for run in (local_run, two_worker_run)]
    assert environment[0]["workers"] == []
    assert environment[1]["workers"] == [s.address for s in services]


def test_a_worker_killed_mid_run_fails_the_run_naming_it_and_the_rerun_resumes(
        task, services, two_worker_run, tmp_path, capsys):
    out = tmp_path / "out"
    addresses = ",".join(s.address for s in services)
    victim = services[1]
    killed = []

    def kill_the_second_worker() -> None:
        deadline = time.monotonic() + 600
        while not list(out.glob(f"runs/*/seed-0/checkpoints/{checkpoints.PREFIX}2")):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(victim.binary, signal.SIGKILL)
        killed.append(victim.binary)

    killer = threading.Thread(target=kill_the_second_worker, daemon=True)
    killer.start()
    assert cli.main(["run", str(task), "--out", str(out), "--no-progress", *DP,
                     "--workers", addresses]) == 1
    killer.join(timeout=10)
    assert killed
    error = capsys.readouterr().err
    assert re.search(rf"TFF worker at {re.escape(victim.address)} stopped answering during round [3-6]\b",
                     error), error
    assert not record.is_complete(the_run(out))
    assert victim.stop() == 1  # `tff-rec worker` reports its worker's death

    services[1] = Service(victim.port, "--concurrency", "1")  # a new worker at the same address
    assert cli.main(["run", str(task), "--out", str(out), "--no-progress", *DP,
                     "--workers", addresses]) == 0
    summary = json.loads((the_run(out) / record.SUMMARY).read_text())
    assert summary["resumed_from_round"] >= 2
    # the same workers in the same order: the same numbers as the uninterrupted run
    assert metric_rows(the_run(out)) == metric_rows(two_worker_run)


# ------------------------------------------------------------------ what cannot be split


def dependent_aggregations():
    """A federated computation TFF's mergeable form cannot split: its second sum needs the
    first one's result at every client."""
    import tensorflow_federated as tff

    @tff.tensorflow.computation(np.float32, np.float32)
    def add(x, y):
        return x + y

    @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
    def two_levels(x):
        total = tff.federated_broadcast(tff.federated_sum(x))
        return tff.federated_sum(tff.federated_map(add, tff.federated_zip((x, total))))

    return two_levels


def test_a_round_with_dependent_aggregations_is_refused_with_the_reason(monkeypatch):
    import tensorflow_federated as tff

    from tff_rec import composing
    from tff_rec.spec import SpecError

    two_levels = dependent_aggregations()
    context = composing.ComposingContext([composing.RemoteWorker("127.0.0.1:1")])  # never called
    try:
        with pytest.raises(composing.Unsplittable, match="aggregat"):
            context.mergeable_form(two_levels)
        monkeypatch.setattr(runtime, "_configured", True)
        monkeypatch.setattr(runtime, "_remote", context.workers)
        with tff.framework.get_context_stack().install(context):
            with pytest.raises(SpecError, match="cannot be split across workers"):
                runtime.check_splittable(two_levels, "task.toml")
    finally:
        context.close()
