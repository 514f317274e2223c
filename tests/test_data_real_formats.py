"""The raw real-dataset loaders (Amazon 2014/2018, Steam, Last.fm 1K) on tiny files written in
each release's own format, plain and gzipped, and their errors."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tff_rec.data import SOURCES, DataError, load, to_sequences
from tff_rec.data.preprocess import UNKNOWN_CATEGORY


def write(path: Path, text: str, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def rows(interactions) -> list[tuple[str, str, int]]:
    events = interactions.events
    return list(zip(events["user"].astype(str), events["item"].astype(str), events["timestamp"]))


def json_lines(*records: dict) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def review(user: str, item: str, time: int) -> dict:
    return {"reviewerID": user, "asin": item, "reviewerName": "N", "helpful": [0, 0],
            "reviewText": "long text " * 20, "overall": 5.0, "summary": "ok",
            "unixReviewTime": time, "reviewTime": "01 1, 2014"}


REVIEWS = (review("A1", "0000031852", 1400000000), review("A2", "B000X", 1300000000),
           review("A1", "B000X", 1200000000))
EXPECTED_REVIEWS = [("A1", "0000031852", 1400000000), ("A2", "B000X", 1300000000),
                    ("A1", "B000X", 1200000000)]


def test_registered():
    assert [name for name in SOURCES][-3:] == ["amazon", "steam", "lastfm-1k"]
    assert all(SOURCES[name].needs_path for name in ("amazon", "steam", "lastfm-1k"))


# --- Amazon -----------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_2014_reviews_with_meta(tmp_path, gz):
    suffix = ".gz" if gz else ""
    write(tmp_path / f"reviews_Beauty_5.json{suffix}", json_lines(*REVIEWS), gz)
    write(  # 2014 metadata: Python dict literals, 'categories' a list of paths
        tmp_path / f"meta_Beauty.json{suffix}",
        "{'asin': '0000031852', 'title': 'Girls Ballet Tutu', 'categories': "
        "[['Beauty', 'Skin Care', 'Face'], ['Clothing']]}\n"
        "{'asin': 'B000X', 'categories': [[]], 'price': 3.5}\n"
        "{'asin': 'B000Y', 'related': {'also_bought': ['B000X']}}\n"
        "{'asin': '0000031852', 'categories': [['Other']]}\n",
        gz,
    )
    for path in (tmp_path, tmp_path / f"reviews_Beauty_5.json{suffix}"):
        log = load("amazon", path, {})
        assert rows(log) == EXPECTED_REVIEWS
        assert log.item_categories.to_dict() == {"0000031852": "Face"}
        assert log.user_attributes is None


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_2018_reviews_with_meta(tmp_path, gz):
    suffix = ".gz" if gz else ""
    write(tmp_path / f"Luxury_Beauty_5.json{suffix}", json_lines(*REVIEWS), gz)
    write(
        tmp_path / f"meta_Luxury_Beauty.json{suffix}",
        json_lines(
            {"asin": "B000X", "category": ["Luxury Beauty", "Fragrance", ""], "title": "t"},
            {"asin": "0000031852", "category": []},
        ),
        gz,
    )
    log = load("amazon", tmp_path, {})
    assert rows(log) == EXPECTED_REVIEWS
    assert log.item_categories.to_dict() == {"B000X": "Fragrance"}


def test_amazon_ratings_csv_column_order_by_release(tmp_path):
    text = "AX,0001,5.0,1400000000\nAY,0002,3.0,1300000000\n"
    log_2014 = load("amazon", write(tmp_path / "2014" / "ratings_Books.csv", text), {})
    assert rows(log_2014) == [("AX", "0001", 1400000000), ("AY", "0002", 1300000000)]
    log_2018 = load("amazon", write(tmp_path / "2018" / "Books.csv.gz", text, gz=True), {})
    assert rows(log_2018) == [("0001", "AX", 1400000000), ("0002", "AY", 1300000000)]
    assert log_2018.item_categories is None


def test_amazon_runs_through_preprocess(tmp_path):
    write(tmp_path / "reviews_Beauty_5.json.gz", json_lines(*REVIEWS), gz=True)
    write(tmp_path / "meta_Beauty.json",
          "{'asin': '0000031852', 'categories': [['Beauty', 'Face']]}\n")
    data = to_sequences(load("amazon", tmp_path, {}), min_user_interactions=0,
                        min_item_interactions=0)
    assert data.users == ("A1", "A2")
    assert data.item_ids == ("0000031852", "B000X")
    assert [s.tolist() for s in data.sequences] == [[2, 1], [2]]  # A1 reviewed B000X first
    assert data.category_names == (UNKNOWN_CATEGORY, "Face")
    assert data.item_category.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    "file, text, line, expected",
    [
        ("reviews_Beauty_5.json", json_lines(REVIEWS[0]) + '{"reviewerID": "A2", "unixReviewTime": 1}\n', 2,
         "expected a JSON object with 'reviewerID', 'asin' and 'unixReviewTime' (Amazon 2014 "
         "reviews file, detected from its name); found asin none"),
        ("Beauty_5.json", "\n" + json_lines(REVIEWS[0]) + '{"reviewerID": "A2", "asin": "B", '
         '"unixReviewTime": "01 1, 2014"}\n', 3,
         "expected a JSON object with 'reviewerID', 'asin' and 'unixReviewTime' (Amazon 2018 "
         "reviews file, detected from its name), unixReviewTime an integer; found '01 1, 2014'"),
        ("Beauty_5.json", json_lines(REVIEWS[0]) + "not json\n", 2,
         "expected a JSON object with 'reviewerID', 'asin' and 'unixReviewTime' (Amazon 2018 "
         "reviews file, detected from its name) on one line, found 'not json'"),
        ("ratings_Beauty.csv", "A,B,5.0,1\nA,C,5.0\n", 2,
         "expected 4 comma-separated fields 'user item rating timestamp' (Amazon 2014 ratings "
         "file, detected from its name), found 3"),
        ("Beauty.csv", "B,A,5.0,1\nC,A,good,2\n", 2, "expected a number rating, found 'good'"),
        ("Beauty.csv", "B,A,5.0,1\nC,A,4.0,2.5\n", 2,
         "expected an integer timestamp, found '2.5'"),
        ("Beauty.csv", "B,A,5.0,1\n,A,4.0,2\n", 2,
         "expected a non-empty item id (Amazon 2018 ratings file, detected from its name)"),
    ],
)
def test_amazon_malformed_lines(tmp_path, file, text, line, expected):
    path = write(tmp_path / file, text)
    with pytest.raises(DataError) as error:
        load("amazon", tmp_path, {})
    assert str(error.value) == f"{path}:{line}: {expected}"


@pytest.mark.parametrize(
    "meta, line, expected",
    [
        ("{'asin': 'B000X', 'categories': [['A']]}\n{'title': 'no asin'}\n", 2,
         "expected a product record with 'asin' and an optional 'categories' (Amazon 2014 "
         "metadata); found asin none"),
        ("{'asin': 'B000X', 'categories': ['A', 'B']}\n", 1,
         "expected 'categories' to be a list of lists of strings, found ['A', 'B']"),
        ("{'asin': 'B000X', 'categories': [['A']]\n", 1,
         "expected a product record with 'asin' and an optional 'categories' (Amazon 2014 "
         "metadata) on one line, found '{'asin': 'B000X', 'categories': [['A']]'"),
    ],
)
def test_amazon_malformed_meta(tmp_path, meta, line, expected):
    write(tmp_path / "reviews_Beauty_5.json", json_lines(*REVIEWS))
    path = write(tmp_path / "meta_Beauty.json.gz", meta, gz=True)
    with pytest.raises(DataError) as error:
        load("amazon", tmp_path, {})
    assert str(error.value) == f"{path}:{line}: {expected}"


def test_amazon_missing_ambiguous_and_unrecognised(tmp_path):
    with pytest.raises(DataError) as error:
        load("amazon", tmp_path / "nowhere", {})
    message = str(error.value)
    assert message.startswith(f"amazon: nothing usable at {tmp_path / 'nowhere'}; expected an "
                              "Amazon reviews or ratings file")
    assert "--path on the command line" in message and "download" not in message
    write(tmp_path / "meta_Beauty.json", "{'asin': 'B'}\n")
    with pytest.raises(DataError, match="amazon: nothing usable at"):
        load("amazon", tmp_path, {})  # metadata alone is no interaction file
    write(tmp_path / "reviews_Beauty_5.json", json_lines(*REVIEWS))
    write(tmp_path / "ratings_Beauty.csv", "A,B,5.0,1\n")
    with pytest.raises(DataError) as error:
        load("amazon", tmp_path, {})
    assert str(error.value) == (
        f"amazon: {tmp_path} holds several interaction files (ratings_Beauty.csv, "
        "reviews_Beauty_5.json); point --path at one of them"
    )
    odd = write(tmp_path / "odd" / "beauty.tsv", "A\tB\n")
    with pytest.raises(DataError, match=f"amazon: cannot tell the release of {odd} from its name"):
        load("amazon", odd, {})


def test_amazon_corrupt_gzip(tmp_path):
    path = tmp_path / "Beauty_5.json.gz"
    path.write_bytes(gzip.compress(json_lines(*REVIEWS).encode())[:40])
    with pytest.raises(DataError, match=f"{path}: could not be read as gzip"):
        load("amazon", path, {})


# --- Steam ------------------------------------------------------------------------------

STEAM_REVIEWS = (
    "{'username': 'Chaos Syren', 'hours': 0.1, 'products': 41, 'product_id': '725280', "
    "'page_order': 0, 'date': '2017-12-17', 'text': 'This would not be acceptable', "
    "'early_access': False, 'page': 1}\n"
    "{'username': 'Ariman1', 'hours': 13.2, 'product_id': '328100', 'page_order': 1, "
    "'date': '2017-08-02', 'text': \"it's a 'game'\", 'early_access': False, 'page': 1, "
    "'compensation': 'Product received for free'}\n"
    "{'username': 'Chaos Syren', 'product_id': '328100', 'date': '2017-12-17', 'text': ''}\n"
    "{'username': 'Chaos Syren', 'product_id': '35140', 'date': '2017-12-16', 'text': 'x'}\n"
)
STEAM_GAMES = (
    "{'publisher': 'Kotoshiro', 'genres': ['Action', 'Casual', 'Indie'], 'app_name': 'Kitty', "
    "'url': 'http://store.steampowered.com/app/725280/', 'id': '725280'}\n"
    "{'url': 'http://store.steampowered.com/app/200/', 'app_name': 'no id line'}\n"
    "{'app_name': 'Ironbound', 'genres': [], 'id': '328100'}\n"
    "{'app_name': 'Batman', 'id': '35140', 'developer': 'Rocksteady'}\n"
)
DAY_2017_12_17 = 17517 * 86400  # 2017-12-17 is day 17517 after 1970-01-01


@pytest.mark.parametrize("gz", [False, True])
def test_steam_reviews_and_games(tmp_path, gz):
    suffix = ".gz" if gz else ""
    reviews = write(tmp_path / f"steam_reviews.json{suffix}", STEAM_REVIEWS, gz)
    write(tmp_path / f"steam_games.json{suffix}", STEAM_GAMES, gz)
    for path in (tmp_path, reviews):
        log = load("steam", path, {})
        assert rows(log) == [
            ("Chaos Syren", "725280", DAY_2017_12_17),
            ("Ariman1", "328100", DAY_2017_12_17 - 137 * 86400),
            ("Chaos Syren", "328100", DAY_2017_12_17),
            ("Chaos Syren", "35140", DAY_2017_12_17 - 86400),
        ]
        assert log.item_categories.to_dict() == {"725280": "Action"}
        assert log.user_attributes is None


def test_steam_runs_through_preprocess_ties_keep_file_order(tmp_path):
    write(tmp_path / "steam_reviews.json.gz", STEAM_REVIEWS, gz=True)
    data = to_sequences(load("steam", tmp_path, {}), min_user_interactions=0,
                        min_item_interactions=0)
    assert data.users == ("Ariman1", "Chaos Syren")
    assert data.item_ids == ("35140", "328100", "725280")
    # Chaos Syren: 35140 the day before, then 725280 and 328100 on the same day in file order.
    assert [s.tolist() for s in data.sequences] == [[2], [1, 3, 2]]
    assert data.item_category is None


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("{'username': 'u', 'product_id': '1', 'date': '2017-12-17'}\n"
         "{'username': 'u', 'date': '2017-12-17'}\n", 2,
         "expected a Python dict with 'username', 'product_id' and 'date' (Steam reviews); "
         "found product_id none"),
        ("{'username': 'u', 'product_id': '1', 'date': 'December 17, 2017'}\n", 1,
         "expected a date 'YYYY-MM-DD' (Steam reviews); found date 'December 17, 2017'"),
        ("{'username': 'u', 'product_id': '1', 'date': '2017-02-30'}\n", 1,
         "expected a date 'YYYY-MM-DD' (Steam reviews); found date '2017-02-30'"),
        ("{'username': 'u', 'product_id': '1', 'date': '2017-12-17', 'text': 'cut\n", 1,
         "expected a Python dict with 'username', 'product_id' and 'date' (Steam reviews) on "
         "one line, found '{'username': 'u', 'product_id': '1', 'date': '2017-12-17', "
         "'text': 'cut'"),
    ],
)
def test_steam_malformed_reviews(tmp_path, text, line, expected):
    path = write(tmp_path / "steam_reviews.json", text)
    with pytest.raises(DataError) as error:
        load("steam", tmp_path, {})
    assert str(error.value) == f"{path}:{line}: {expected}"


def test_steam_malformed_games_and_missing(tmp_path):
    write(tmp_path / "steam_reviews.json", STEAM_REVIEWS)
    games = write(tmp_path / "steam_games.json", "{'id': '1', 'genres': 'Action'}\n")
    with pytest.raises(DataError) as error:
        load("steam", tmp_path, {})
    assert str(error.value) == (
        f"{games}:1: expected 'genres' to be a list of strings, found 'Action'"
    )
    with pytest.raises(DataError) as error:
        load("steam", tmp_path / "empty", {})
    assert "steam: nothing usable at" in str(error.value)
    assert "steam_reviews.json[.gz]" in str(error.value)


# --- Last.fm 1K -------------------------------------------------------------------------

PLAYS_FILE = "userid-timestamp-artid-artname-traid-traname.tsv"
ARTIST = "f1b1cf71-bd35-4e99-8624-24a6e15f133a"
TRACK_A = "cb9f4a48-f3a7-4d4c-a9d5-4df5e3ba8d2e"
TRACK_B = "5e3a2d13-ecf8-4c63-9c1b-0d6d1d43bcd1"
PLAYS = (  # newest first per user, as in the release
    f"user_000001\t2009-05-04T23:08:57Z\t{ARTIST}\tDeep Dish\t{TRACK_A}\tFuck Me Im Famous\n"
    f"user_000001\t2009-05-04T13:54:10Z\t\tRyuichi Sakamoto\t\tComposition 0919 (Live_2009_4_15)\n"
    f"user_000001\t2009-05-04T13:54:10Z\t{ARTIST}\tDeep Dish\t{TRACK_B}\tFlashdance\n"
    f"user_000002\t2009-05-03T10:00:00Z\t{ARTIST}\tDeep Dish\t{TRACK_A}\tFuck Me Im Famous\n"
)
PROFILES = (
    "#id\tgender\tage\tcountry\tregistered\n"
    "user_000001\tm\t\tJapan\tAug 13, 2006\n"
    "user_000002\tf\t25\tPeru\tFeb 24, 2006\n"
)
T0 = 1241478537  # 2009-05-04T23:08:57Z


@pytest.mark.parametrize("gz", [False, True])
def test_lastfm_plays_and_profiles(tmp_path, gz):
    suffix = ".gz" if gz else ""
    folder = tmp_path / "lastfm-dataset-1K"
    plays = write(folder / f"{PLAYS_FILE}{suffix}", PLAYS, gz)
    write(folder / f"userid-profile.tsv{suffix}", PROFILES, gz)
    for path in (tmp_path, folder, plays):
        log = load("lastfm-1k", path, {})
        assert rows(log) == [  # reverse file order: oldest first
            ("user_000002", TRACK_A, 1241344800),
            ("user_000001", TRACK_B, 1241445250),
            ("user_000001", "Ryuichi Sakamoto - Composition 0919 (Live_2009_4_15)", 1241445250),
            ("user_000001", TRACK_A, T0),
        ]
        assert log.item_categories is None
        assert log.user_attributes.to_dict("index") == {
            "user_000001": {"gender": "m", "age": UNKNOWN_CATEGORY, "country": "Japan"},
            "user_000002": {"gender": "f", "age": "25", "country": "Peru"},
        }


def test_lastfm_runs_through_preprocess(tmp_path):
    write(tmp_path / PLAYS_FILE, PLAYS)
    write(tmp_path / "userid-profile.tsv", PROFILES)
    data = to_sequences(load("lastfm-1k", tmp_path, {}), min_user_interactions=0,
                        min_item_interactions=0)
    assert data.users == ("user_000001", "user_000002")
    named, a, b = "Ryuichi Sakamoto - Composition 0919 (Live_2009_4_15)", TRACK_A, TRACK_B
    assert data.item_ids == tuple(sorted((named, a, b)))
    index = {item: position + 1 for position, item in enumerate(data.item_ids)}
    # The two plays at 13:54:10 keep their chronological order (the reverse of the file's).
    assert [s.tolist() for s in data.sequences] == [[index[b], index[named], index[a]], [index[a]]]
    assert data.user_attributes["country"].tolist() == ["Japan", "Peru"]


@pytest.mark.parametrize(
    "text, line, expected",
    [
        (PLAYS + "user_000003\t2009-05-03T10:00:00Z\tDeep Dish\n", 5,
         "expected 6 tab-separated fields 'userid timestamp artid artname traid traname', "
         "found 3"),
        ("user_000003\t2009-05-03 10:00:00\t\tA\t\tB\n", 1,
         "expected a timestamp 'YYYY-MM-DDTHH:MM:SSZ', found '2009-05-03 10:00:00'"),
        ("user_000003\t2009-13-03T10:00:00Z\t\tA\t\tB\n", 1,
         "expected a timestamp 'YYYY-MM-DDTHH:MM:SSZ', found '2009-13-03T10:00:00Z'"),
        ("\nuser_000003\t2009-05-03T10:00:00Z\t\tA\t\t\n", 2,
         "expected a track id (field 5) or both an artist name and a track name (fields 4 "
         "and 6), found none"),
    ],
)
def test_lastfm_malformed_plays(tmp_path, text, line, expected):
    path = write(tmp_path / PLAYS_FILE, text)
    with pytest.raises(DataError) as error:
        load("lastfm-1k", tmp_path, {})
    assert str(error.value) == f"{path}:{line}: {expected}"


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("id\tgender\tage\tcountry\tregistered\n", 1,
         "expected the header '#id\tgender\tage\tcountry\tregistered', "
         "found 'id\tgender\tage\tcountry\tregistered'"),
        (PROFILES + "user_000003\tm\t20\n", 4,
         "expected 5 tab-separated fields '#id gender age country registered', found 3"),
    ],
)
def test_lastfm_malformed_profiles(tmp_path, text, line, expected):
    write(tmp_path / PLAYS_FILE, PLAYS)
    path = write(tmp_path / "userid-profile.tsv", text)
    with pytest.raises(DataError) as error:
        load("lastfm-1k", tmp_path, {})
    assert str(error.value) == f"{path}:{line}: {expected}"


def test_lastfm_missing(tmp_path):
    with pytest.raises(DataError) as error:
        load("lastfm-1k", tmp_path, {})
    message = str(error.value)
    assert message.startswith(f"lastfm-1k: nothing usable at {tmp_path}; expected {PLAYS_FILE}")
    assert "lastfm-dataset-1K/" in message and "download" not in message
