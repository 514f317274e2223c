"""`--workers HOST:PORT,...` and `tff-rec worker`: TFF worker services on other machines.

`tff-rec worker --port P` runs TFF's worker service (the installed TFF's `worker_binary`) in the
foreground, with the settings of the local worker; `tff-rec run|study --workers A,B` runs every
round's cohort across such services (`composing`, which has the design). The addresses travel in
`TFF_REC_WORKERS` (a study's job processes inherit it); `runtime.configure` reads it.
"""
from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

ENVIRONMENT_VARIABLE = "TFF_REC_WORKERS"  # comma-separated HOST:PORT; inherited by a study's jobs
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")


def parse_addresses(text: str) -> list[str]:
    """'HOST:PORT[,HOST:PORT...]' → the addresses, in order; ValueError naming a bad one."""
    addresses = [part.strip() for part in text.split(",") if part.strip()]
    if not addresses:
        raise ValueError(f"expected HOST:PORT[,HOST:PORT...]. Found {text!r}.")
    for address in addresses:
        match = _ADDRESS.match(address)
        if match is None or not 1 <= int(match.group(2)) <= 65535:
            raise ValueError(f"{address!r} is not HOST:PORT (a host name or IP address, a port "
                             f"from 1 to 65535; IPv6 as [ADDR]:PORT)")
        host = match.group(1)
        if host.startswith("["):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise ValueError(f"{address!r}: {host} is not an IPv6 address") from None
    duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicates:
        raise ValueError(f"{', '.join(duplicates)} given more than once; allowed: distinct workers")
    return addresses


def from_environment() -> list[str]:
    """The workers `TFF_REC_WORKERS` names ([] = the local worker)."""
    text = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    return parse_addresses(text) if text else []


# --------------------------------------------------------------------------- tff-rec worker


def worker_binary() -> Path:
    """TFF's worker_binary of the installed tensorflow_federated."""
    import importlib.util

    spec = importlib.util.find_spec("tensorflow_federated")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("tensorflow_federated is not installed")
    return Path(spec.origin).parent / "data" / "worker_binary"


def _port_taken(port: int) -> Optional[str]:
    """Why `port` cannot be served on, or None. The worker's gRPC server binds with SO_REUSEPORT,
    so a second worker on a port in use would start and share its connections with the first
    one (a driver's executors on one, its values asked of the other): checked here with a plain
    bind, which fails when anything listens there."""
    import errno
    import socket

    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 here
            continue
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no use
            probe.bind((address, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return error.strerror or str(error)
        finally:
            probe.close()
    return None


def serve(port: int, concurrency: Optional[int] = None, verbose: bool = False,
          max_message_mb: int = 10000) -> int:
    """`tff-rec worker`: TFF's worker service on `port` (all interfaces), in the foreground, with
    the environment of the local worker (`worker_process.worker_environment`: one
    intra-op thread, which results depend on). One line when it serves; SIGTERM or SIGINT stop it
    (exit 0); it dies with this process however that dies (PR_SET_PDEATHSIG). Exit 1 if it
    stops by itself or does not start."""
    import grpc

    from tff_rec import worker_process

    calls = concurrency or len(os.sched_getaffinity(0))
    taken = _port_taken(port)
    if taken:
        print(f"tff-rec: error: port {port} is in use ({taken}); allowed: a free port",
              file=sys.stderr)
        return 2
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    output = None if verbose else subprocess.DEVNULL
    process = subprocess.Popen(
        [str(worker_binary()), f"--port={port}", f"--max_concurrent_computation_calls={calls}",
         f"--grpc_max_message_length_megabytes={max_message_mb}"],
        stdin=subprocess.DEVNULL, stdout=output, stderr=output,
        env={**os.environ, **worker_process.worker_environment(calls)},
        preexec_fn=worker_process.die_with(os.getpid()),
        process_group=0,  # a terminal's Ctrl-C reaches this process, which stops the worker
    )
    try:
        channel = grpc.insecure_channel(f"localhost:{port}")
        ready = grpc.channel_ready_future(channel)
        deadline = time.monotonic() + worker_process.START_SECONDS
        serving = False
        while not stop.is_set() and process.poll() is None and time.monotonic() < deadline:
            try:
                ready.result(timeout=0.1)
                serving = True
                break
            except grpc.FutureTimeoutError:
                continue
        ready.cancel()
        channel.close()
        if stop.is_set():
            return 0
        if not serving:
            how = (f"it is not serving after {worker_process.START_SECONDS} s" if process.poll() is None
                   else worker_process.describe_exit(process.pid, process.returncode))
            print(f"tff-rec: error: the TFF worker did not start on port {port} ({how}; is the "
                  f"port in use? --verbose shows its log)", file=sys.stderr)
            return 1
        print(f"tff-rec worker: serving TFF computations on port {port} of every interface "
              f"(pid {process.pid}, {calls} at once); stop with Ctrl-C or SIGTERM", flush=True)
        while not stop.wait(0.2):
            if process.poll() is not None:
                print(f"tff-rec: error: {worker_process.describe_exit(process.pid, process.returncode)}",
                      file=sys.stderr)
                return 1
        return 0
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
