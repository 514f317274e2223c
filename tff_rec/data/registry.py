"""The real-data files the suite knows: where to get each, its checksum, and where it goes.

One table, ``REGISTRY``, keyed by a stable name (the name ``tff-rec data download`` and
``tff-rec data verify`` take). Each entry is one published file, its checksum as a pooch
``known_hash`` string (``md5:…`` or ``sha256:…``), and its place in the *data directory*: the
folder ``tff-rec data download`` fills, and the one the environment variable ``TFF_REC_DATA``
names. Layout of a data directory::

    $TFF_REC_DATA/ml-100k.zip, ml-100k/      movielens-100k  (u.data, u.item, ...)
    $TFF_REC_DATA/ml-1m.zip, ml-1m/          movielens-1m    (ratings.dat, movies.dat, users.dat)
    $TFF_REC_DATA/ml-20m.zip, ml-20m/        movielens-20m   (ratings.csv, movies.csv)
    $TFF_REC_DATA/ml-latest.zip, ml-latest/  movielens-latest (ratings.csv, movies.csv)
    $TFF_REC_DATA/sasrec/Video.txt           sasrec-games    (SASRec authors' "Games" file)
    $TFF_REC_DATA/sasrec/Beauty.txt          sasrec-beauty
    $TFF_REC_DATA/sasrec/Steam.txt           sasrec-steam
    $TFF_REC_DATA/sasrec/ml-1m.txt           sasrec-ml-1m

Archives stay next to their unzipped folder, so ``tff-rec data verify`` can check them later;
only the archive has a published checksum. Three SASRec files are pinned by the git blob id of
the authors' repository (its tree lists them) rather than by a SHA-256: nothing here could
read their bytes to compute one. ``tff-rec data verify`` prints a file's SHA-256 either way.

Sources whose files the registry cannot fetch still get a place (``LAYOUTS``)::

    $TFF_REC_DATA/steam/                     steam           (steam_reviews.json.gz, ...)
    $TFF_REC_DATA/lastfm-dataset-1K/         lastfm-1k       (userid-timestamp-...tsv, ...)

``default_path(dataset)`` is the one place a dataset without ``data.path`` gets its location:
``$TFF_REC_DATA/<layout>`` for a dataset named here (a source of the same name), else None.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Mapping, Optional

from tff_rec.data.errors import DataError

ENV = "TFF_REC_DATA"
DEFAULT_CACHE = Path.home() / ".cache" / "tff-rec"  # `data download` without --cache or ENV
MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/"
SASREC_COMMIT = "e3738967fddab206d6eeb4fda433e7a7034dd8b1"  # master; data/ as of 641c378 (2019)
SASREC_URL = f"https://raw.githubusercontent.com/kang205/SASRec/{SASREC_COMMIT}/data/"
CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Entry:
    """One published file and where it lives in a data directory.

    file: the file's place in the data directory (``ml-1m.zip``, ``sasrec/Video.txt``); its
      last component is its published name.
    known_hash: pooch's ``"md5:…"`` / ``"sha256:…"``, or None (see ``git_blob``, ``published_md5``).
    layout: what ``data.path`` points at, relative to the data directory: the unzipped folder
      of an archive, the file itself otherwise.
    source: the dataset source that loads it (``tff_rec.data.sources``).
    required: for an archive, the file its folder must hold once unzipped.
    git_blob: the upstream git blob id, when that is the only pin we have.
    published_md5: the checksum is read from ``{url}.md5`` at download (it changes over time).
    """

    name: str
    url: str
    file: str
    known_hash: Optional[str]
    layout: str
    source: str
    description: str
    required: Optional[str] = None
    git_blob: Optional[str] = None
    published_md5: bool = False

    @property
    def archive(self) -> bool:
        return self.required is not None


def _movielens(name: str, folder: str, required: str, md5: Optional[str], source: str) -> Entry:
    return Entry(
        name, f"{MOVIELENS_URL}{folder}.zip", f"{folder}.zip", md5 and f"md5:{md5}", folder, source,
        f"MovieLens {folder[3:].upper().replace('LATEST', 'latest')} (GroupLens), unzipped to "
        f"{folder}/", required=required,
        published_md5=md5 is None,
    )


def _sasrec(name: str, file: str, description: str, sha256: Optional[str], blob: str) -> Entry:
    return Entry(
        name, f"{SASREC_URL}{file}", f"sasrec/{file}", sha256 and f"sha256:{sha256}",
        f"sasrec/{file}", "sequences", f"SASRec authors' {description} (data/{file})",
        git_blob=blob,
    )


REGISTRY: dict[str, Entry] = {
    entry.name: entry
    for entry in (
        _movielens("movielens-100k", "ml-100k", "u.data", "0e33842e24a9c977be4e0107933c0723",
                   "movielens-100k"),
        _movielens("movielens-1m", "ml-1m", "ratings.dat", "c4d9eecfca2ab87c1945afe126590906",
                   "movielens-1m"),
        _movielens("movielens-20m", "ml-20m", "ratings.csv", "cd245b17a1ae2cc31bb14903e1204af3",
                   "movielens-20m"),
        _movielens("movielens-latest", "ml-latest", "ratings.csv", None, "movielens-20m"),
        _sasrec("sasrec-games", "Video.txt", "Amazon Games file",
                "b7376fe24430743f411dc7f567285657b2adb3f74361cc7ba0aee94f3024b651",
                "f576455c76008a2c02a178c9d4ee930be632af89"),
        _sasrec("sasrec-beauty", "Beauty.txt", "Amazon Beauty file", None,
                "cee2ab468d220772a9dfefed9aa9c492dc9b3418"),
        _sasrec("sasrec-steam", "Steam.txt", "Steam file", None,
                "a0e80e7ae37ef2cf9410daf23c3e28ea6f6c31b7"),
        _sasrec("sasrec-ml-1m", "ml-1m.txt", "MovieLens-1M file", None,
                "9ab8e3edb8742f8d8cc4911e3dee25e82a6fcc24"),
    )
}


# Datasets read from files the registry cannot fetch (no fixed URL or checksum): their place in a
# data directory only. (amazon has none: a data directory may hold several categories.)
LAYOUTS: dict[str, str] = {"steam": "steam", "lastfm-1k": "lastfm-dataset-1K"}


def get_entry(name: str) -> Entry:
    if name not in REGISTRY:
        raise DataError(f"cannot download {name!r}; downloadable: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def data_dir(environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """The data directory ``TFF_REC_DATA`` names, or None when it is unset or empty."""
    root = (os.environ if environ is None else environ).get(ENV, "")
    return Path(root).expanduser() if root else None


def default_path(dataset: str, environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """Where dataset ``dataset`` is read from when no path is given: ``$TFF_REC_DATA/<layout>``
    for a dataset named in the registry, else None (TFF_REC_DATA unset, or a dataset such as
    ``synthetic`` or ``sequences`` that has no one place)."""
    root, place = data_dir(environ), layout(dataset)
    return None if root is None or place is None else root / place


def layout(dataset: str) -> Optional[str]:
    """Dataset ``dataset``'s place in a data directory, or None when it has no one place."""
    return REGISTRY[dataset].layout if dataset in REGISTRY else LAYOUTS.get(dataset)


def data_missing(dataset: str, path: Optional[str],
                 environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Why dataset ``dataset`` (at ``path``, or its place in the data directory) is not on this
    machine, or None when it is, or when the dataset is generated (``synthetic``) or names no
    place (loading it says what is wrong)."""
    where = Path(path).expanduser() if path else default_path(dataset, environ)
    if where is None:
        if layout(dataset) is None:
            return None
        return f"{ENV} is not set, and no data.path names the {dataset} file ({layout(dataset)})"
    if not where.exists():
        given = "data.path" if path else f"${ENV}/{layout(dataset)}"
        return f"{where} ({given}) does not exist"
    return None


def missing_note(dataset: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """What to add to an error loading ``dataset`` when no path was given (empty: nothing)."""
    root, default = data_dir(environ), default_path(dataset, environ)
    if default is not None:
        return (f" No path was given, so the path came from {ENV}={str(root)!r}: the data "
                f"directory's layout puts {dataset} at ${ENV}/{layout(dataset)}.")
    if dataset in REGISTRY:
        return (f" Or set {ENV} to a data directory holding {layout(dataset)} (the "
                f"layout `tff-rec data download {dataset} --cache DIR` makes).")
    if dataset in LAYOUTS:
        return f" Or set {ENV} to a data directory holding {layout(dataset)}/."
    files = [entry.layout for entry in REGISTRY.values() if entry.source == dataset]
    if files and root is not None:
        return (f" {ENV} is set, but {dataset} has no one place in it: give the file's path, "
                f"e.g. one of {', '.join(str(root / file) for file in files)}.")
    return ""


# --- checksums ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Check:
    """A local file against its registry checksum. status: "OK", "MISMATCH" or "UNCHECKED"."""

    entry: Entry
    path: Path
    status: str
    expected: str
    found: str
    sha256: str

    def line(self) -> str:
        text = f"{self.status:<9} {self.entry.name:<16} {self.path}  "
        if self.status == "OK":
            return text + self.expected + ("" if self.expected.startswith("sha256:")
                                           else f" (sha256:{self.sha256})")
        if self.status == "MISMATCH":
            return text + f"expected {self.expected}, found {self.found}"
        return text + f"{self.expected}; found {self.found}, sha256:{self.sha256}"


def git_blob_id(path: Path) -> str:
    """The id git gives the file's bytes (SHA-1 of ``blob <size>\\0`` + the bytes)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(entry: Entry, path: Path) -> Check:
    """Hash ``path`` (pooch's ``file_hash``) and compare it with ``entry``'s checksum."""
    import pooch  # here: importing it takes a tenth of a second, and only checks need it

    sha256 = pooch.file_hash(str(path), "sha256")
    if entry.known_hash is not None:
        algorithm, expected = entry.known_hash.split(":")
        found = sha256 if algorithm == "sha256" else pooch.file_hash(str(path), algorithm)
        status = "OK" if found == expected.lower() else "MISMATCH"
        return Check(entry, path, status, entry.known_hash, f"{algorithm}:{found}", sha256)
    if entry.git_blob is not None:
        found = git_blob_id(path)
        status = "OK" if found == entry.git_blob else "MISMATCH"
        return Check(entry, path, status, f"git-blob:{entry.git_blob}", f"git-blob:{found}",
                     sha256)
    md5 = pooch.file_hash(str(path), "md5")
    return Check(entry, path, "UNCHECKED", "no fixed checksum (compare with the published .md5)",
                 f"md5:{md5}", sha256)


def verify(target: str, root: Optional[Path]) -> list[Check]:
    """Check local files against the registry. ``target``: a registry name (its file under the
    data directory ``root``), a file (known by its published name), or a data directory (every
    registry file found in its layout)."""
    if target in REGISTRY:
        if root is None:
            raise DataError(f"{target}: no data directory to look in; set {ENV} or give --cache "
                            f"DIR (or give the file's path instead of the name)")
        entry = REGISTRY[target]
        path = root / entry.file
        if not path.is_file():
            raise DataError(f"{target}: no file at {path} (the data directory's layout puts "
                            f"{target} at {entry.file})")
        return [check_file(entry, path)]
    path = Path(target).expanduser()
    if path.is_file():
        entries = [entry for entry in REGISTRY.values() if Path(entry.file).name == path.name]
        if not entries:
            known = ", ".join(Path(entry.file).name for entry in REGISTRY.values())
            raise DataError(f"{path}: not a registry file; known file names: {known}")
        return [check_file(entries[0], path)]
    if path.is_dir():
        checks = [check_file(entry, path / entry.file) for entry in REGISTRY.values()
                  if (path / entry.file).is_file()]
        if not checks:
            expected = ", ".join(entry.file for entry in REGISTRY.values())
            raise DataError(f"{path}: holds none of the registry's files; a data directory "
                            f"holds some of {expected}")
        return checks
    raise DataError(f"{target}: neither a registry name ({', '.join(REGISTRY)}) nor an "
                    f"existing file or folder")
