"""Amazon product reviews, 2014 (McAuley et al.) and 2018 (Ni et al.) releases, from local files.

Where the files come from:
- 2014: http://jmcauley.ucsd.edu/data/amazon/index_2014.html (per-category files).
- 2018: https://nijianmo.github.io/amazon/index.html (per-category files).

The path is one interaction file, or a folder holding exactly one. The file name says which
release and kind it is (a trailing ``.gz`` is allowed on every name; whether a file is gzipped
is told from its first bytes, not its name):

- ``reviews_<Category>_5.json`` (2014 5-core) or ``reviews_<Category>.json`` (2014 full):
  one review per line, a JSON object (a Python dict literal is accepted too, as the 2014 pages
  read the files with ``eval``) with at least ``reviewerID`` (user), ``asin`` (item) and
  ``unixReviewTime`` (integer seconds). Every other field (review text, ...) is dropped as the
  line is read, so memory holds only the three fields.
- ``ratings_<Category>.csv`` (2014 ratings only): no header, ``user,item,rating,timestamp``.
- ``<Category>_5.json`` or ``<Category>.json`` (2018 5-core / full reviews): as 2014's reviews.
- ``<Category>.csv`` (2018 ratings only): no header, ``item,user,rating,timestamp`` (item first:
  the 2018 release lists "(item,user,rating,timestamp) tuples").

Item categories come from the optional ``meta_<Category>.json`` beside that file (same
``<Category>``), one product per line:
- 2014: Python dict literals; ``categories`` is a list of category paths (lists from the
  top-level group down), e.g. ``[["Books", "Literature & Fiction", "Poetry"], ["Books"]]``.
- 2018: JSON objects; ``category`` is one path, e.g. ``["Books", "Literature & Fiction"]``.
An item's category is the most specific (last non-empty) entry of its first path; an item with
no path, or with no metadata line, gets no category. When an ``asin`` appears on several lines
the first wins. Both releases carry no user attributes.

Implicit feedback: every review or rating is one interaction; the rating is checked to be a
number and ignored. Events keep file order.

The line readers are in ``records`` (shared with ``steam`` and ``lastfm``).
"""
from __future__ import annotations

import csv
import re
from array import array
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from tff_rec.data.errors import DataError, missing_data_error
from tff_rec.data.records import (
    IdCodes,
    clip,
    coded_events,
    is_gzip,
    item_category_series,
    numbered_lines,
    parse_record,
    str_id,
)
from tff_rec.data.tables import is_int64, is_number
from tff_rec.data.types import Interactions

PathLike = Union[str, Path]

NAME = "amazon"
REVIEW_FIELDS = ("reviewerID", "asin", "unixReviewTime")
CSV_FIELDS = {"2014": ("user", "item", "rating", "timestamp"),
              "2018": ("item", "user", "rating", "timestamp")}
# (release, kind, pattern) in the order they are tried on a file name without its ".gz".
_NAME_PATTERNS = (
    ("2014", "reviews", re.compile(r"reviews_(?P<category>.+?)(?:_5)?\.json")),
    ("2014", "ratings", re.compile(r"ratings_(?P<category>.+)\.csv")),
    ("2018", "reviews", re.compile(r"(?P<category>.+?)(?:_5)?\.json")),
    ("2018", "ratings", re.compile(r"(?P<category>.+)\.csv")),
)


# --- Amazon -----------------------------------------------------------------------------


def load_amazon(path: Optional[PathLike]) -> Interactions:
    """Amazon reviews or ratings (2014 or 2018 release, told from the file name)."""
    file, release, kind, category = find_file(path)
    what = f"Amazon {release} {kind} file, detected from its name"
    if kind == "reviews":
        events = _read_reviews(file, what)
    else:
        events = _read_ratings_csv(file, CSV_FIELDS[release], what)
    meta = _meta_file(file.parent, category)
    categories = _read_meta(meta, release) if meta is not None else None
    return Interactions(events=events, item_categories=categories)


def detect(name: str) -> Optional[tuple[str, str, str]]:
    """(release, kind, category) of an Amazon interaction file name, or None."""
    stem = name[:-3] if name.endswith(".gz") else name
    if stem.startswith("meta_"):
        return None
    for release, kind, pattern in _NAME_PATTERNS:
        match = pattern.fullmatch(stem)
        if match:
            return release, kind, match.group("category")
    return None


def find_file(path: Optional[PathLike]) -> tuple[Path, str, str, str]:
    """The interaction file (``path`` or the one in folder ``path``) and what it is."""
    expected = (
        "an Amazon reviews or ratings file (2014: reviews_<Category>_5.json[.gz] or "
        "ratings_<Category>.csv[.gz]; 2018: <Category>_5.json[.gz] or <Category>.csv[.gz]), "
        "or a folder holding exactly one, with meta_<Category>.json[.gz] optional"
    )
    if path is not None:
        given = Path(path).expanduser()
        if given.is_file():
            found = detect(given.name)
            if found is None:
                raise DataError(
                    f"{NAME}: cannot tell the release of {given} from its name; expected "
                    f"{expected}"
                )
            return (given, *found)
        if given.is_dir():
            candidates = sorted(
                (child, *found)
                for child in given.iterdir()
                if child.is_file() and (found := detect(child.name)) is not None
            )
            if len(candidates) == 1:
                return candidates[0]
            if len(candidates) > 1:
                names = ", ".join(child.name for child, *_ in candidates)
                raise DataError(
                    f"{NAME}: {given} holds several interaction files ({names}); "
                    f"point --path at one of them"
                )
    raise missing_data_error(
        NAME, None if path is None else Path(path), expected, downloadable=False
    )


def _meta_file(folder: Path, category: str) -> Optional[Path]:
    for name in (f"meta_{category}.json", f"meta_{category}.json.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_reviews(path: Path, what: str) -> pd.DataFrame:
    """Reviews, one JSON object per line; only reviewerID, asin and unixReviewTime are kept."""
    users, items, times = IdCodes(), IdCodes(), array("q")
    expected = (
        f"a JSON object with 'reviewerID', 'asin' and 'unixReviewTime' ({what})"
    )
    for number, text in numbered_lines(path):
        record = parse_record(path, number, text, literal=False, what=expected)
        user, item = str_id(record.get("reviewerID")), str_id(record.get("asin"))
        time = record.get("unixReviewTime")
        for field, value in (("reviewerID", user), ("asin", item)):
            if value is None:
                found = f"'{record[field]}'" if field in record else "none"
                raise DataError(
                    f"{path}:{number}: expected {expected}; found {field} {found}"
                )
        if isinstance(time, bool) or not isinstance(time, int):
            found = repr(time) if "unixReviewTime" in record else "none"
            raise DataError(
                f"{path}:{number}: expected {expected}, unixReviewTime an integer; found {found}"
            )
        users.add(user)
        items.add(item)
        times.append(time)
    return coded_events(users, items, times)


def _read_ratings_csv(path: Path, fields: Sequence[str], what: str) -> pd.DataFrame:
    """A headerless ratings CSV: ids as str, the rating a number, the timestamp an integer."""
    try:
        table = pd.read_csv(
            path,
            header=None,
            names=list(fields),
            dtype={"user": "category", "item": "category", "rating": np.float64,
                   "timestamp": np.int64},
            quoting=csv.QUOTE_NONE,
            compression="gzip" if is_gzip(path) else None,
            keep_default_na=False,
            na_values={"user": [""], "item": [""]},
            engine="c",
        )
        bad = table["user"].isna() | table["item"].isna()
    except (ValueError, OverflowError) as error:
        _raise_first_bad_csv_line(path, fields, what)
        raise DataError(f"{path}: could not be read as {what} ({error})") from None
    if bad.any():
        _raise_first_bad_csv_line(path, fields, what)
    return pd.DataFrame(
        {
            "user": _str_categories(table["user"]),
            "item": _str_categories(table["item"]),
            "timestamp": table["timestamp"].to_numpy(dtype=np.int64),
        }
    )


def _str_categories(column: pd.Series) -> pd.Categorical:
    values = column.array
    return pd.Categorical.from_codes(
        values.codes, categories=pd.Index([str(c) for c in values.categories], dtype=object)
    )


def _raise_first_bad_csv_line(path: Path, fields: Sequence[str], what: str) -> None:
    layout = f"{len(fields)} comma-separated fields '{' '.join(fields)}' ({what})"
    for number, text in numbered_lines(path):
        values = text.split(",")
        if len(values) != len(fields):
            raise DataError(f"{path}:{number}: expected {layout}, found {len(values)}")
        for name, value in zip(fields, values):
            if name in ("user", "item") and not value.strip():
                raise DataError(f"{path}:{number}: expected a non-empty {name} id ({what})")
            if name == "rating" and not is_number(value):
                raise DataError(f"{path}:{number}: expected a number rating, found '{value}'")
            if name == "timestamp" and not is_int64(value):
                raise DataError(
                    f"{path}:{number}: expected an integer timestamp, found '{value}'"
                )


def _read_meta(path: Path, release: str) -> pd.Series:
    """asin → most specific category of the first path (see the module docstring)."""
    field = "categories" if release == "2014" else "category"
    shape = "a list of lists of strings" if release == "2014" else "a list of strings"
    expected = f"a product record with 'asin' and an optional '{field}' (Amazon {release} metadata)"
    categories: dict[str, str] = {}
    seen: set[str] = set()
    for number, text in numbered_lines(path):
        record = parse_record(path, number, text, literal=release == "2014", what=expected)
        item = str_id(record.get("asin"))
        if item is None:
            found = f"'{record['asin']}'" if "asin" in record else "none"
            raise DataError(f"{path}:{number}: expected {expected}; found asin {found}")
        value = record.get(field, [])
        paths = value if release == "2014" else [value]
        if not isinstance(value, list) or not all(
            isinstance(entries, list) and all(isinstance(entry, str) for entry in entries)
            for entries in paths
        ):
            raise DataError(
                f"{path}:{number}: expected '{field}' to be {shape}, found {clip(repr(value))}"
            )
        named = [entry for entry in (paths[0] if paths else []) if entry.strip()]
        if named and item not in seen:
            categories[item] = named[-1]
        seen.add(item)
    return item_category_series(categories)
