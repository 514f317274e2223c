"""TFF learning processes built from a task's [algorithm], [privacy] and [aggregation] sections.

Federated algorithms are `tff.learning.algorithms` builders, chosen by name from `ALGORITHMS`;
the client loop is TFF's DATASET_ITERATOR (DATASET_REDUCE rebuilds the train step for every
client: ~6× slower, see ARCHITECTURE.md, Performance notes).

Weighting and DP: without DP, `fedavg`, `fedprox`, `fedsgd` and `mime_lite` average client
contributions weighted by their number of examples and `fedavg_unweighted` averages them plainly.
With a DP aggregator every algorithm that supports DP averages *unweighted* — DP needs each
client's contribution bounded (a weight would scale a clipped update, and leak the client's size)
— so the weighted variants switch to their unweighted builders (`fedsgd`, whose builder only takes
weighted aggregators, gets the DP aggregator wrapped by `tff.aggregators` `as_weighted_aggregator`,
which ignores the weights). `mime_lite` with DP is refused at task load (`rules.cross_check`):
its full-gradient aggregate feeds the optimizer state broadcast to clients without DP.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_rec.algorithm_registry import ALGORITHMS, OPTIMIZER_HPARAMS

LOOP = tff.learning.LoopImplementation.DATASET_ITERATOR

_TFF_NAMES = {"initial_accumulator": "initial_preconditioner_value"}


def _keyword(hparams: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {_TFF_NAMES.get(k, k): hparams[k] for k in names if hparams.get(k) is not None}


OPTIMIZERS: dict[str, Callable[..., tff.learning.optimizers.Optimizer]] = {
    "sgd": lambda lr, momentum=0.0, **_: tff.learning.optimizers.build_sgdm(
        learning_rate=lr, momentum=momentum or None
    ),
    "sgdm": lambda lr, momentum=0.0, **_: tff.learning.optimizers.build_sgdm(
        learning_rate=lr, momentum=momentum or 0.9
    ),
    "adam": lambda lr, **h: tff.learning.optimizers.build_adam(
        learning_rate=lr, **_keyword(h, OPTIMIZER_HPARAMS["adam"])
    ),
    "adagrad": lambda lr, **h: tff.learning.optimizers.build_adagrad(
        learning_rate=lr, **_keyword(h, OPTIMIZER_HPARAMS["adagrad"])
    ),
    "yogi": lambda lr, **h: tff.learning.optimizers.build_yogi(
        learning_rate=lr, **_keyword(h, OPTIMIZER_HPARAMS["yogi"])
    ),
}

# Centralized training's optimizers. Each takes the learning rate and the [algorithm.centralized]
# hyperparameters of `spec.KERAS_OPTIMIZER_HPARAMS` (absent or None = Keras's default; the task
# loader refuses the ones an optimizer does not take).
KERAS_OPTIMIZERS: dict[str, Callable[..., tf.keras.optimizers.Optimizer]] = {
    "sgd": lambda lr, **_: tf.keras.optimizers.SGD(lr),
    "sgdm": lambda lr, **_: tf.keras.optimizers.SGD(lr, momentum=0.9),
    "adam": lambda lr, **h: tf.keras.optimizers.Adam(
        lr, **{k: v for k, v in h.items() if v is not None and k in ("beta_1", "beta_2", "epsilon")}
    ),
    "adagrad": lambda lr, **h: tf.keras.optimizers.Adagrad(
        lr, **{k: v for k, v in h.items() if v is not None and k == "epsilon"}
    ),
}


def keras_optimizer(centralized: Mapping[str, Any]) -> tf.keras.optimizers.Optimizer:
    """The Keras optimizer of a task's [algorithm.centralized] section."""
    hparams = {k: centralized.get(k) for k in ("beta_1", "beta_2", "epsilon")}
    return KERAS_OPTIMIZERS[centralized["optimizer"]](centralized["learning_rate"], **hparams)


def tff_optimizer(name: str, learning_rate: float, momentum: float = 0.0, **hparams: Any):
    """A `tff.learning.optimizers` optimizer by name; hyperparameters left None take TFF's defaults."""
    return OPTIMIZERS[name](learning_rate, momentum=momentum, **hparams)


def decayed(learning_rate: float, decay: float) -> Callable[[Any], Any]:
    """Round-indexed exponential schedule  t ↦ learning_rate × decay^t  (t = 0 in round 1)."""
    return lambda t: learning_rate * decay ** tf.cast(t, tf.float32)


def server_optimizer(server: Mapping[str, Any]) -> tff.learning.optimizers.Optimizer:
    """The server optimizer of a task's [algorithm.server] section (FedAdam, FedYogi, ...).

    With `lr_decay` ≠ 1 its learning rate follows `decayed` via
    `tff.learning.optimizers.schedule_learning_rate` (the server optimizer steps once a round).
    """
    hparams = {k: server.get(k) for k in ("beta_1", "beta_2", "epsilon", "initial_accumulator")}
    optimizer = tff_optimizer(server["optimizer"], server["learning_rate"], server["momentum"], **hparams)
    decay = server.get("lr_decay", 1.0)
    if decay != 1.0:
        optimizer = tff.learning.optimizers.schedule_learning_rate(
            optimizer, decayed(server["learning_rate"], decay)
        )
    return optimizer


def client_optimizer(client: Mapping[str, Any]) -> tff.learning.optimizers.Optimizer:
    """The client optimizer (TFF's defaults for its hyperparameters)."""
    return tff_optimizer(client["optimizer"], client["learning_rate"])


def client_decay(client: Mapping[str, Any]) -> float:
    """The per-round decay of the client learning rate (1 = constant)."""
    return client.get("lr_decay", 1.0)


# An uplink factory builder: `uplink(weighted)` → the model aggregator (None: TFF's default mean).
Uplink = Callable[[bool], Optional[tff.aggregators.AggregationFactory]]


@dataclasses.dataclass(frozen=True)
class FederatedSetup:
    """Everything that shapes the learning process's computations (and so its cache key).

    aggregator: the DP aggregator (unweighted), or None without DP.
    uplink: builds the non-DP model aggregator for a weighted or unweighted average (compression,
      secure aggregation); None means TFF's default mean. Not used together with `aggregator`.
    params: the algorithm's own parameters (e.g. fedprox's `mu`).
    """

    model_fn: Callable[[], tff.learning.models.VariableModel]
    client: Mapping[str, Any]
    server: Mapping[str, Any]
    aggregator: Optional[tff.aggregators.UnweightedAggregationFactory]
    uplink: Optional[Uplink] = None
    algorithm: str = "fedavg"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _uplink(setup: FederatedSetup, weighted: bool):
    return setup.uplink(weighted) if setup.uplink is not None else None


def _build_scheduled_fedavg(setup: FederatedSetup, optimizer_fn: Callable[[Any], Any],
                            weighted: bool) -> tff.learning.templates.LearningProcess:
    """FedAvg whose client learning rate decays by round: TFF's
    `build_weighted_fed_avg_with_optimizer_schedule` (the only FedAvg builder with a round-indexed
    client learning rate in 0.87; it takes weighted aggregators only, so plain averages — DP, or
    `fedavg_unweighted` — go through `as_weighted_aggregator`, which ignores the weights)."""
    if setup.aggregator is not None:
        aggregator = tff.aggregators.as_weighted_aggregator(setup.aggregator)
    elif weighted:
        aggregator = _uplink(setup, weighted=True)
    else:
        aggregator = tff.aggregators.as_weighted_aggregator(
            _uplink(setup, weighted=False) or tff.aggregators.UnweightedMeanFactory()
        )
    return tff.learning.algorithms.build_weighted_fed_avg_with_optimizer_schedule(
        setup.model_fn,
        client_learning_rate_fn=decayed(setup.client["learning_rate"], client_decay(setup.client)),
        client_optimizer_fn=optimizer_fn,
        server_optimizer_fn=server_optimizer(setup.server),
        model_aggregator=aggregator,
        loop_implementation=LOOP,
    )


def build_fedavg(setup: FederatedSetup) -> tff.learning.templates.LearningProcess:
    """FedAvg (weighted by examples), or DP-FedAvg (unweighted) when a DP aggregator is given."""
    if client_decay(setup.client) != 1.0:
        return _build_scheduled_fedavg(
            setup, lambda lr: tff_optimizer(setup.client["optimizer"], lr),
            weighted=setup.aggregator is None,
        )
    if setup.aggregator is None:
        return tff.learning.algorithms.build_weighted_fed_avg(
            setup.model_fn,
            client_optimizer_fn=client_optimizer(setup.client),
            server_optimizer_fn=server_optimizer(setup.server),
            model_aggregator=_uplink(setup, weighted=True),
            loop_implementation=LOOP,
        )
    return build_fedavg_unweighted(setup)


def build_fedavg_unweighted(setup: FederatedSetup) -> tff.learning.templates.LearningProcess:
    """FedAvg with a plain (uniform) average of client updates."""
    if client_decay(setup.client) != 1.0:
        return _build_scheduled_fedavg(
            setup, lambda lr: tff_optimizer(setup.client["optimizer"], lr), weighted=False
        )
    return tff.learning.algorithms.build_unweighted_fed_avg(
        setup.model_fn,
        client_optimizer_fn=client_optimizer(setup.client),
        server_optimizer_fn=server_optimizer(setup.server),
        model_aggregator=setup.aggregator or _uplink(setup, weighted=False),
        loop_implementation=LOOP,
    )


class ProximalOptimizer(tff.learning.optimizers.Optimizer):
    """`base` on the gradient of  loss + mu/2 ||w - w_anchor||^2 : adds mu (w - w_anchor).

    The anchor is the weights of the first `next` call. TFF initializes the client optimizer
    afresh for every client and round, so the anchor is the broadcast global model: this is
    FedProx's local objective. (TFF 0.87's own `build_*_fed_prox` adds mu (w_anchor - w)
    instead — `proximal_client_work.py`, `delta_l2_regularizer * (y - x)` with x the current and
    y the initial weights — which pushes local models *away* from the global one; see
    tests/test_algorithms.py.)
    """

    def __init__(self, base: tff.learning.optimizers.Optimizer, mu: float):
        if not mu >= 0:
            raise ValueError(f"algorithm.fedprox.mu must be >= 0. Found {mu!r}.")
        self._base = base
        self._mu = mu

    def initialize(self, specs):
        anchor = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), specs)
        # mu lives in the state, as a hyperparameter: a process built once serves every mu
        return {"base": self._base.initialize(specs), "anchor": anchor,
                "anchored": tf.constant(False), "mu": self._mu}

    def next(self, state, weights, gradients):
        anchored = state["anchored"]
        anchor = tf.nest.map_structure(
            lambda a, w: tf.where(anchored, a, w), state["anchor"], weights
        )
        gradients = tf.nest.map_structure(
            lambda g, w, a: tf.convert_to_tensor(g) + tf.cast(state["mu"], w.dtype) * (w - a),
            gradients, weights, anchor,
        )
        base_state, weights = self._base.next(state["base"], weights, gradients)
        return {**state, "base": base_state, "anchor": anchor, "anchored": tf.constant(True)}, weights

    def get_hparams(self, state):
        return {**self._base.get_hparams(state["base"]), "mu": state["mu"]}

    def set_hparams(self, state, hparams):
        base = {k: v for k, v in hparams.items() if k != "mu"}
        return {**state, "base": self._base.set_hparams(state["base"], base),
                "mu": hparams.get("mu", state["mu"])}


def own_client_optimizer(client: Mapping[str, Any], params: Mapping[str, Any]):
    """The task's client optimizer, unchanged (FedAvg's; `params` plays no part)."""
    return client_optimizer(client)


def proximal_client_optimizer(client: Mapping[str, Any], params: Mapping[str, Any]):
    """FedProx's client optimizer: the task's, on the proximal objective with `params["mu"]`."""
    return ProximalOptimizer(client_optimizer(client), params["mu"])


def build_fedprox(setup: FederatedSetup) -> tff.learning.templates.LearningProcess:
    """FedProx (Li et al. 2020): clients minimize  loss + mu/2 ||w - w_global||^2.

    FedAvg's builders with the client optimizer wrapped in `ProximalOptimizer` (not TFF's
    `build_*_fed_prox`, whose proximal term has the wrong sign in 0.87); mu = 0 is FedAvg.
    Weighted by examples, unweighted with DP.
    """
    mu = setup.params["mu"]
    if client_decay(setup.client) != 1.0:
        return _build_scheduled_fedavg(
            setup, lambda lr: ProximalOptimizer(tff_optimizer(setup.client["optimizer"], lr), mu),
            weighted=setup.aggregator is None,
        )
    common = dict(
        client_optimizer_fn=proximal_client_optimizer(setup.client, setup.params),
        server_optimizer_fn=server_optimizer(setup.server),
        loop_implementation=LOOP,
    )
    if setup.aggregator is None:
        return tff.learning.algorithms.build_weighted_fed_avg(
            setup.model_fn, model_aggregator=_uplink(setup, weighted=True), **common
        )
    return tff.learning.algorithms.build_unweighted_fed_avg(
        setup.model_fn, model_aggregator=setup.aggregator, **common
    )


def build_fedsgd(setup: FederatedSetup) -> tff.learning.templates.LearningProcess:
    """FedSGD: each client sends the gradient of its loss over all its batches at the broadcast
    model; the server optimizer (its learning rate is the step size) applies the average.
    The client optimizer and learning rate are unused. With DP: DP-FedSGD (unweighted)."""
    if setup.aggregator is not None:
        aggregator = tff.aggregators.as_weighted_aggregator(setup.aggregator)
    else:
        aggregator = _uplink(setup, weighted=True)
    return tff.learning.algorithms.build_fed_sgd(
        setup.model_fn,
        server_optimizer_fn=server_optimizer(setup.server),
        model_aggregator=aggregator,
        loop_implementation=LOOP,
    )


def build_mime_lite(setup: FederatedSetup) -> tff.learning.templates.LearningProcess:
    """Mime Lite (Karimireddy et al. 2021): clients step with the client optimizer (the base
    optimizer) using the server's optimizer state, which the server updates from the average full
    gradient at the broadcast model. Both client→server vectors use the uplink aggregator."""
    if setup.aggregator is not None:  # rules.cross_check refuses this at task load
        raise ValueError("mime_lite does not compose with a DP aggregator (see rules.cross_check)")
    if client_decay(setup.client) != 1.0:
        return tff.learning.algorithms.build_mime_lite_with_optimizer_schedule(
            setup.model_fn,
            learning_rate_fn=decayed(setup.client["learning_rate"], client_decay(setup.client)),
            base_optimizer=client_optimizer(setup.client),
            server_optimizer=server_optimizer(setup.server),
            model_aggregator=_uplink(setup, weighted=True),
            full_gradient_aggregator=_uplink(setup, weighted=True),
            loop_implementation=LOOP,
        )
    return tff.learning.algorithms.build_weighted_mime_lite(
        setup.model_fn,
        base_optimizer=client_optimizer(setup.client),
        server_optimizer=server_optimizer(setup.server),
        model_aggregator=_uplink(setup, weighted=True),
        full_gradient_aggregator=_uplink(setup, weighted=True),
        loop_implementation=LOOP,
    )


def build_process(setup: FederatedSetup) -> tff.learning.templates.LearningProcess:
    """The learning process of `setup.algorithm` (a key of `ALGORITHMS`)."""
    return ALGORITHMS[setup.algorithm].builder(setup)


def settable_hparams(algorithm: str, client: Mapping[str, Any], server: Mapping[str, Any],
                     params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The hyperparameters a run sets into its learning process with `set_hparams`.

    Keyed like `process.get_hparams`: `client_work` (the client optimizer's, where the algorithm
    exposes them and the client learning rate is constant) and `finalizer` (the server
    optimizer's, with a constant server learning rate). Values are read from the optimizers this
    task's own build would use, so a process built for other values and given these runs exactly
    as that build. An empty section is built into the process: see `build_key`.
    """
    hparams: dict[str, dict[str, Any]] = {"client_work": {}, "finalizer": {}}
    make_client = ALGORITHMS[algorithm].client_optimizer
    if make_client is not None and client_decay(client) == 1.0:
        hparams["client_work"] = _hparams_of(make_client(client, params))
    if server.get("lr_decay", 1.0) == 1.0:
        hparams["finalizer"] = _hparams_of(server_optimizer(server))
    return hparams


def _hparams_of(optimizer: tff.learning.optimizers.Optimizer) -> dict[str, Any]:
    state = optimizer.initialize(tf.TensorSpec([1], tf.float32))
    return {name: np.float32(value) for name, value in optimizer.get_hparams(state).items()}


def build_key(algorithm: str, client: Mapping[str, Any], server: Mapping[str, Any],
              params: Mapping[str, Any]) -> dict[str, Any]:
    """What of a task's [algorithm.*] sections is built into its learning process.

    Everything but `settable_hparams` — and the batch size and local epochs, which shape only
    the client datasets. Kept: the optimizers' names, whether SGD has momentum (it adds a
    state), Adagrad's and Yogi's initial accumulator (used only at initialization), learning
    rate schedules, and the values of sections the process does not expose.
    """
    key: dict[str, Any] = {"algorithm": algorithm}
    if ALGORITHMS[algorithm].client_optimizer is not None and client_decay(client) == 1.0:
        key["client"] = {"optimizer": client["optimizer"]}
    else:
        key["client"] = {k: client.get(k) for k in ("optimizer", "learning_rate", "lr_decay")}
        key["params"] = dict(params)
    if server.get("lr_decay", 1.0) == 1.0:
        key["server"] = {"optimizer": server["optimizer"], "momentum": bool(server["momentum"]),
                         "initial_accumulator": server.get("initial_accumulator")}
    else:
        key["server"] = dict(server)
    return key


def client_dataset(dataset: tf.data.Dataset, batch_size: int, local_epochs: int) -> tf.data.Dataset:
    """One client's (inputs, targets) batches for its local epochs.

    Built on TFF's worker from the client's int32 arrays (`training.processes.taking_arrays`), and
    by the benchmark's plain loop. tf.data default optimizations and autotune are off: for the
    many tiny client datasets of a round they cost more than they save (ARCHITECTURE.md, Performance notes).
    """
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False
    return dataset.batch(batch_size).repeat(local_epochs).with_options(options)
