"""Callables named by import path and imported on first call.

Registries declare their entries in modules that import no TensorFlow (names, parameters,
defaults, ranges), so that loading and validating a task stays fast; an entry's builder, which
needs TensorFlow, is a `Ref` to the function in its TF module, imported when a run builds it
(ARCHITECTURE.md, Registries and plugins).
"""
from __future__ import annotations

import importlib
from typing import Any


class Ref:
    """`Ref("package.module:function")`: calling it imports the module and calls the function."""

    __slots__ = ("target", "_resolved")

    def __init__(self, target: str) -> None:
        if ":" not in target:
            raise ValueError(f"a Ref names 'module:attribute'. Found {target!r}.")
        self.target = target
        self._resolved: Any = None

    def resolve(self) -> Any:
        """The object the path names (imported once)."""
        if self._resolved is None:
            module, _, attribute = self.target.partition(":")
            found: Any = importlib.import_module(module)
            for part in attribute.split("."):
                found = getattr(found, part)
            self._resolved = found
        return self._resolved

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and other.target == self.target

    def __hash__(self) -> int:
        return hash(self.target)

    def __repr__(self) -> str:
        return f"Ref({self.target!r})"
