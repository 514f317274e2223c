"""Seed derivation: one task seed derives the seed of every stochastic stage.

derive(task_seed, stage) = first 31 bits of SHA-256("tff-rec/<task_seed>/<stage>"). Stages are
independent streams: changing how one stage draws numbers never shifts another's. Per-round streams
(client sampling, evaluation negatives) add the round number, so a resumed run draws exactly what
an uninterrupted one would have.
"""
from __future__ import annotations

import hashlib

import numpy as np

STAGES = (
    "partition", "init", "sampling", "dp-noise", "evaluation", "centralized", "examples",
    "validation_users",
)


def derive(task_seed: int, stage: str) -> int:
    """A 31-bit seed for `stage`, fixed by the task seed."""
    if stage not in STAGES:
        raise ValueError(f"unknown seed stage {stage!r}; known: {', '.join(STAGES)}")
    digest = hashlib.sha256(f"tff-rec/{task_seed}/{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def round_rng(task_seed: int, stage: str, round_number: int) -> np.random.Generator:
    """A NumPy generator for one round of a per-round stage."""
    return np.random.default_rng([derive(task_seed, stage), round_number])
