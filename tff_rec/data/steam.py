"""Steam reviews, the data SASRec (Kang & McAuley, 2018) evaluates on, from local files.

Where the files come from: the Steam datasets of the McAuley lab
(https://cseweb.ucsd.edu/~jmcauley/datasets.html#steam_data, "Version 2: Review Data" and
"Item metadata"; Pathak, Gupta & McAuley, SIGIR 2017; Wan & McAuley, RecSys 2018).

The path is ``steam_reviews.json[.gz]`` itself (any name is accepted for a file), or a folder
holding it. Gzip is told from the file's first bytes.

- ``steam_reviews.json.gz``: one review per line, a Python dict literal (single quotes,
  ``True``/``False``; read with ``ast.literal_eval``, not JSON) with at least ``username``
  (user), ``product_id`` (item, a string of digits) and ``date`` (``'YYYY-MM-DD'``). Other
  fields (text, hours, ...) are dropped as the line is read.
  Timestamp: seconds since 1970-01-01 UTC at midnight of ``date``; many reviews of one user
  share a day, and those ties keep file order (see ``preprocess``).
- Optional ``steam_games.json[.gz]`` beside it: one game per line, a Python dict literal with
  ``id`` (the reviews' ``product_id``) and ``genres`` (list of str). An item's category is its
  first genre; a game without genres, or a review's item without a game line, gets none. Game
  lines without an ``id`` (the release has a few) cannot be matched to reviews and are skipped;
  a repeated ``id`` keeps its first line.

There are no user attributes. Reading is one ``ast.literal_eval`` per line, so the full
7.8M-review file takes minutes.
"""
from __future__ import annotations

import datetime
import re
from array import array
from pathlib import Path
from typing import Any, Optional, Union

import pandas as pd

from tff_rec.data.errors import DataError, missing_data_error
from tff_rec.data.records import (
    IdCodes,
    beside,
    clip,
    coded_events,
    item_category_series,
    numbered_lines,
    parse_record,
    str_id,
)
from tff_rec.data.types import Interactions

PathLike = Union[str, Path]

NAME = "steam"
REVIEWS = "steam_reviews.json"
GAMES = "steam_games.json"
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_EPOCH = datetime.date(1970, 1, 1)
_SECONDS_PER_DAY = 86_400


def load_steam(path: Optional[PathLike]) -> Interactions:
    """Steam reviews with optional game genres (see the module docstring)."""
    reviews = _find(path)
    games = beside(reviews.parent, GAMES)
    return Interactions(
        events=_read_reviews(reviews),
        item_categories=_read_games(games) if games is not None else None,
    )


def _find(path: Optional[PathLike]) -> Path:
    if path is not None:
        given = Path(path).expanduser()
        if given.is_file():
            return given
        if given.is_dir() and (found := beside(given, REVIEWS)) is not None:
            return found
    raise missing_data_error(
        NAME,
        None if path is None else Path(path),
        f"{REVIEWS}[.gz] (Python dict lines with 'username', 'product_id', 'date'), or a "
        f"folder holding it ({GAMES}[.gz] optional)",
        downloadable=False,
    )


def _read_reviews(path: Path) -> pd.DataFrame:
    users, items, times = IdCodes(), IdCodes(), array("q")
    days: dict[str, int] = {}
    expected = "a Python dict with 'username', 'product_id' and 'date' (Steam reviews)"
    for number, text in numbered_lines(path):
        record = parse_record(path, number, text, literal=True, what=expected)
        user, item = str_id(record.get("username")), str_id(record.get("product_id"))
        for field, value in (("username", user), ("product_id", item)):
            if value is None:
                raise DataError(
                    f"{path}:{number}: expected {expected}; found {field} {_found(record, field)}"
                )
        date = record.get("date")
        day = days.get(date) if isinstance(date, str) else None
        if day is None:
            day = days[date] = _day(path, number, date, record)
        users.add(user)
        items.add(item)
        times.append(day * _SECONDS_PER_DAY)
    return coded_events(users, items, times)


def _day(path: Path, number: int, date: Any, record: dict) -> int:
    """Days since 1970-01-01 of a 'YYYY-MM-DD' date."""
    if isinstance(date, str) and _DATE.fullmatch(date):
        try:
            return (datetime.date.fromisoformat(date) - _EPOCH).days
        except ValueError:
            pass
    raise DataError(
        f"{path}:{number}: expected a date 'YYYY-MM-DD' (Steam reviews); found date "
        f"{_found(record, 'date')}"
    )


def _found(record: dict, field: str) -> str:
    return clip(repr(record[field])) if field in record else "none"


def _read_games(path: Path) -> pd.Series:
    categories: dict[str, str] = {}
    seen: set[str] = set()
    expected = "a Python dict with 'id' and an optional 'genres' list (Steam games)"
    for number, text in numbered_lines(path):
        record = parse_record(path, number, text, literal=True, what=expected)
        if "id" not in record:
            continue
        item = str_id(record["id"])
        if item is None:
            raise DataError(f"{path}:{number}: expected {expected}; found id {_found(record, 'id')}")
        genres = record.get("genres", [])
        if not isinstance(genres, list) or not all(isinstance(g, str) for g in genres):
            raise DataError(
                f"{path}:{number}: expected 'genres' to be a list of strings, found "
                f"{_found(record, 'genres')}"
            )
        named = [genre for genre in genres if genre.strip()]
        if named and item not in seen:
            categories[item] = named[0]
        seen.add(item)
    return item_category_series(categories)
