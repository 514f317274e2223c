"""The registry of dataset sources (`SOURCES`): which names exist, what each needs, which params
it takes (`tff_rec.registry`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

from tff_rec.data import amazon, lastfm, movielens, sequence_file, steam, synthetic
from tff_rec.data.errors import DataError
from tff_rec.data.types import Interactions
from tff_rec.params import Param
from tff_rec.registry import Registry


@dataclasses.dataclass(frozen=True)
class Source:
    """One dataset source.

    loader: called as ``loader(path, **params)`` when ``needs_path``, else ``loader(**params)``.
    params: the keys it adds to [data] (`tff_rec.params.Param`), checked at task load.
    check: ``check(**params)`` → (parameter, what is wrong) or None: the rules between its
      parameters, checked at load too, before anything is generated or read.
    min_interactions: the default k-core (users, items) of ``data.min_user_interactions`` and
      ``data.min_item_interactions``: 5/5 for raw logs, 0/0 for files that were filtered already
      (filtering them again would silently change the published dataset).
    """

    name: str
    loader: Callable[..., Interactions]
    needs_path: bool
    description: str
    params: tuple[Param, ...] = ()
    check: Optional[Callable[..., Optional[tuple[str, str]]]] = None
    min_interactions: tuple[int, int] = (5, 5)


SOURCES: Registry[Source] = Registry(
    "dataset", "data.dataset", group="tff_rec.datasets", error=DataError, entries=(
        Source(
            "synthetic",
            synthetic.generate,
            needs_path=False,
            description="generated log with group tastes and item-to-item transitions",
            params=synthetic.PARAMS,
            check=lambda seed, **sizes: synthetic.size_problem(**sizes),
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
    ),
)


def get_source(name: str) -> Source:
    """The registered source called ``name`` (DataError listing the known ones)."""
    return SOURCES.entry(name)


def default_min_interactions(name: str) -> tuple[int, int]:
    """(users, items): the k-core dataset ``name`` gets when the task sets none."""
    return get_source(name).min_interactions


def source_params(name: str) -> dict[str, Any]:
    """The parameters dataset ``name`` accepts, with their defaults."""
    return SOURCES.defaults(name)


def param_problem(name: str, params: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    """(parameter, what is wrong) for the first bad parameter of dataset ``name``, or None:
    the declarations first, then the rules between them. ``params`` may leave defaults out."""
    source = get_source(name)  # an unknown name: DataError
    try:
        arguments = SOURCES.validate(name, params)
    except ValueError as error:  # "data.users must be ..." → ("users", "must be ...")
        key, text = str(error).split(" ", 1)
        return key.split(".", 1)[1], text
    return source.check(**arguments) if source.check is not None else None


def load(
    name: str,
    path: Optional[Union[str, Path]] = None,
    params: Optional[Mapping[str, Any]] = None,
) -> Interactions:
    """Load dataset ``name``: from ``path`` when it needs one, with ``params`` over its defaults."""
    source = get_source(name)
    problem = param_problem(name, params or {})
    if problem is not None:
        raise DataError(f"{name}: {problem[0]} {problem[1]}")
    arguments = {**source_params(name), **(params or {})}
    if not source.needs_path:
        if path is not None:
            raise DataError(f"{name}: takes no path (it is generated), found {path}")
        return source.loader(**arguments)
    interactions = source.loader(path, **arguments)
    if interactions.events.empty:
        raise DataError(f"{name}: {path} holds no interactions (an empty file?)")
    return interactions
