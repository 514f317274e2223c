"""One place that maps a task section to the registry that defines its open parameters.

Each stage owns its registry (datasets, partition schemes, models, privacy mechanisms); the spec
validator asks here which parameters the chosen entry accepts, so adding an entry to a registry is
all it takes to make it usable from task files.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from tff_rec.errors import SpecError


def _data_params(section: Mapping[str, Any]) -> dict[str, Any]:
    from tff_rec.data import sources

    return sources.source_params(section["dataset"])


def _partition_params(section: Mapping[str, Any]) -> dict[str, Any]:
    from tff_rec.partition import schemes

    return schemes.scheme_params(section["scheme"])


def _model_params(section: Mapping[str, Any]) -> dict[str, Any]:
    from tff_rec.models import registry as models

    return models.model_hparams(section["name"])


def _privacy_params(section: Mapping[str, Any]) -> dict[str, Any]:
    from tff_rec.privacy import mechanism_registry as mechanisms

    return mechanisms.get_mechanism(section["mechanism"]).defaults()


def _aggregation_params(section: Mapping[str, Any]) -> dict[str, Any]:
    from tff_rec import aggregation

    return aggregation.get_method(section["method"]).defaults()


PARAMS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "data": _data_params,
    "partition": _partition_params,
    "model": _model_params,
    "privacy": _privacy_params,
    "aggregation": _aggregation_params,
}


def params_for(section: str, resolved: Mapping[str, Any]) -> dict[str, Any]:
    """Allowed parameters with defaults for the entry that `resolved` names in `section`."""

    try:
        return PARAMS[section](resolved)
    except (KeyError, ValueError) as error:
        message = error.args[0] if error.args else str(error)
        raise SpecError(f"{section}: {message}") from None


# Upper bounds of model sizes (after presets): a typo fails at load, not as an out-of-memory error.
MODEL_LIMITS: dict[str, tuple[int, str]] = {
    "max_len": (10_000, "training examples are [examples, max_len] arrays built up front"),
    "embedding_dim": (10_000, "the item table is [items + 1, embedding_dim]"),
    "intermediate_dim": (100_000, "feed-forward width"),
    "num_blocks": (100, "transformer blocks"),
    "num_layers": (100, "GRU layers"),
    "dupe_factor": (1_000, "masked copies of every user's sequence are built up front"),
    "num_sampled": (1_000_000, "negatives per training batch"),
}


def _check_registry_values(source: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
    """Ranges of dataset and partition parameters that need no data (the data-dependent rules
    are checked by `tff_rec.checks` before a run writes anything)."""
    from tff_rec.data import sources
    from tff_rec.partition import schemes

    data = sections["data"]
    problem = sources.param_problem(data["dataset"], data["params"])
    if problem is not None:
        key, text = problem
        raise SpecError(f"{source}: key 'data.{key}' {text} (data.dataset = {data['dataset']!r})")
    partition = sections["partition"]
    try:
        schemes.resolve_params(partition["scheme"], partition["params"])
    except ValueError as error:
        raise SpecError(f"{source}: {keyed(str(error))}") from None


def keyed(message: str) -> str:
    """'partition.alpha must be > 0 ...' → "key 'partition.alpha' must be > 0 ...", the project's
    style; other messages are returned as they are."""
    found = re.match(r"([a-z_]+(?:\.[a-z_0-9]+)+) (.*)", message, flags=re.S)
    return f"key '{found.group(1)}' {found.group(2)}" if found else message


def cross_check(source: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
    """Rules that involve more than one section; raise SpecError naming the keys."""
    from tff_rec.algorithm_registry import get_algorithm
    from tff_rec.models import registry as models
    from tff_rec.privacy import mechanism_registry as mechanisms

    _check_registry_values(source, sections)
    try:  # model keys together (presets, heads dividing d, ...), before anything trains
        config = models.resolve_hparams(sections["model"]["name"], **sections["model"]["params"])
    except ValueError as error:
        raise SpecError(f"{source}: {error}") from None
    for key, (limit, why) in MODEL_LIMITS.items():
        value = getattr(config, key, None)
        if isinstance(value, int) and value > limit:
            raise SpecError(
                f"{source}: key 'model.{key}' must be between 1 and {limit} ({why}). Found {value}."
            )
    algorithm = sections["algorithm"]["name"]
    privacy = sections["privacy"]
    if get_algorithm(algorithm) is None and privacy["mechanism"] != "none":
        raise SpecError(
            f"{source}: privacy.mechanism = {privacy['mechanism']!r} needs a federated algorithm; "
            f"algorithm.name = {algorithm!r} trains without clients (use privacy.mechanism = 'none')"
        )
    _check_algorithm(source, sections)
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
    _check_noise_rules(source, sections)
    delta = privacy["delta"]
    if delta is not None and not 0 < delta < 1:
        raise SpecError(f"{source}: key 'privacy.delta' must be in (0, 1). Found {delta!r}.")
    if privacy["mechanism"] == "ddp":
        if privacy["target_epsilon"] is not None:
            raise SpecError(
                f"{source}: key 'privacy.target_epsilon' cannot be met with privacy.mechanism = "
                f"'ddp': its ε is not accounted ({mechanisms.get_mechanism('ddp').accounting_note})"
            )
        try:
            mechanisms.adaptive_noise_split(
                privacy["params"]["noise_multiplier"], sections["algorithm"]["clients_per_round"], None
            )
        except ValueError:
            raise SpecError(
                f"{source}: privacy.mechanism = 'ddp' needs privacy.noise_multiplier < 0.1 × "
                f"algorithm.clients_per_round = {0.1 * sections['algorithm']['clients_per_round']:g} "
                f"(TFF's adaptive clip estimate takes noise 0.05 × clients per round). "
                f"Found {privacy['params']['noise_multiplier']!r}."
            ) from None
        raise SpecError(f"{source}: privacy.mechanism = 'ddp' cannot run here: {DDP_UNAVAILABLE}")


def _check_noise_rules(source: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
    """What the trainer would refuse after its lock: a target ε no accountant can calibrate to
    under the task's sampling."""
    from tff_rec.privacy import accounting

    privacy, algorithm = sections["privacy"], sections["algorithm"]
    mechanism, accountant = privacy["mechanism"], privacy["accountant"]
    sampling = algorithm["sampling"]
    if privacy["target_epsilon"] is not None and mechanism in ("gaussian", "adaptive"):
        if sampling not in accounting.SAMPLINGS:
            raise SpecError(
                f"{source}: key 'privacy.target_epsilon' cannot be calibrated with "
                f"algorithm.sampling = {sampling!r}: dp-accounting has no event for the Gaussian "
                f"mechanism under shuffled passes. Found {privacy['target_epsilon']!r}; allowed: "
                f"algorithm.sampling = {' or '.join(map(repr, accounting.SAMPLINGS))}, or "
                f"privacy.noise_multiplier instead."
            )
        # noise 0: the support check runs, the (slow, for PLD) ε computation does not
        probe = accounting.epsilon(noise_multiplier=0.0, population=100, clients_per_round=1,
                                   rounds=1, delta=1e-5, sampling=sampling, accountant=accountant)
        if probe.reason is not None:
            raise SpecError(
                f"{source}: key 'privacy.target_epsilon' cannot be calibrated with "
                f"privacy.accountant = {accountant!r} under algorithm.sampling = {sampling!r} "
                f"({probe.reason.split('. ')[0]}). Found {privacy['target_epsilon']!r}; allowed: "
                f"another accountant or sampling, or privacy.noise_multiplier instead."
            )
    if privacy["target_epsilon"] is not None and mechanism == "tree" and accountant != "rdp":
        raise SpecError(
            f"{source}: key 'privacy.target_epsilon' with privacy.mechanism = 'tree' needs "
            f"privacy.accountant = 'rdp' (dp-accounting analyses tree aggregation with RDP only). "
            f"Found {accountant!r}."
        )


def check_adaptive_noise(source: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
    """Adaptive clipping's split of an explicit noise multiplier between the update sum and the
    clipped count (TFF's rule: the count's noise multiplier 2s must exceed the total z)."""
    from tff_rec.privacy import mechanism_registry as mechanisms

    privacy, algorithm = sections["privacy"], sections["algorithm"]
    if privacy["mechanism"] == "adaptive" and privacy["target_epsilon"] is None:
        params = privacy["params"]
        try:  # split for the nominal cohort when the noise is calibrated for one (privacy/nominal.py)
            mechanisms.adaptive_noise_split(params["noise_multiplier"],
                                            privacy.get("noise_cohort_size")
                                            or algorithm["clients_per_round"],
                                            params["clipped_count_stddev"])
        except ValueError as error:
            raise SpecError(
                f"{source}: {keyed(str(error))} (privacy.mechanism = 'adaptive', "
                f"privacy.noise_multiplier = {params['noise_multiplier']!r}, "
                f"algorithm.clients_per_round = {algorithm['clients_per_round']})"
            ) from None


# Why `ddp` is registered (parameters, accounting note) but refused at task load.
DDP_UNAVAILABLE = (
    "TFF 0.87 fails to build a learning process around tff.learning.ddp_secure_aggregator with "
    "the installed protobuf (4.25, upb): serializing the composed computation raises "
    "'DecodeError: Error parsing message' (its nesting is too deep for upb; the pure-Python "
    "protobuf did not finish building it in 5 minutes). The aggregator alone builds and runs."
)


def _check_algorithm(source: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
    """Algorithm parameters, server-optimizer hyperparameters and what composes with what."""
    from tff_rec import aggregation
    from tff_rec.algorithm_registry import ALGORITHMS, FEDPROX_MU, OPTIMIZER_HPARAMS, get_algorithm

    name = sections["algorithm"]["name"]
    mechanism = sections["privacy"]["mechanism"]
    method = sections["aggregation"]["method"]
    server = sections["algorithm.server"]
    for key in ("beta_1", "beta_2", "epsilon", "initial_accumulator"):
        if server[key] is not None and key not in OPTIMIZER_HPARAMS[server["optimizer"]]:
            users = [o for o, keys in OPTIMIZER_HPARAMS.items() if key in keys]
            raise SpecError(
                f"{source}: key 'algorithm.server.{key}' applies to optimizer {', '.join(users)}; "
                f"algorithm.server.optimizer = {server['optimizer']!r} takes "
                f"{', '.join(OPTIMIZER_HPARAMS[server['optimizer']])}. Found {server[key]!r}."
            )
    if name == "fedsgd" and sections["algorithm.client"]["lr_decay"] != 1.0:
        raise SpecError(
            f"{source}: key 'algorithm.client.lr_decay' has no effect with algorithm.name = "
            f"'fedsgd' (no client optimizer; decay the server's: algorithm.server.lr_decay). "
            f"Found {sections['algorithm.client']['lr_decay']!r}."
        )
    mu = sections["algorithm.fedprox"]["mu"]
    if name != "fedprox" and mu != FEDPROX_MU:
        raise SpecError(
            f"{source}: key 'algorithm.fedprox.mu' applies to algorithm.name = 'fedprox'. "
            f"Found algorithm.name = {name!r}."
        )
    try:
        aggregation.validate_params(method, sections["aggregation"]["params"])
    except ValueError as error:
        raise SpecError(f"{source}: {error}") from None
    if get_algorithm(name) is None:  # centralized, popularity: no clients, nothing more to compose
        if method != "plain":
            raise SpecError(
                f"{source}: aggregation.method = {method!r} needs a federated algorithm; "
                f"algorithm.name = {name!r} trains without clients (use aggregation.method = 'plain')"
            )
        return
    refusal = ALGORITHMS[name].dp_refusal
    if mechanism != "none" and refusal:
        raise SpecError(
            f"{source}: privacy.mechanism = {mechanism!r} does not compose with algorithm.name = "
            f"{name!r}: {refusal}. Use privacy.mechanism = 'none', or a DP-compatible algorithm "
            f"({', '.join(n for n, a in ALGORITHMS.items() if not a.dp_refusal)})."
        )
    if mechanism != "none" and method != "plain":
        raise SpecError(
            f"{source}: aggregation.method = {method!r} does not compose with privacy.mechanism = "
            f"{mechanism!r}: the DP mechanism bounds each client's contribution by clipping before "
            f"the sum, and {method}'s encoding after the clip (stochastic rounding, integer "
            f"scaling) changes that bound. Use aggregation.method = 'plain', or privacy.mechanism "
            f"= 'ddp' for distributed DP with secure aggregation."
        )
