"""A study's full size (`[study.full]`, `tff-rec study --full`) and rows that need a data file
this machine may not have (`skip_without_data`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tff_rec import cli, spec
from tff_rec.data import registry
from tff_rec.spec import SpecError

ROOT = Path(__file__).resolve().parent.parent

BASE = """
[data]
dataset = "synthetic"
users = 60
items = 30

[model]
name = "sasrec"
embedding_dim = 8
num_blocks = 1
num_heads = 1
max_len = 8

[algorithm]
rounds = 2
clients_per_round = 5

[evaluation]
num_negatives = 10
"""

GAMES_ROW = """
[[study.variant]]
label = "games"
set = { "data.dataset" = "sasrec-games" }
skip_without_data = true
"""

FULL = """
[study.full]
seeds = [0, 1]
set = { "algorithm.rounds" = 3 }

[[study.full.axis]]
name = "cohort"
values = [
  { label = "C=5", "algorithm.clients_per_round" = 5 },
  { label = "C=20", "algorithm.clients_per_round" = 20 },
]
"""


@pytest.fixture(autouse=True)
def no_data_dir(monkeypatch):
    monkeypatch.delenv(registry.ENV, raising=False)


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def games_file(root: Path, users: int = 40) -> Path:
    """A small file in the SASRec authors' format (`user item` per line, in order) at its
    place in a data directory."""
    rng = np.random.default_rng(0)
    lines = [f"{user} {item}" for user in range(1, users + 1)
             for item in rng.choice(np.arange(1, 31), size=6, replace=False)]
    path = root / "sasrec" / "Video.txt"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_full_size_replaces_rows_seeds_and_base_and_has_its_own_name(tmp_path):
    text = "name = 'sized'\n[study]\nseeds = [0]\n[[study.variant]]\nlabel = 'small'\n" + FULL + BASE
    default = spec.load_study(write(tmp_path, text))
    full = spec.load_study(write(tmp_path, text), full=True)
    assert (default.name, [v.label for v in default.variants], default.seeds) == ("sized", ["small"], (0,))
    assert full.name == "sized_full" and full.seeds == (0, 1)
    assert [v.label for v in full.variants] == ["C=5", "C=20"]  # the default's rows are not kept
    assert [t["algorithm"]["clients_per_round"] for t in full.tasks] == [5, 20]
    assert all(t["algorithm"]["rounds"] == 3 for t in full.tasks)  # [study.full] set: the base
    assert default.tasks[0]["algorithm"]["rounds"] == 2
    assert full.tasks[0].hash != default.tasks[0].hash


def test_full_size_errors_name_the_key(tmp_path):
    with pytest.raises(SpecError, match=r"study\.toml: --full .* no \[study\.full\] table"):
        spec.load_study(write(tmp_path, "[study]\nseeds = [0]\n" + BASE), full=True)
    with pytest.raises(SpecError, match=r"unknown key 'study\.full\.rounds'; allowed: axis, metrics, seeds, set, variant"):
        spec.load_study(write(tmp_path, "[study]\n[study.full]\nrounds = 3\n" + BASE), full=True)
    bad_axis = "[study]\n[study.full]\n[[study.full.axis]]\nname = 'x'\n" + BASE
    with pytest.raises(SpecError, match=r"'study\.full\.axis\[0\]' \(axis 'x'\) needs exactly one of"):
        spec.load_study(write(tmp_path, bad_axis), full=True)
    with pytest.raises(SpecError, match=r"key 'study\.full\.seeds' must be a non-empty list"):
        spec.load_study(write(tmp_path, "[study]\nseeds = [0]\n[study.full]\nseeds = []\n" + BASE), full=True)
    kept_rows = "[study]\nmetrics = []\n[study.full]\nseeds = [1]\n" + BASE  # the default's key, named so
    with pytest.raises(SpecError, match=r"key 'study\.metrics' must be a non-empty list"):
        spec.load_study(write(tmp_path, kept_rows), full=True)
    no_rows = "[study]\n[[study.variant]]\nlabel = 'a'\n[study.full]\nvariant = []\n" + BASE
    with pytest.raises(SpecError, match=r"key 'study\.full\.variant' is empty and there is no \[\[study\.full\.axis\]\]"):
        spec.load_study(write(tmp_path, no_rows), full=True)
    bad_value = "[study]\n[study.full]\n[[study.full.variant]]\nlabel = 'r'\nset = { 'algorithm.rounds' = -1 }\n" + BASE
    with pytest.raises(SpecError, match=r"study\.full\.variant\[0\], label 'r'.*algorithm\.rounds"):
        spec.load_study(write(tmp_path, bad_value), full=True)


def test_a_row_naming_another_dataset_leaves_the_bases_dataset_parameters(tmp_path):
    """synthetic's users and items do not follow a row to the Games file (whose loader takes
    none); keys both entries take, and the row's own keys, do."""
    study = spec.load_study(write(tmp_path, "[study]\n" + GAMES_ROW + "[[study.variant]]\nlabel = 'base'\n" + BASE))
    games, base = study.tasks
    assert games["data"]["dataset"] == "sasrec-games" and games["data"]["params"] == {}
    assert base["data"]["params"]["users"] == 60
    assert games["model"]["params"]["max_len"] == 8
    wrong = "[study]\n[[study.variant]]\nlabel = 'g'\nset = { 'data.dataset' = 'sasrec-games', 'data.users' = 5 }\n"
    with pytest.raises(SpecError, match=r"unknown key 'data\.users' for data\.dataset = 'sasrec-games'"):
        spec.load_study(write(tmp_path, wrong + BASE))


def test_data_missing_says_why(tmp_path):
    assert registry.data_missing("synthetic", None) is None  # generated: always here
    assert "TFF_REC_DATA is not set" in registry.data_missing("sasrec-games", None, {})
    environ = {registry.ENV: str(tmp_path)}
    assert registry.data_missing("sasrec-games", None, environ) == (
        f"{tmp_path / 'sasrec' / 'Video.txt'} ($TFF_REC_DATA/sasrec/Video.txt) does not exist")
    assert registry.data_missing("sequences", str(tmp_path / "x.txt")) == (
        f"{tmp_path / 'x.txt'} (data.path) does not exist")
    games_file(tmp_path)
    assert registry.data_missing("sasrec-games", None, environ) is None


def test_rows_without_their_data_are_skipped_and_the_rest_planned(tmp_path, capsys):
    path = write(tmp_path, "[study]\n[[study.variant]]\nlabel = 'base'\n" + GAMES_ROW + BASE)
    study, skipped = spec.load_study(path).with_data_present()
    assert [v.label for v in study.variants] == ["base"] and len(study.tasks) == 1
    assert skipped == [("games", "TFF_REC_DATA is not set, and no data.path names the sasrec-games "
                                 "file (sasrec/Video.txt)")]
    assert cli.main(["study", str(path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "skipping 1 row marked skip_without_data (games): TFF_REC_DATA is not set" in err
    assert out.splitlines()[0].startswith("base ") and "games" not in out
    assert "1 runs, 0 done" in out


def test_rows_with_their_data_run_like_any_other(tmp_path, monkeypatch, capsys):
    games_file(tmp_path / "data")
    monkeypatch.setenv(registry.ENV, str(tmp_path / "data"))
    path = write(tmp_path, "[study]\n[[study.variant]]\nlabel = 'base'\n" + GAMES_ROW + BASE)
    study, skipped = spec.load_study(path).with_data_present()
    assert skipped == [] and [v.label for v in study.variants] == ["base", "games"]
    assert cli.main(["study", str(path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "skipping" not in err
    assert [line.split()[0] for line in out.splitlines()[:2]] == ["base", "games"]


def test_a_row_without_the_flag_still_fails_on_missing_data(tmp_path, capsys):
    """Only rows marked skip_without_data are skipped: a missing file is otherwise the error it was."""
    row = GAMES_ROW.replace("skip_without_data = true\n", "")
    study, skipped = spec.load_study(write(tmp_path, "[study]\n" + row + BASE)).with_data_present()
    assert skipped == [] and len(study.tasks) == 1
    assert cli.main(["study", str(tmp_path / "study.toml"), "--dry-run"]) == 2  # a usage error
    assert "key 'data.dataset' ('sasrec-games', no data.path)" in capsys.readouterr().err


def test_skip_without_data_must_be_a_boolean(tmp_path):
    row = GAMES_ROW.replace("skip_without_data = true", "skip_without_data = 'yes'")
    with pytest.raises(SpecError, match=r"key 'study\.variant\[0\]\.skip_without_data' must be true or false"):
        spec.load_study(write(tmp_path, "[study]\n" + row + BASE))


def test_the_shipped_privacy_at_scale_keeps_its_hashes_and_has_a_full_size():
    """The Games rows and the full size added nothing to the default size's 40 rows (their
    records stay valid) and the full size trains real populations and cohorts."""
    path = ROOT / "tasks" / "studies" / "privacy_at_scale.toml"
    study, skipped = spec.load_study(path).with_data_present()
    assert len(study.variants) == 40 and len(skipped) == 6
    hashes = dict(zip([v.label for v in study.variants], [t.hash for t in study.tasks]))
    assert hashes["N=10^6 · C=1000 · gaussian(ε=2)"] == "3dd4ee5d016e"  # the README's records
    assert hashes["popularity"] == "ac7188d8b2ed"
    full = spec.load_study(path, full=True)
    cell = dict(zip([v.label for v in full.variants], full.tasks))["N=10^6 · C=5000 · gaussian(ε=2)"]
    assert cell["data"]["params"]["users"] == 1_000_000
    assert cell["algorithm"]["clients_per_round"] == 5000
    assert cell["privacy"]["noise_cohort_size"] is None and cell["privacy"]["population"] is None
    assert full.name == "privacy_at_scale_full"


def test_the_python_api_skips_them_with_a_warning(tmp_path):
    from tff_rec import api

    popularity = BASE.replace("[algorithm]\n", '[algorithm]\nname = "popularity"\n')  # trains nothing
    path = write(tmp_path, "[study]\n[[study.variant]]\nlabel = 'base'\n" + GAMES_ROW + popularity)
    with pytest.warns(UserWarning, match=r"skipping 'games' \(skip_without_data\): TFF_REC_DATA is not set"):
        results = api.run_study(path, tmp_path / "results")
    assert len(results) == 1 and results[0].error is None
    manifest = (tmp_path / "results" / "study" / "study.json").read_text()
    assert '"base"' in manifest and '"games"' not in manifest


def test_the_shipped_games_federated_keeps_its_records_and_its_full_size_shares_them():
    """The rows added later kept the first six rows' tasks (the README's records), and the full
    size (300 rounds, 3 seeds) reuses the default size's popularity, centralized and 300-round
    FedAdam tasks, so their seed-0 records serve both sizes."""
    path = ROOT / "tasks" / "studies" / "games_federated.toml"
    study = spec.load_study(path)
    hashes = dict(zip([v.label for v in study.variants], [t.hash for t in study.tasks]))
    assert {label: hashes[label] for label in ("popularity", "fedadam", "fedadam, 300 rounds",
                                               "gaussian(ε=8)", "gaussian(ε=2)", "adaptive(ε=8)")} == {
        "popularity": "7f01289eb079", "fedadam": "d881b2c59867", "fedadam, 300 rounds": "0c3bfc44ff95",
        "gaussian(ε=8)": "39755ea1aa18", "gaussian(ε=2)": "0cabe6242e80", "adaptive(ε=8)": "514224734081"}
    full = spec.load_study(path, full=True)
    full_hashes = dict(zip([v.label for v in full.variants], [t.hash for t in full.tasks]))
    assert tuple(full.seeds) == (0, 1, 2) and full.name == "games_federated_full"
    assert full_hashes["popularity"] == hashes["popularity"]
    assert full_hashes["centralized"] == hashes["centralized"]
    assert full_hashes["fedadam"] == hashes["fedadam, 300 rounds"]
    trained = [task for variant, task in zip(full.variants, full.tasks)
               if variant.label not in ("popularity", "centralized")]
    assert len(trained) == 8 and all(task["algorithm"]["rounds"] == 300 for task in trained)
