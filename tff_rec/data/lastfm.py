"""Last.fm 1K (Celma, 2010): the full listening histories of ~1,000 users, from local files.

Where the files come from: ``lastfm-dataset-1K.tar.gz`` from
http://ocelma.net/MusicRecommendationDataset/lastfm-1K.html; it unpacks to
``lastfm-dataset-1K/`` with the two files below (either may be gzipped; told from the bytes).

The path is the listening file itself (any name), a folder holding it, or the folder holding
``lastfm-dataset-1K/``.

- ``userid-timestamp-artid-artname-traid-traname.tsv``: UTF-8, tab-separated, no header, no
  quoting, 6 fields per line: user id, timestamp (``2009-05-04T23:08:57Z``, UTC), artist
  MusicBrainz id, artist name, track MusicBrainz id, track name; ids may be empty.
  Item: the track id when present; a line without one falls back to the item
  ``"<artist name> - <track name>"`` (about a tenth of the lines have no track id); a line
  with neither a track id nor both names is an error. Timestamps are seconds since the epoch.
  The file lists each user's plays newest first, so the events are returned in reverse file
  order: oldest first, and plays with equal timestamps keep their chronological order.
- Optional ``userid-profile.tsv``: header ``#id	gender	age	country	registered``, then tab-
  separated lines. User attributes ``gender`` ('m'/'f'), ``age`` and ``country``, as strings;
  an empty field becomes ``preprocess.UNKNOWN_CATEGORY``. ``registered`` is not kept.

Categories: none (the release has no genres or tags), so ``item_categories`` is None.
"""
from __future__ import annotations

import datetime
import re
from array import array
from pathlib import Path
from typing import Optional, Union

import pandas as pd

from tff_rec.data.errors import DataError, missing_data_error
from tff_rec.data.preprocess import UNKNOWN_CATEGORY
from tff_rec.data.records import IdCodes, beside, clip, coded_events, numbered_lines
from tff_rec.data.types import Interactions

PathLike = Union[str, Path]

NAME = "lastfm-1k"
PLAYS = "userid-timestamp-artid-artname-traid-traname.tsv"
PROFILES = "userid-profile.tsv"
SUBFOLDER = "lastfm-dataset-1K"
PLAY_FIELDS = ("userid", "timestamp", "artid", "artname", "traid", "traname")
PROFILE_HEADER = ("#id", "gender", "age", "country", "registered")
USER_ATTRIBUTES = ("gender", "age", "country")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_EPOCH = datetime.date(1970, 1, 1)


def load_lastfm_1k(path: Optional[PathLike]) -> Interactions:
    """Last.fm 1K plays with optional user profiles (see the module docstring)."""
    plays = _find(path)
    profiles = beside(plays.parent, PROFILES)
    return Interactions(
        events=_read_plays(plays),
        user_attributes=_read_profiles(profiles) if profiles is not None else None,
    )


def _find(path: Optional[PathLike]) -> Path:
    if path is not None:
        given = Path(path).expanduser()
        if given.is_file():
            return given
        for folder in (given, given / SUBFOLDER):
            if folder.is_dir() and (found := beside(folder, PLAYS)) is not None:
                return found
    raise missing_data_error(
        NAME,
        None if path is None else Path(path),
        f"{PLAYS}[.gz] or a folder holding it ({PROFILES} optional), or a folder holding "
        f"{SUBFOLDER}/",
        downloadable=False,
    )


def _read_plays(path: Path) -> pd.DataFrame:
    users, items, times = IdCodes(), IdCodes(), array("q")
    days: dict[str, int] = {}
    layout = f"6 tab-separated fields '{' '.join(PLAY_FIELDS)}'"
    for number, text in numbered_lines(path):
        values = text.split("\t")
        if len(values) != len(PLAY_FIELDS):
            raise DataError(f"{path}:{number}: expected {layout}, found {len(values)}")
        user, stamp, _, artist, track_id, track = values
        if not user:
            raise DataError(f"{path}:{number}: expected a user id, found an empty field")
        if not _TIMESTAMP.fullmatch(stamp):
            raise DataError(
                f"{path}:{number}: expected a timestamp 'YYYY-MM-DDTHH:MM:SSZ', found '{clip(stamp)}'"
            )
        day = days.get(stamp[:10])
        if day is None:
            try:
                day = (datetime.date.fromisoformat(stamp[:10]) - _EPOCH).days
            except ValueError:
                raise DataError(
                    f"{path}:{number}: expected a timestamp 'YYYY-MM-DDTHH:MM:SSZ', found '{stamp}'"
                ) from None
            days[stamp[:10]] = day
        hours, minutes, seconds = int(stamp[11:13]), int(stamp[14:16]), int(stamp[17:19])
        if hours > 23 or minutes > 59 or seconds > 60:
            raise DataError(
                f"{path}:{number}: expected a timestamp 'YYYY-MM-DDTHH:MM:SSZ', found '{stamp}'"
            )
        if track_id:
            item = track_id
        elif artist and track:
            item = f"{artist} - {track}"
        else:
            raise DataError(
                f"{path}:{number}: expected a track id (field 5) or both an artist name and a "
                f"track name (fields 4 and 6), found none"
            )
        users.add(user)
        items.add(item)
        times.append(day * 86_400 + hours * 3_600 + minutes * 60 + seconds)
    return coded_events(users, items, times, reverse=True)


def _read_profiles(path: Path) -> pd.DataFrame:
    rows: dict[str, list[str]] = {}
    header = "\t".join(PROFILE_HEADER)
    first = True
    for number, text in numbered_lines(path):
        values = text.split("\t")
        if first:
            if values != list(PROFILE_HEADER):
                raise DataError(f"{path}:{number}: expected the header '{header}', found '{text}'")
            first = False
            continue
        if len(values) != len(PROFILE_HEADER):
            raise DataError(
                f"{path}:{number}: expected 5 tab-separated fields "
                f"'{' '.join(PROFILE_HEADER)}', found {len(values)}"
            )
        if not values[0]:
            raise DataError(f"{path}:{number}: expected a user id, found an empty field")
        rows.setdefault(values[0], [value or UNKNOWN_CATEGORY for value in values[1:4]])
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(USER_ATTRIBUTES), dtype=str)
    frame.index.name = "user"
    return frame

