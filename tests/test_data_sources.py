"""The source registry, each file loader on tiny files, and their errors (downloads:
test_data_registry.py)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tff_rec.data import SOURCES, DataError, format_info, load, source_params, to_sequences
from tff_rec.data.info import info
from tff_rec.data.movielens import GENRES_100K


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def events_as_rows(interactions) -> list[tuple[str, str, int]]:
    events = interactions.events
    return list(zip(events["user"].astype(str), events["item"].astype(str), events["timestamp"]))


def flags(*genres: int) -> str:
    return "|".join("1" if index in genres else "0" for index in range(19))


# --- registry ---------------------------------------------------------------------------


def test_registry_names_and_params():
    assert list(SOURCES) == [
        "synthetic", "movielens-100k", "movielens-1m", "movielens-20m", "sequences",
        "sasrec-games", "sasrec-beauty", "sasrec-steam", "sasrec-ml-1m", "amazon", "steam",
        "lastfm-1k",
    ]
    assert source_params("synthetic") == {
        "seed": 0, "users": 1000, "items": 300, "mean_length": 30, "categories": 10, "groups": 4,
    }
    assert source_params("movielens-1m") == {}
    assert [name for name, source in SOURCES.items() if not source.needs_path] == ["synthetic"]
    # Published pre-filtered files are not filtered again; raw logs get a 5/5 k-core.
    assert {name: source.min_interactions for name, source in SOURCES.items()
            if source.min_interactions != (5, 5)} == {
        name: (0, 0) for name in ("sequences", "sasrec-games", "sasrec-beauty", "sasrec-steam",
                                  "sasrec-ml-1m")}


def test_unknown_dataset_lists_the_names():
    with pytest.raises(DataError) as error:
        load("movielens-10m", "/tmp", {})
    assert str(error.value) == (
        "data.dataset must be one of amazon, lastfm-1k, movielens-100k, movielens-1m, "
        "movielens-20m, sasrec-beauty, sasrec-games, sasrec-ml-1m, sasrec-steam, sequences, "
        "steam, synthetic. Found 'movielens-10m'."
    )
    with pytest.raises(DataError, match="must be one of .*Found 'nope'"):
        source_params("nope")


def test_bad_params():
    with pytest.raises(DataError) as error:
        load("synthetic", None, {"user": 10})
    assert str(error.value) == (
        "synthetic: user is not a parameter of dataset 'synthetic'. "
        "Allowed: categories, groups, items, mean_length, seed, users."
    )
    with pytest.raises(DataError, match="movielens-1m: users is not a parameter.*It takes none"):
        load("movielens-1m", "/tmp", {"users": 3})
    with pytest.raises(DataError, match="synthetic: users must be an integer. Found '10'"):
        load("synthetic", None, {"users": "10"})
    with pytest.raises(DataError, match=r"synthetic: categories must be between 1 and 100, found 200"):
        load("synthetic", None, {"categories": 200})
    with pytest.raises(DataError, match="synthetic: takes no path"):
        load("synthetic", "/tmp", {})


@pytest.mark.parametrize(
    "name, expected",
    [
        ("movielens-100k", "a folder holding u.data (u.item, u.genre and u.user optional)"),
        ("movielens-1m", "a folder holding ratings.dat (movies.dat and users.dat optional)"),
        ("movielens-20m", "a folder holding ratings.csv (movies.csv optional)"),
    ],
)
def test_missing_folder_says_what_and_how(tmp_path, name, expected):
    with pytest.raises(DataError) as error:
        load(name, tmp_path / "nowhere", {})
    message = str(error.value)
    assert message.startswith(f"{name}: nothing usable at {tmp_path / 'nowhere'}; expected")
    assert expected in message
    assert "--path on the command line or data.path in a task file" in message
    assert f"`tff-rec data download {name} --cache DIR`" in message
    with pytest.raises(DataError, match=f"{name}: no path given"):
        load(name, None, {})


def test_missing_sequence_file(tmp_path):
    with pytest.raises(DataError) as error:
        load("sequences", tmp_path / "ml-1m.txt", {})
    assert "expected a text file of 'user item' lines" in str(error.value)
    assert "--path" in str(error.value)
    assert "download" not in str(error.value)


# --- MovieLens 100K ---------------------------------------------------------------------


def write_100k(folder: Path) -> Path:
    write(folder / "u.data", "1\t10\t5\t881250949\n2\t20\t3\t891717742\n1\t20\t4\t878887116\n")
    write(
        folder / "u.item",
        f"10|Cin\xe9ma Paradiso (1988)|01-Jan-1988||http://x|{flags(5, 8)}\n"
        f"20|Heat (1995)|01-Jan-1995||http://y|{flags(1, 6, 16)}\n"
        f"30|Nothing (1990)|01-Jan-1990||http://z|{flags()}\n",
        encoding="latin-1",
    )
    write(folder / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    return folder


def test_movielens_100k(tmp_path):
    log = load("movielens-100k", write_100k(tmp_path), {})
    assert events_as_rows(log) == [
        ("1", "10", 881250949), ("2", "20", 891717742), ("1", "20", 878887116),
    ]
    assert log.item_categories.to_dict() == {
        "10": "Comedy", "20": "Action", "30": "(no genres listed)",
    }
    assert log.user_attributes.to_dict("index") == {
        "1": {"age": "24", "gender": "M", "occupation": "technician", "zip": "85711"},
        "2": {"age": "53", "gender": "F", "occupation": "other", "zip": "94043"},
    }
    data = to_sequences(log, 0, 0)
    assert [s.tolist() for s in data.sequences] == [[2, 1], [2]]  # user 1: item 20 came first
    assert data.category_names == ("Action", "Comedy")


def test_movielens_100k_genre_names_from_u_genre_and_download_layout(tmp_path):
    folder = write_100k(tmp_path / "ml-100k")
    renamed = [f"G{index}" for index in range(19)]
    write(folder / "u.genre", "".join(f"{name}|{i}\n" for i, name in enumerate(renamed)) + "\n")
    log = load("movielens-100k", tmp_path, {})  # the parent of ml-100k/ works too
    assert log.item_categories.to_dict() == {"10": "G5", "20": "G1", "30": "(no genres listed)"}
    assert GENRES_100K[5] == "Comedy"


def test_movielens_100k_ratings_only(tmp_path):
    write(tmp_path / "u.data", "1\t10\t5\t7\n")
    log = load("movielens-100k", tmp_path, {})
    assert log.item_categories is None and log.user_attributes is None


@pytest.mark.parametrize(
    "file, text, line, expected",
    [
        ("u.data", "1\t10\t5\t7\n2\t20\t3\n", 2,
         "expected 4 tab-separated fields 'user item rating timestamp', found 3"),
        ("u.data", "1\t10\t5\t7\n\n2\t20\t3\t8\t9\n", 3,
         "expected 4 tab-separated fields 'user item rating timestamp', found 5"),
        ("u.data", "1\t10\t5\t7\nx\t20\t3\t8\n", 2, "expected an integer user, found 'x'"),
        ("u.data", "1\t10\t5\t7\n1\t20\t3\t8.5\n", 2,
         "expected an integer timestamp, found '8.5'"),
        ("u.data", "1\t10\tgood\t7\n", 1, "expected a number rating, found 'good'"),
        ("u.item", f"10|T|d||u|{flags(1)}\n20|T|d||u|0|2\n", 2,
         "expected '|'-separated fields 'item title release_date video_release_date url' "
         "followed by 19 genre flags (0 or 1), found '20|T|d||u|0|2'"),
        ("u.item", f"ten|T|d||u|{flags(1)}\n", 1, "expected an integer item, found 'ten'"),
        ("u.user", "1|24|M|technician|85711\n2|53|F|other\n", 2,
         "expected 5 '|'-separated fields 'user age gender occupation zip', found 4"),
        ("u.genre", "unknown|0\nAction\n", 2,
         "expected 2 '|'-separated fields 'genre index', found 1"),
    ],
)
def test_movielens_100k_malformed_lines(tmp_path, file, text, line, expected):
    write(tmp_path / "u.data", "1\t10\t5\t7\n")
    write(tmp_path / file, text)
    with pytest.raises(DataError) as error:
        load("movielens-100k", tmp_path, {})
    assert str(error.value) == f"{tmp_path / file}:{line}: {expected}"


def test_movielens_100k_incomplete_genre_list(tmp_path):
    write(tmp_path / "u.data", "1\t10\t5\t7\n")
    write(tmp_path / "u.genre", "unknown|0\nAction|1\n")
    with pytest.raises(DataError, match=r"u.genre: expected 19 genres numbered 0-18, found"):
        load("movielens-100k", tmp_path, {})


def test_undecodable_line(tmp_path):
    write(tmp_path / "u.data", "1\t10\t5\t7\n")
    (tmp_path / "u.data").write_bytes(b"1\t10\t5\t7\n2\t20\t3\t8\n3\t\xff0\t1\t9\n")
    with pytest.raises(DataError, match=r"u.data:3: expected utf-8 text \(invalid start byte\)"):
        load("movielens-100k", tmp_path, {})


# --- MovieLens 1M -----------------------------------------------------------------------


def test_movielens_1m(tmp_path):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    write(
        tmp_path / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::Star Wars: Episode IV :: A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi\n"
        "5::Caf\xe9 (2000)::\n",
        encoding="latin-1",
    )
    write(tmp_path / "users.dat", "1::F::1::10::48067\n")
    log = load("movielens-1m", tmp_path, {})
    assert events_as_rows(log) == [("1", "1193", 978300760), ("1", "661", 978302109)]
    assert log.item_categories.to_dict() == {
        "1193": "Drama", "661": "Action", "5": "(no genres listed)",
    }
    assert log.user_attributes.to_dict("index") == {
        "1": {"gender": "F", "age": "1", "occupation": "10", "zip": "48067"}
    }


@pytest.mark.parametrize(
    "file, text, line, expected",
    [
        ("ratings.dat", "1::1193::5::978300760\n1::661:3::978302109\n", 2,
         "expected 4 '::'-separated fields 'user item rating timestamp', found 3"),
        ("ratings.dat", "1::1193::5::978300760\n1::661::3::97830210x\n", 2,
         "expected an integer timestamp, found '97830210x'"),
        ("movies.dat", "1193::Drama\n", 1,
         "expected 3 '::'-separated fields 'item title genres', found 2"),
        ("users.dat", "1::F::1::10::48067::x\n", 1,
         "expected 5 '::'-separated fields 'user gender age occupation zip', found 6"),
    ],
)
def test_movielens_1m_malformed_lines(tmp_path, file, text, line, expected):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n")
    write(tmp_path / file, text)
    with pytest.raises(DataError) as error:
        load("movielens-1m", tmp_path, {})
    assert str(error.value) == f"{tmp_path / file}:{line}: {expected}"


# --- MovieLens 20M / latest -------------------------------------------------------------


def test_movielens_20m(tmp_path):
    write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n"
        "7,2,4.0,1112484819\n",
    )
    write(
        tmp_path / "movies.csv",
        "movieId,title,genres\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "29,City of Lost Children (1995),Adventure|Drama\n"
        "131262,Innocence (2014),(no genres listed)\n",
    )
    log = load("movielens-20m", tmp_path, {})
    assert events_as_rows(log) == [
        ("1", "2", 1112486027), ("1", "29", 1112484676), ("7", "2", 1112484819),
    ]
    assert log.item_categories.to_dict() == {
        "2": "Comedy", "29": "Adventure", "131262": "(no genres listed)",
    }
    assert log.user_attributes is None


@pytest.mark.parametrize(
    "file, text, line, expected",
    [
        ("ratings.csv", "user,movie,rating,timestamp\n1,2,3.5,1112486027\n", 1,
         "expected the header 'userId,movieId,rating,timestamp', "
         "found 'user,movie,rating,timestamp'"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,11\n1,29,3.5\n", 3,
         "expected 4 comma-separated fields 'userId movieId rating timestamp', found 3"),
        ("movies.csv", "movieId,title,genres\n2,Jumanji (1995),Adventure,Children\n", 2,
         "expected 3 comma-separated fields 'movieId title genres', found 4"),
        ("movies.csv", "movieId,title,genres\nx,Jumanji (1995),Adventure\n", 2,
         "expected an integer movieId, found 'x'"),
    ],
)
def test_movielens_20m_malformed_lines(tmp_path, file, text, line, expected):
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n")
    write(tmp_path / file, text)
    with pytest.raises(DataError) as error:
        load("movielens-20m", tmp_path, {})
    assert str(error.value) == f"{tmp_path / file}:{line}: {expected}"


# --- sequence files ---------------------------------------------------------------------


def test_sequence_file(tmp_path):
    path = write(tmp_path / "seq.txt", "1 1\n1 2\n2 3\n\n1 3\n2\t1\n")
    log = load("sequences", path, {})
    assert events_as_rows(log) == [
        ("1", "1", 1), ("1", "2", 2), ("2", "3", 3), ("1", "3", 4), ("2", "1", 5),
    ]
    assert log.item_categories is None and log.user_attributes is None
    data = to_sequences(log, 0, 0)
    assert [s.tolist() for s in data.sequences] == [[1, 2, 3], [3, 1]]


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("1 1\n1 2 3\n", 2, "expected 2 whitespace-separated fields 'user item', found 3"),
        ("1 1\n\n1\n", 3, "expected 2 whitespace-separated fields 'user item', found 1"),
        ("1 1\n1 b\n", 2, "expected an integer item, found 'b'"),
    ],
)
def test_sequence_file_malformed_lines(tmp_path, text, line, expected):
    path = write(tmp_path / "seq.txt", text)
    with pytest.raises(DataError) as error:
        load("sequences", path, {})
    assert str(error.value) == f"{path}:{line}: {expected}"


# --- info -------------------------------------------------------------------------------


def test_info_loads_filters_and_describes(tmp_path):
    path = write(tmp_path / "seq.txt", "1 1\n1 2\n2 1\n2 2\n3 1\n")
    result = info("sequences", path, {}, 2, 2)
    assert (result["dataset"], result["params"]) == ("sequences", {})
    assert (result["min_user_interactions"], result["min_item_interactions"]) == (2, 2)
    assert result["raw"]["interactions"] == 5 and result["raw"]["users"] == 3
    assert result["filtered"]["interactions"] == 4 and result["filtered"]["users"] == 2
    assert format_info(result).splitlines()[0] == (
        "dataset sequences; filtered keeps users with at least 2 and items with at least 2 "
        "interactions"
    )


def test_info_reports_effective_params():
    result = info("synthetic", None, {"users": 40, "items": 50}, 5, 5)
    assert result["params"] == {
        "seed": 0, "users": 40, "items": 50, "mean_length": 30, "categories": 10, "groups": 4,
    }
    assert result["raw"]["users"] == 40
    assert format_info(result).startswith(
        "dataset synthetic (seed=0, users=40, items=50, mean_length=30, categories=10, groups=4)"
    )


def test_loaded_frames_use_str_ids(tmp_path):
    log = load("movielens-100k", write_100k(tmp_path), {})
    assert isinstance(log.events["user"].iloc[0], str)
    assert log.events["timestamp"].dtype == "int64"
    assert isinstance(log.user_attributes, pd.DataFrame)
