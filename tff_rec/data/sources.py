"""The registry of dataset sources: which names exist, what each needs, which params it takes."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from tff_rec import plugins
from tff_rec.data import amazon, lastfm, movielens, sequence_file, steam, synthetic
from tff_rec.data.errors import DataError
from tff_rec.data.types import Interactions


@dataclasses.dataclass(frozen=True)
class Source:
    """One dataset source.

    loader: called as ``loader(path, **params)`` when ``needs_path``, else ``loader(**params)``.
    params: every parameter the source accepts, with its default (all are integers).
    param_help: one line per parameter (`tff-rec tasks schema`).
    check: ``check(**params)`` → (parameter, what is wrong) or None: range checks a task file's
      values get at load, before anything is generated or read.
    min_interactions: the default k-core (users, items) of ``data.min_user_interactions`` and
      ``data.min_item_interactions``: 5/5 for raw logs, 0/0 for files that were filtered already
      (filtering them again would silently change the published dataset).
    """

    name: str
    loader: Callable[..., Interactions]
    needs_path: bool
    description: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    param_help: Mapping[str, str] = dataclasses.field(default_factory=dict)
    check: Optional[Callable[..., Optional[tuple[str, str]]]] = None
    min_interactions: tuple[int, int] = (5, 5)


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            "synthetic",
            synthetic.generate,
            needs_path=False,
            description="generated log with group tastes and item-to-item transitions",
            params={"seed": 0, **synthetic.DEFAULT_SIZES},
            param_help={
                "seed": "seed of the generated log (not the task seed)", "users": "users",
                "items": "catalogue size", "mean_length": "mean interactions per user",
                "categories": "item categories", "groups": "user taste groups",
            },
            check=lambda seed, **sizes: (
                ("seed", f"must be at least 0, found {seed}") if seed < 0
                else synthetic.size_problem(**sizes)
            ),
        ),
        Source(
            "movielens-100k",
            movielens.load_100k,
            needs_path=True,
            description="MovieLens 100K folder (u.data, u.item, u.genre, u.user)",
        ),
        Source(
            "movielens-1m",
            movielens.load_1m,
            needs_path=True,
            description="MovieLens 1M folder (ratings.dat, movies.dat, users.dat)",
        ),
        Source(
            "movielens-20m",
            movielens.load_20m,
            needs_path=True,
            description="MovieLens 20M or latest folder (ratings.csv, movies.csv)",
        ),
        Source(
            "sequences",
            sequence_file.load_sequences,
            needs_path=True,
            description="text file of 'user item' lines in time order (SASRec/BERT4Rec data)",
            min_interactions=(0, 0),  # the SASRec/BERT4Rec files are published already filtered
        ),
        *(
            Source(
                f"sasrec-{name}",
                sequence_file.load_sequences,
                needs_path=True,
                description=f"the SASRec authors' {title} file (data/{file} of kang205/SASRec): "
                "a sequence file, used as published",
                min_interactions=(0, 0),
            )
            for name, title, file in (
                ("games", "Amazon Games", "Video.txt"),
                ("beauty", "Amazon Beauty", "Beauty.txt"),
                ("steam", "Steam", "Steam.txt"),
                ("ml-1m", "MovieLens-1M", "ml-1m.txt"),
            )
        ),
        Source(
            "amazon",
            amazon.load_amazon,
            needs_path=True,
            description="Amazon reviews 2014/2018: reviews_<Cat>_5.json[.gz], ratings_<Cat>.csv, "
            "<Cat>_5.json[.gz] or <Cat>.csv (file or folder; meta_<Cat>.json[.gz] optional)",
        ),
        Source(
            "steam",
            steam.load_steam,
            needs_path=True,
            description="Steam reviews (SASRec data): steam_reviews.json[.gz], "
            "steam_games.json[.gz] optional",
        ),
        Source(
            "lastfm-1k",
            lastfm.load_lastfm_1k,
            needs_path=True,
            description="Last.fm 1K: userid-timestamp-artid-artname-traid-traname.tsv, "
            "userid-profile.tsv optional",
        ),
    )
}


def get_source(name: str) -> Source:
    """The registered source called ``name``."""
    if name not in SOURCES and not plugins.lookup("tff_rec.datasets", name):
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(SOURCES)}")
    return SOURCES[name]


def default_min_interactions(name: str) -> tuple[int, int]:
    """(users, items): the k-core dataset ``name`` gets when the task sets none."""
    return get_source(name).min_interactions


def source_params(name: str) -> dict[str, Any]:
    """The parameters dataset ``name`` accepts, with their defaults."""
    return dict(get_source(name).params)


def param_problem(name: str, params: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    """(parameter, what is wrong) for the first out-of-range parameter of dataset ``name``, or
    None; ``params`` are complete (defaults filled in) and of the right types."""
    source = get_source(name)
    return source.check(**params) if source.check is not None else None


def load(
    name: str,
    path: Optional[Union[str, Path]] = None,
    params: Optional[Mapping[str, Any]] = None,
) -> Interactions:
    """Load dataset ``name``: from ``path`` when it needs one, with ``params`` over its defaults."""
    source = get_source(name)
    params = params or {}
    unknown = sorted(set(params) - set(source.params))
    if unknown:
        allowed = ", ".join(source.params) or "none"
        raise DataError(f"{name}: unknown parameter(s) {', '.join(unknown)}; allowed: {allowed}")
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise DataError(f"{name}: parameter {key} must be an integer, found {value!r}")
    arguments = {**source.params, **params}
    problem = param_problem(name, arguments)
    if problem is not None:
        raise DataError(f"{name}: {problem[0]} {problem[1]}")
    if not source.needs_path:
        if path is not None:
            raise DataError(f"{name}: takes no path (it is generated), found {path}")
        return source.loader(**arguments)
    interactions = source.loader(path, **arguments)
    if interactions.events.empty:
        raise DataError(f"{name}: {path} holds no interactions (an empty file?)")
    return interactions
