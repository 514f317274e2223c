"""The data stage: load a source, filter it into sequences, split it leave-one-out.

    interactions = load("movielens-1m", "/data/ml-1m", {})
    data = to_sequences(interactions, min_user_interactions=5, min_item_interactions=5)
    split = leave_one_out(data)

``info.info`` (load + filter + describe) and ``download.download`` stay in their modules, so
``from tff_rec.data import info, download`` gives those modules.
"""
from __future__ import annotations

import importlib
from typing import Any

# Name → the module that defines it. Imported on first use (PEP 562), so that importing one
# light module of the package (e.g. ``tff_rec.data.errors`` for the CLI) does not load pandas,
# numba and every loader.
_EXPORTS = {
    "DataError": "errors",
    "describe": "info",
    "format_info": "info",
    "to_sequences": "preprocess",
    "SOURCES": "sources",
    "Source": "sources",
    "load": "sources",
    "source_params": "sources",
    "leave_one_out": "split",
    "generate": "synthetic",
    "PADDING_ITEM": "types",
    "Interactions": "types",
    "LeaveOneOutSplit": "types",
    "SequenceData": "types",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = [
    "DataError",
    "Interactions",
    "LeaveOneOutSplit",
    "PADDING_ITEM",
    "SOURCES",
    "SequenceData",
    "Source",
    "describe",
    "format_info",
    "generate",
    "leave_one_out",
    "load",
    "source_params",
    "to_sequences",
]
