"""One place that maps a task section to the registry that defines its open parameters.

Each stage owns its registry (datasets, partition schemes, models, privacy mechanisms); the spec
validator asks here which parameters the chosen entry accepts, so adding an entry to a registry is
all it takes to make it usable from task files.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping


def _data_params(section: Mapping[str, Any]) -> dict[str, Any]:
    from tff_rec.data import sources

    return sources.source_params(section["dataset"])


def _partition_params(section: Mapping[str, Any]) -> dict[str, Any]:
    from tff_rec.partition import schemes

    return schemes.scheme_params(section["scheme"])


def _model_params(section: Mapping[str, Any]) -> dict[str, Any]:
    from tff_rec import models

    return models.model_hparams(section["name"])


def _privacy_params(section: Mapping[str, Any]) -> dict[str, Any]:
    from tff_rec.privacy import mechanisms

    return mechanisms.get_mechanism(section["mechanism"]).defaults()


PARAMS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "data": _data_params,
    "partition": _partition_params,
    "model": _model_params,
    "privacy": _privacy_params,
}


def params_for(section: str, resolved: Mapping[str, Any]) -> dict[str, Any]:
    """Allowed parameters with defaults for the entry that `resolved` names in `section`."""
    from tff_rec.spec import SpecError

    try:
        return PARAMS[section](resolved)
    except (KeyError, ValueError) as error:
        message = error.args[0] if error.args else str(error)
        raise SpecError(f"{section}: {message}") from None


def cross_check(source: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
    """Rules that involve more than one section; raise SpecError naming the keys."""
    from tff_rec import models
    from tff_rec.privacy import mechanisms
    from tff_rec.spec import SpecError

    try:  # model keys together (presets, heads dividing d, ...), before anything trains
        models.resolve_hparams(sections["model"]["name"], **sections["model"]["params"])
    except ValueError as error:
        raise SpecError(f"{source}: {error}") from None
    algorithm = sections["algorithm"]["name"]
    privacy = sections["privacy"]
    if algorithm != "fedavg" and privacy["mechanism"] != "none":
        raise SpecError(
            f"{source}: privacy.mechanism = {privacy['mechanism']!r} needs a federated algorithm; "
            f"algorithm.name = {algorithm!r} trains without clients (use privacy.mechanism = 'none')"
        )
    try:
        mechanisms.validate_params(privacy["mechanism"], privacy["params"])
    except ValueError as error:
        raise SpecError(f"{source}: {error}") from None
    if privacy["target_epsilon"] is not None:
        if "noise_multiplier" not in privacy["params"]:
            raise SpecError(
                f"{source}: key 'privacy.target_epsilon' needs a mechanism with a noise multiplier "
                f"(gaussian, adaptive); privacy.mechanism = {privacy['mechanism']!r} has none"
            )
        if privacy["target_epsilon"] <= 0:
            raise SpecError(
                f"{source}: key 'privacy.target_epsilon' must be positive. "
                f"Found {privacy['target_epsilon']!r}."
            )
    if privacy["mechanism"] == "tree" and sections["algorithm"]["sampling"] != "shuffle":
        raise SpecError(
            f"{source}: privacy.mechanism = 'tree' needs algorithm.sampling = 'shuffle' (its "
            f"accounting assumes each client at most once per tree). "
            f"Found {sections['algorithm']['sampling']!r}."
        )
    delta = privacy["delta"]
    if delta is not None and not 0 < delta < 1:
        raise SpecError(f"{source}: key 'privacy.delta' must be in (0, 1). Found {delta!r}.")
