"""The Ray engine (`tff-rec study --engine ray`) on a two-node Ray cluster started by the tests.

The module starts a head node and a second node on this machine (`ray start` with a temp dir and
free ports, one CPU each; the head on 127.0.0.1, which Ray 2.52 turns into the machine's own
address, the second node on 127.0.0.2: every process and connection stays on this machine), runs a
tiny two-variant, one-seed study on it (one run per node), kills the second node while it makes
its run, checks that the run resumed on the head from its checkpoint, and compares every record
and the manifest with the local engine's. Every Ray
process the tests start is killed by its pid at the end (not `ray stop`, which would stop every
Ray on the machine), and no TFF worker is left behind.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")  # the optional extra: `uv sync --extra ray`

from test_end_to_end import metric_rows, summaries, tff_rec, write_study  # noqa: E402

from tff_rec import cli, record, runtime  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")
ROUNDS = 12  # rounds after the first checkpoint: a window of seconds to kill a node mid-run, even under load
ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}
# A killed node is declared dead after 5 failed health checks 1 s apart (default: 3 s apart), so
# its run comes back soon; a live node has 5 s to answer each (shorter timeouts declared a busy
# node dead under load).
HEALTH_CHECKS = json.dumps({"health_check_period_ms": 1000, "health_check_timeout_ms": 5000,
                            "health_check_failure_threshold": 5})


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every live process (zombies left out)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z":
            found[int(entry.name)] = (int(ppid), command)
    return found


def _with_descendants(roots: set[int], processes: dict[int, tuple[int, str]]) -> set[int]:
    found, grew = set(roots) & set(processes), True
    while grew:
        children = {pid for pid, (ppid, _) in processes.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return found


def _ancestry(processes: dict[int, tuple[int, str]]) -> set[int]:
    """This process and its ancestors (never a cluster's, whatever their command lines say)."""
    found, pid = set(), os.getpid()
    while pid in processes and pid not in found:
        found.add(pid)
        pid = processes[pid][0]
    return found


def _kill(pids: set[int], timeout: float = 30) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while pids & set(_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pids & set(_processes()), f"Ray processes {pids & set(_processes())} outlived SIGKILL"


class LocalCluster:
    """A Ray head and a second node on this machine: started with `ray start`, killed by pid."""

    def __init__(self) -> None:
        # short: Ray's socket paths under the temp dir must fit in 107 characters
        self.temp = Path(tempfile.mkdtemp(prefix="tffray-", dir="/tmp"))
        self.environment = {**os.environ, **ENVIRONMENT}
        self.nodes: list[set[int]] = []  # each node's own processes (their children come later)
        self.address = ""

    def start(self) -> None:
        head, client, *ports = _free_ports(8)
        self.client_port = client
        self.address = f"127.0.0.1:{head}"
        self._start("127.0.0.1", "--head", f"--port={head}", f"--ray-client-server-port={client}",
                    f"--dashboard-port={ports[0]}", f"--temp-dir={self.temp}",
                    "--include-dashboard=false", f"--system-config={HEALTH_CHECKS}", *self._ports(ports[1:]))
        # A driver on this machine attaches to the raylet whose address the last `ray start` left
        # in the session's node_ip_address.json; it must be the head's (the driver's raylet dying
        # with the second node would end the study). So the second node gets another loopback
        # address, and the head's file is put back after it starts.
        cached = {path: path.read_bytes() for path in self.temp.glob("session_*/node_ip_address.json")}
        self._start("127.0.0.2", f"--address={self.address}", *self._ports(_free_ports(6)))
        for path, content in cached.items():
            path.write_bytes(content)

    @staticmethod
    def _ports(ports: list[int]) -> list[str]:
        names = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                 "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")
        return [f"--{name}={port}" for name, port in zip(names, ports)]

    def _start(self, address: str, *arguments: str) -> None:
        before = set(self.processes())
        done = subprocess.run([RAY, "start", f"--node-ip-address={address}", "--num-cpus=1",
                               "--disable-usage-stats", *arguments],
                              capture_output=True, text=True, timeout=180, env=self.environment)
        self.nodes.append(set(self.processes()) - before)
        assert done.returncode == 0, done.stdout + done.stderr

    def processes(self) -> set[int]:
        """Every process of this cluster: those naming its temp dir or its client port (the Ray
        daemons, detached from `ray start`), and their descendants (Ray workers, TFF workers)."""
        processes = _processes()
        roots = {pid for pid, (_, command) in processes.items()
                 if str(self.temp) in command
                 or ("ray.util.client.server" in command and f"--port={self.client_port}" in command)}
        return _with_descendants(roots, processes) - _ancestry(processes)

    def node_processes(self, index: int) -> set[int]:
        return _with_descendants(self.nodes[index], _processes())

    def alive(self, index: int) -> bool:
        """Whether the node's raylet still runs (a node declared dead ends its raylet)."""
        processes = _processes()
        return any("/raylet/raylet " in processes[pid][1] for pid in self.nodes[index] if pid in processes)

    def kill_node(self, index: int) -> None:
        _kill(self.node_processes(index))

    def stop(self) -> None:
        _kill(self.processes())
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    started = LocalCluster()
    try:
        started.start()
        yield started
    finally:
        started.stop()
    assert not started.processes()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny task under two client learning rates (one learning process serves both), one
    seed: two runs, one for each node's CPU."""
    folder = tmp_path_factory.mktemp("ray-study")
    path = write_study(folder, "rs", {
        "fedavg": "", "fedavg lr 0.3": '"algorithm.client.learning_rate" = 0.3'}, rounds=ROUNDS)
    path.write_text(path.read_text().replace("every = 2", "every = 4"))
    return path


@pytest.fixture(scope="module")
def local_records(study):
    """The local engine's records of the study (serial, in this process)."""
    out = study.parent / "local"
    assert cli.main(["study", str(study), "--out", str(out), "--no-progress"]) == 0
    runtime.stop_workers()
    return out


def _assert_same_records(out: Path, local: Path) -> dict:
    ray_runs, local_runs = summaries(out / "rs"), summaries(local / "rs")
    assert len(ray_runs) == len(local_runs) == 2
    assert record.read_manifest(out / "rs") == record.read_manifest(local / "rs")
    for (label, seed), summary in ray_runs.items():
        expected = local_runs[label, seed]
        assert summary["task_hash"] == expected["task_hash"]
        assert metric_rows(record.run_dir(out, summary["task_hash"], seed)) == metric_rows(
            record.run_dir(local, summary["task_hash"], seed)), (label, seed)
        for key in ("test", "validation", "epsilon", "selected_round"):
            assert summary[key] == expected[key], (label, seed, key)
        assert summary["worker_cpu_seconds"] > 0  # a TFF worker of its own ran it
    assert not list(out.rglob(record.FAILED)) and not list(out.rglob("*.tmp"))
    assert not list(out.rglob("*.lock")) and not list((out / ".cache").glob("ray-study-*"))
    return ray_runs


def _no_tff_worker_left(cluster: LocalCluster) -> None:
    deadline = time.monotonic() + 20  # the driver is gone: Ray ends the study's workers
    while time.monotonic() < deadline:
        processes = _processes()
        workers = [pid for pid in cluster.processes()
                   if pid in processes and runtime.WORKER_NAME in processes[pid][1]]
        if not workers:
            return
        time.sleep(0.2)
    pytest.fail(f"TFF workers {workers} outlived their runs")


def _run_on(node: set[int], out: Path) -> tuple[str, int] | None:
    """(task hash, seed) of the run a Ray worker of `node` makes: the lock file it holds."""
    for pid in node:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        for link in links:
            name = Path(link).name
            if Path(link).parent == out / ".cache" and name.startswith("run-") and name.endswith(".lock"):
                task_hash, seed = name[len("run-"):-len(".lock")].split("-seed-")
                return task_hash, int(seed)
    return None


def test_a_run_lost_with_its_node_resumes_elsewhere_from_its_checkpoint(cluster, study, local_records,
                                                                        tmp_path):
    """A study on two nodes (--jobs 2), the second killed (every process of it) once its run has a
    checkpoint: the run goes on on the head from that checkpoint; nothing is lost or made twice;
    the records are the local engine's; no TFF worker is left; a re-run skips the complete
    records before asking Ray for anything. (One study for all of it: each Ray worker process
    pays TensorFlow's import, the bulk of this file's time.)"""
    assert cluster.alive(1), "the second node is not running"
    out = tmp_path / "results"
    executable = shutil.which("tff-rec") or str(Path(sys.executable).parent / "tff-rec")
    driver = subprocess.Popen(
        [executable, "study", str(study), "--out", str(out), "--engine", "ray", "--address",
         cluster.address, "--jobs", "2", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENVIRONMENT})
    try:
        lost, deadline, seen = None, time.monotonic() + 300, set()
        while lost is None and driver.poll() is None and time.monotonic() < deadline:
            running = _run_on(cluster.node_processes(1), out)
            if running is not None:
                seen.add(running)
                checkpoints = record.run_dir(out, *running) / record.CHECKPOINTS
                if any(p.name.startswith("program_state_") for p in checkpoints.glob("program_state_*")):
                    lost = running
                    cluster.kill_node(1)
            time.sleep(0.02)
        assert lost is not None, f"the second node made no run with a checkpoint to lose (it made {seen})"
        stdout, stderr = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, stderr[-3000:]
    assert "2 runs (0 already complete, 0 failed)" in stdout
    runs = _assert_same_records(out, local_records)
    for (label, seed), summary in runs.items():
        resumed = summary["resumed_from_round"]
        if (summary["task_hash"], seed) == lost:
            assert 1 <= resumed < ROUNDS, "the retried run resumed from its checkpoint"
        else:
            assert resumed == 0, f"{label} seed {seed} ran once, from round 0"
    _no_tff_worker_left(cluster)
    again = tff_rec("study", str(study), "--out", str(out), "--engine", "ray", "--address",
                    cluster.address, "--no-progress", env=ENVIRONMENT)
    assert again.returncode == 0 and "2 runs (2 already complete, 0 failed)" in again.stdout


def test_a_node_without_the_shared_out_refuses_the_run(tmp_path):
    from tff_rec.engines import ray_engine

    task = None  # the node checks come before the task is read
    marker = tmp_path / ".cache" / "ray-study-x"
    marker.parent.mkdir()
    marker.touch()
    request = ray_engine.RunRequest(task, 0, str(tmp_path), False, "none", 1, ".cache/ray-study-x",
                                    str(tmp_path))
    ray_engine._check_node(request)  # the driver's --out
    marker.unlink()
    with pytest.raises(ray_engine.ClusterMismatch, match="does not see the driver's --out"):
        ray_engine._check_node(request)


def test_engines_are_looked_up_by_name(monkeypatch):
    from tff_rec import engines, runner

    assert engines.get("local") is runner.run_locally
    with pytest.raises(ValueError, match="allowed: local, ray"):
        engines.get("spark")
    with pytest.raises(ValueError, match="only with --engine ray"):
        engines.get("local", "127.0.0.1:6379")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(ValueError, match="uv sync --extra ray"):
        engines.get("ray")
