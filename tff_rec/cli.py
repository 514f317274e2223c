"""The `tff-rec` command: run, study, compare, plot, reference, data, tasks, privacy."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tff_rec.data.errors import DataError
from tff_rec.quiet import silence
from tff_rec.spec import SpecError

DEFAULT_OUT = Path("results")
FORMATS = ("markdown", "latex", "csv", "html")


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    from tff_rec.spec import parse_override

    return dict(parse_override(p) for p in pairs)


def cmd_run(args: argparse.Namespace) -> int:
    from tff_rec import runner, spec

    from tff_rec import record

    task = spec.load_task(args.task, _overrides(args.set))
    result = runner.run_task(task, args.seed, Path(args.out), progress=not args.no_progress)
    record.add_to_manifest(Path(args.out), args.study or task.name,
                           {"label": task.name, "task_hash": task.hash, "axes": {}, "overrides": {}},
                           args.seed)
    summary = result.summary
    state = "already complete, not re-run" if result.skipped else "done"
    if not result.skipped and summary.get("resumed_from_round"):
        state += f" (resumed from the checkpoint of round {summary['resumed_from_round']})"
    print(f"{task.name} (task {task.hash}, seed {args.seed}): {state}")
    for key, value in summary["test"].items():
        print(f"  test {key}: {value:.4f}" if isinstance(value, float) else f"  test {key}: {value}")
    if summary.get("epsilon") is not None:
        print(f"  ε = {summary['epsilon']:.3f} at δ = {summary['delta']:.1e} ({summary['privacy_unit']}-level)")
    print(f"  record: {result.path}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from tff_rec import results, runner, spec

    study = spec.load_study(args.study)
    out = Path(args.out)
    if args.dry_run:
        return _print_plan(runner.plan_study(study, out))
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1. Found {args.jobs}.")
    if runner.usable_jobs(args.jobs) < args.jobs:
        print(f"tff-rec: note: --jobs {args.jobs} is more than the {runner.usable_jobs(args.jobs)} "
              f"cores; running {runner.usable_jobs(args.jobs)} at once", file=sys.stderr)
    finished = runner.run_study(study, out, progress=not args.no_progress,
                                retry_failed=args.retry_failed, jobs=args.jobs)
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


def _print_plan(planned: Sequence[Any]) -> int:
    """The dry-run listing: one line per run, then the totals."""
    width = max(len(run.label) for run in planned)
    for run in planned:
        print(f"{run.label:<{width}}  {run.task_hash}  seed {run.seed:<3} {run.state:<8} "
              f"{run.client_updates} client updates")
    todo = [run for run in planned if run.state != "done"]
    print(f"{len(planned)} runs, {len(planned) - len(todo)} done; still to run: {len(todo)} runs, "
          f"{sum(run.client_updates for run in todo)} client updates")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tff_rec import results

    runs = results.load_runs(args.dirs)
    for warning in results.provenance_warnings(runs):
        print(f"tff-rec: warning: {warning}", file=sys.stderr)
    if args.pivot:
        relative_to = None if args.relative_to == "none" else args.relative_to
        table = results.pivot(runs, *args.pivot, metric=args.metrics[0], stage=args.stage,
                              relative_to=relative_to, where=dict(_overrides(args.where)))
        print(results.format_pivot(table, args.format))
        return 0
    table = results.compare(runs, args.metrics, stage=args.stage, columns=args.columns,
                            baseline=args.baseline)
    print(results.format_table(table, args.metrics, args.format, columns=args.columns))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from tff_rec import plots, results

    runs = results.load_runs(args.dirs)
    options = {"by": args.by} if args.kind == "privacy-utility" else {}
    figure = plots.PLOTS[args.kind](runs, metric=args.metric, **options)
    for path in plots.save(figure, args.output):
        print(path)
    return 0


def cmd_reference_save(args: argparse.Namespace) -> int:
    from tff_rec import record, reference

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
    problems = reference.check(results.load_runs([args.study_dir]), expected, args.seeds)
    for problem in problems:
        print(f"differs: {problem}")
    if problems:
        print(f"{len(problems)} differences from {args.reference}")
        return 1
    compared = [r for r in expected["runs"] if args.seeds is None or r["seed"] in args.seeds]
    print(f"all {len(compared)} runs reproduce {args.reference} (tolerance {expected['tolerance']})")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from tff_rec.data import info

    params = _overrides(args.param)
    summary = info.info(args.dataset, args.path, params, args.min_user_interactions,
                        args.min_item_interactions)
    print(json.dumps(summary, indent=2) if args.json else info.format_info(summary))
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from tff_rec.data import download

    folder = download.download(args.dataset, Path(args.cache))
    print(f"{args.dataset}: {folder}")
    return 0


def cmd_data_partition(args: argparse.Namespace) -> int:
    from tff_rec import seeds, spec
    from tff_rec.partition import heterogeneity, partition
    from tff_rec.prepare import prepare

    task = spec.load_task(args.task, _overrides(args.set))
    data = prepare(task, args.seed)
    split = partition(data.split, task["partition"]["scheme"],
                      seed=seeds.derive(args.seed, "partition"), **task["partition"]["params"])
    statistics = {"scheme": split.scheme, "privacy_unit": split.privacy_unit,
                  **heterogeneity(data.split, split)}
    if args.json:
        print(json.dumps(statistics, indent=2))
    else:
        width = max(map(len, statistics))
        for key, value in statistics.items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            print(f"{key:<{width}}  {shown}")
    return 0


def cmd_tasks_describe(args: argparse.Namespace) -> int:
    from tff_rec import describe, spec

    task = spec.load_task(args.task, _overrides(args.set))
    description = describe.describe(task, args.seed)
    print(json.dumps(description, indent=2) if args.json else describe.format_description(description))
    return 0


def _privacy_common(args: argparse.Namespace) -> dict[str, Any]:
    from tff_rec.privacy import accounting

    delta = args.delta if args.delta is not None else accounting.default_delta(args.population)
    return dict(population=args.population, clients_per_round=args.clients_per_round,
                rounds=args.rounds, delta=delta, sampling=args.sampling)


def _gaussian_epsilon(noise: float, accountant: str, common: dict[str, Any]):
    from tff_rec.privacy import accounting

    if common["sampling"] not in accounting.SAMPLINGS:
        return None, f"no accounting of the Gaussian mechanism under {common['sampling']!r} sampling"
    result = accounting.epsilon(noise_multiplier=noise, accountant=accountant, **common)
    return result.epsilon, result.reason


def _tree_epsilon(noise: float, accountant: str, common: dict[str, Any]):
    from tff_rec.privacy import accounting

    ledger, reason = accounting.tree_epsilon_ledger(noise_multiplier=noise, accountant=accountant, **common)
    return ledger[-1], reason


EPSILON_BY_MECHANISM = {"gaussian": _gaussian_epsilon, "tree": _tree_epsilon}


def cmd_privacy_epsilon(args: argparse.Namespace) -> int:
    common = _privacy_common(args)
    epsilons, reasons = {}, {}
    for name in ("rdp", "pld"):
        epsilons[name], reasons[name] = EPSILON_BY_MECHANISM[args.mechanism](
            args.noise_multiplier, name, common
        )
    if args.json:
        print(json.dumps({
            "epsilon": epsilons, "delta": common["delta"],
            "reasons": {name: r for name, r in reasons.items() if r},
            "sampling": args.sampling, "mechanism": args.mechanism,
        }, indent=2))
        return 0
    for name, value in epsilons.items():
        shown = f"{value:.4f}" if value is not None else f"not reported: {reasons[name]}"
        print(f"ε ({name.upper()}) = {shown}")
    print(f"δ = {common['delta']:.3g}, sampling = {args.sampling}")
    return 0


def cmd_privacy_calibrate(args: argparse.Namespace) -> int:
    from tff_rec.privacy import accounting

    common = _privacy_common(args)
    calibrate = {"gaussian": accounting.calibrate_noise_multiplier,
                 "tree": accounting.calibrate_tree_noise_multiplier}[args.mechanism]
    noise, achieved = calibrate(target_epsilon=args.target_epsilon, accountant=args.accountant, **common)
    if args.json:
        print(json.dumps({"noise_multiplier": noise, "epsilon": achieved,
                          "delta": common["delta"], "accountant": args.accountant}, indent=2))
    else:
        print(f"noise multiplier {noise:.4f} gives ε = {achieved:.4f} at δ = {common['delta']:.3g} "
              f"({args.accountant.upper()}, {args.sampling} sampling)")
    return 0


def _add_privacy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--population", type=int, required=True, help="number of clients N")
    parser.add_argument("--clients-per-round", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--delta", type=float, default=None, help="default: from the population")
    parser.add_argument("--sampling", choices=("poisson", "fixed", "shuffle"), default="poisson",
                        help="how clients are sampled (tree: shuffle, each client at most once)")
    parser.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tff-rec",
        description="Federated, differentially private transformer recommenders on TFF.",
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow/absl logs")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run one task")
    run.add_argument("task", type=Path)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default=DEFAULT_OUT, help="results folder (default: results)")
    run.add_argument("--study", default=None,
                     help="study whose manifest lists the run (default: the task's name)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a task key, e.g. --set algorithm.rounds=5")
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(handler=cmd_run)

    study = commands.add_parser("study", help="run a study (variants × seeds) and print its table")
    study.add_argument("study", type=Path)
    study.add_argument("--out", default=DEFAULT_OUT)
    study.add_argument("--format", choices=FORMATS, default="markdown")
    study.add_argument("--no-progress", action="store_true")
    study.add_argument("--dry-run", action="store_true",
                       help="list every run (label, hash, seed, state) and the client updates planned")
    study.add_argument("--retry-failed", action="store_true", help="run recorded failures again")
    study.add_argument("--jobs", type=int, default=1,
                       help="runs at once, in separate processes sharing the cores (default 1)")
    study.set_defaults(handler=cmd_study)

    compare = commands.add_parser("compare", help="table of runs: mean ± 95%% CI over seeds")
    compare.add_argument("dirs", nargs="+", type=Path)
    compare.add_argument("--format", choices=FORMATS, default="markdown")
    compare.add_argument("--metrics", nargs="+", default=["ndcg@10", "hr@10"])
    compare.add_argument("--stage", choices=("test", "val"), default="test")
    compare.add_argument("--columns", nargs="+", default=[], metavar="COLUMN",
                         help="extra columns, e.g. het_mean_js_divergence wall_seconds peak_rss_mb bytes_up_total")
    compare.add_argument("--baseline", default=None, metavar="LABEL",
                         help="paired t-test over seeds of every row against this variant")
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
                      help="privacy-utility: one line per value of this grid axis or record column")
    plot.add_argument("--output", type=Path, required=True,
                      help="file stem: writes STEM.png and STEM.svg")
    plot.set_defaults(handler=cmd_plot)

    reference = commands.add_parser("reference", help="save or check reference results").add_subparsers(
        dest="reference_command", required=True)
    save = reference.add_parser("save", help="write a study's test metrics as a reference file")
    save.add_argument("study_dir", type=Path)
    save.add_argument("reference", type=Path)
    save.add_argument("--metrics", nargs="+", default=["ndcg@10", "hr@10", "mrr"])
    save.add_argument("--tolerance", type=float, default=0.01, help="absolute, per metric and run")
    save.set_defaults(handler=cmd_reference_save)
    check = reference.add_parser("check", help="does a re-run reproduce a reference? (exit 1 if not)")
    check.add_argument("study_dir", type=Path)
    check.add_argument("reference", type=Path)
    check.add_argument("--seeds", nargs="+", type=int, default=None, help="compare only these seeds")
    check.set_defaults(handler=cmd_reference_check)

    data = commands.add_parser("data", help="datasets and partitions").add_subparsers(
        dest="data_command", required=True)
    info = data.add_parser("info", help="users, items, interactions: raw and filtered")
    info.add_argument("dataset")
    info.add_argument("--path", default=None)
    info.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                      help="dataset parameter, e.g. --param users=500 for synthetic")
    info.add_argument("--min-user-interactions", type=int, default=5)
    info.add_argument("--min-item-interactions", type=int, default=5)
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=cmd_data_info)
    download = data.add_parser("download", help="download MovieLens into a cache folder")
    download.add_argument("dataset")
    download.add_argument("--cache", default=str(Path.home() / ".cache" / "tff-rec"))
    download.set_defaults(handler=cmd_data_download)
    part = data.add_parser("partition", help="heterogeneity statistics of a task's partition")
    part.add_argument("task", type=Path)
    part.add_argument("--seed", type=int, default=0)
    part.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    part.add_argument("--json", action="store_true")
    part.set_defaults(handler=cmd_data_partition)

    tasks = commands.add_parser("tasks", help="task files").add_subparsers(dest="tasks_command", required=True)
    describe = tasks.add_parser("describe", help="the resolved task, with the model's parameter count")
    describe.add_argument("task", type=Path)
    describe.add_argument("--seed", type=int, default=0)
    describe.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(handler=cmd_tasks_describe)

    privacy = commands.add_parser("privacy", help="ε accounting").add_subparsers(
        dest="privacy_command", required=True)
    epsilon = privacy.add_parser("epsilon", help="ε from RDP and PLD accountants")
    epsilon.add_argument("--noise-multiplier", type=float, required=True)
    epsilon.add_argument("--mechanism", choices=("gaussian", "tree"), default="gaussian")
    _add_privacy_args(epsilon)
    epsilon.set_defaults(handler=cmd_privacy_epsilon)
    calibrate = privacy.add_parser("calibrate", help="smallest noise multiplier meeting ε")
    calibrate.add_argument("--target-epsilon", type=float, required=True)
    calibrate.add_argument("--accountant", choices=("rdp", "pld"), default="rdp")
    calibrate.add_argument("--mechanism", choices=("gaussian", "tree"), default="gaussian")
    _add_privacy_args(calibrate)
    calibrate.set_defaults(handler=cmd_privacy_calibrate)
    return parser


USER_ERRORS = (SpecError, DataError, ValueError, KeyError, FileNotFoundError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    silence(args.verbose)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except USER_ERRORS as error:
        if args.verbose:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        if type(error) not in (SpecError, DataError, ValueError):  # say what kind of failure it was
            message = f"{type(error).__name__}: {message}"
        print(f"tff-rec: error: {message} (--verbose shows the traceback)", file=sys.stderr)
        return 2
    finally:
        from tff_rec import runtime

        runtime.stop_workers()


if __name__ == "__main__":
    sys.exit(main())
