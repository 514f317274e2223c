"""The rules of a task that span keys or sections, checked at load after every key is valid.

Each key is checked against its declaration first (`spec.SCHEMA` for fixed keys, the chosen
registry entry's `Param`s for the others: `tff_rec.registry`); the rules here tie them together
(a target ε needs a noise multiplier, DP needs a federated algorithm, a model's heads divide
its width, ...) and raise SpecError naming the keys and what is allowed.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from tff_rec.errors import SpecError


def _check_data_rules(source: str, data: Mapping[str, Any]) -> None:
    """A dataset's rules between its parameters that need no data (the data-dependent rules are
    checked by `tff_rec.checks` before a run writes anything)."""
    from tff_rec.data import sources

    problem = sources.param_problem(data["dataset"], data["params"])
    if problem is not None:
        key, text = problem
        raise SpecError(f"{source}: key 'data.{key}' {text} (data.dataset = {data['dataset']!r})")


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

    _check_data_rules(source, sections["data"])
    try:  # model keys together (presets, heads dividing d, ...), before anything trains
        models.resolve_hparams(sections["model"]["name"], **sections["model"]["params"])
    except ValueError as error:
        raise SpecError(f"{source}: {keyed(str(error))}") from None
    algorithm = sections["algorithm"]["name"]
    privacy = sections["privacy"]
    if get_algorithm(algorithm) is None and privacy["mechanism"] != "none":
        raise SpecError(
            f"{source}: privacy.mechanism = {privacy['mechanism']!r} needs a federated algorithm; "
            f"algorithm.name = {algorithm!r} trains without clients (use privacy.mechanism = 'none')"
        )
    _check_algorithm(source, sections)
    if privacy["target_epsilon"] is not None:
        chosen = mechanisms.get_mechanism(privacy["mechanism"])
        if not chosen.noise_sets_epsilon:
            allowed = ", ".join(n for n, m in mechanisms.MECHANISMS.items() if m.noise_sets_epsilon)
            raise SpecError(
                f"{source}: key 'privacy.target_epsilon' needs a mechanism whose noise multiplier "
                f"sets ε ({allowed}); privacy.mechanism = {privacy['mechanism']!r} is not one: "
                f"{chosen.accounting_note}"
            )
        if privacy["target_epsilon"] <= 0:
            raise SpecError(
                f"{source}: key 'privacy.target_epsilon' must be positive. "
                f"Found {privacy['target_epsilon']!r}."
            )
    chosen = mechanisms.get_mechanism(privacy["mechanism"])
    sampling = sections["algorithm"]["sampling"]
    if chosen.sampling is not None and sampling != chosen.sampling:
        raise SpecError(
            f"{source}: privacy.mechanism = {privacy['mechanism']!r} needs algorithm.sampling = "
            f"{chosen.sampling!r} (its accounting assumes that sampler). Found {sampling!r}."
        )
    _check_noise_rules(source, sections)
    delta = privacy["delta"]
    if delta is not None and not 0 < delta < 1:
        raise SpecError(f"{source}: key 'privacy.delta' must be in (0, 1). Found {delta!r}.")


def check_mechanism_rules(source: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
    """The chosen mechanism's own rules on the other keys (`Mechanism.rules`), once its noise is
    chosen (a rule on the noise must not judge a default nobody chose)."""
    from tff_rec.privacy.mechanism_registry import get_mechanism

    for rule in get_mechanism(sections["privacy"]["mechanism"]).rules:
        try:
            rule(sections["privacy"], sections["algorithm"])
        except ValueError as error:
            raise SpecError(f"{source}: {keyed(str(error))}") from None


def _check_noise_rules(source: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
    """What the trainer would refuse after its lock: a target ε no accountant can calibrate to
    under the task's sampling."""
    from tff_rec.privacy import accounting
    from tff_rec.privacy.mechanism_registry import get_mechanism

    privacy, algorithm = sections["privacy"], sections["algorithm"]
    mechanism, accountant = privacy["mechanism"], privacy["accountant"]
    analysis = get_mechanism(mechanism).analysis
    sampling = algorithm["sampling"]
    if privacy["target_epsilon"] is not None and analysis == "sampled-gaussian":
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
    if privacy["target_epsilon"] is not None and analysis == "tree" and accountant != "rdp":
        raise SpecError(
            f"{source}: key 'privacy.target_epsilon' with privacy.mechanism = {mechanism!r} needs "
            f"privacy.accountant = 'rdp' (dp-accounting analyses tree aggregation with RDP only). "
            f"Found {accountant!r}."
        )


def _check_algorithm(source: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
    """Algorithm parameters, server-optimizer hyperparameters and what composes with what."""
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
