"""`tff-rec tasks describe`: a task as it will run, before anything trains.

Shows every section with its defaults filled in, the model's hyperparameters after its size
preset and derived keys, and the model's exact parameter count (`count_params` of the built
Keras model, on the task's data). Everything comes from the run plan the run itself reads
(`tff_rec.plan`): with `privacy.target_epsilon`, the noise multiplier it calibrated. A study file
gives each of its variants (`load_tasks`), or the one named.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional

from tff_rec import models, plan, spec
from tff_rec.spec import TaskSpec


def load_tasks(path: Path | str, overrides: Optional[Mapping[str, Any]] = None,
               variant: Optional[str] = None, full: bool = False,
               skipped: Optional[list[tuple[str, str]]] = None) -> list[tuple[Optional[str], TaskSpec]]:
    """(variant label, task) pairs: a task file gives [(None, task)]; a study file gives each of
    its variants in table order (its full size with `full`), or only the one labelled `variant`.
    `overrides` (`--set`) apply to every task. A study's `skip_without_data` rows whose data is
    absent are left out and added to `skipped` as (label, why)."""
    path = Path(path)
    if spec.STUDY_SECTION not in spec.read_toml(path):
        if variant is not None:
            raise ValueError(f"--variant {variant!r}: {path} is a task file, not a study file")
        if full:
            raise ValueError(f"--full: {path} is a task file, not a study file")
        return [(None, spec.load_task(path, overrides))]
    study, absent = spec.load_study(path, full=full).with_data_present()
    if skipped is not None:
        skipped.extend(absent)
    pairs = [(v.label, task) for v, task in zip(study.variants, study.tasks)]
    if variant is not None:
        pairs = [(label, task) for label, task in pairs if label == variant]
        if not pairs:
            why = dict(absent).get(variant)
            if why is not None:
                raise ValueError(f"--variant {variant!r}: its data is not on this machine: {why}")
            raise ValueError(f"--variant {variant!r}: not a variant of {path}; variants: "
                             f"{', '.join(v.label for v in study.variants)}")
    if overrides:
        pairs = [(label, spec.resolve_task(spec.apply_overrides(task.to_dict(), overrides), task.source))
                 for label, task in pairs]
    return pairs


def calibration(run: plan.RunPlan) -> Optional[dict[str, Any]]:
    """The noise multiplier the run calibrated to `privacy.target_epsilon`, with the ε it
    achieves and the accounting inputs (None when the task sets no target)."""
    return run.privacy.calibration() if run.privacy is not None else None


def _flat(section: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved section with its registry parameters beside the fixed keys."""
    values = dict(section)
    return {**{k: v for k, v in values.items() if k != "params"}, **values.get("params", {})}


def describe(task: TaskSpec, seed: int) -> dict[str, Any]:
    """The run plan (`plan.resolve`) as nested JSON-able data: the resolved task, the data's
    size, the partition's clients, the calibrated noise, and the model's resolved
    hyperparameters and parameter count (the model built at the run's initial seed)."""
    run = plan.resolve(task, seed, partition=True)
    data = run.data.get()
    clients = run.partition.num_clients
    calibrated = calibration(run)
    section = task["model"]
    # popularity trains no model; the task's [model] is still shown, built as a run would build it
    model = (run.model or plan.model_plan(task, seed, run.num_items)).build()
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
