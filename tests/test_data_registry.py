"""The registry of real-data files: downloads (served by a local HTTP server: no network),
checksums refused, the TFF_REC_DATA data directory, and `tff-rec data verify`."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import shutil
import subprocess
import threading
import tomllib
import zipfile
from pathlib import Path

import pytest

from tff_rec import cli, spec
from tff_rec.data import DataError, registry
from tff_rec.data.download import download
from tff_rec.prepare import data_identity, prepare_split

GAMES_SHA256 = "b7376fe24430743f411dc7f567285657b2adb3f74361cc7ba0aee94f3024b651"
U_DATA = "".join(f"{user}\t{item}\t5\t{100 * user + item}\n"
                 for user in range(1, 5) for item in range(1, 6))
SEQUENCES = "".join(f"{user} {item}\n" for user in range(1, 5) for item in range(1, 6))


@pytest.fixture
def mirror(tmp_path):
    """(folder, base URL): a folder served over HTTP on 127.0.0.1 while the test runs."""
    folder = tmp_path / "mirror"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


# Read before `no_data_dir` hides the machine's data directory from every test.
MACHINE_GAMES = registry.default_path("sasrec-games")


@pytest.fixture(autouse=True)
def no_data_dir(monkeypatch):
    monkeypatch.delenv(registry.ENV, raising=False)


def zip_release(folder: Path, archive: str, files: dict[str, str]) -> bytes:
    """Write ``{archive}.zip`` into folder and return its bytes."""
    path = folder / f"{archive}.zip"
    with zipfile.ZipFile(path, "w") as bundle:
        for name, text in files.items():
            bundle.writestr(f"{archive}/{name}", text)
    return path.read_bytes()


def pin(monkeypatch, name: str, **changes) -> None:
    monkeypatch.setitem(registry.REGISTRY, name,
                        dataclasses.replace(registry.REGISTRY[name], **changes))


# --- the table ---------------------------------------------------------------------------


def test_registry_names_checksums_and_layout():
    assert list(registry.REGISTRY) == [
        "movielens-100k", "movielens-1m", "movielens-20m", "movielens-latest",
        "sasrec-games", "sasrec-beauty", "sasrec-steam", "sasrec-ml-1m",
    ]
    for entry in registry.REGISTRY.values():
        pinned = [entry.known_hash is not None, entry.git_blob is not None, entry.published_md5]
        assert pinned.count(True) >= 1, entry.name
        if entry.known_hash:
            algorithm, digest = entry.known_hash.split(":")
            assert len(digest) == {"md5": 32, "sha256": 64}[algorithm]
    ml1m = registry.REGISTRY["movielens-1m"]
    assert (ml1m.file, ml1m.layout, ml1m.required) == ("ml-1m.zip", "ml-1m", "ratings.dat")
    assert ml1m.known_hash == "md5:c4d9eecfca2ab87c1945afe126590906"
    assert ml1m.url == "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
    assert registry.REGISTRY["movielens-latest"].source == "movielens-20m"
    games = registry.REGISTRY["sasrec-games"]
    assert games.known_hash == f"sha256:{GAMES_SHA256}"
    assert (games.file, games.layout, games.source) == ("sasrec/Video.txt",) * 2 + ("sequences",)
    assert games.url == ("https://raw.githubusercontent.com/kang205/SASRec/"
                         "e3738967fddab206d6eeb4fda433e7a7034dd8b1/data/Video.txt")


def test_git_blob_id_is_gits(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text(SEQUENCES)
    header = f"blob {len(SEQUENCES)}\0".encode()
    assert registry.git_blob_id(path) == hashlib.sha1(header + SEQUENCES.encode()).hexdigest()
    if shutil.which("git"):
        out = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True)
        assert registry.git_blob_id(path) == out.stdout.strip()


# --- download ----------------------------------------------------------------------------


def test_download_offline_says_how_to_use_local_files(tmp_path):
    with pytest.raises(DataError) as error:
        download("movielens-1m", tmp_path, base_url="http://127.0.0.1:9/", timeout=5)
    message = str(error.value)
    assert message.startswith("could not download http://127.0.0.1:9/ml-1m.zip (")
    assert "fetch ml-1m.zip elsewhere, unzip it" in message
    assert "--path on the command line or data.path in a task file" in message
    assert "$TFF_REC_DATA/ml-1m.zip and unzip it there" in message
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-written left behind


def test_download_verifies_published_md5_and_unzips(tmp_path, mirror):
    folder, url = mirror
    content = zip_release(folder, "ml-latest", {"ratings.csv": "userId,movieId,rating,timestamp\n"})
    (folder / "ml-latest.zip.md5").write_text(
        f"MD5 (ml-latest.zip) = {hashlib.md5(content).hexdigest()}\n")
    cache = tmp_path / "cache"
    unzipped = download("movielens-latest", cache, base_url=url)
    assert unzipped == cache / "ml-latest"
    assert (unzipped / "ratings.csv").read_text().startswith("userId,movieId")
    assert sorted(p.name for p in cache.iterdir()) == ["ml-latest", "ml-latest.zip"]
    (folder / "ml-latest.zip").unlink()  # a second call finds the folder and fetches nothing
    assert download("movielens-latest", cache, base_url=url) == unzipped


def test_download_fixed_release_with_registry_md5(tmp_path, mirror, monkeypatch):
    folder, url = mirror
    content = zip_release(folder, "ml-100k", {"u.data": U_DATA})
    pin(monkeypatch, "movielens-100k", known_hash=f"md5:{hashlib.md5(content).hexdigest()}")
    unzipped = download("movielens-100k", tmp_path / "data", base_url=url)
    assert (unzipped / "u.data").read_text() == U_DATA
    assert (tmp_path / "data" / "ml-100k.zip").read_bytes() == content


def test_download_rejects_wrong_checksum(tmp_path, mirror):
    folder, url = mirror
    content = zip_release(folder, "ml-100k", {"u.data": "1\t1\t1\t1\n"})
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as error:
        download("movielens-100k", cache, base_url=url)
    assert str(error.value) == (
        f"{url}ml-100k.zip: MD5 {hashlib.md5(content).hexdigest()} does not match the "
        f"registry's 0e33842e24a9c977be4e0107933c0723; the download is corrupt or the file "
        f"changed, so it was discarded"
    )
    assert list(cache.iterdir()) == []


def test_download_sasrec_file_sha256(tmp_path, mirror, monkeypatch):
    folder, url = mirror
    (folder / "Video.txt").write_text(SEQUENCES)
    data = tmp_path / "data"
    with pytest.raises(DataError, match=f"SHA256 [0-9a-f]{{64}} does not match the registry's "
                                        f"{GAMES_SHA256}"):
        download("sasrec-games", data, base_url=url)
    assert list(data.iterdir()) == []
    pin(monkeypatch, "sasrec-games",
        known_hash=f"sha256:{hashlib.sha256(SEQUENCES.encode()).hexdigest()}")
    path = download("sasrec-games", data, base_url=url)
    assert path == data / "sasrec" / "Video.txt"
    assert path.read_text() == SEQUENCES
    assert sorted(p.name for p in data.iterdir()) == ["sasrec"]


def test_download_sasrec_file_git_blob_pin(tmp_path, mirror, monkeypatch):
    folder, url = mirror
    (folder / "Beauty.txt").write_text(SEQUENCES)
    data = tmp_path / "data"
    with pytest.raises(DataError) as error:
        download("sasrec-beauty", data, base_url=url)
    assert str(error.value).startswith(f"{url}Beauty.txt: GIT-BLOB ")
    assert "does not match the registry's cee2ab468d220772a9dfefed9aa9c492dc9b3418" in str(
        error.value)
    assert list(data.iterdir()) == []
    blob = hashlib.sha1(f"blob {len(SEQUENCES)}\0{SEQUENCES}".encode()).hexdigest()
    pin(monkeypatch, "sasrec-beauty", git_blob=blob)
    assert download("sasrec-beauty", data, base_url=url).read_text() == SEQUENCES


def test_download_refuses_a_wrong_file_already_in_place(tmp_path):
    (tmp_path / "sasrec").mkdir()
    (tmp_path / "sasrec" / "Video.txt").write_text(SEQUENCES)
    with pytest.raises(DataError, match="Video.txt exists but its checksum sha256:.* is not the "
                                        f"registry's sha256:{GAMES_SHA256}; remove it"):
        download("sasrec-games", tmp_path, base_url="http://127.0.0.1:9/", timeout=5)


def test_download_unknown_name(tmp_path):
    with pytest.raises(DataError, match="cannot download 'sequences'; downloadable: movielens-"):
        download("sequences", tmp_path)


def test_cli_download_defaults_to_the_data_directory(tmp_path, mirror, monkeypatch, capsys):
    folder, url = mirror
    (folder / "Video.txt").write_text(SEQUENCES)
    pin(monkeypatch, "sasrec-games",
        known_hash=f"sha256:{hashlib.sha256(SEQUENCES.encode()).hexdigest()}",
        url=f"{url}Video.txt")
    monkeypatch.setenv(registry.ENV, str(tmp_path / "data"))
    assert cli.main(["data", "download", "sasrec-games"]) == 0
    assert capsys.readouterr().out == f"sasrec-games: {tmp_path / 'data/sasrec/Video.txt'}\n"


def test_cli_download_help_lists_every_name(capsys):
    with pytest.raises(SystemExit):
        cli.main(["data", "download", "--help"])
    out = capsys.readouterr().out
    for name, entry in registry.REGISTRY.items():
        assert f"  {name:<17} {entry.file}" in out


# --- TFF_REC_DATA ------------------------------------------------------------------------


def test_default_path_layout(tmp_path):
    environ = {registry.ENV: str(tmp_path)}
    assert registry.default_path("movielens-1m", environ) == tmp_path / "ml-1m"
    assert registry.default_path("movielens-20m", environ) == tmp_path / "ml-20m"
    assert registry.default_path("sasrec-games", environ) == tmp_path / "sasrec/Video.txt"
    assert registry.default_path("steam", environ) == tmp_path / "steam"
    assert registry.default_path("lastfm-1k", environ) == tmp_path / "lastfm-dataset-1K"
    assert registry.default_path("amazon", environ) is None  # which category? data.path says
    assert registry.default_path("synthetic", environ) is None
    assert registry.default_path("sequences", environ) is None  # which file? data.path says
    assert registry.default_path("movielens-1m", {}) is None
    assert registry.default_path("movielens-1m", {registry.ENV: ""}) is None


def task(dataset: str, path: str = "") -> spec.TaskSpec:
    text = (f'[data]\ndataset = "{dataset}"\n' + (f'path = "{path}"\n' if path else "")
            + "min_user_interactions = 0\nmin_item_interactions = 0\n[model]\nmax_len = 5\n")
    return spec.resolve_task(tomllib.loads(text), "t.toml")


def test_task_without_path_reads_the_data_directory(tmp_path, monkeypatch):
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text(U_DATA)
    monkeypatch.setenv(registry.ENV, str(tmp_path))
    assert json.loads(data_identity(task("movielens-100k"), 0))["path"] == str(
        tmp_path / "ml-100k")
    split = prepare_split(task("movielens-100k"))
    assert len(split.train) == 4


def test_relative_path_stays_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.ENV, str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    identity = json.loads(data_identity(task("movielens-100k", "here/ml-100k"), 0))
    assert identity["path"] == str(tmp_path / "here" / "ml-100k")


def test_missing_file_names_the_variable_and_the_place(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.ENV, str(tmp_path))
    with pytest.raises(spec.SpecError) as error:
        prepare_split(task("movielens-1m"))
    message = str(error.value)
    assert message.startswith("t.toml: key 'data.dataset' ('movielens-1m', no data.path): "
                              f"movielens-1m: nothing usable at {tmp_path / 'ml-1m'}")
    assert f"the path came from TFF_REC_DATA='{tmp_path}'" in message
    assert "$TFF_REC_DATA/ml-1m" in message


def test_missing_path_without_the_variable_suggests_it(capsys):
    assert cli.main(["data", "info", "movielens-1m"]) == 2
    err = capsys.readouterr().err
    assert "movielens-1m: no path given" in err
    assert "Or set TFF_REC_DATA to a data directory holding ml-1m" in err


def test_data_info_uses_the_data_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text(U_DATA)
    monkeypatch.setenv(registry.ENV, str(tmp_path))
    assert cli.main(["data", "info", "movielens-100k", "--json",
                     "--min-user-interactions", "0", "--min-item-interactions", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["raw"]["interactions"] == 20
    assert cli.main(["data", "info", "sequences"]) == 2
    err = capsys.readouterr().err
    assert "TFF_REC_DATA is set, but sequences has no one place in it" in err
    assert str(tmp_path / "sasrec" / "Video.txt") in err


# --- verify ------------------------------------------------------------------------------


def test_verify_a_data_directory(tmp_path, monkeypatch, capsys):
    good = f"sha256:{hashlib.sha256(SEQUENCES.encode()).hexdigest()}"
    pin(monkeypatch, "sasrec-games", known_hash=good)
    (tmp_path / "sasrec").mkdir()
    (tmp_path / "sasrec" / "Video.txt").write_text(SEQUENCES)
    (tmp_path / "sasrec" / "Steam.txt").write_text(SEQUENCES)
    content = zip_release(tmp_path, "ml-latest", {"ratings.csv": ""})
    assert cli.main(["data", "verify", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"UNCHECKED movielens-latest {tmp_path / 'ml-latest.zip'}  no fixed " \
        f"checksum (compare with the published .md5); found md5:" \
        f"{hashlib.md5(content).hexdigest()}, sha256:{hashlib.sha256(content).hexdigest()}"
    assert lines[1] == f"OK        sasrec-games     {tmp_path / 'sasrec/Video.txt'}  {good}"
    assert lines[2].startswith(f"MISMATCH  sasrec-steam     {tmp_path / 'sasrec/Steam.txt'}  "
                               "expected git-blob:a0e80e7ae37ef2cf9410daf23c3e28ea6f6c31b7, "
                               "found git-blob:")
    assert lines[3] == "3 files checked: 1 mismatch"


def test_verify_by_name_and_by_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "sasrec").mkdir()
    (tmp_path / "sasrec" / "Video.txt").write_text(SEQUENCES)
    assert cli.main(["data", "verify", "sasrec-games", "--cache", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"MISMATCH  sasrec-games     {tmp_path / 'sasrec/Video.txt'}  "
                          f"expected sha256:{GAMES_SHA256}, found sha256:")
    monkeypatch.setenv(registry.ENV, str(tmp_path))
    pin(monkeypatch, "sasrec-games",
        known_hash=f"sha256:{hashlib.sha256(SEQUENCES.encode()).hexdigest()}")
    assert cli.main(["data", "verify", "sasrec-games",
                     str(tmp_path / "sasrec" / "Video.txt")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 files checked: all OK"


@pytest.mark.parametrize("target, expected", [
    ("sasrec-beauty", "sasrec-beauty: no data directory to look in; set TFF_REC_DATA"),
    ("{tmp}/notes.txt", "notes.txt: not a registry file; known file names: ml-100k.zip"),
    ("{tmp}", "holds none of the registry's files"),
    ("{tmp}/absent", "neither a registry name (movielens-100k"),
])
def test_verify_errors(tmp_path, capsys, target, expected):
    (tmp_path / "notes.txt").write_text("x")
    assert cli.main(["data", "verify", target.format(tmp=tmp_path)]) == 2
    assert expected in capsys.readouterr().err


def test_real_games_file_if_present():
    """The authors' Games file where a task reads it ($TFF_REC_DATA/sasrec/Video.txt) or a
    checkout's git-ignored data/external/Video.txt, when the machine has it."""
    places = [MACHINE_GAMES, Path(__file__).parent.parent / "data" / "external" / "Video.txt"]
    found = [path for path in places if path is not None and path.is_file()]
    if not found:
        pytest.skip("no $TFF_REC_DATA/sasrec/Video.txt or data/external/Video.txt")
    path = found[0]
    check = registry.check_file(registry.REGISTRY["sasrec-games"], path)
    assert check.status == "OK"
    assert registry.git_blob_id(path) == registry.REGISTRY["sasrec-games"].git_blob
