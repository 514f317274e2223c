"""Declared parameters: the one way every registry entry states the task keys it adds.

A dataset, partitioner, model, DP mechanism or uplink aggregator lists its parameters as
`Param`s (name, type, default, allowed values, help). Task validation reads the declarations
(`validate`: unknown keys refused, defaults filled, every type and range checked at load), and
`tff-rec tasks schema` prints them (`Param.describe`). Rules that tie several keys together
stay with the entry that needs them (ARCHITECTURE.md, Registries and plugins).
No TensorFlow, no numpy: loading a task imports neither.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence


@dataclass(frozen=True)
class Range:
    """A numeric interval; `None` bounds are open-ended."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def contains(self, value: float) -> bool:
        """Whether `value` lies in the interval (NaN never does)."""
        if math.isnan(value):
            return False
        if self.low is not None:
            if value < self.low or (value == self.low and not self.low_inclusive):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and not self.high_inclusive):
                return False
        return True

    def describe(self) -> str:
        """Human wording: 'positive', 'nonnegative', 'in [0, 1]', 'at least 2'."""
        if self.high is None:
            if self.low == 0:
                return "nonnegative" if self.low_inclusive else "positive"
            if self.low is None:
                return "any number"
            return f"at least {_number(self.low)}" if self.low_inclusive else f"greater than {_number(self.low)}"
        left = "[" if self.low_inclusive else "("
        right = "]" if self.high_inclusive else ")"
        low = "-inf" if self.low is None else _number(self.low)
        return f"in {left}{low}, {_number(self.high)}{right}"


def _number(value: float) -> str:
    """10000000 as written, not 1e+07; 0.5 as 0.5."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


POSITIVE = Range(low=0.0, low_inclusive=False)
NONNEGATIVE = Range(low=0.0)
UNIT_INTERVAL = Range(low=0.0, high=1.0)
AT_LEAST_ONE = Range(low=1)


def at_most(high: float, low: float = 1) -> Range:
    """[low, high]: a size bounded before anything allocates (say why in `Param.bound`)."""
    return Range(low=low, high=high)


@dataclass(frozen=True)
class Param:
    """One declared parameter of a registry entry.

    Attributes:
      name: the key in the entry's task section (`privacy.clip`, `partition.alpha`).
      kind: `float`, `int`, `bool` or `str` (checked here; any other type is left to the entry
        that declares it). Ints are accepted for floats (TOML `clip = 1`).
      default: used when the key is absent. `None` with `optional=True` means "derived" (from a
        preset or other keys, as `help` says).
      help: what the parameter does (`tff-rec tasks schema`, `--help`).
      range: allowed values for numeric kinds (finite values only).
      optional: whether `None` is an allowed value.
      choices: the allowed values, for a closed set (`str` kinds mostly).
      bound: why `range` has an upper bound, added to the error (a typo should fail at load, not
        as an out-of-memory error).
    """

    name: str
    kind: type
    default: Any
    help: str
    range: Optional[Range] = None
    optional: bool = False
    choices: Optional[tuple[Any, ...]] = None
    bound: str = ""

    def validate(self, value: Any, prefix: str) -> Any:
        """The value converted to `kind`, or ValueError naming `{prefix}.{name}`."""
        label = f"{prefix}.{self.name}"
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{label} is required. Found None.")
        if self.choices is not None:
            if value not in self.choices or isinstance(value, bool) != (self.kind is bool):
                allowed = ", ".join(map(str, self.choices))
                raise ValueError(f"{label} must be one of {allowed}. Found {value!r}.")
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{label} must be true or false. Found {value!r}.")
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise ValueError(f"{label} must be a string. Found {value!r}.")
            return value
        if self.kind not in _KIND_WORDS:  # a type without a declared check: the owner checks it
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{label} must be {_KIND_WORDS[self.kind]}. Found {value!r}.")
        if self.kind is int and not isinstance(value, numbers.Integral):
            raise ValueError(f"{label} must be an integer. Found {value!r}.")
        if not math.isfinite(value):
            raise ValueError(f"{label} must be finite. Found {value}.")
        if self.range is not None and not self.range.contains(value):
            why = f" ({self.bound})" if self.bound else ""
            raise ValueError(f"{label} must be {self.range.describe()}{why}. Found {value}.")
        return self.kind(value)

    def describe(self) -> str:
        """One line: name, kind, default, allowed values, help."""
        if self.choices is not None:
            allowed = f", one of {', '.join(map(str, self.choices))}"
        else:
            allowed = f", {self.range.describe()}" if self.range is not None else ""
        default = "unset" if self.default is None and self.optional else repr(self.default)
        return f"{self.name} ({self.kind.__name__}{allowed}; default {default}): {self.help}"


_KIND_WORDS = {int: "an integer", float: "a number"}


def defaults(declared: Sequence[Param]) -> dict[str, Any]:
    """name → default of the declared parameters."""
    return {param.name: param.default for param in declared}


def validate(
    params: Mapping[str, Any], declared: Sequence[Param], owner: str, prefix: str
) -> dict[str, Any]:
    """Validate `params` against `declared`: unknown keys rejected, defaults filled, values typed.

    Args:
      params: user-supplied values.
      declared: the parameters `owner` accepts.
      owner: what the unknown-key message names (`'gaussian'`, `scheme 'iid'`).
      prefix: key prefix in messages, the task section the values came from.
    """
    by_name = {param.name: param for param in declared}
    unknown = sorted(set(params) - set(by_name))
    if unknown:
        allowed = f"Allowed: {', '.join(sorted(by_name))}." if by_name else "It takes none."
        raise ValueError(f"{prefix}.{unknown[0]} is not a parameter of {owner}. {allowed}")
    return {
        name: param.validate(params.get(name, param.default), prefix)
        for name, param in by_name.items()
    }
