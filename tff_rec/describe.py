"""`tff-rec tasks describe`: a task as it will run, before anything trains.

Shows every section with its defaults filled in, the model's hyperparameters after its size
preset and derived keys, and the model's exact parameter count (`count_params` of the built
Keras model, on the task's data). With `privacy.target_epsilon`, the noise multiplier the run
will calibrate (`calibrated_noise`, as `training.federated.plan_privacy` does). A study file
gives each of its variants (`load_tasks`), or the one named.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Mapping, Optional

from tff_rec import checks, models, seeds, spec
from tff_rec.prepare import prepare
from tff_rec.spec import TaskSpec


def load_tasks(path: Path | str, overrides: Optional[Mapping[str, Any]] = None,
               variant: Optional[str] = None) -> list[tuple[Optional[str], TaskSpec]]:
    """(variant label, task) pairs: a task file gives [(None, task)]; a study file gives each of
    its variants in table order, or only the one labelled `variant`. `overrides` (`--set`)
    apply to every task."""
    path = Path(path)
    if spec.STUDY_SECTION not in spec.read_toml(path):
        if variant is not None:
            raise ValueError(f"--variant {variant!r}: {path} is a task file, not a study file")
        return [(None, spec.load_task(path, overrides))]
    study = spec.load_study(path)
    pairs = [(v.label, task) for v, task in zip(study.variants, study.tasks)]
    if variant is not None:
        pairs = [(label, task) for label, task in pairs if label == variant]
        if not pairs:
            raise ValueError(f"--variant {variant!r}: not a variant of {path}; variants: "
                             f"{', '.join(v.label for v in study.variants)}")
    if overrides:
        pairs = [(label, spec.resolve_task(spec.apply_overrides(task.to_dict(), overrides), task.source))
                 for label, task in pairs]
    return pairs


def calibrated_noise(task: TaskSpec, population: int) -> Optional[dict[str, Any]]:
    """The noise multiplier a run of `task` calibrates to `privacy.target_epsilon` (None when the
    task sets no target), for a partition of `population` clients: the accounting inputs of
    `training.federated.plan_privacy` (nominal cohort, δ's default, the tree mechanism's own
    calibration). Calibrated once per distinct setting (cached): a study's variants that share
    one reuse it."""
    privacy, algorithm = task["privacy"], task["algorithm"]
    if privacy["mechanism"] == "none" or privacy.get("target_epsilon") is None:
        return None
    from tff_rec.privacy import accounting, nominal

    cohort = nominal.resolve(privacy, algorithm, population)
    accounted = population if cohort is None else cohort.population
    clients = algorithm["clients_per_round"] if cohort is None else cohort.noise_cohort_size
    delta = privacy["delta"] or accounting.default_delta(accounted)
    from tff_rec.privacy.mechanism_registry import get_mechanism

    analysis = accounting.analysis_of(get_mechanism(privacy["mechanism"]))
    noise, achieved = _calibrate(analysis, float(privacy["target_epsilon"]),
                                 accounted, clients, algorithm["rounds"], delta,
                                 algorithm["sampling"], privacy["accountant"])
    return {"target_epsilon": privacy["target_epsilon"], "noise_multiplier": noise,
            "epsilon": achieved, "delta": delta, "accountant": privacy["accountant"],
            "population": accounted, "clients_per_round": clients}


@functools.lru_cache(maxsize=None)
def _calibrate(analysis: Any, target_epsilon: float, population: int, clients_per_round: int,
               rounds: int, delta: float, sampling: str, accountant: str) -> tuple[float, float]:
    return analysis.calibrate(target_epsilon=target_epsilon, population=population,
                     clients_per_round=clients_per_round, rounds=rounds, delta=delta,
                     sampling=sampling, accountant=accountant)


def _flat(section: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved section with its registry parameters beside the fixed keys."""
    values = dict(section)
    return {**{k: v for k, v in values.items() if k != "params"}, **values.get("params", {})}


def describe(task: TaskSpec, seed: int) -> dict[str, Any]:
    """The resolved task as nested JSON-able data, with the data's size and the model's
    resolved hyperparameters and parameter count (the model built at the run's initial seed)."""
    data = prepare(task, seed)
    clients = checks.build_partition(task, seed, data.split).num_clients
    calibrated = calibrated_noise(task, clients)
    section = task["model"]
    model = models.build_model(
        section["name"], data.num_items,
        seed=seeds.derive(seed, "init") + section["seed_offset"], **section["params"],
    )
    return {
        "task": task.name, "description": task.description, "hash": task.hash,
        "source": task.source, "seed": seed,
        "data": {
            **_flat(task["data"]), "num_users": len(data.split.train), "num_items": data.num_items,
            "training_examples": len(data.train_inputs),
        },
        "partition": {**_flat(task["partition"]), "num_clients": clients},
        "model": {
            "name": section["name"], "seed_offset": section["seed_offset"],
            **dataclasses.asdict(model.hparams), "parameters": model.count_params(),
            "examples": models.example_recipe(section["name"], seed, **section["params"]),
        },
        "algorithm": {
            **task["algorithm"],
            **{name.split(".")[1]: dict(values) for name, values in task.sections.items()
               if name.startswith("algorithm.")},
        },
        "privacy": {**_flat(task["privacy"]),
                    **({"calibrated": calibrated} if calibrated is not None else {})},
        "evaluation": dict(task["evaluation"]),
        "run": dict(task["run"]),
    }


def format_description(description: Mapping[str, Any], indent: int = 0) -> str:
    """Indented `key: value` lines; nested mappings become indented blocks."""
    lines = []
    for key, value in description.items():
        if isinstance(value, Mapping):
            lines.append(f"{' ' * indent}{key}:")
            lines.append(format_description(value, indent + 2))
        else:
            shown = f"{value:,}" if key == "parameters" else value
            lines.append(f"{' ' * indent}{key}: {shown}")
    return "\n".join(lines)
