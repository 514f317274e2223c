"""Line-oriented record files (JSON lines, Python-literal lines, text logs), plain or gzip.

What the Amazon, Steam and Last.fm loaders share: numbered lines for exact error locations,
one-record-per-line parsing, and compact coding of string ids into an ``Interactions`` log.
"""
from __future__ import annotations

import ast
import gzip
import json
from array import array
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from tff_rec.data.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    """Whether ``path`` is gzip-compressed (told from its first two bytes)."""
    with open(path, "rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def beside(folder: Path, name: str) -> Optional[Path]:
    """``folder/name`` or ``folder/name.gz``, whichever is a file (plain first), else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def numbered_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, text without line break) of each non-blank line; plain or gzip."""
    opener = gzip.open if is_gzip(path) else open
    with opener(path, "rb") as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode(encoding).rstrip("\r\n")
                except UnicodeDecodeError as error:
                    raise DataError(
                        f"{path}:{number}: expected {encoding} text ({error.reason})"
                    ) from None
                if text.strip():
                    yield number, text
        except (OSError, EOFError) as error:  # a truncated or corrupt gzip stream
            raise DataError(f"{path}: could not be read as gzip ({error})") from None


def parse_record(path: Path, number: int, text: str, literal: bool, what: str) -> dict:
    """One line as a dict: JSON first unless ``literal``, then a Python literal (``ast``)."""
    record: Any = None
    if not literal:
        try:
            record = json.loads(text)
        except ValueError:
            record = None
    if record is None:
        try:
            record = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            record = None
    if not isinstance(record, dict):
        raise DataError(
            f"{path}:{number}: expected {what} on one line, found '{clip(text)}'"
        )
    return record


class IdCodes:
    """str id → code 0, 1, ... in order of first appearance (keeps one copy of each id)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.column = array("q")

    def add(self, name: str) -> None:
        code = self.codes.get(name)
        if code is None:
            code = self.codes[name] = len(self.codes)
        self.column.append(code)

    def categorical(self, order: Optional[np.ndarray] = None) -> pd.Categorical:
        codes = np.frombuffer(self.column, dtype=np.int64) if len(self.column) else np.empty(0, np.int64)
        if order is not None:
            codes = codes[order]
        return pd.Categorical.from_codes(codes, categories=pd.Index(list(self.codes), dtype=object))


def coded_events(
    users: IdCodes, items: IdCodes, timestamps: Sequence[int], reverse: bool = False
) -> pd.DataFrame:
    """An ``Interactions.events`` frame (str categoricals, int64 timestamps), rows reversed
    when ``reverse``."""
    times = np.asarray(timestamps, dtype=np.int64)
    order = np.arange(len(times))[::-1] if reverse else None
    return pd.DataFrame(
        {
            "user": users.categorical(order),
            "item": items.categorical(order),
            "timestamp": times[::-1] if reverse else times,
        }
    )


def item_category_series(categories: dict[str, str]) -> pd.Series:
    """item id → category, as ``Interactions.item_categories``."""
    series = pd.Series(categories, dtype=object, name="category")
    series.index.name = "item"
    return series


def clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def str_id(value: Any) -> Optional[str]:
    """A non-empty id given as a string or an integer, as str; else None."""
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
