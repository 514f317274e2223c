"""Bytes a learning process moves between server and clients per round, from its TFF types.

`traffic(process)` walks the building block of `process.next` and finds every call of a federated
communication intrinsic, then sizes the values that cross the network from their TFF types
(bytes = Σ over tensors of num_elements × dtype size, per client):

- downlink (server → each client): the result of every `federated_broadcast` — the model weights
  (trainable and non-trainable), and whatever else the algorithm broadcasts: the client learning
  rate / optimizer hyperparameters, mime_lite's server optimizer state, the current clip and norm
  estimates of adaptive clipping/zeroing aggregators, DP/secure-sum parameters.
- uplink (each client → server): the CLIENTS-placed operands of `federated_sum`, `federated_mean`,
  `federated_weighted_mean`, `federated_aggregate`, `federated_secure_sum`,
  `federated_secure_sum_bitwidth` and `federated_secure_modular_sum` — the model update (or
  FedSGD's gradient; for mime_lite also the full gradient), the client weight, the training
  metrics (loss sums, example and batch counts), and an aggregator's per-client inputs (norm
  indicators of adaptive clipping/zeroing, counts). With `compression` the update arrives as the
  encoder's actual types: bit-packed int32 words (28 value bits each) plus a float32 min/max pair
  per quantized tensor, float32 for tensors at or below the threshold.

Not counted: the client datasets (they never leave the client), `federated_value` constants,
server-only work, and transport or protocol overhead (serialization headers, TLS, SecAgg's key
agreement and masking). For secure sums the size is that of the value's TFF integer dtype (int32 or
int64); a real SecAgg would send `bitwidth`-bit field elements, so this is an upper bound there.

A round moves  per-client bytes × cohort size  each way (every sampled client receives the
broadcast and sends its contribution).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np

COUNTED = (
    "per client and round, from the TFF types of process.next: down = federated_broadcast "
    "results (model weights, broadcast optimizer/aggregator state); up = CLIENTS-placed operands "
    "of federated sums/means/aggregates and secure sums (update, weight, metrics, aggregator "
    "inputs); bytes = elements x dtype size; client data, constants and protocol overhead excluded"
)
DOWNLINK = frozenset({"federated_broadcast"})
UPLINK = frozenset({
    "federated_sum", "federated_mean", "federated_weighted_mean", "federated_aggregate",
    "federated_secure_sum", "federated_secure_sum_bitwidth", "federated_secure_modular_sum",
})


@dataclasses.dataclass(frozen=True)
class Traffic:
    """Per-client bytes per round, with their split by intrinsic."""

    down: int
    up: int
    down_by_intrinsic: dict[str, int]
    up_by_intrinsic: dict[str, int]

    def round_bytes(self, clients: int) -> tuple[int, int]:
        """(bytes down, bytes up) of a round with `clients` sampled clients."""
        return self.down * clients, self.up * clients


def tensor_bytes(type_spec: Any) -> int:
    """Σ num_elements × dtype size over the tensors of a TFF type (placements looked through)."""
    from tensorflow_federated.python.core.impl.types import computation_types as ct

    if isinstance(type_spec, ct.FederatedType):
        return tensor_bytes(type_spec.member)
    if isinstance(type_spec, ct.StructType):
        return sum(tensor_bytes(element) for element in type_spec)
    if isinstance(type_spec, ct.TensorType):
        shape = type_spec.shape
        if shape is None or any(d is None for d in shape):
            raise ValueError(f"cannot size a tensor of unknown shape: {type_spec}")
        return int(np.prod(shape, dtype=np.int64)) * np.dtype(type_spec.dtype).itemsize
    return 0  # functions, sequences (client data), abstract/placement types: not sent


def clients_part_bytes(type_spec: Any) -> int:
    """Bytes of the CLIENTS-placed values inside a (possibly struct) type."""
    from tensorflow_federated.python.core.impl.types import computation_types as ct
    from tensorflow_federated.python.core.impl.types import placements

    if isinstance(type_spec, ct.FederatedType):
        return tensor_bytes(type_spec.member) if type_spec.placement == placements.CLIENTS else 0
    if isinstance(type_spec, ct.StructType):
        return sum(clients_part_bytes(element) for element in type_spec)
    return 0


def traffic(process: Any) -> Traffic:
    """Per-client downlink and uplink bytes of one `process.next` (see the module docstring)."""
    from tensorflow_federated.python.core.impl.compiler import building_blocks

    down: Counter[str] = Counter()
    up: Counter[str] = Counter()
    stack = [process.next.to_building_block()]
    while stack:
        node = stack.pop()
        if isinstance(node, building_blocks.Call) and isinstance(node.function, building_blocks.Intrinsic):
            uri = node.function.uri
            if uri in DOWNLINK:
                down[uri] += clients_part_bytes(node.type_signature)
            elif uri in UPLINK:
                up[uri] += clients_part_bytes(node.argument.type_signature)
        stack.extend(node.children())
    return Traffic(sum(down.values()), sum(up.values()), dict(down), dict(up))


def _sizes(type_spec: Any) -> list[int]:
    from tensorflow_federated.python.core.impl.types import computation_types as ct

    if isinstance(type_spec, ct.StructType):
        return [n for element in type_spec for n in _sizes(element)]
    if isinstance(type_spec, ct.TensorType):
        return [int(np.prod(type_spec.shape, dtype=np.int64))]
    return []


def trainable_sizes(process: Any) -> list[int]:
    """Number of values of each trainable tensor of the process's model."""
    weights = process.get_model_weights.type_signature.result
    return _sizes(getattr(weights, "member", weights).trainable)


def model_parameters(process: Any) -> tuple[int, int]:
    """(trainable, all) parameter counts of the process's model weights."""
    weights = process.get_model_weights.type_signature.result
    weights = getattr(weights, "member", weights)
    return sum(_sizes(weights.trainable)), sum(_sizes(weights))
