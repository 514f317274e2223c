"""Study engines: where `tff-rec study` runs a study's pending runs (`runner.run_study(engine=)`).

    local  this machine: one run after another, or `--jobs N` at once in separate processes
           (`runner.run_locally`; the default)
    ray    a Ray cluster: one Ray task per run (`tff_rec.engines.ray_engine`); `--address` names
           the cluster, without it a Ray instance is started on this machine for the study

Every engine writes the same records and manifest under `--out`: which runs are pending (complete
records skipped, failures recorded), the manifest and the table stay with `runner.run_study`; an
engine only runs what it is given. Engines are looked up by name (`ENGINES`); an engine's module
and its packages are imported only when it is chosen (Ray is an optional extra).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from tff_rec.runner import Engine


def _local(address: Optional[str] = None) -> "Engine":
    if address is not None:
        raise ValueError(f"--address {address}: names a Ray cluster; allowed only with --engine ray")
    from tff_rec import runner

    return runner.run_locally


def _ray(address: Optional[str] = None) -> "Engine":
    from tff_rec.engines import ray_engine

    return ray_engine.RayEngine(address)


# name → factory(address) → engine; the factory imports what the engine needs
ENGINES: dict[str, Callable[..., "Engine"]] = {"local": _local, "ray": _ray}


def get(name: str, address: Optional[str] = None) -> "Engine":
    """The engine called `name` (ValueError naming the allowed ones, or what is missing)."""
    if name not in ENGINES:
        raise ValueError(f"--engine {name!r}: unknown; allowed: {', '.join(ENGINES)}")
    return ENGINES[name](address)
