"""Task and study files: validation messages, defaults, overrides, hashing."""
from __future__ import annotations

from pathlib import Path

import pytest

from tff_rec import spec
from tff_rec.spec import SpecError

QUICKSTART = Path(__file__).resolve().parent.parent / "tasks" / "quickstart.toml"


def write(tmp_path: Path, text: str, name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_fill_every_section(tmp_path):
    task = spec.load_task(write(tmp_path, "[data]\ndataset = 'synthetic'\n"))
    assert task.name == "task"
    assert task["algorithm"]["name"] == "fedavg"
    assert task["algorithm.client"]["batch_size"] == 16
    assert task["privacy"]["mechanism"] == "none"
    assert "max_len" in task["model"]["params"]
    assert "users" in task["data"]["params"]


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("[algorithm]\nrounds = 'ten'\n", ["task.toml", "algorithm.rounds", "integer", "'ten'"]),
        ("[algorithm]\nrounds = 0\n", ["algorithm.rounds", "must be positive", "0"]),
        ("[algorithm]\nname = 'fedsomething'\n", ["algorithm.name", "'fedavg'", "'centralized'"]),
        ("[algorithm]\nround = 3\n", ["unknown key 'algorithm.round'", "rounds"]),
        ("[dataa]\n", ["unknown key 'dataa'", "data"]),
        ("[data]\ndataset = 'netflix'\n", ["netflix", "synthetic", "movielens-1m"]),
        ("[data]\nusers = 'many'\n", ["data.users", "'many'"]),
        ("[data]\ncolour = 3\n", ["unknown key 'data.colour'", "users"]),
        ("[model]\nembedding_dim = true\n", ["model.embedding_dim", "True"]),
        ("[evaluation]\nks = [10, 0]\n", ["evaluation.ks", "positive integers"]),
        ("[privacy]\nmechanism = 'magic'\n", ["privacy", "magic", "gaussian"]),
        ("[privacy]\ndelta = 2.0\n", ["privacy.delta", "(0, 1)"]),
        (
            "[algorithm]\nname = 'centralized'\n[privacy]\nmechanism = 'gaussian'\n",
            ["privacy.mechanism", "centralized"],
        ),
        ("this is = not toml [", ["task.toml", "not valid TOML"]),
    ],
)
def test_bad_task_files_name_the_file_and_key(tmp_path, text, fragments):
    with pytest.raises(SpecError) as error:
        spec.load_task(write(tmp_path, text))
    message = str(error.value)
    for fragment in fragments:
        assert fragment in message, message


def test_missing_task_file_is_named(tmp_path):
    with pytest.raises(SpecError, match="no such task file"):
        spec.load_task(tmp_path / "absent.toml")


def test_overrides_parse_toml_values_and_change_the_hash(tmp_path):
    path = write(tmp_path, "[algorithm]\nrounds = 3\n")
    base = spec.load_task(path)
    changed = spec.load_task(path, dict([spec.parse_override("algorithm.rounds=7")]))
    assert changed["algorithm"]["rounds"] == 7
    assert base.hash != changed.hash
    assert spec.parse_override("privacy.mechanism=gaussian") == ("privacy.mechanism", "gaussian")
    assert spec.parse_override("evaluation.ks=[5, 10]") == ("evaluation.ks", [5, 10])
    with pytest.raises(SpecError, match="key=value"):
        spec.parse_override("algorithm.rounds")


def test_hash_ignores_name_and_depends_on_content(tmp_path):
    one = spec.load_task(write(tmp_path, "name = 'a'\n[algorithm]\nrounds = 3\n", "a.toml"))
    two = spec.load_task(write(tmp_path, "name = 'b'\n[algorithm]\nrounds = 3\n", "b.toml"))
    three = spec.load_task(write(tmp_path, "name = 'a'\n[algorithm]\nrounds = 4\n", "c.toml"))
    # Defaults written out explicitly resolve to the same task.
    four = spec.load_task(write(tmp_path, "[algorithm]\nrounds = 3\nclients_per_round = 32\n", "d.toml"))
    assert one.hash == two.hash == four.hash
    assert one.hash != three.hash
    assert len(one.hash) == 12


def test_integer_for_float_key_is_accepted_and_normalized(tmp_path):
    a = spec.load_task(write(tmp_path, "[algorithm.server]\nlearning_rate = 1\n", "a.toml"))
    b = spec.load_task(write(tmp_path, "[algorithm.server]\nlearning_rate = 1.0\n", "b.toml"))
    assert a["algorithm.server"]["learning_rate"] == 1.0
    assert a.hash == b.hash


def test_quickstart_study_expands_variants():
    study = spec.load_study(QUICKSTART)
    labels = [v.label for v in study.variants]
    assert labels == ["popularity", "centralized", "fedavg", "fedavg + DP"]
    assert len(study.seeds) >= 2
    by_label = dict(zip(labels, study.tasks))
    assert by_label["popularity"]["algorithm"]["name"] == "popularity"
    assert by_label["fedavg + DP"]["privacy"]["mechanism"] == "gaussian"
    assert len({t.hash for t in study.tasks}) == 4


def test_study_errors_name_the_variant(tmp_path):
    text = "[study]\nseeds = [0]\n[[study.variant]]\nlabel = 'x'\nset = { 'algorithm.rounds' = -1 }\n"
    with pytest.raises(SpecError) as error:
        spec.load_study(write(tmp_path, text))
    assert "study.variant[0]" in str(error.value) and "algorithm.rounds" in str(error.value)
    with pytest.raises(SpecError, match="study.seeds"):
        spec.load_study(write(tmp_path, "[study]\nseeds = []\n", "s.toml"))
    with pytest.raises(SpecError, match="study file"):
        spec.load_task(QUICKSTART)


def test_resolved_task_round_trips_through_toml(tmp_path):
    from tff_rec.record import to_toml

    task = spec.load_task(write(tmp_path, "[privacy]\nmechanism = 'gaussian'\nnoise_multiplier = 1.0\n"))
    again = spec.load_task(write(tmp_path, to_toml(task.to_dict()), "again.toml"))
    assert again.hash == task.hash


def test_tree_mechanism_needs_shuffle_sampling(tmp_path):
    text = "[privacy]\nmechanism = 'tree'\nnoise_multiplier = 1.0\n[algorithm]\nsampling = 'poisson'\n"
    with pytest.raises(SpecError, match="algorithm.sampling = 'shuffle'"):
        spec.load_task(write(tmp_path, text))
    ok = spec.load_task(write(tmp_path, text.replace("poisson", "shuffle"), "ok.toml"))
    assert ok["privacy"]["mechanism"] == "tree"


def test_target_epsilon_needs_a_noisy_mechanism(tmp_path):
    with pytest.raises(SpecError, match="privacy.target_epsilon"):
        spec.load_task(write(tmp_path, "[privacy]\nmechanism = 'clip'\ntarget_epsilon = 2.0\n"))
