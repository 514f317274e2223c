"""Uplink aggregators for cheaper or safer client→server traffic, chosen by `aggregation.method`.

Each entry builds the non-DP model aggregator of the learning process, for a weighted average
(`fedavg`, `fedprox`, `fedsgd`, `mime_lite`) or a plain one (`fedavg_unweighted`):

  plain        TFF's default mean: float32 updates (32 bits per parameter).
  compression  `tff.learning.compression_aggregator`'s chain with configurable bits and threshold:
               adaptive zeroing → adaptive L2 clipping → (weighted) mean → uniform stochastic
               quantization to `quantization_bits` bits, bit-packed, of every tensor with more
               than `threshold` elements (smaller tensors go as float32; Suresh et al. 2017).
  secure       `tff.learning.secure_aggregator`: adaptive zeroing and clipping, then a simulated
               SecAgg sum (`federated_secure_sum_bitwidth`, Bonawitz et al. 2017) of the updates
               quantized to integers.

DP and these aggregators do not compose here (refused in `rules.cross_check`): the DP
mechanisms bound each client's contribution by clipping *before* summation, and a stochastic
quantization or SecAgg's integer encoding after clipping would change that bound. Distributed DP
with secure aggregation is the privacy mechanism `ddp` (`tff.learning.ddp_secure_aggregator`).

Reproducibility: TFF draws the stochastic rounding of `compression` from seeds it makes itself
(`tf.random` inside its encoders, not the task seed), so compressed runs are not bit-reproducible
across reruns; `plain` and `secure` add no randomness (secure's quantization is deterministic).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from tff_rec.params import Param, Range
from tff_rec.registry import Registry


@dataclass(frozen=True)
class Method:
    """A named uplink aggregator.

    builder(weighted, **params) → a `tff.aggregators` factory (None: TFF's default mean).
    bits(params, size) → bits per value the method encodes a model-update tensor of `size` values
      with (before word packing and per-tensor overheads).
    """

    name: str
    description: str
    params: tuple[Param, ...]
    builder: Callable[..., Any]
    bits: Callable[[Mapping[str, Any], int], float]


QUANTIZATION_BITS = Param(
    "quantization_bits", int, 8, "bits per quantized value (TFF allows 1 to 16)",
    Range(low=1, high=16),
)
THRESHOLD = Param(
    "threshold", int, 20000, "only tensors with more elements than this are quantized",
    Range(low=0),
)
ZEROING = Param("zeroing", bool, True, "adaptive zeroing of extreme updates (robustness)")
CLIPPING = Param("clipping", bool, True, "adaptive L2 clipping of updates (robustness)")


def _build_plain(weighted: bool) -> None:
    del weighted
    return None


def _zeroing(inner):
    """The adaptive zeroing wrapper of TFF's compression/secure aggregators (same constants)."""
    import tensorflow_federated as tff

    norm = tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
        initial_estimate=10.0, target_quantile=0.98, learning_rate=math.log(10.0),
        multiplier=2.0, increment=1.0,
    )
    return tff.aggregators.zeroing_factory(norm, inner)


def _clipping(inner):
    """The adaptive clipping wrapper of TFF's compression aggregator (same constants)."""
    import tensorflow_federated as tff

    norm = tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
        initial_estimate=1.0, target_quantile=0.8, learning_rate=0.2,
    )
    return tff.aggregators.clipping_factory(norm, inner)


def _build_compression(weighted: bool, *, quantization_bits: int, threshold: int,
                       zeroing: bool, clipping: bool):
    """`tff.learning.compression_aggregator` with the bits and threshold exposed (TFF fixes them
    to 8 and 20000); identical to it at the defaults."""
    import tensorflow_federated as tff

    factory = tff.aggregators.EncodedSumFactory.quantize_above_threshold(
        quantization_bits=quantization_bits, threshold=threshold
    )
    factory = tff.aggregators.MeanFactory(factory) if weighted else tff.aggregators.UnweightedMeanFactory(factory)
    if clipping:
        factory = _clipping(factory)
    if zeroing:
        factory = _zeroing(factory)
    return factory


def _build_secure(weighted: bool, *, zeroing: bool, clipping: bool):
    import tensorflow_federated as tff

    return tff.learning.secure_aggregator(zeroing=zeroing, clipping=clipping, weighted=weighted)


METHODS: Registry[Method] = Registry(
    "uplink aggregator", "aggregation.method", entries=(
        Method("plain", "float32 mean (TFF's default)", (), _build_plain, lambda p, n: 32.0),
        Method(
            "compression", "uniform stochastic quantization of large tensors (Suresh et al. 2017)",
            (QUANTIZATION_BITS, THRESHOLD, ZEROING, CLIPPING), _build_compression,
            lambda p, n: float(p["quantization_bits"]) if n > p["threshold"] else 32.0,
        ),
        Method(
            "secure", "simulated secure aggregation (Bonawitz et al. 2017) with adaptive clipping",
            (ZEROING, CLIPPING), _build_secure, lambda p, n: 32.0,
        ),
    ),
)


def get_method(name: str) -> Method:
    return METHODS.entry(name)


def validate_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` checked against `method`'s declaration (ValueError naming the key)."""
    return METHODS.validate(method, params)


def uplink(method: str, params: Mapping[str, Any]) -> Optional[Callable[[bool], Any]]:
    """`weighted → factory` for the learning-process builders; None for `plain`."""
    if method == "plain":
        return None
    chosen = get_method(method)
    checked = validate_params(method, params)
    return lambda weighted: chosen.builder(weighted, **checked)


def nominal_bits(method: str, params: Mapping[str, Any], sizes: Sequence[int]) -> float:
    """Mean bits per model-update value over tensors of `sizes` values (compression leaves tensors
    at or below its threshold as float32): 32 for plain and secure (float32 values; SecAgg's own
    bit width is not modelled), the quantization bits where every tensor is above the threshold."""
    chosen, checked = get_method(method), validate_params(method, params)
    return sum(chosen.bits(checked, n) * n for n in sizes) / sum(sizes)
