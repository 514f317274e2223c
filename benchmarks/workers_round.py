"""Round time and network bytes of one federated round on 1 local worker vs k worker services.

The same learning process (SASRec FedAvg as the runner builds it, `processes.taking_arrays`;
`--dp gaussian` for DP-FedAvg) trains the same seeded cohorts of synthetic one-user clients:

- local: the runner's local TFF worker (`runtime.configure()`, `--concurrency` computations at once,
  default one per core);
- workers: `--workers` `tff-rec worker` services started here on loopback ports (each with
  `--worker-concurrency` computations at once), the run's rounds split across them
  (`tff_rec.composing`).

Bytes are the protobuf sizes of every gRPC request and response between this driver and its
worker(s) (TFF's `remote_executor_grpc_stub._request`), per round, split into the computations
TFF sends with every call (`CreateValue` of a computation), values sent (state, client arrays,
partial sums) and values received. On one machine both settings share its cores: k workers on 2
cores cannot beat one worker running 2 computations at once (README, Scaling out).

    uv run python benchmarks/workers_round.py [--cohort 1000] [--workers 2] [--rounds 3]
        [--dim 32] [--max-len 50] [--dp off|gaussian] [--json]

Not a test: nothing asserts a timing.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tff_rec import quiet  # noqa: E402

quiet.silence()

import numpy as np  # noqa: E402
import portpicker  # noqa: E402
import tensorflow_federated as tff  # noqa: E402
from tensorflow_federated.proto.v0 import executor_pb2  # noqa: E402
from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub  # noqa: E402

from round_speed import make_clients, sample_cohort  # noqa: E402
from tff_rec import algorithms, models, runtime, threads, usage  # noqa: E402
from tff_rec.privacy import mechanisms  # noqa: E402
from tff_rec.training import processes  # noqa: E402

CLIENT = {"optimizer": "sgd", "learning_rate": 0.5, "batch_size": 16, "local_epochs": 1}
SERVER = {"optimizer": "sgd", "learning_rate": 1.0, "momentum": 0.0}


class Traffic:
    """Bytes of every request and response through TFF's gRPC stubs, by kind."""

    def __init__(self):
        self.bytes = collections.Counter()
        self._request = remote_executor_grpc_stub._request

    def __enter__(self):
        original = self._request

        def counted(rpc_func, request):
            response = original(rpc_func, request)
            if isinstance(request, executor_pb2.CreateValueRequest):
                kind = "computations" if request.value.HasField("computation") else "values sent"
                self.bytes[kind] += request.ByteSize()
            else:
                self.bytes["requests"] += request.ByteSize()
            if isinstance(response, executor_pb2.ComputeResponse):
                self.bytes["values received"] += response.ByteSize()
            return response

        remote_executor_grpc_stub._request = counted
        return self

    def __exit__(self, *exc):
        remote_executor_grpc_stub._request = self._request

    def take(self) -> dict[str, int]:
        found, self.bytes = dict(self.bytes), collections.Counter()
        return found


def build(num_items: int, dim: int, max_len: int, dp: str, cohort: int):
    params = {"embedding_dim": dim, "max_len": max_len, "dropout": 0.0}

    def model_fn():
        keras_model = models.build_model("sasrec", num_items, seed=0, **params)
        return tff.learning.models.from_keras_model(
            keras_model, loss=models.training_loss(keras_model), input_spec=models.batch_spec(max_len))

    aggregator = None
    if dp == "gaussian":
        aggregator = mechanisms.build_aggregator("gaussian", clients_per_round=cohort, noise_seed=0,
                                                 clip=1.0, noise_multiplier=1.0)
    setup = algorithms.FederatedSetup(model_fn=model_fn, client=CLIENT, server=SERVER, aggregator=aggregator)
    return processes.taking_arrays(algorithms.build_fedavg(setup), max_len)


def measure(process, clients, cohort: int, rounds: int, traffic: Traffic) -> dict:
    """One warm-up round, then `rounds` timed ones (the same cohorts in every setting)."""
    state = process.initialize()
    times, sent = [], []
    for round_number in range(rounds + 1):
        chosen = sample_cohort(clients.ids, cohort, round_number)
        arguments = processes.client_arguments(clients.client_data, chosen, CLIENT["batch_size"],
                                               CLIENT["local_epochs"])
        traffic.take()
        began = time.perf_counter()
        state = process.next(state, arguments).state
        elapsed = time.perf_counter() - began
        counted = traffic.take()
        if round_number:
            times.append(elapsed)
            sent.append(counted)
        print(f"  round {round_number}{' (warm-up)' if not round_number else ''}: {elapsed:.2f} s",
              file=sys.stderr)
    per_round = {kind: int(statistics.median(c.get(kind, 0) for c in sent))
                 for kind in sorted({k for c in sent for k in c})}
    arrays = sum(a.nbytes + t.nbytes for a, t, *_ in arguments)
    return {"round_seconds": [round(t, 3) for t in times], "median_seconds": round(statistics.median(times), 3),
            "bytes_per_round": per_round, "client_array_bytes": int(arrays)}


def start_services(k: int, concurrency: int) -> list[tuple[subprocess.Popen, str]]:
    executable = Path(sys.executable).parent / "tff-rec"
    started = []
    for _ in range(k):
        port = portpicker.pick_unused_port()
        child = subprocess.Popen([str(executable), "worker", "--port", str(port), "--concurrency", str(concurrency)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = child.stdout.readline()
        if "serving" not in line:
            raise RuntimeError(f"tff-rec worker on port {port} did not start")
        started.append((child, f"127.0.0.1:{port}"))
    return started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cohort", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--dp", choices=("off", "gaussian"), default="off")
    parser.add_argument("--concurrency", type=int, default=len(os.sched_getaffinity(0)),
                        help="the local worker's computations at once (default: cores)")
    parser.add_argument("--worker-concurrency", type=int, default=1,
                        help="each worker service's computations at once (default 1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    threads.fix()
    began = time.perf_counter()
    clients = make_clients(args.max_len, population=2 * args.cohort)
    process = build(clients.num_items, args.dim, args.max_len, args.dp, args.cohort)
    results = {"settings": vars(args), "load_before": os.getloadavg(), "cores": len(os.sched_getaffinity(0))}
    with Traffic() as traffic:
        print("local worker:", file=sys.stderr)
        runtime.configure(args.concurrency)
        state = process.initialize()
        results["model_bytes"] = int(sum(np.asarray(w).nbytes for w in process.get_model_weights(state).trainable))
        results["state_bytes"] = int(sum(np.asarray(x).nbytes for x in tff.structure.flatten(
            tff.structure.from_container(state, recursive=True))))
        results["local"] = measure(process, clients, args.cohort, args.rounds, traffic)
        runtime.stop_workers()
        services = start_services(args.workers, args.worker_concurrency)
        try:
            addresses = [address for _, address in services]
            print(f"{args.workers} workers ({', '.join(addresses)}):", file=sys.stderr)
            with runtime.using_workers(addresses):
                runtime.configure()
                results["workers"] = measure(process, clients, args.cohort, args.rounds, traffic)
        finally:
            for child, _ in services:
                child.send_signal(signal.SIGTERM)
                child.wait(timeout=30)
    runtime.stop_workers()
    results["load_after"] = os.getloadavg()
    results["total_seconds"] = round(time.perf_counter() - began, 1)
    results["peak_rss_mb"] = usage.peak_rss_mb()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    mb = 1e6
    print(f"cohort {args.cohort}, SASRec d={args.dim} max_len={args.max_len}, DP {args.dp}; "
          f"{results['cores']} cores, load {results['load_before'][0]:.2f} before, "
          f"{results['load_after'][0]:.2f} after; model {results['model_bytes'] / mb:.2f} MB, "
          f"state {results['state_bytes'] / mb:.2f} MB, client arrays "
          f"{results['local']['client_array_bytes'] / mb:.2f} MB a round\n")
    kinds = sorted(set(results["local"]["bytes_per_round"]) | set(results["workers"]["bytes_per_round"]))
    print("| setting | median round (s) | " + " | ".join(f"{k} (MB/round)" for k in kinds) + " |")
    print("|---|--:|" + "--:|" * len(kinds))
    for name, label in (("local", f"1 local worker ({args.concurrency} at once)"),
                        ("workers", f"{args.workers} workers ({args.worker_concurrency} at once each)")):
        row = results[name]
        print(f"| {label} | {row['median_seconds']:.2f} | "
              + " | ".join(f"{row['bytes_per_round'].get(k, 0) / mb:.2f}" for k in kinds) + " |")
    print(f"\nspeed-up {results['local']['median_seconds'] / results['workers']['median_seconds']:.2f}× "
          f"(total {results['total_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
