"""Registry entries from other packages, through Python entry points.

A package adds a model, dataset, partitioner, algorithm or DP mechanism by declaring an entry
point in one of the groups below (pyproject.toml of the plugin)::

    [project.entry-points."tff_rec.partitioners"]
    by_length = "my_plugin:BY_LENGTH"        # a `Scheme`, or a function returning (or
                                              # registering) one

The entry point's name is the name task files use (`partition.scheme = "by_length"`). Plugins
are loaded lazily: only when a task names something that is not built in (`lookup`), or when
the registries are listed (`load_all`), so an installed plugin costs the other commands nothing.
A plugin may not take a built-in's name, nor another plugin's: that is an error naming the
plugin's distribution. ARCHITECTURE.md, Plugins, says where each kind of entry lives.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # imported where used: `importlib.metadata` costs every command 20 ms
    from importlib import metadata


@dataclasses.dataclass(frozen=True)
class Group:
    """An entry point group and the registry its entries join."""

    module: str  # the TF-free module that holds the registry
    registry: str  # the registry's name in it (a `tff_rec.registry.Registry`)
    entry: str  # the class of its entries, in the same module


GROUPS: dict[str, Group] = {
    "tff_rec.models": Group("tff_rec.models.registry", "MODELS", "ModelEntry"),
    "tff_rec.datasets": Group("tff_rec.data.sources", "SOURCES", "Source"),
    "tff_rec.partitioners": Group("tff_rec.partition.schemes", "SCHEMES", "Scheme"),
    "tff_rec.algorithms": Group("tff_rec.algorithm_registry", "ALGORITHMS", "Algorithm"),
    "tff_rec.mechanisms": Group("tff_rec.privacy.mechanism_registry", "MECHANISMS", "Mechanism"),
}


class PluginError(ValueError):
    """A plugin's entry point cannot be registered (a name clash, a wrong object); the message
    names its distribution."""


# group → {name: distribution} of the plugin entries registered so far in this process.
_REGISTERED: dict[str, dict[str, str]] = {}


def _registry(group: str) -> tuple[Any, type]:
    spec = GROUPS[group]
    module = importlib.import_module(spec.module)
    return getattr(module, spec.registry), getattr(module, spec.entry)


def _distribution(point: metadata.EntryPoint) -> str:
    dist = getattr(point, "dist", None)
    return dist.name if dist is not None else "an unknown distribution"


def _points(group: str) -> list[metadata.EntryPoint]:
    """The group's entry points; a name declared twice is refused, naming both distributions;
    a name of a built-in entry too."""
    from importlib import metadata

    points = list(metadata.entry_points(group=group))
    registry, _ = _registry(group)
    mine = _REGISTERED.setdefault(group, {})
    seen: dict[str, metadata.EntryPoint] = {}
    kind = registry.kind
    for point in points:
        if point.name in registry and point.name not in mine:
            raise PluginError(
                f"plugin {_distribution(point)!r} declares {kind} {point.name!r} (entry point "
                f"group {group!r}), which is a built-in {kind}: rename the plugin's entry point"
            )
        earlier = seen.get(point.name)
        if earlier is not None and _distribution(earlier) != _distribution(point):
            raise PluginError(
                f"plugins {_distribution(earlier)!r} and {_distribution(point)!r} both declare "
                f"{kind} {point.name!r} (entry point group {group!r}): uninstall or rename one"
            )
        seen[point.name] = point
    return list(seen.values())


def _register(group: str, point: metadata.EntryPoint) -> None:
    """Load one entry point and put its entry into the group's registry."""
    registry, entry_type = _registry(group)
    mine = _REGISTERED.setdefault(group, {})
    if point.name in mine:
        return
    distribution, kind = _distribution(point), registry.kind
    built_in = {name: registry[name] for name in registry if name not in mine}
    try:
        loaded = point.load()
    except Exception as error:  # noqa: BLE001  (a broken plugin: say which one)
        raise PluginError(
            f"plugin {distribution!r}: loading {kind} {point.name!r} ({point.value}) failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    entry: Optional[Any] = loaded
    if not isinstance(loaded, entry_type):
        if not callable(loaded):
            raise PluginError(
                f"plugin {distribution!r}: entry point {point.name!r} ({point.value}) is neither a "
                f"{entry_type.__name__} nor a function returning or registering one"
            )
        entry = loaded()
        if any(registry.get(name) is not value for name, value in built_in.items()):
            registry.update(built_in)
            raise PluginError(
                f"plugin {distribution!r}: entry point {point.name!r} replaced a built-in {kind}"
            )
        if entry is None:
            entry = registry.get(point.name)
        if not isinstance(entry, entry_type):
            registry.pop(point.name, None)
            raise PluginError(
                f"plugin {distribution!r}: entry point {point.name!r} ({point.value}) gave "
                f"{entry!r}, not a {entry_type.__name__}"
            )
    declared = getattr(entry, "name", point.name)
    if declared != point.name:
        raise PluginError(
            f"plugin {distribution!r}: entry point {point.name!r} registers a {kind} named "
            f"{declared!r}; the two names must be equal"
        )
    registry[point.name] = entry
    mine[point.name] = distribution


def lookup(group: str, name: Any) -> bool:
    """Register the plugin entry `name` of `group` if an installed package declares it; whether
    the registry now has `name`. Called by a registry for a name it does not know."""
    if not isinstance(name, str):
        return False
    registry, _ = _registry(group)
    if name in registry:
        return True
    for point in _points(group):
        if point.name == name:
            _register(group, point)
    return name in registry


def load_all(group: Optional[str] = None) -> dict[str, dict[str, str]]:
    """Register every installed plugin (of `group`, or of all groups), for listings; returns
    group → {name: distribution} of the plugin entries."""
    for each in [group] if group is not None else list(GROUPS):
        for point in _points(each):
            _register(each, point)
    return {each: dict(_REGISTERED.get(each, {})) for each in ([group] if group else GROUPS)}
