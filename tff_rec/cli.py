"""The `tff-rec` command: run, study, compare, plot, reference, data, tasks, privacy."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tff_rec import threads
from tff_rec.data.errors import DataError
from tff_rec.quiet import silence
from tff_rec.sampling import SAMPLERS
from tff_rec.errors import SpecError  # not tff_rec.spec: fast commands need not load it
from tff_rec.stale import warning as stale_warning

DEFAULT_OUT = Path("results")
FORMATS = ("markdown", "latex", "csv", "html")
# `privacy epsilon|calibrate --rounds`: the Gaussian mechanism's PLD composes T rounds in bounded
# memory up to ~10^7 (18 s; 10^9 runs out of memory); DP-FTRL computes one accountant per round.
MAX_PRIVACY_ROUNDS = 10_000_000
MAX_TREE_ROUNDS = 100_000
MAX_SEED = 2**63 - 1  # as spec.MAX_SEED (TOML's 64-bit integers), without importing spec here

EXIT_STATUS = """\
exit status:
  0    success
  1    a run failed (study: at least one run failed, recorded in its failed.json;
       reference check: the results differ from the reference)
  2    bad input or usage: a task, study or data file, a key, a value or an argument
       (the message names it; nothing is written); or no space left on the device
  130  interrupted (Ctrl-C)"""


class UsageError(ValueError):
    """Arguments that are fine one by one but not together (or name an unusable path): exit 2."""


class RunFailed(Exception):
    """A run that started failed (not bad input): exit 1."""


def _integer(low: int, high: Optional[int] = None, why: str = "") -> Callable[[str], int]:
    """argparse type: an integer in [low, high]; a bad value exits 2 with the allowed range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer. Found {text!r}.") from None
        if value < low or (high is not None and value > high):
            allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
            raise argparse.ArgumentTypeError(
                f"found {value}; allowed: {allowed}{f' ({why})' if why else ''}")
        return value

    return parse


def _number(low: float, high: Optional[float] = None, low_open: bool = False,
            high_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in the interval; a bad value exits 2 with the interval."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number. Found {text!r}.") from None
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        if not (math.isfinite(value) and above and below):
            left, right = "(" if low_open else "[", ")" if high_open or high is None else "]"
            allowed = f"a finite number in {left}{low:g}, {'inf' if high is None else f'{high:g}'}{right}"
            raise argparse.ArgumentTypeError(f"found {text}; allowed: {allowed}")
        return value

    return parse


def _check_folder(path: Path, flag: str, kind: str = "a folder") -> None:
    """`path` must be a folder, or a path where one can be created (no file in the way)."""
    path = Path(path)
    for ancestor in (path, *path.parents):
        if not ancestor.exists():
            continue
        if not ancestor.is_dir():
            where = "is a file" if ancestor == path else f"lies under {ancestor}, which is a file"
            raise UsageError(f"{flag} {path}: {where}; allowed: {kind}, existing or to be created")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise UsageError(f"{flag} {path}: {ancestor} is not writable; allowed: a writable {kind}")
        return


def _overrides(pairs: Sequence[str], flag: str = "--set") -> dict[str, Any]:
    from tff_rec.spec import parse_override

    return dict(parse_override(p, flag) for p in pairs)


def _task_workers(args: argparse.Namespace, tasks: Sequence[Any]):
    """The TFF worker services of the tasks' `[run] workers`, unless --workers named others (then
    already in use: `main`); the tasks of one command must agree on them."""
    from tff_rec import runtime

    chosen = {tuple(task["run"]["workers"]) for task in tasks}
    if args.workers is not None or chosen == {()}:
        return contextlib.nullcontext()
    if len(chosen) > 1:
        raise UsageError(f"the tasks name different [run] workers ({' vs '.join(map(str, sorted(chosen)))}); "
                         f"allowed: one list for a command, or --workers for all")
    return runtime.using_workers(list(chosen.pop()))


def cmd_run(args: argparse.Namespace) -> int:
    from tff_rec import api, spec

    task = spec.load_task(args.task, _overrides(args.set))
    _check_folder(Path(args.out), "--out")
    if args.study is not None and (any(c in args.study for c in "/\\\0")
                                   or args.study.strip() in ("", ".", "..")):
        raise UsageError(f"--study {args.study!r}: names the folder <out>/<study>/; allowed: a "
                         f"non-empty name without '/', '\\' or NUL that is not '.' or '..'")
    try:
        with _task_workers(args, [task]):
            result = api.run(task, args.seed, Path(args.out), study=args.study,
                             progress=args.progress, rerun_stale=args.rerun_stale)
    except SpecError:
        raise  # bad input, found before anything was written
    except (ValueError, KeyError, FileNotFoundError) as error:  # raised while the run ran
        raise RunFailed(f"{task.name} (task {task.hash}, seed {args.seed}) failed: "
                        f"{type(error).__name__}: {error}") from error
    summary = result.summary
    if result.stale:
        print(f"tff-rec: warning: {stale_warning(1, 1, f'task {task.hash} seed {args.seed}')}",
              file=sys.stderr)
    state = "already complete, not re-run" if result.skipped else "done"
    if not result.skipped and summary.get("resumed_from_round"):
        state += f" (resumed from the checkpoint of round {summary['resumed_from_round']})"
    print(f"{task.name} (task {task.hash}, seed {args.seed}): {state}")
    for key, value in summary["test"].items():
        print(f"  test {key}: {value:.4f}" if isinstance(value, float) else f"  test {key}: {value}")
    if summary.get("epsilon") is not None:
        simulated = summary.get("privacy_simulated")  # privacy/nominal.py
        marker = f", {simulated['label']}: simulated" if simulated else ""
        print(f"  ε = {summary['epsilon']:.3f} at δ = {summary['delta']:.1e} "
              f"({summary['privacy_unit']}-level{marker})")
    print(f"  record: {result.path}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from tff_rec import checks, engines, results, runner, spec

    study, skipped = spec.load_study(args.study, full=args.full).with_data_present()
    _note_skipped(skipped)
    out = Path(args.out)
    if args.dry_run:
        return _print_plan(runner.plan_study(study, out), args.rerun_stale, args.retry_failed)
    _check_folder(out, "--out")
    checks.check_study(study)  # what the data cannot satisfy fails here, before the manifest
    engine = engines.get(args.engine, args.address)  # a missing Ray fails here too
    if args.engine == "local" and runner.usable_jobs(args.jobs) < args.jobs:
        print(f"tff-rec: note: --jobs {args.jobs} is more than the {runner.usable_jobs(args.jobs)} "
              f"cores; running {runner.usable_jobs(args.jobs)} at once", file=sys.stderr)
    states = runner.record_states(study, out)
    if "stale" in states and not args.rerun_stale:
        complete = states.count("stale") + states.count("done")
        print(f"tff-rec: warning: {stale_warning(states.count('stale'), complete, f'study {study.name}')}",
              file=sys.stderr)
    with _task_workers(args, study.tasks):
        finished = runner.run_study(study, out, progress=args.progress,
                                    retry_failed=args.retry_failed, jobs=args.jobs,
                                    rerun_stale=args.rerun_stale, engine=engine)
    skipped = sum(r.skipped and r.error is None for r in finished)
    failed = [r for r in finished if r.error is not None]
    print(f"study {study.name}: {len(finished)} runs ({skipped} already complete, "
          f"{len(failed)} failed); manifest {out / study.name / 'study.json'}, records in {out / 'runs'}")
    for failure in failed:
        print(f"  failed: {failure.path}: {failure.error}", file=sys.stderr)
    if failed:
        print("  re-run with --retry-failed to try them again", file=sys.stderr)
    if len(failed) < len(finished):
        table = results.compare(results.load_runs([out / study.name]), study.metrics)
        print(results.format_table(table, study.metrics, args.format))
    return 1 if failed else 0


def _print_plan(planned: Sequence[Any], rerun_stale: bool = False, retry_failed: bool = False) -> int:
    """The dry-run listing: one line per run, then the totals of what `study` with the same
    flags would run (stale records are reused and recorded failures kept unless asked)."""
    width = max(len(run.label) for run in planned)
    for run in planned:
        epsilon = f"  ε = {run.epsilon:.4g}" if run.epsilon is not None else ""
        print(f"{run.label:<{width}}  {run.task_hash}  seed {run.seed:<3} {run.state:<8} "
              f"{run.client_updates} client updates{epsilon}")
    kept = {"done"} | ({"stale"} if not rerun_stale else set()) | ({"failed"} if not retry_failed else set())
    todo = [run for run in planned if run.state not in kept]
    states = [run.state for run in planned]
    notes = "".join(note for note in (
        f", {states.count('stale')} stale (reused; --rerun-stale re-makes them)"
        if "stale" in states and not rerun_stale else "",
        f", {states.count('failed')} failed (kept; --retry-failed runs them)"
        if "failed" in states and not retry_failed else ""))
    print(f"{len(planned)} runs, {states.count('done')} done{notes}; still to run: {len(todo)} runs, "
          f"{sum(run.client_updates for run in todo)} client updates")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tff_rec import results

    runs = results.load_runs(args.dirs)
    for warning in results.provenance_warnings(runs):
        print(f"tff-rec: warning: {warning}", file=sys.stderr)
    metrics = args.metrics or list(results.study_metrics(runs))  # the study's `metrics` by default
    if args.pivot:
        relative_to = None if args.relative_to == "none" else args.relative_to
        table = results.pivot(runs, *args.pivot, metric=metrics[0], stage=args.stage,
                              relative_to=relative_to, where=dict(_overrides(args.where, "--where")))
        print(results.format_pivot(table, args.format))
        return 0
    table = results.compare(runs, metrics, stage=args.stage, columns=args.columns,
                            baseline=args.baseline)
    for warning in results.statistics_warnings(table):  # few seeds; many rows against one baseline
        print(f"tff-rec: warning: {warning}", file=sys.stderr)
    print(results.format_table(table, metrics, args.format, columns=args.columns))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from tff_rec import plots, results

    _check_folder(args.output.parent, "--output", "a folder for STEM.png and STEM.svg")
    runs = results.load_runs(args.dirs)
    options = {"by": args.by} if args.kind == "privacy-utility" else {}
    figure = plots.PLOTS[args.kind](runs, metric=args.metric, **options)
    for path in plots.save(figure, args.output):
        print(path)
    return 0


def cmd_reference_save(args: argparse.Namespace) -> int:
    from tff_rec import record, reference

    if Path(args.reference).is_dir():
        raise UsageError(f"REFERENCE {args.reference}: is a folder; allowed: a JSON file path")
    _check_folder(Path(args.reference).parent, "REFERENCE", "a folder for the JSON file")
    snapshot = reference.snapshot(args.study_dir, args.metrics, args.tolerance)
    record.write_json(args.reference, snapshot)
    print(f"{args.reference}: {len(snapshot['runs'])} runs of {snapshot['study']}, "
          f"tolerance {snapshot['tolerance']}")
    return 0


def cmd_reference_check(args: argparse.Namespace) -> int:
    from tff_rec import reference, results

    try:
        expected = json.loads(Path(args.reference).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{args.reference}: not a readable reference file ({error})") from None
    runs = results.load_runs([args.study_dir])
    problems = reference.check(runs, expected, args.seeds)
    for problem in problems:
        print(f"differs: {problem}")
    for metric, (difference, where) in reference.largest_differences(runs, expected, args.seeds).items():
        print(f"largest |Δ| {metric}: {difference:.2e} ({where}); tolerance {expected['tolerance']}")
    if problems:
        print(f"{len(problems)} differences from {args.reference}")
        return 1
    compared = [r for r in expected["runs"] if args.seeds is None or r["seed"] in args.seeds]
    print(f"all {len(compared)} runs reproduce {args.reference} (tolerance {expected['tolerance']})")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from tff_rec.data import info, registry

    params = _overrides(args.param, "--param")
    path = args.path or registry.default_path(args.dataset)  # $TFF_REC_DATA/<layout>
    try:
        summary = info.info(args.dataset, path, params, args.min_user_interactions,
                            args.min_item_interactions)
    except DataError as error:
        if args.path:
            raise
        raise DataError(f"{error}{registry.missing_note(args.dataset)}") from None
    print(json.dumps(summary, indent=2) if args.json else info.format_info(summary))
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from tff_rec.data import download, registry

    cache = Path(args.cache or registry.data_dir() or registry.DEFAULT_CACHE).expanduser()
    _check_folder(cache, "--cache")
    folder = download.download(args.dataset, cache)
    print(f"{args.dataset}: {folder}")
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from tff_rec.data import registry

    root = Path(args.cache).expanduser() if args.cache else registry.data_dir()
    checks = [check for target in args.targets for check in registry.verify(target, root)]
    for check in checks:
        print(check.line())
    bad = sum(check.status == "MISMATCH" for check in checks)
    unchecked = sum(check.status == "UNCHECKED" for check in checks)
    summary = (f"{bad} mismatch{'es' * (bad > 1)}" if bad else
               f"no mismatch ({unchecked} without a fixed checksum)" if unchecked else "all OK")
    print(f"{len(checks)} file{'s' * (len(checks) > 1)} checked: {summary}")
    return 1 if bad else 0


def cmd_data_partition(args: argparse.Namespace) -> int:
    from tff_rec import describe, plan

    described = []  # a task file: one; a study file: each variant (or --variant LABEL)
    for label, task in _tasks_of(args):
        run = plan.resolve(task, args.seed, partition=True)
        calibrated = describe.calibration(run)  # privacy.target_epsilon
        record = run.partition_record()
        described.append({**({"variant": label} if label is not None else {}),
                          **{k: v for k, v in record.items() if k != "params"},
                          **({"noise_multiplier": calibrated["noise_multiplier"],
                              "target_epsilon": calibrated["target_epsilon"]} if calibrated else {})})
    if args.json:
        print(json.dumps(described[0] if len(described) == 1 and "variant" not in described[0]
                         else described, indent=2))
    else:
        for number, statistics in enumerate(described):
            width = max(map(len, statistics))
            print("\n" * (number > 0), end="")
            for key, value in statistics.items():
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
                print(f"{key:<{width}}  {shown}")
    return 0


def _tasks_of(args: argparse.Namespace) -> list[tuple[Optional[str], Any]]:
    """The task, or a study's variants (`--variant`, `--full`), of a command that reads tasks;
    a note names each row left out for want of its data."""
    from tff_rec import describe

    skipped: list[tuple[str, str]] = []
    pairs = describe.load_tasks(args.task, _overrides(args.set), args.variant,
                                full=args.full, skipped=skipped)
    _note_skipped(skipped)
    return pairs


def _note_skipped(skipped: Sequence[tuple[str, str]]) -> None:
    """A stderr line per reason study rows were left out because their data is not on this
    machine, naming the rows."""
    by_reason: dict[str, list[str]] = {}
    for label, why in skipped:
        by_reason.setdefault(why, []).append(label)
    for why, labels in by_reason.items():
        rows = f"{len(labels)} rows" if len(labels) > 1 else "1 row"
        print(f"tff-rec: note: skipping {rows} marked skip_without_data ({', '.join(labels)}): "
              f"{why}", file=sys.stderr)


def cmd_tasks_schema(args: argparse.Namespace) -> int:
    """The task-file reference generated from the declarations (docs/task-reference.md)."""
    from tff_rec import schema

    print(schema.reference(), end="")
    return 0


def cmd_tasks_describe(args: argparse.Namespace) -> int:
    from tff_rec import describe

    described = []  # a task file: one; a study file: each variant (or --variant LABEL)
    for label, task in _tasks_of(args):
        described.append({**({"variant": label} if label is not None else {}),
                          **describe.describe(task, args.seed)})
    if args.json:
        print(json.dumps(described[0] if len(described) == 1 and "variant" not in described[0]
                         else described, indent=2))
    else:
        print("\n\n".join(describe.format_description(d) for d in described))
    return 0


def _privacy_common(args: argparse.Namespace) -> dict[str, Any]:
    """The accounting inputs; with --noise-cohort-size, the nominal cohort's (privacy/nominal.py):
    ε as a task with privacy.noise_cohort_size and privacy.population records it."""
    from tff_rec.privacy import accounting

    if args.clients_per_round > args.population:
        raise UsageError(f"--clients-per-round {args.clients_per_round} is larger than --population "
                         f"{args.population}; allowed: 1 to {args.population}")
    nominal = args.noise_cohort_size
    if nominal is not None and not args.clients_per_round <= nominal <= args.population:
        raise UsageError(f"--noise-cohort-size {nominal} must be between --clients-per-round "
                         f"{args.clients_per_round} and --population {args.population}")
    if _analysis(args.mechanism) is accounting.ANALYSES["tree"] and args.rounds > MAX_TREE_ROUNDS:
        raise UsageError(f"--rounds {args.rounds} with --mechanism tree; allowed: 1 to "
                         f"{MAX_TREE_ROUNDS} (DP-FTRL's ε is computed round by round)")
    delta = args.delta if args.delta is not None else accounting.default_delta(args.population)
    return dict(population=args.population, clients_per_round=nominal or args.clients_per_round,
                rounds=args.rounds, delta=delta, sampling=args.sampling)


def _simulated(args: argparse.Namespace, noise: float) -> dict[str, Any]:
    """The JSON's `simulated` entry with --noise-cohort-size (what the aggregator adds to the sum
    of the --clients-per-round clients it averages), else {}."""
    if args.noise_cohort_size is None:
        return {}
    scale = args.clients_per_round / args.noise_cohort_size
    return {"simulated": {"noise_cohort_size": args.noise_cohort_size, "population": args.population,
                          "clients_per_round": args.clients_per_round,
                          "aggregator_noise_multiplier": noise * scale}}


MECHANISM_HELP = ("a mechanism whose noise multiplier sets ε: gaussian, adaptive (its total z: "
                  "updates and clipped count), tree, or an installed plugin's")


def _accounted_mechanism(name: str) -> str:
    """--mechanism: a registered mechanism (a plugin's too) whose noise multiplier sets ε."""
    from tff_rec.privacy.mechanism_registry import MECHANISMS

    try:
        mechanism = MECHANISMS.entry(name)
    except ValueError:
        mechanism = None
    if mechanism is None or not mechanism.noise_sets_epsilon:
        allowed = ", ".join(n for n, m in MECHANISMS.items() if m.noise_sets_epsilon)
        raise argparse.ArgumentTypeError(
            f"found {name!r}; allowed: {allowed} (mechanisms whose noise multiplier sets ε)")
    return name


def _analysis(mechanism: str):
    """The ε analysis of a registered mechanism (`accounting.ANALYSES`), as a run accounts it."""
    from tff_rec.privacy import accounting
    from tff_rec.privacy.mechanism_registry import get_mechanism

    return accounting.analysis_of(get_mechanism(mechanism))


def _note(mechanism: str) -> str:
    """What the noise multiplier of `mechanism` is, as its runs account it."""
    from tff_rec.privacy.mechanism_registry import get_mechanism

    return get_mechanism(mechanism).accounting_note


def cmd_privacy_epsilon(args: argparse.Namespace) -> int:
    common = _privacy_common(args)
    epsilons, reasons = {}, {}
    for name in ("rdp", "pld"):
        epsilons[name], reasons[name] = _analysis(args.mechanism).final(
            noise_multiplier=args.noise_multiplier, accountant=name, **common)
    if args.json:
        print(json.dumps({
            "epsilon": epsilons, "delta": common["delta"],
            "reasons": {name: r for name, r in reasons.items() if r},
            "sampling": args.sampling, "mechanism": args.mechanism,
            "accounting": _note(args.mechanism),
            **_simulated(args, args.noise_multiplier),
        }, indent=2))
        return 0
    for name, value in epsilons.items():
        shown = f"{value:.4f}" if value is not None else f"not reported: {reasons[name]}"
        print(f"ε ({name.upper()}) = {shown}")
    print(f"δ = {common['delta']:.3g}, sampling = {args.sampling}")
    if args.mechanism != "gaussian":
        print(f"mechanism = {args.mechanism}: {_note(args.mechanism)}")
    if args.noise_cohort_size is not None:
        simulated = _simulated(args, args.noise_multiplier)["simulated"]
        print(f"nominal cohort {args.noise_cohort_size} of {args.population}; a simulation training "
              f"{args.clients_per_round} clients a round adds noise multiplier "
              f"{simulated['aggregator_noise_multiplier']:.4g} to their sum")
    return 0


def cmd_privacy_calibrate(args: argparse.Namespace) -> int:
    common = _privacy_common(args)
    noise, achieved = _analysis(args.mechanism).calibrate(target_epsilon=args.target_epsilon, accountant=args.accountant, **common)
    if args.json:
        print(json.dumps({"noise_multiplier": noise, "epsilon": achieved,
                          "delta": common["delta"], "accountant": args.accountant,
                          "mechanism": args.mechanism, "accounting": _note(args.mechanism),
                          **_simulated(args, noise)}, indent=2))
    else:
        print(f"noise multiplier {noise:.4f} gives ε = {achieved:.4f} at δ = {common['delta']:.3g} "
              f"({args.accountant.upper()}, {args.sampling} sampling)")
        if args.mechanism != "gaussian":
            print(f"mechanism = {args.mechanism}: {_note(args.mechanism)}")
    return 0


def cmd_privacy_audit(args: argparse.Namespace) -> int:
    """Empirical lower bound on ε (one-run canary audit, privacy/audit.py) beside the accountant's."""
    from tff_rec.privacy import audit

    overrides = _overrides(args.set)
    if args.canaries is not None:
        overrides["privacy.audit.canaries"] = args.canaries
    _check_folder(Path(args.out), "--out")
    results = []
    for case in audit.load_cases(args.task, overrides):
        results.append(audit.audit_case(case, args.seed))
        kept = audit.keep_in_record(case, results[-1], args.out)
        if kept is not None:
            print(f"audit of {case.label!r} kept in {kept}", file=sys.stderr)
    if args.json:
        records = [result.to_json() for result in results]
        print(json.dumps(records[0] if len(records) == 1 else records, indent=2))
    else:
        print(audit.format_results(results))
    return 0


def cmd_privacy_signal(args: argparse.Namespace) -> int:
    """Signal-to-noise ceilings of the update and of each item's row, per DP variant, from data
    and plan alone (privacy/signal.py): why a DP row does or does not rise above popularity."""
    from tff_rec import describe
    from tff_rec.privacy import signal

    found, noiseless, refused = [], [], []
    pairs = _tasks_of(args)
    one = len(pairs) == 1  # a task file, or one --variant: its one task is the question
    for label, task in pairs:
        name = label if label is not None else task.name
        try:
            found.append((name, signal.task_signal(task, args.seed), task.hash))
        except signal.SignalError as error:
            if one:
                raise
            (noiseless if isinstance(error, signal.NoNoise) else refused).append((name, error))
    if not found:
        raise signal.SignalError(f"{args.task}: no variant adds DP noise this analysis covers: "
                                 + "; ".join(str(error) for _, error in noiseless + refused))
    measured = None
    if args.results is not None:  # the runs' own metric beside each ceiling
        from tff_rec import results

        measured = signal.measured(results.load_runs([args.results]), [hash_ for _, _, hash_ in found],
                                   args.metric)
    if args.json:
        records = [{"variant": name, **result.to_json(),
                    **({} if measured is None else {args.metric: measured.get(hash_)})}
                   for name, result, hash_ in found]
        print(json.dumps(records[0] if one else records, indent=2))
    else:
        print(signal.format_table([signal.table_row(name, result) for name, result, _ in found],
                                  None if measured is None else (args.metric, [measured.get(h) for *_, h in found]),
                                  [result.model_snr_ceiling for _, result, _ in found]))
        if noiseless:
            print(f"Without DP noise (left out): {', '.join(name for name, _ in noiseless)}.")
        for name, error in refused:
            print(f"Left out {name}: {error}")
    return 0


def _add_privacy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--population", type=_integer(2), required=True, help="number of clients N")
    parser.add_argument("--clients-per-round", type=_integer(1), required=True,
                        help="cohort size C (expected, for Poisson), at most N")
    parser.add_argument("--rounds", type=_integer(1, MAX_PRIVACY_ROUNDS, "accounting in bounded memory"),
                        required=True, help=f"at most {MAX_PRIVACY_ROUNDS} ({MAX_TREE_ROUNDS} for tree)")
    parser.add_argument("--delta", type=_number(0, 1, low_open=True, high_open=True), default=None,
                        help="in (0, 1); default: from the population")
    parser.add_argument("--sampling", choices=tuple(SAMPLERS), default="poisson",
                        help="how clients are sampled (tree: shuffle, each client at most once)")
    parser.add_argument("--noise-cohort-size", type=_integer(1), default=None,
                        help="nominal cohort C_nom (privacy.noise_cohort_size): ε for C_nom of "
                             "--population clients while --clients-per-round train")
    parser.add_argument("--json", action="store_true")


def _full_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--full", action="store_true",
                        help="a study file: its full size ([study.full]; results under NAME_full), "
                             "not the default size one machine runs in about an hour")


def _workers_argument(parser: argparse.ArgumentParser) -> None:
    """--workers HOST:PORT[,HOST:PORT...]: TFF worker services (`tff-rec worker`) for the rounds."""

    def addresses(text: str) -> list[str]:
        from tff_rec import workers

        try:
            return workers.parse_addresses(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parser.add_argument("--workers", type=addresses, default=None, metavar="HOST:PORT[,HOST:PORT...]",
                        help="run each round's cohort across these TFF worker services, started "
                             "with `tff-rec worker` (default: a local worker; README, Scaling out)")


def cmd_worker(args: argparse.Namespace) -> int:
    from tff_rec import workers

    return workers.serve(args.port, args.concurrency, verbose=args.verbose)


def _progress_arguments(parser: argparse.ArgumentParser) -> None:
    """--progress bar|lines|none (default: bar on a terminal, lines otherwise), --no-progress."""
    parser.add_argument("--progress", choices=("bar", "lines", "none"), default="auto",
                        help="bar: a progress bar; lines: a line per round on stderr (for logs); "
                             "none (default: bar on a terminal, lines otherwise)")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const="none",
                        help="the same as --progress none")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tff-rec",
        description="Federated, differentially private transformer recommenders on TFF.",
        epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow/absl logs")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run one task")
    run.add_argument("task", type=Path)
    run.add_argument("--seed", type=_integer(0, MAX_SEED), default=0)
    run.add_argument("--out", default=DEFAULT_OUT, help="results folder (default: results)")
    run.add_argument("--study", default=None,
                     help="study whose manifest lists the run (default: the task's name)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a task key, e.g. --set algorithm.rounds=5")
    _progress_arguments(run)
    run.add_argument("--rerun-stale", action="store_true",
                     help="re-make a complete record made by other code than this (default: reuse it, with a warning)")
    _workers_argument(run)
    run.set_defaults(handler=cmd_run)

    study = commands.add_parser("study", help="run a study (variants × seeds) and print its table")
    study.add_argument("study", type=Path)
    study.add_argument("--out", default=DEFAULT_OUT)
    study.add_argument("--format", choices=FORMATS, default="markdown")
    _progress_arguments(study)
    study.add_argument("--dry-run", action="store_true",
                       help="resolve every run's plan and list it (label, hash, seed, record state, the "
                            "client updates its sampler draws, its final ε); writes nothing")
    _full_argument(study)
    study.add_argument("--retry-failed", action="store_true", help="run recorded failures again")
    study.add_argument("--rerun-stale", action="store_true",
                       help="re-make complete records made by other code than this (default: reuse them, with a warning)")
    study.add_argument("--jobs", type=_integer(1), default=1,
                       help="runs at once, in separate processes sharing the cores (default 1)")
    from tff_rec.engines import ENGINES  # names only: an engine's packages load when chosen

    study.add_argument("--engine", choices=tuple(ENGINES), default="local",
                       help="where runs run: local (this machine) or ray (a Ray task per run; "
                            "README, Scaling out)")
    study.add_argument("--address", default=None, metavar="HOST:PORT",
                       help="--engine ray: the Ray cluster (default: start Ray here for the study)")
    _workers_argument(study)
    study.set_defaults(handler=cmd_study)

    worker = commands.add_parser("worker", help="serve TFF computations for runs on other machines "
                                                "(`run|study --workers`); no TLS: trusted networks only")
    worker.add_argument("--port", type=_integer(1, 65535), required=True)
    worker.add_argument("--concurrency", type=_integer(1), default=None,
                        help="computations at once (default: one per core)")
    worker.set_defaults(handler=cmd_worker)

    compare = commands.add_parser("compare", help="table of runs: mean ± 95%% CI over seeds")
    compare.add_argument("dirs", nargs="+", type=Path)
    compare.add_argument("--format", choices=FORMATS, default="markdown")
    compare.add_argument("--metrics", nargs="+", default=None,
                         help="default: the study's own [study] metrics list, else ndcg@10 hr@10")
    compare.add_argument("--stage", choices=("test", "val"), default="test")
    compare.add_argument("--columns", nargs="+", default=[], metavar="COLUMN",
                         help="extra columns, e.g. het_mean_js_divergence wall_seconds peak_rss_mb bytes_up_total")
    compare.add_argument("--baseline", default=None, metavar="LABEL",
                         help="paired t-test over seeds of every row against this variant; "
                              "p-values also shown Holm–Bonferroni adjusted ('p (Holm)')")
    compare.add_argument("--pivot", nargs=2, metavar=("ROW_AXIS", "COL_AXIS"),
                         help="grid table of the first metric, e.g. --pivot partition privacy")
    compare.add_argument("--where", action="append", default=[], metavar="AXIS=VALUE",
                         help="pivot: fix another grid axis, e.g. --where partition=natural")
    compare.add_argument("--relative-to", default="auto", metavar="LABEL",
                         help="pivot: relative change against this variant (default: the "
                              "centralized one; 'none' to leave it out)")
    compare.set_defaults(handler=cmd_compare)

    plot = commands.add_parser("plot", help="figures (PNG and SVG): convergence, utility vs privacy")
    plot.add_argument("dirs", nargs="+", type=Path)
    plot.add_argument("--kind", choices=("convergence", "privacy-utility"), default="convergence")
    plot.add_argument("--metric", default="ndcg@10")
    plot.add_argument("--by", default="partition",
                      help="privacy-utility: one line per value of this grid axis or record column "
                           "(several, comma-separated: one line per combination)")
    plot.add_argument("--output", type=Path, required=True,
                      help="file stem: writes STEM.png and STEM.svg")
    plot.set_defaults(handler=cmd_plot)

    reference = commands.add_parser("reference", help="save or check reference results").add_subparsers(
        dest="reference_command", required=True)
    save = reference.add_parser("save", help="write a study's test metrics as a reference file")
    save.add_argument("study_dir", type=Path)
    save.add_argument("reference", type=Path)
    save.add_argument("--metrics", nargs="+", default=["ndcg@10", "hr@10", "mrr"])
    save.add_argument("--tolerance", type=_number(0), default=0.01, help="absolute, per metric and run")
    save.set_defaults(handler=cmd_reference_save)
    check = reference.add_parser("check", help="does a re-run reproduce a reference? (exit 1 if not)")
    check.add_argument("study_dir", type=Path)
    check.add_argument("reference", type=Path)
    check.add_argument("--seeds", nargs="+", type=_integer(0, MAX_SEED), default=None, help="compare only these seeds")
    check.set_defaults(handler=cmd_reference_check)

    data = commands.add_parser("data", help="datasets and partitions").add_subparsers(
        dest="data_command", required=True)
    info = data.add_parser("info", help="users, items, interactions: raw and filtered")
    info.add_argument("dataset")
    info.add_argument("--path", default=None)
    info.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                      help="dataset parameter, e.g. --param users=500 for synthetic")
    info.add_argument("--min-user-interactions", type=_integer(0), default=None,
                      help="k-core on users (default: 5 for raw logs, 0 for pre-filtered files)")
    info.add_argument("--min-item-interactions", type=_integer(0), default=None,
                      help="k-core on items (default: 5 for raw logs, 0 for pre-filtered files)")
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=cmd_data_info)
    from tff_rec.data.registry import ENV, REGISTRY

    names = "\n".join(f"  {name:<17} {entry.file:<19} {entry.description}"
                      for name, entry in REGISTRY.items())
    download = data.add_parser(
        "download", help=f"fetch a real-data file (checksum-checked) into a data directory "
        f"(${ENV} or --cache)", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"names, with their place in the data directory:\n{names}")
    download.add_argument("dataset", metavar="NAME", help="a name listed below")
    download.add_argument("--cache", default=None, metavar="DIR",
                          help=f"data directory (default: ${ENV}, else ~/.cache/tff-rec)")
    download.set_defaults(handler=cmd_data_download)
    verify = data.add_parser("verify", help="check local files against the registry's checksums "
                             "(exit 1 on a mismatch)")
    verify.add_argument("targets", nargs="+", metavar="PATH|NAME",
                        help=f"a file, a data directory, or a registry name ({', '.join(REGISTRY)}): "
                             f"its file in the data directory")
    verify.add_argument("--cache", default=None, metavar="DIR",
                        help=f"data directory for NAME (default: ${ENV})")
    verify.set_defaults(handler=cmd_data_verify)
    part = data.add_parser("partition", help="heterogeneity statistics of a task's partition "
                           "(a study file: each variant's), with the calibrated noise multiplier")
    part.add_argument("task", type=Path, help="a task file, or a study file")
    part.add_argument("--variant", default=None, metavar="LABEL", help="a study file: only this variant")
    _full_argument(part)
    part.add_argument("--seed", type=_integer(0, MAX_SEED), default=0)
    part.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    part.add_argument("--json", action="store_true")
    part.set_defaults(handler=cmd_data_partition)

    tasks = commands.add_parser("tasks", help="task files").add_subparsers(dest="tasks_command", required=True)
    describe = tasks.add_parser("describe", help="the resolved task, with the model's parameter count "
                                "and the calibrated noise multiplier (a study file: each variant)")
    describe.add_argument("task", type=Path, help="a task file, or a study file")
    describe.add_argument("--variant", default=None, metavar="LABEL", help="a study file: only this variant")
    _full_argument(describe)
    describe.add_argument("--seed", type=_integer(0, MAX_SEED), default=0)
    describe.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(handler=cmd_tasks_describe)
    schema = tasks.add_parser("schema", help="every task-file key with its default and help, and every "
                              "dataset, partitioner, model, algorithm and mechanism (Markdown)")
    schema.set_defaults(handler=cmd_tasks_schema)

    privacy = commands.add_parser("privacy", help="ε accounting").add_subparsers(
        dest="privacy_command", required=True)
    epsilon = privacy.add_parser("epsilon", help="ε from RDP and PLD accountants")
    epsilon.add_argument("--noise-multiplier", type=_number(0), required=True)
    epsilon.add_argument("--mechanism", type=_accounted_mechanism, default="gaussian",
                         help=MECHANISM_HELP)
    _add_privacy_args(epsilon)
    epsilon.set_defaults(handler=cmd_privacy_epsilon)
    calibrate = privacy.add_parser("calibrate", help="smallest noise multiplier meeting ε")
    calibrate.add_argument("--target-epsilon", type=_number(0, low_open=True), required=True)
    calibrate.add_argument("--accountant", choices=("rdp", "pld"), default="rdp")
    calibrate.add_argument("--mechanism", type=_accounted_mechanism, default="gaussian",
                           help=MECHANISM_HELP)
    _add_privacy_args(calibrate)
    calibrate.set_defaults(handler=cmd_privacy_calibrate)
    audit = privacy.add_parser("audit", help="empirical lower bound on ε (canary audit) beside "
                               "the accounted ε, for a task or each variant of a study")
    audit.add_argument("task", type=Path, help="task or study file; [privacy.audit] sets the audit")
    audit.add_argument("--seed", type=_integer(0, MAX_SEED), default=0)
    audit.add_argument("--canaries", type=_integer(2), default=None,
                       help="canary clients m (privacy.audit.canaries; default 1000, at most the population)")
    audit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    audit.add_argument("--out", default=DEFAULT_OUT,
                       help="results folder whose run records keep the audits (default: results)")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(handler=cmd_privacy_audit)
    signal_parser = privacy.add_parser(
        "signal", help="signal-to-noise ceilings of the update and of each item's embedding row, "
        "from the data and the privacy plan (nothing trains): why DP does or does not beat popularity")
    signal_parser.add_argument("task", type=Path, help="a task file, or a study file (each DP variant)")
    signal_parser.add_argument("--variant", default=None, metavar="LABEL", help="a study file: only this variant")
    _full_argument(signal_parser)
    signal_parser.add_argument("--seed", type=_integer(0, MAX_SEED), default=0)
    signal_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    signal_parser.add_argument("--results", type=Path, default=None, metavar="DIR",
                               help="the study's records (e.g. results/STUDY): each variant's "
                               "measured --metric (mean over its seeds) beside its ceilings")
    signal_parser.add_argument("--metric", default="test_ndcg@10",
                               help="with --results: the record column shown (default test_ndcg@10)")
    signal_parser.add_argument("--json", action="store_true")
    signal_parser.set_defaults(handler=cmd_privacy_signal)
    return parser


# Exit 2: bad input or usage (argparse's own usage errors exit 2 too). Exit 1: RunFailed, a study
# with failed runs, a reference that differs. See EXIT_STATUS.
USER_ERRORS = (SpecError, DataError, ValueError, KeyError, FileNotFoundError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    silence(args.verbose)
    threads.fix()  # before TensorFlow starts: results depend on the driver's thread count
    handler: Callable[[argparse.Namespace], int] = args.handler
    from tff_rec import runtime

    runtime.shutdown_at_exit()  # also when no TFF worker starts (a centralized run imports TFF too)
    try:
        with runtime.using_workers(getattr(args, "workers", None)):  # --workers: remote TFF workers
            return handler(args)
    except RunFailed as error:
        if args.verbose:
            raise
        print(f"tff-rec: error: {error} (--verbose shows the traceback)", file=sys.stderr)
        return 1
    except USER_ERRORS as error:
        if args.verbose:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        if type(error) not in (SpecError, DataError, ValueError, UsageError):  # say what kind of failure it was
            message = f"{type(error).__name__}: {message}"
        print(f"tff-rec: error: {message} (--verbose shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback; the workers stop below
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C (`uv run` passes it on too)
        print(f"tff-rec: interrupted; {_resume_note()}", file=sys.stderr)
        return 130
    except Exception as error:
        from tff_rec import faults, runtime

        if args.verbose:
            raise
        if isinstance(error, runtime.WorkerDied):
            print(f"tff-rec: error: {error}; {_resume_note()}", file=sys.stderr)
            return 1
        if faults.is_disk_full(error):  # nothing half-written is left (faults, runner)
            path = getattr(error, "path", None) or getattr(error, "filename", None) or "a file"
            print(f"tff-rec: error: no space left on device writing {path}", file=sys.stderr)
            return 2
        raise
    finally:
        from tff_rec import runtime

        runtime.stop_workers()


def _resume_note() -> str:
    """Where a re-run goes on from: the interrupted run's last checkpoint, when this process knows it."""
    from tff_rec.training import checkpoints

    latest = checkpoints.latest_round()
    if latest:
        return f"re-running the command resumes the run from its checkpoint of round {latest}"
    return "re-running the command resumes each unfinished run from its last checkpoint, if it has one"


if __name__ == "__main__":
    sys.exit(main())
