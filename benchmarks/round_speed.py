"""Round speed: one round of tff-rec's TFF learning process against a plain-TensorFlow lower bound.

For each (cohort, d, DP) configuration both sides start from the same SASRec weights and, every
round, train the same sampled cohort of synthetic one-user clients on identical batches:

- TFF: the learning process exactly as the runner builds it (`algorithms.build_fedavg`, the
  runtime from `runtime.configure()`, the `gaussian` aggregator when DP is on), taking each
  client's arrays and building its dataset on the worker (`processes.taking_arrays`).
- plain: in this process, per client: set one Keras model to the global weights, run the local
  steps with a `tf.function` train step (SGD, same learning rate), take the weight difference;
  then average the differences weighted by examples and apply them with the server's SGD (lr 1).

Each round trains one cohort with every DP setting's learning process, then with the plain loop,
so that drift hits them all alike. Reported: medians over `--rounds` rounds after one warm-up
round, and DP's overhead as the median of its paired per-round ratios to the round without DP.
Not a test: nothing asserts a timing.

    uv run python benchmarks/round_speed.py [--cohorts 10 100 500] [--dims 32 64 128] [--max-len 50]
        [--local-epochs 1] [--dp off gaussian adaptive] [--subcohorts 0 1000] [--rounds 5] [--json]

`--subcohorts`: each value S > 0 adds TFF rows whose rounds run in sub-cohorts of at most S clients
(`[run] subcohort_size`, `training.cardinality.padded_next`), measured in the same rounds as the
unsplit ones (0).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tff_rec import quiet

quiet.silence()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_federated as tff  # noqa: E402

from tff_rec import algorithms, data, models, runtime, usage  # noqa: E402
from tff_rec.partition.store import ArrayClientData  # noqa: E402
from tff_rec.privacy import mechanisms  # noqa: E402
from tff_rec.training import cardinality, processes  # noqa: E402

POPULATION = 500  # clients available (one synthetic user each, the natural partition)
GENERATED_USERS = 520  # the k-core filter drops a few; the first POPULATION survivors are kept
# Cohorts above POPULATION: the population grows to POPULATION_PER_COHORT × the largest cohort, so
# that cohorts are still samples (the figures at cohorts <= 500 keep their 500 users).
POPULATION_PER_COHORT = 2
CLIENT = {"optimizer": "sgd", "learning_rate": 0.5, "batch_size": 16}  # task-file defaults
SERVER = {"optimizer": "sgd", "learning_rate": 1.0, "momentum": 0.0}  # task-file defaults
# adaptive: z 0.5, so that its default clipped-count noise (0.05 × cohort) is valid from cohort 10 up
DP_PARAMS = {"gaussian": {"clip": 1.0, "noise_multiplier": 1.0}, "adaptive": {"noise_multiplier": 0.5}}
HEADLINE = (100, 64)  # (cohort, d), with the default max_len 50

# ---------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Clients:
    """The synthetic population: ClientData with one training example per client."""

    client_data: tff.simulation.datasets.ClientData
    ids: list[str]
    num_items: int


def population_for(cohorts: Sequence[int]) -> int:
    """Clients available: 500, or POPULATION_PER_COHORT × the largest cohort when that is more."""
    return max(POPULATION, POPULATION_PER_COHORT * max(cohorts))


def make_clients(max_len: int, population: int = POPULATION) -> Clients:
    """Synthetic users through tff-rec's data stage; one client per user, elements as the runner
    reads them (`partition.store.load_in_memory`: int32 (inputs, targets) arrays)."""
    generated = GENERATED_USERS if population == POPULATION else population + population // 20 + 20
    split = data.leave_one_out(data.to_sequences(data.generate(seed=0, users=generated)))
    if len(split.data.users) < population:
        raise RuntimeError(f"{generated} generated users left {len(split.data.users)} after the "
                           f"k-core filter; {population} are needed")
    inputs, targets = models.make_training_examples(list(split.train), max_len)
    ids = list(split.data.users[:population])
    examples = {
        cid: (inputs[[u]].astype(np.int32), targets[[u]].astype(np.int32))
        for u, cid in enumerate(ids)
    }
    return Clients(ArrayClientData(examples), ids, split.data.num_items)


def cohort_datasets(clients: Clients, cohort: Sequence[str], local_epochs: int) -> list[tf.data.Dataset]:
    """The cohort's (inputs, targets) batches for the plain loop, built as TFF's worker builds
    them (`algorithms.client_dataset`)."""
    return [
        algorithms.client_dataset(
            clients.client_data.create_tf_dataset_for_client(cid), CLIENT["batch_size"], local_epochs
        )
        for cid in cohort
    ]


def sample_cohort(ids: Sequence[str], size: int, round_number: int) -> list[str]:
    """`size` distinct clients, seeded by the round (both sides get the same cohort)."""
    rng = np.random.default_rng([0, round_number])
    return sorted(rng.choice(ids, size=size, replace=False))


# ---------------------------------------------------------------- the two round implementations


def model_params(dim: int, max_len: int) -> dict[str, Any]:
    """SASRec defaults except d, max_len and dropout 0 (so both sides compute the same numbers)."""
    return {"embedding_dim": dim, "max_len": max_len, "dropout": 0.0}


def build_process(num_items: int, dim: int, max_len: int, dp: str,
                  dp_cohort: Optional[int]) -> tff.learning.templates.LearningProcess:
    """FedAvg (or DP-FedAvg with the `dp` aggregator for `dp_cohort` clients), as the runner builds it."""

    def model_fn() -> tff.learning.models.VariableModel:
        keras_model = models.build_model("sasrec", num_items, seed=0, **model_params(dim, max_len))
        return tff.learning.models.from_keras_model(
            keras_model, loss=models.MaskedNextItemLoss(), input_spec=models.batch_spec(max_len)
        )

    aggregator = None
    if dp != "off":
        aggregator = mechanisms.build_aggregator(
            dp, clients_per_round=dp_cohort, noise_seed=0, **DP_PARAMS[dp]
        )
    setup = algorithms.FederatedSetup(
        model_fn=model_fn, client=CLIENT, server=SERVER, aggregator=aggregator
    )
    return processes.taking_arrays(algorithms.build_fedavg(setup), max_len)


class PlainLoop:
    """The lower bound: FedAvg's round as a Python loop over clients around one Keras model.

    The global weights and the sum of updates live in variables, so the per-client
    `tf.function` calls take no weight lists (binding 36 tensor arguments costs about 1 ms a call).
    """

    def __init__(self, model: tf.keras.Model) -> None:
        self.model = model
        self.variables = model.trainable_variables
        self.global_weights = [tf.Variable(v) for v in self.variables]
        self.update_sum = [tf.Variable(tf.zeros_like(v)) for v in self.variables]
        self.optimizer = algorithms.KERAS_OPTIMIZERS[CLIENT["optimizer"]](CLIENT["learning_rate"])
        self.loss = models.MaskedNextItemLoss()

    @tf.function
    def _train_step(self, inputs: tf.Tensor, targets: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            loss = self.loss(targets, self.model(inputs, training=True))
        grads = tape.gradient(loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables))

    @tf.function
    def _start_client(self) -> None:
        """Model ← global weights."""
        for variable, value in zip(self.variables, self.global_weights):
            variable.assign(value)

    @tf.function
    def _add_update(self, examples: tf.Tensor) -> None:
        """Sum of updates += examples × (trained − global)."""
        for total, variable, value in zip(self.update_sum, self.variables, self.global_weights):
            total.assign_add(examples * (variable - value))

    @tf.function
    def _apply(self, step: tf.Tensor) -> None:
        """Global weights += step × sum of updates (the server's SGD); the sum restarts at 0."""
        for value, total in zip(self.global_weights, self.update_sum):
            value.assign_add(step * total)
            total.assign(tf.zeros_like(total))

    def round(self, datasets: Sequence[tf.data.Dataset]) -> None:
        """One round on `datasets` (one per client); updates `global_weights`."""
        all_examples = 0
        for dataset in datasets:
            self._start_client()
            examples = 0
            for inputs, targets in dataset:
                self._train_step(inputs, targets)
                examples += int(inputs.shape[0])
            self._add_update(tf.constant(float(examples)))
            all_examples += examples
        self._apply(tf.constant(SERVER["learning_rate"] / all_examples))


# ---------------------------------------------------------------- measuring


def cpu_seconds() -> float:
    """User + system CPU of this process and of its live TFF worker(s) (/proc/<pid>/stat)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + sum(usage.cpu_seconds(p) or 0.0 for p in runtime.worker_pids())


def reset_peaks() -> None:
    """Restart the peak-RSS counters (VmHWM) of this process and of its TFF worker(s)."""
    usage.reset_peak()
    for pid in runtime.worker_pids():
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass


def peaks() -> tuple[Optional[float], Optional[float]]:
    """Peak RSS (MB) since `reset_peaks()`: (this driver process, its largest TFF worker)."""
    workers = [usage.peak_rss_mb(pid) for pid in runtime.worker_pids()]
    return usage.peak_rss_mb(), max((w for w in workers if w is not None), default=None)


def measure(work: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds) of `work()`."""
    cpu = cpu_seconds()
    began = time.perf_counter()
    result = work()
    wall = time.perf_counter() - began
    return result, wall, cpu_seconds() - cpu


@dataclasses.dataclass
class Row:
    """One configuration's result; times are per round (medians after the warm-up round)."""

    cohort: int
    dim: int
    dp: str  # off | gaussian | adaptive
    subcohort: int  # sub-cohort size of the TFF rounds; 0: unsplit
    tff_wall: float
    plain_wall: float
    tff_cpu: float
    plain_cpu: float
    build_seconds: Optional[float]  # None: the process was built for an earlier row and reused
    warmup_seconds: float  # TFF's first round on this configuration
    max_weight_diff: Optional[float]  # |TFF − plain| after the warm-up round; None with DP noise
    dp_overhead: Optional[float]  # median over rounds of (round with DP / same round without) − 1
    tff_walls: list[float]
    plain_walls: list[float]
    driver_peak_mb: Optional[float] = None  # this process's peak RSS over the (cohort, d) group
    worker_peak_mb: Optional[float] = None  # the TFF worker's peak RSS over the group

    @property
    def wall_ratio(self) -> float:
        return self.tff_wall / self.plain_wall

    @property
    def cpu_ratio(self) -> float:
        return self.tff_cpu / self.plain_cpu


def run_group(processes_by_dp: dict[str, tff.learning.templates.LearningProcess], plain: PlainLoop,
              clients: Clients, cohort_size: int, rounds: int, local_epochs: int,
              subcohorts: Sequence[int] = (0,)) -> dict[tuple[str, int], dict[str, Any]]:
    """Warm-up round plus `rounds` timed rounds of every (DP setting, sub-cohort size) and of the
    plain loop, keyed by (dp, sub-cohort size; 0: unsplit).

    Each round trains one cohort with every learning process (in an order rotated each round),
    then with the plain loop: all of a (cohort, d) group's measurements share one time window,
    so the machine's drift hits them alike. All start from the plain model's weights.
    """
    weights = tff.learning.models.ModelWeights.from_model(plain.model)
    built = {(dp, sub): process for dp, process in processes_by_dp.items() for sub in subcohorts}
    next_fns = {(dp, sub): cardinality.padded_next(process, [cohort_size], sub)
                for (dp, sub), process in built.items()}
    states = {key: process.set_model_weights(process.initialize(), weights) for key, process in built.items()}
    times = {key: {"tff_wall": [], "tff_cpu": []} for key in built}
    plain_times: dict[str, list[float]] = {"plain_wall": [], "plain_cpu": []}
    warmups: dict[tuple[str, int], float] = {}
    diff = None
    order = list(built)
    reset_peaks()
    driver_peak = worker_peak = 0.0
    for round_number in range(rounds + 1):
        cohort = sample_cohort(clients.ids, cohort_size, round_number)
        arguments = processes.client_arguments(clients.client_data, cohort, CLIENT["batch_size"], local_epochs)
        shift = round_number % len(order)
        for dp in order[shift:] + order[:shift]:
            states[dp], wall, cpu = measure(lambda: next_fns[dp](states[dp], arguments).state)
            if round_number == 0:
                warmups[dp] = wall
            else:
                times[dp]["tff_wall"].append(wall)
                times[dp]["tff_cpu"].append(cpu)
        _, plain_wall, plain_cpu = measure(
            lambda: plain.round(cohort_datasets(clients, cohort, local_epochs))
        )
        driver_now, worker_now = peaks()  # VmHWM: a worker restarted under us would lose its own
        driver_peak, worker_peak = max(driver_peak, driver_now or 0.0), max(worker_peak, worker_now or 0.0)
        if round_number == 0:
            if ("off", subcohorts[0]) in built:
                off = ("off", subcohorts[0])
                tff_weights = built[off].get_model_weights(states[off]).trainable
                diff = max(float(np.max(np.abs(a - b.numpy())))
                           for a, b in zip(tff_weights, plain.global_weights))
            continue
        plain_times["plain_wall"].append(plain_wall)
        plain_times["plain_cpu"].append(plain_cpu)
    plain_medians = {key: statistics.median(values) for key, values in plain_times.items()}
    results = {}
    for dp in built:
        overhead = None
        off = ("off", dp[1])
        if dp[0] != "off" and off in built:  # paired: this round with DP against it without
            overhead = statistics.median(
                with_dp / without - 1
                for with_dp, without in zip(times[dp]["tff_wall"], times[off]["tff_wall"])
            )
        results[dp] = dict(
            **{key: statistics.median(values) for key, values in times[dp].items()}, **plain_medians,
            warmup_seconds=warmups[dp],
            max_weight_diff=diff if dp == ("off", subcohorts[0]) else None,
            dp_overhead=overhead, tff_walls=times[dp]["tff_wall"], plain_walls=plain_times["plain_wall"],
            driver_peak_mb=driver_peak or None, worker_peak_mb=worker_peak or None,
        )
    return results


def run(args: argparse.Namespace) -> list[Row]:
    """Every configuration; a learning process is built once and reused where it is the same.

    The plain side's Keras model is built after the learning processes of its group: building
    one (TFF traces the model in a graph) invalidates Keras models made before it.
    """
    clients = make_clients(args.max_len, population_for(args.cohorts))
    runtime.configure()
    rows: list[Row] = []
    built: dict[tuple[int, str, Optional[int]], tff.learning.templates.LearningProcess] = {}
    for dim in args.dims:
        for cohort in args.cohorts:
            group, build_seconds = {}, {}
            for dp in args.dp:
                # the DP aggregator is built for the cohort size
                key = (dim, dp, cohort if dp != "off" else None)
                build_seconds[dp] = None
                if key not in built:
                    began = time.perf_counter()
                    built[key] = build_process(clients.num_items, dim, args.max_len, dp, key[2])
                    build_seconds[dp] = time.perf_counter() - began
                group[dp] = built[key]
            model = models.build_model("sasrec", clients.num_items, seed=0,
                                       **model_params(dim, args.max_len))
            results = run_group(group, PlainLoop(model), clients, cohort, args.rounds,
                                args.local_epochs, args.subcohorts)
            for (dp, sub), result in results.items():
                first = sub == args.subcohorts[0]
                row = Row(cohort=cohort, dim=dim, dp=dp, subcohort=sub,
                          build_seconds=build_seconds[dp] if first else None, **result)
                rows.append(row)
                print(f"cohort {cohort:>3}  d {dim:>3}  DP {dp:<8} sub-cohort {sub or '-':>5}  "
                      f"TFF {row.tff_wall:.3f} s  plain {row.plain_wall:.3f} s  "
                      f"ratio {row.wall_ratio:.2f}  peak RSS driver {row.driver_peak_mb} MB "
                      f"worker {row.worker_peak_mb} MB", file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------- output


def machine() -> dict[str, Any]:
    """Cores and CPU model (Linux), Python, TF and TFF versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    return {"cores": len(os.sched_getaffinity(0)), "cpu": model, "python": platform.python_version(),
            "tensorflow": tf.__version__, "tff": tff.__version__}


def markdown(rows: Sequence[Row], args: argparse.Namespace, info: dict[str, Any]) -> str:
    """The results as a Markdown table, with the settings above it."""
    lines = [
        f"Machine: {info['cores']} cores, {info['cpu']}; TF {info['tensorflow']}, TFF {info['tff']}.",
        f"SASRec (2 blocks, 1 head), max_len {args.max_len}, {args.local_epochs} local epoch(s), "
        f"one user per client ({population_for(args.cohorts)} clients); medians of {args.rounds} "
        f"rounds after a warm-up round.",
        "",
        "| cohort | d | DP | sub-cohort | TFF s/round | plain s/round | wall ratio | TFF CPU s | plain CPU s "
        "| CPU ratio | TFF ms/client | plain ms/client | DP overhead | build s | warm-up s | max \\|Δw\\| "
        "| driver peak MB | worker peak MB |",
        "|---:|---:|:--|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        overhead = "–" if r.dp_overhead is None else f"{100 * r.dp_overhead:+.0f}%"
        headline = "**" if (r.cohort, r.dim) == HEADLINE and args.max_len == 50 else ""
        build = "reused" if r.build_seconds is None else f"{r.build_seconds:.1f}"
        diff = ("noise" if r.dp != "off" else "–") if r.max_weight_diff is None else f"{r.max_weight_diff:.0e}"
        lines.append(
            f"| {r.cohort} | {r.dim} | {r.dp} | {r.subcohort or '–'} | {r.tff_wall:.3f} | {r.plain_wall:.3f} "
            f"| {headline}{r.wall_ratio:.2f}{headline} | {r.tff_cpu:.2f} | {r.plain_cpu:.2f} "
            f"| {r.cpu_ratio:.2f} | {1000 * r.tff_wall / r.cohort:.1f} | {1000 * r.plain_wall / r.cohort:.1f} "
            f"| {overhead} | {build} | {r.warmup_seconds:.1f} | {diff} "
            f"| {_mb(r.driver_peak_mb)} | {_mb(r.worker_peak_mb)} |"
        )
    return "\n".join(lines)


def _mb(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.0f}"


def as_json(rows: Sequence[Row], args: argparse.Namespace, info: dict[str, Any]) -> str:
    """Settings, machine and every row (with its per-round wall times) as JSON."""
    return json.dumps({
        "machine": info,
        "settings": {**vars(args), "client": CLIENT, "server": SERVER, "dp_params": DP_PARAMS},
        "rows": [dict(dataclasses.asdict(r), wall_ratio=r.wall_ratio, cpu_ratio=r.cpu_ratio) for r in rows],
    }, indent=2)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohorts", type=int, nargs="+", default=[10, 100],
                        help=f"clients per round ({POPULATION} clients, or "
                             f"{POPULATION_PER_COHORT} × the largest cohort when that is more)")
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64], help="SASRec embedding_dim d")
    parser.add_argument("--max-len", type=int, default=50, help="SASRec max_len")
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--dp", choices=["off", "gaussian", "adaptive"], nargs="+",
                        default=["off", "gaussian", "adaptive"],
                        help="aggregators: gaussian (clip 1, z 1), adaptive (z 0.5, initial clip 0.1)")
    parser.add_argument("--subcohorts", type=int, nargs="+", default=[0],
                        help="TFF rounds in sub-cohorts of at most S clients ([run] subcohort_size), "
                             "one set of rows per value; 0: unsplit")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up round")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = parser.parse_args(argv)
    for name in ("cohorts", "dims", "max_len", "local_epochs", "rounds"):
        values = getattr(args, name)
        if min(values if isinstance(values, list) else [values]) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive. Found {values}.")
    if min(args.subcohorts) < 0 or len(set(args.subcohorts)) < len(args.subcohorts):
        parser.error(f"--subcohorts must be distinct sizes >= 0 (0: unsplit). Found {args.subcohorts}.")
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    began = time.perf_counter()
    args = parse_args(argv)
    try:
        rows = run(args)
    finally:
        runtime.shutdown()  # the TFF worker would otherwise keep a reader of our output waiting
    info = machine()
    print(as_json(rows, args, info) if args.json else markdown(rows, args, info))
    print(f"total {time.perf_counter() - began:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
