"""`tff-rec tasks describe`: a task as it will run, before anything trains.

Shows every section with its defaults filled in, the model's hyperparameters after its size
preset and derived keys, and the model's exact parameter count (`count_params` of the built
Keras model, on the task's data).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from tff_rec import models, seeds
from tff_rec.prepare import prepare
from tff_rec.spec import TaskSpec


def _flat(section: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved section with its registry parameters beside the fixed keys."""
    values = dict(section)
    return {**{k: v for k, v in values.items() if k != "params"}, **values.get("params", {})}


def describe(task: TaskSpec, seed: int) -> dict[str, Any]:
    """The resolved task as nested JSON-able data, with the data's size and the model's
    resolved hyperparameters and parameter count (the model built at the run's initial seed)."""
    data = prepare(task, seed)
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
        "partition": _flat(task["partition"]),
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
        "privacy": _flat(task["privacy"]),
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
