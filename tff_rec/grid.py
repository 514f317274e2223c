"""Study grids: named axes whose values combine as a cartesian product, with readable labels.

A study file declares axes under `[[study.axis]]`. Each axis has a `name` and its values in one
of two forms:

- `values = [ {...}, {...} ]`: each value is a table of dotted-key overrides (keys that move
  together, e.g. a mechanism and its parameters); an optional `label` key names it.
- `zip = { "key" = [...], "other.key" = [...] }`: parallel lists of one length; value i sets
  every key to its i-th element (a single key makes a simple one-key axis).

The grid is the product of all axes, in file order (the last axis varies fastest). Unlabelled
values get a label from their overrides: the entry they select (a `scheme`, `mechanism` or `name`
key) followed by its parameters, e.g. `dirichlet(α=0.1)` or `gaussian(ε=2)`; a grid point's label
joins its axis labels with " · ".
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Mapping, Sequence

SEPARATOR = " · "
# Keys whose value names the entry an override selects (the head of a label).
HEAD_KEYS = ("scheme", "mechanism", "name", "dataset", "optimizer")
# Short symbols for well-known parameters in labels.
SYMBOLS = {
    "alpha": "α", "target_epsilon": "ε", "noise_multiplier": "z", "mu": "μ", "delta": "δ",
    "num_clients": "K", "clients_per_round": "m", "clip": "C", "learning_rate": "lr",
}
# Keys that shape a run but are implied by the entry they accompany (left out of labels).
QUIET_KEYS = ("algorithm.sampling", "algorithm.server.optimizer", "algorithm.server.learning_rate")


class GridError(ValueError):
    """A malformed axis; the message names the key."""


@dataclasses.dataclass(frozen=True)
class AxisValue:
    label: str
    overrides: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[AxisValue, ...]


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One combination: its label, the merged overrides and each axis's value label."""

    label: str
    overrides: Mapping[str, Any]
    axes: Mapping[str, str]


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def auto_label(overrides: Mapping[str, Any]) -> str:
    """A readable label for a set of dotted-key overrides, e.g. `dirichlet(α=0.1, K=10)`."""
    head = next(
        (str(v) for k, v in overrides.items() if k.rsplit(".", 1)[-1] in HEAD_KEYS), None
    )
    params = [
        f"{SYMBOLS.get(k.rsplit('.', 1)[-1], k.rsplit('.', 1)[-1])}={_number(v)}"
        for k, v in overrides.items()
        if k.rsplit(".", 1)[-1] not in HEAD_KEYS and k not in QUIET_KEYS
    ]
    if head is None:
        return ", ".join(params) or "base"
    return f"{head}({', '.join(params)})" if params else head


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested tables into dotted keys; TOML dotted keys arrive nested already."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _values_form(where: str, values: Any) -> list[AxisValue]:
    if not isinstance(values, list) or not values:
        raise GridError(f"'{where}.values' must be a non-empty list of tables of dotted keys")
    parsed = []
    for index, value in enumerate(values):
        if not isinstance(value, Mapping):
            raise GridError(f"'{where}.values[{index}]' must be a table of dotted keys. Found {value!r}.")
        overrides = flatten({k: v for k, v in value.items() if k != "label"})
        label = value.get("label", auto_label(overrides))
        if not isinstance(label, str) or not label:
            raise GridError(f"'{where}.values[{index}].label' must be a non-empty string. Found {label!r}.")
        parsed.append(AxisValue(label, overrides))
    return parsed


def _zip_form(where: str, table: Any) -> list[AxisValue]:
    if not isinstance(table, Mapping) or not table:
        raise GridError(f"'{where}.zip' must be a table of dotted keys to lists of values")
    columns = flatten(table)
    lengths = {key: len(v) if isinstance(v, list) else None for key, v in columns.items()}
    if None in lengths.values() or len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise GridError(
            f"'{where}.zip' needs non-empty lists of one length for every key. Found lengths {lengths}."
        )
    size = next(iter(lengths.values()))
    return [
        AxisValue(auto_label(row), row)
        for row in ({key: values[i] for key, values in columns.items()} for i in range(size))
    ]


def parse_axes(entries: Any) -> tuple[Axis, ...]:
    """Validate `[[study.axis]]` entries into axes; GridError names the bad key."""
    if not isinstance(entries, list) or not entries:
        raise GridError("'study.axis' must be a non-empty list of tables ([[study.axis]])")
    axes = []
    for index, entry in enumerate(entries):
        where = f"study.axis[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise GridError(f"'{where}' needs a string 'name'")
        unknown = set(entry) - {"name", "values", "zip"}
        if unknown:
            raise GridError(f"unknown key '{where}.{sorted(unknown)[0]}'; allowed: name, values, zip")
        if ("values" in entry) == ("zip" in entry):
            raise GridError(f"'{where}' (axis {entry['name']!r}) needs exactly one of 'values' or 'zip'")
        values = _values_form(where, entry["values"]) if "values" in entry else _zip_form(where, entry["zip"])
        labels = [v.label for v in values]
        if len(set(labels)) != len(labels):
            raise GridError(f"'{where}' (axis {entry['name']!r}) has repeated labels: {labels}; add 'label' keys")
        axes.append(Axis(entry["name"], tuple(values)))
    names = [axis.name for axis in axes]
    if len(set(names)) != len(names):
        raise GridError(f"axis names must be unique. Found {names}.")
    return tuple(axes)


def expand(axes: Sequence[Axis]) -> list[GridPoint]:
    """Every combination of the axes' values (last axis fastest), overrides merged in axis order.

    Two axes setting the same key in one combination is an error: the result would depend on
    the order of the axes.
    """
    points = []
    for combination in itertools.product(*(axis.values for axis in axes)):
        merged: dict[str, Any] = {}
        for axis, value in zip(axes, combination):
            clash = set(merged) & set(value.overrides)
            if clash:
                raise GridError(
                    f"axis {axis.name!r} value {value.label!r} sets {sorted(clash)[0]!r}, "
                    "which an earlier axis also sets"
                )
            merged.update(value.overrides)
        points.append(GridPoint(
            label=SEPARATOR.join(v.label for v in combination),
            overrides=merged,
            axes={axis.name: value.label for axis, value in zip(axes, combination)},
        ))
    return points
