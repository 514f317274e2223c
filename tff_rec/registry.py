"""The one shape of every registry: name → entry, each entry declaring its parameters.

Datasets, partitioners, models, losses, federated algorithms, client samplers, DP mechanisms and
uplink aggregators are each a `Registry`. An entry has a `name`, a one-line `description` and
`params`, a tuple of `tff_rec.params.Param` (the keys it adds to its task section; empty when it
adds none). The registry looks up an entry by the name a task uses (loading an installed plugin
of that name first, `tff_rec.plugins`), refuses an unknown name with the allowed ones, and
validates an entry's parameters from its declarations. `SECTIONS` says which task section names
an entry of which registry. ARCHITECTURE.md, Registries and plugins, lists where each lives.
"""
from __future__ import annotations

import importlib
from typing import Any, Generic, Iterable, Mapping, Optional, TypeVar

from tff_rec import params as declared

E = TypeVar("E")


class Registry(dict, Generic[E]):
    """Entries by name. A plain dict to read; `entry`, `params`, `defaults` and `validate` are
    how the stages and task validation use it.

    kind: what an entry is, for messages ("partition scheme").
    key: the task key that names an entry ("partition.scheme"); its section prefixes parameter
      keys in messages.
    group: the entry point group plugins register through (None: not pluggable).
    error: the exception an unknown name raises (a ValueError).
    """

    def __init__(self, kind: str, key: str, entries: Iterable[E], group: Optional[str] = None,
                 error: type[ValueError] = ValueError) -> None:
        super().__init__((entry.name, entry) for entry in entries)
        self.kind, self.key, self.group, self.error = kind, key, group, error

    @property
    def section(self) -> str:
        return self.key.rsplit(".", 1)[0]

    def entry(self, name: Any) -> E:
        """The entry `name` (an installed plugin's is registered first), else `error` listing
        the allowed names: "partition.scheme must be one of iid, natural. Found 'x'."."""
        known = isinstance(name, str) and name in self
        if not known and isinstance(name, str) and self.group is not None:
            from tff_rec import plugins

            known = plugins.lookup(self.group, name)
        if not known:
            raise self.error(f"{self.key} must be one of {', '.join(sorted(self))}. Found {name!r}.")
        return self[name]

    def params(self, name: str) -> tuple[declared.Param, ...]:
        return tuple(self.entry(name).params)

    def defaults(self, name: str) -> dict[str, Any]:
        """The parameters entry `name` adds to its section, with their defaults."""
        return declared.defaults(self.params(name))

    def validate(self, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """`values` checked against entry `name`'s declarations, defaults filled in; ValueError
        naming the key ("partition.alpha must be positive. Found 0.")."""
        return declared.validate(values, self.params(name), owner=f"{self.kind} {name!r}",
                                 prefix=self.section)


# Task section → (the key in it that names the entry, "module:REGISTRY"): the sections whose
# keys are partly declared by the chosen entry. Imported when a task is validated.
SECTIONS: dict[str, tuple[str, str]] = {
    "data": ("dataset", "tff_rec.data.sources:SOURCES"),
    "partition": ("scheme", "tff_rec.partition.schemes:SCHEMES"),
    "model": ("name", "tff_rec.models.registry:MODELS"),
    "privacy": ("mechanism", "tff_rec.privacy.mechanism_registry:MECHANISMS"),
    "aggregation": ("method", "tff_rec.aggregation:METHODS"),
}


def of_section(section: str) -> Registry:
    """The registry whose entry a task's `section` names."""
    module, attribute = SECTIONS[section][1].split(":")
    return getattr(importlib.import_module(module), attribute)
