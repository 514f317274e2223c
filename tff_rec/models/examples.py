"""Training examples and evaluation inputs, per model family.

Every builder yields int32 (inputs, targets) rows of length max_len, left-padded with 0, with
target 0 wherever a position has nothing to predict; so one loss, one SQLite store and one client
pipeline serve every model. Builders are registered in `EXAMPLES`:

- next_item (SASRec, GRU4Rec): targets are the inputs shifted by one; evaluation inputs are the
  history's last max_len items, and the logits at the last position predict the held-out item.
- masked_item (BERT4Rec): a share of the items is replaced by [MASK] (id num_items + 1) and is
  the target; evaluation inputs are the history followed by [MASK] (the oldest item dropped to
  keep the length), so the last position predicts the held-out item without ever seeing it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from tff_rec import seeds
from tff_rec.data.types import PADDING_ITEM

# (histories, max_len) → int32 [n, max_len]: the model inputs whose last position is scored.
HistoryInputs = Callable[[Sequence[np.ndarray], int], np.ndarray]


def left_pad(sequences: Sequence[np.ndarray], length: int) -> np.ndarray:
    """The last `length` items of each sequence, left-padded with 0: int32 [n, length]."""
    if length < 1:
        raise ValueError(f"length must be positive. Found {length}.")
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    # One trailing 0 keeps the gather below in range when every sequence is empty.
    flat = np.concatenate([np.asarray(s, dtype=np.int32).ravel() for s in sequences] + [[0]])
    columns = np.arange(length)
    # out[r, c] = flat[end_r - length + c] in the last min(length_r, length) columns, else 0.
    source = np.maximum(np.cumsum(lengths)[:, None] - length + columns[None, :], 0)
    real = columns[None, :] >= length - np.minimum(lengths, length)[:, None]
    return np.where(real, flat[source], PADDING_ITEM).astype(np.int32)


def make_training_examples(
    sequences: Sequence[np.ndarray], max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """One next-item example per sequence, vectorized: (inputs, targets), int32 [n, max_len].

    Each sequence's last max_len + 1 items form a window; inputs = window[:-1] and
    targets = window[1:], both left-padded with 0. A target is 0 (ignored by the loss) wherever
    its input is padding, so a sequence of one item yields an all-zero example.
    """
    window = left_pad(sequences, max_len + 1)
    inputs = window[:, :-1]
    targets = np.where(inputs != PADDING_ITEM, window[:, 1:], PADDING_ITEM).astype(np.int32)
    return inputs, targets


def make_training_example(sequence: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), int32 [max_len] each, for one user's training prefix."""
    inputs, targets = make_training_examples([sequence], max_len)
    return inputs[0], targets[0]


def batch_spec(max_len: int) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    """The (inputs, targets) spec of a batch, for `from_keras_model(input_spec=...)`."""
    spec = tf.TensorSpec(shape=[None, max_len], dtype=tf.int32)
    return spec, spec


def mask_token(num_items: int) -> int:
    """BERT4Rec's [MASK] input id: one past the last item (it has no output column)."""
    return num_items + 1


def make_masked_examples(
    sequences: Sequence[np.ndarray],
    num_items: int,
    max_len: int,
    *,
    mask_rate: float,
    dupe_factor: int,
    mask_last_rate: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT4Rec's static masking: `dupe_factor` masked copies of each sequence's last max_len items.

    Returns (inputs, targets) int32 [n × dupe_factor, max_len], the copies of a sequence
    consecutive. A copy masks exactly max(1, round(mask_rate × length)) of its items, chosen
    uniformly (BERT4Rec's count rule; `MaskedLMMaskGenerator`'s rate with the count made exact),
    or, with probability mask_last_rate, only its last item (BERT4Rec adds such copies so
    training also sees the evaluation task). Masked items become [MASK] in the inputs and are the
    targets; every other target is 0. Empty sequences give all-zero rows. Same seed → same rows.
    """
    window = np.repeat(left_pad(sequences, max_len), dupe_factor, axis=0)
    rng = np.random.default_rng(seed)
    real = window != PADDING_ITEM
    lengths = real.sum(axis=1)
    count = np.where(lengths > 0, np.maximum(1, np.rint(lengths * mask_rate)), 0)
    keys = np.where(real, rng.random(window.shape), np.inf)  # padding sorts last
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    masked = rank < count[:, None]
    last_only = rng.random(len(window)) < mask_last_rate
    masked[last_only] = False
    masked[last_only, -1] = real[last_only, -1]
    inputs = np.where(masked, mask_token(num_items), window).astype(np.int32)
    targets = np.where(masked, window, PADDING_ITEM).astype(np.int32)
    return inputs, targets


def masked_history_inputs(histories: Sequence[np.ndarray], max_len: int, num_items: int) -> np.ndarray:
    """int32 [n, max_len]: each history's last max_len − 1 items, then [MASK], left-padded."""
    token = mask_token(num_items)
    return left_pad([np.append(np.asarray(h, np.int32), token) for h in histories], max_len)


@dataclasses.dataclass(frozen=True)
class ExampleBuilder:
    """How a model family turns training sequences into examples and histories into inputs.

    params(hparams, task_seed): the keyword arguments of `build` besides (sequences, num_items,
      max_len), JSON-able: everything else the examples depend on (it names the cached data).
    build(sequences, num_items, max_len, **params): (inputs, targets) int32
      [n × examples_per_user, max_len], a user's examples consecutive.
    history_inputs(histories, max_len, num_items): int32 [n, max_len] evaluation inputs.
    """

    params: Callable[[Any, int], dict[str, Any]]
    build: Callable[..., tuple[np.ndarray, np.ndarray]]
    history_inputs: Callable[[Sequence[np.ndarray], int, int], np.ndarray]


def _masked_params(hparams: Any, task_seed: int) -> dict[str, Any]:
    return {
        "mask_rate": hparams.mask_rate, "dupe_factor": hparams.dupe_factor,
        "mask_last_rate": hparams.mask_last_rate, "seed": seeds.derive(task_seed, "examples"),
    }


EXAMPLES: dict[str, ExampleBuilder] = {
    "next_item": ExampleBuilder(
        params=lambda hparams, task_seed: {},
        build=lambda sequences, num_items, max_len: make_training_examples(sequences, max_len),
        history_inputs=lambda histories, max_len, num_items: left_pad(histories, max_len),
    ),
    "masked_item": ExampleBuilder(
        params=_masked_params, build=make_masked_examples, history_inputs=masked_history_inputs,
    ),
}
