"""Reading delimited text files with exact error locations.

Large rating logs go through pandas' C parser; only when it fails does a line-by-line scan
run, to name the first bad line. Small metadata files are read line by line with ``lines``.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from tff_rec.data.errors import DataError

WHITESPACE = None  # separator value meaning "runs of spaces/tabs", as in str.split()

_SEPARATOR_NAMES = {"\t": "tab", ",": "comma", "|": "'|'", "::": "'::'"}
_UNIT_SEPARATOR = "\x1f"  # stands in for multi-character separators so the C parser can run


def describe_layout(sep: Optional[str], fields: Sequence[str]) -> str:
    """E.g. "4 tab-separated fields 'user item rating timestamp'"."""
    kind = "whitespace" if sep is WHITESPACE else _SEPARATOR_NAMES.get(sep, repr(sep))
    return f"{len(fields)} {kind}-separated fields '{' '.join(fields)}'"


def split_line(text: str, sep: Optional[str]) -> list[str]:
    """Fields of one line (without its line break)."""
    return text.split() if sep is WHITESPACE else text.split(sep)


def lines(path: Path, encoding: str, skip_header: bool = False) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without line break) for each non-blank line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}:{number}: expected {encoding} text ({error.reason})"
                ) from None
            if (skip_header and number == 1) or not text.strip():
                continue
            yield number, text


def check_encoding(path: Path, encoding: str) -> None:
    """Raise DataError naming the first line of ``path`` that is not valid ``encoding``."""
    for _ in lines(path, encoding):
        pass


def check_header(path: Path, header: Sequence[str], sep: str, encoding: str) -> None:
    """Raise unless the first non-blank line of a CSV file holds exactly the names ``header``."""
    number, text = next(lines(path, encoding), (1, ""))
    names = [name.strip() for name in next(csv.reader([text]), [])]
    if names != list(header):
        raise DataError(
            f"{path}:{number}: expected the header '{sep.join(header)}', found '{text}'"
        )


def read_int_table(
    path: Path,
    sep: Optional[str],
    fields: Sequence[str],
    keep: Sequence[str],
    encoding: str = "utf-8",
    header: bool = False,
) -> pd.DataFrame:
    """Read a delimited file of numbers: int64 columns ``keep``; the other fields must be numbers.

    Blank lines are skipped. A line with the wrong number of fields, a non-integer in a kept
    column or a non-number elsewhere raises DataError naming ``path:line``.
    """
    if header:
        check_header(path, fields, sep, encoding)
    source: object = path
    if sep is not WHITESPACE and len(sep) > 1:
        source = io.StringIO(_read_text(path, encoding).replace(sep, _UNIT_SEPARATOR))
    try:
        table = pd.read_csv(
            source,
            sep=r"\s+" if sep is WHITESPACE else _UNIT_SEPARATOR if len(sep) > 1 else sep,
            header=None,
            skiprows=1 if header else 0,
            names=list(fields),
            dtype={name: np.int64 if name in keep else np.float64 for name in fields},
            encoding=encoding,
            quoting=csv.QUOTE_NONE,
            engine="c",
        )
    except (ValueError, OverflowError) as error:  # ParserError and UnicodeDecodeError included
        _raise_first_bad_line(path, sep, fields, keep, encoding, header)
        raise DataError(
            f"{path}: could not be read as {describe_layout(sep, fields)}: {error}"
        ) from None
    return table[list(keep)]


def _read_text(path: Path, encoding: str) -> str:
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError:
        check_encoding(path, encoding)
        raise


def _raise_first_bad_line(
    path: Path,
    sep: Optional[str],
    fields: Sequence[str],
    keep: Sequence[str],
    encoding: str,
    header: bool,
) -> None:
    """Scan line by line and raise DataError for the first malformed line, if any."""
    for number, text in lines(path, encoding, skip_header=header):
        values = split_line(text, sep)
        if len(values) != len(fields):
            raise DataError(
                f"{path}:{number}: expected {describe_layout(sep, fields)}, found {len(values)}"
            )
        for name, value in zip(fields, values):
            if not (is_int64(value) if name in keep else is_number(value)):
                kind = "an integer" if name in keep else "a number"
                raise DataError(f"{path}:{number}: expected {kind} {name}, found '{value}'")


def is_int64(text: str) -> bool:
    try:
        return -(2**63) <= int(text) < 2**63
    except ValueError:
        return False


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
