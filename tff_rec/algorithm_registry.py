"""The federated algorithm registry (`ALGORITHMS`) and the server optimizers' keys, declared
without TensorFlow.

Task validation reads the names, the DP composition rules and `OPTIMIZER_HPARAMS` here; an
algorithm's learning-process builder lives in `algorithms` (TFF) and is imported when a run
builds it (`tff_rec.lazy.Ref`). Algorithms from other packages register through the
`tff_rec.algorithms` entry point group (`tff_rec.plugins`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

from tff_rec.lazy import Ref
from tff_rec.params import Param
from tff_rec.registry import Registry

# Hyperparameters each optimizer accepts besides the learning rate (the task's [algorithm.server]
# keys); None means TFF's default. `initial_accumulator` is TFF's `initial_preconditioner_value`.
OPTIMIZER_HPARAMS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum",),
    "sgdm": ("momentum",),
    "adam": ("beta_1", "beta_2", "epsilon"),
    "yogi": ("beta_1", "beta_2", "epsilon", "initial_accumulator"),
    "adagrad": ("initial_accumulator", "epsilon"),
}


FEDPROX_MU = 0.01  # algorithm.fedprox.mu's default (a task that sets it must be fedprox)


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """A named federated algorithm.

    weighted: whether, without DP, client contributions are weighted by their example counts.
    dp_refusal: why DP aggregators do not compose with it (None: they do, averaging unweighted).
    client_optimizer: `f(client section, params) -> Optimizer`, the optimizer its client work
      steps with, for algorithms whose process exposes that optimizer's hyperparameters through
      `get_hparams` (with a constant client learning rate); None where they are built in.
    """

    name: str
    description: str
    reference: str
    builder: Callable[[Any], Any]  # algorithms.FederatedSetup → tff LearningProcess
    weighted: bool
    dp_refusal: Optional[str] = None
    client_optimizer: Optional[Callable[[Mapping[str, Any], Mapping[str, Any]], Any]] = None
    params: tuple[Param, ...] = ()  # keys it adds to [algorithm]: none for the built-ins


ALGORITHMS: Registry[Algorithm] = Registry(
    "federated algorithm", "algorithm.name", group="tff_rec.algorithms", entries=(
        Algorithm("fedavg", "FedAvg, average weighted by examples (unweighted with DP)",
                  "McMahan et al. 2017", Ref("tff_rec.algorithms:build_fedavg"), weighted=True,
                  client_optimizer=Ref("tff_rec.algorithms:own_client_optimizer")),
        Algorithm("fedavg_unweighted", "FedAvg, plain average of client updates",
                  "McMahan et al. 2017", Ref("tff_rec.algorithms:build_fedavg_unweighted"),
                  weighted=False,
                  client_optimizer=Ref("tff_rec.algorithms:own_client_optimizer")),
        Algorithm("fedprox", "FedProx: local proximal term mu/2 ||w - w_global||^2",
                  "Li et al. 2020, Federated Optimization in Heterogeneous Networks",
                  Ref("tff_rec.algorithms:build_fedprox"), weighted=True,
                  client_optimizer=Ref("tff_rec.algorithms:proximal_client_optimizer")),
        Algorithm("fedsgd", "FedSGD: one gradient per client per round", "McMahan et al. 2017",
                  Ref("tff_rec.algorithms:build_fedsgd"), weighted=True),
        Algorithm("mime_lite", "Mime Lite: client steps with the server's optimizer state",
                  "Karimireddy et al. 2021, Breaking the centralized barrier...",
                  Ref("tff_rec.algorithms:build_mime_lite"), weighted=True,
                  dp_refusal=(
                      "mime_lite also sends each client's full gradient to the server through a "
                      "separate aggregator that the DP mechanism does not cover; the optimizer "
                      "state built from it is broadcast to the next cohort, so DP on the model "
                      "update alone gives no guarantee")),
    ),
)


def get_algorithm(name: str) -> Optional[Algorithm]:
    """The registered federated algorithm `name` (a plugin's is loaded on first use), or None
    (the trainers without clients, or an unknown name)."""
    try:
        return ALGORITHMS.entry(name)
    except ValueError:
        return None
