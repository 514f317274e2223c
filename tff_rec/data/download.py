"""Fetch a registry file (``tff_rec.data.registry``) into a data directory (needs a network).

pooch does the fetching and the checksum check: a file whose checksum differs from the
registry's is deleted, never moved into the data directory. MovieLens archives are then
unzipped next to the archive. The fixed MovieLens releases (100K, 1M, 20M) are checked against
the MD5 GroupLens publishes for them; "latest" changes over time, so its MD5 is read from the
``.md5`` file GroupLens publishes next to the archive. The SASRec files without a SHA-256 in the
registry are checked against their git blob id.

Everything lands in a scratch folder inside the data directory first and is moved into place
whole, so a failed download leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator, Optional, Union

import pooch

from tff_rec.data import registry
from tff_rec.data.errors import DataError
from tff_rec.data.registry import Entry


def download(
    name: str,
    cache_dir: Union[str, Path],
    base_url: Optional[str] = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch registry file ``name`` into data directory ``cache_dir``; return what ``data.path``
    should point at (the unzipped folder of an archive, else the file).

    ``base_url``: a mirror holding the files under their published names (default: each
    entry's own URL). What is already in place is returned as is (a plain file after its
    checksum is checked); movielens-latest is loaded with the movielens-20m source.
    """
    entry = registry.get_entry(name)
    cache = Path(cache_dir).expanduser()
    target = cache / entry.layout
    if entry.archive:
        if (target / entry.required).is_file():
            return target
        if target.exists():
            raise DataError(
                f"{target} exists but lacks {entry.required}; remove it and download again"
            )
    elif target.is_file():
        check = registry.check_file(entry, target)
        if check.status == "MISMATCH":
            raise DataError(
                f"{target} exists but its checksum {check.found} is not the registry's "
                f"{check.expected}; remove it and download again"
            )
        return target
    url = entry.url if base_url is None else f"{base_url}{Path(entry.file).name}"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{name}-") as scratch_name:
        scratch = Path(scratch_name)
        if entry.archive:
            _fetch_archive(entry, url, scratch, target, timeout)
        else:
            _fetch_file(entry, url, scratch, target, timeout)
    return target


def _fetch_archive(entry: Entry, url: str, scratch: Path, target: Path, timeout: float) -> None:
    known_hash = entry.known_hash or f"md5:{_published_md5(entry, url, scratch, timeout)}"
    unzipped = scratch / "unzipped"
    archive = _retrieve(entry, url, known_hash, scratch, timeout,
                        processor=pooch.Unzip(extract_dir=str(unzipped)))
    folder = unzipped / entry.layout
    if not (folder / entry.required).is_file():
        raise DataError(f"{url}: the archive lacks {entry.layout}/{entry.required}")
    os.replace(folder, target)
    os.replace(archive, target.parent / entry.file)  # kept for `tff-rec data verify`


def _fetch_file(entry: Entry, url: str, scratch: Path, target: Path, timeout: float) -> None:
    fetched = _retrieve(entry, url, entry.known_hash, scratch, timeout)
    check = registry.check_file(entry, fetched)
    if check.status == "MISMATCH":  # a git blob pin: pooch had no hash to check
        raise _mismatch(url, check.expected, check.found)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(fetched, target)


def _retrieve(
    entry: Entry,
    url: str,
    known_hash: Optional[str],
    scratch: Path,
    timeout: float,
    processor: Optional[pooch.Unzip] = None,
) -> Path:
    """``pooch.retrieve`` into ``scratch``; our errors for a failed fetch or a wrong checksum."""
    file = Path(entry.file).name
    try:
        pooch.retrieve(url, known_hash, fname=file, path=scratch, processor=processor,
                       downloader=pooch.HTTPDownloader(timeout=timeout), progressbar=False)
    except ValueError as error:
        found = re.search(r"expected (\S+) but got (\w+)", str(error))
        if found is None:
            raise DataError(f"{url}: {error}") from None
        algorithm = known_hash.split(":")[0] if known_hash else "sha256"
        raise _mismatch(url, known_hash or found.group(1), f"{algorithm}:{found.group(2)}") from None
    except zipfile.BadZipFile as error:
        raise DataError(f"{url}: not a zip archive ({error})") from None
    except OSError as error:  # requests' errors are OSErrors too
        raise _offline(url, entry, error) from None
    return scratch / file


def _published_md5(entry: Entry, url: str, scratch: Path, timeout: float) -> str:
    """The MD5 in GroupLens' ``{archive}.zip.md5`` file (``MD5 (name.zip) = <hex>``)."""
    try:
        with _quiet_pooch():
            fetched = pooch.retrieve(f"{url}.md5", None, fname="published.md5", path=scratch,
                                     downloader=pooch.HTTPDownloader(timeout=timeout))
    except OSError as error:
        raise _offline(f"{url}.md5", entry, error) from None
    text = Path(fetched).read_bytes()[:4096].decode("ascii", errors="replace")
    Path(fetched).unlink()
    found = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if found is None:
        raise DataError(f"{url}.md5: expected an MD5 checksum, found {text[:80]!r}")
    return found.group(0).lower()


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """No 'use this SHA256 as known_hash' advice for the checksum file itself."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _mismatch(url: str, expected: str, found: str) -> DataError:
    algorithm, _, digest = found.partition(":")
    return DataError(
        f"{url}: {algorithm.upper()} {digest} does not match the registry's "
        f"{expected.partition(':')[2]}; the download is corrupt or the file changed, so it "
        f"was discarded"
    )


def _offline(url: str, entry: Entry, error: BaseException) -> DataError:
    cause = error.args[0] if error.args else None
    reason = getattr(cause, "reason", None) or getattr(error, "reason", None) or error
    published = Path(entry.file).name
    kind = "folder" if entry.archive else "file"
    unzip = " unzip it," if entry.archive else ""
    return DataError(
        f"could not download {url} ({reason}). Without a network, fetch {published} "
        f"elsewhere,{unzip} and point the suite at the {entry.layout} {kind} with --path on the "
        f"command line or data.path in a task file, or put it at ${registry.ENV}/{entry.file}"
        f"{' and unzip it there' if entry.archive else ''} (`tff-rec data verify` checks it)."
    )
