"""The Python API for notebooks and scripts: what the `tff-rec` commands do, as functions.

    from tff_rec import api

    task = api.load_task("task.toml", {"privacy.target_epsilon": 4.0})   # validated TaskSpec
    plan = api.plan(task, seed=0)          # resolved: clients, cohorts, calibrated noise, ε ledger
    result = api.run(task, seed=0, out="results")                        # record in result.path
    api.run_study("tasks/quickstart.toml", out="results", jobs=2)
    runs = api.load_results(["results/quickstart"])                      # one row per record
    table = api.compare(runs, baseline="centralized")                    # mean ± CI over seeds
    model, data = api.load_model(result.path)                            # trained Keras model

Records are the same as the CLI's (same folders, manifests and files), so a table made here equals
`tff-rec compare`'s. Importing this module silences TensorFlow's log noise as the CLI does
(`quiet.silence`; set TFF_REC_VERBOSE=1 to keep it); TensorFlow itself is imported only by the
functions that train or load a model.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

from tff_rec.quiet import silence

silence(verbose=os.environ.get("TFF_REC_VERBOSE") == "1")

if TYPE_CHECKING:
    import pandas as pd

    from tff_rec.plan import RunPlan
    from tff_rec.runner import RunResult
    from tff_rec.spec import StudySpec, TaskSpec

PathLike = Union[str, Path]
DEFAULT_OUT = Path("results")


def load_task(path: PathLike, overrides: Optional[Mapping[str, Any]] = None) -> "TaskSpec":
    """A task file, validated, with dotted-key `overrides` (as `--set KEY=VALUE`) applied."""
    from tff_rec import spec

    return spec.load_task(Path(path), dict(overrides or {}))


def load_study(path: PathLike, overrides: Optional[Mapping[str, Any]] = None, *,
               full: bool = False) -> "StudySpec":
    """A study file, validated; `overrides` apply to every variant's task; `full`: its full size
    (`[study.full]`, as `tff-rec study --full`)."""
    from tff_rec import spec

    return spec.load_study(Path(path), dict(overrides or {}) or None, full=full)


def plan(task: Union["TaskSpec", PathLike], seed: int = 0, *, partition: bool = False) -> "RunPlan":
    """The run plan of a task at a seed (`tff_rec.plan`): the prepared data, the partition, the
    cohort sampler, the privacy plan (calibrated noise, ε after every round), the model and the
    evaluation users — what a run will train, resolved without training. Picklable."""
    from tff_rec import plan as run_plan

    task = task if not isinstance(task, (str, Path)) else load_task(task)
    return run_plan.resolve(task, seed, partition=partition)


def run(task: Union["TaskSpec", PathLike], seed: int = 0, out: PathLike = DEFAULT_OUT, *,
        study: Optional[str] = None, progress: str = "none", rerun_stale: bool = False) -> "RunResult":
    """Run one task at one seed into `out` (as `tff-rec run`): a complete record is reused, an
    interrupted one resumed. The run is listed in the manifest `<out>/<study or task name>/`."""
    from tff_rec import record, runner

    task = task if not isinstance(task, (str, Path)) else load_task(task)
    out = Path(out)
    result = runner.run_task(task, seed, out, progress=progress, rerun_stale=rerun_stale)
    record.add_to_manifest(out, study or task.name,
                           {"label": task.name, "task_hash": task.hash, "axes": {}, "overrides": {}},
                           seed)
    return result


def run_study(study: Union["StudySpec", PathLike], out: PathLike = DEFAULT_OUT, *, jobs: int = 1,
              progress: str = "none", retry_failed: bool = False, rerun_stale: bool = False,
              engine: str = "local", address: Optional[str] = None) -> list["RunResult"]:
    """Run a study's pending runs (as `tff-rec study`; `engine="ray"` with the cluster `address`
    as `--engine ray --address`); what the data cannot satisfy fails before anything is written.
    Rows marked `skip_without_data` whose data is absent are left out, with a warning.
    Returns every run's result (skipped, failed or made)."""
    from tff_rec import checks, engines, runner

    study = study if not isinstance(study, (str, Path)) else load_study(study)
    study, absent = study.with_data_present()
    for label, why in absent:
        warnings.warn(f"study {study.name}: skipping {label!r} (skip_without_data): {why}", stacklevel=2)
    chosen = engines.get(engine, address)
    checks.check_study(study)
    return runner.run_study(study, Path(out), progress=progress, retry_failed=retry_failed,
                            jobs=jobs, rerun_stale=rerun_stale, engine=chosen)


def load_results(paths: Union[PathLike, Sequence[PathLike]]) -> "pd.DataFrame":
    """Complete run records under `paths` (study folders, run folders or results roots), one row
    per record: identity, test_/val_ metrics, ε, measurements, provenance (`results.load_runs`)."""
    from tff_rec import results

    return results.load_runs([paths] if isinstance(paths, (str, Path)) else list(paths))


def compare(runs: "pd.DataFrame", metrics: Optional[Sequence[str]] = None, *,
            baseline: Optional[str] = None, stage: str = "test",
            columns: Sequence[str] = ()) -> "pd.DataFrame":
    """One row per variant: mean ± 95% CI over seeds (default metrics: the study's), paired tests
    against `baseline` with Holm adjusted p-values, the mean of further numeric `columns`
    (`results.compare`); `results.format_table` renders it."""
    from tff_rec import results

    return results.compare(runs, metrics, stage=stage, columns=columns, baseline=baseline)


def load_model(run_path: PathLike, which: str = "selected"):
    """(Keras model, prepared data) of a record: the weights of "selected" (the model its test
    metrics are of, per `evaluation.select`), "final" or "best" (`saved.load_model`)."""
    from tff_rec import saved

    return saved.load_model(Path(run_path), which)


def evaluate_model(run_path: PathLike, which: str = "selected", stage: str = "test") -> dict[str, float]:
    """A record's saved model evaluated again on its own split (equals its summary's metrics)."""
    from tff_rec import saved

    return saved.evaluate_model(Path(run_path), which, stage)
