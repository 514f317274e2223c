"""Study grids: axis expansion, zip axes, labels, hashing, errors that name the key."""
from __future__ import annotations

import pytest

from tff_rec import grid, spec
from tff_rec.spec import SpecError

BASE = """
[data]
dataset = "synthetic"
users = 100
items = 50
[algorithm]
rounds = 2
clients_per_round = 4
"""

PARTITIONS = """
[[study.axis]]
name = "partition"
values = [
  { "partition.scheme" = "natural" },
  { "partition.scheme" = "dirichlet", "partition.alpha" = 0.1, "partition.num_clients" = 10 },
  { label = "iid silos", "partition.scheme" = "iid", "partition.num_clients" = 10 },
]
"""

PRIVACY = """
[[study.axis]]
name = "privacy"
zip = { "privacy.mechanism" = ["gaussian", "adaptive"], "privacy.target_epsilon" = [2.0, 8.0] }
"""


def write(tmp_path, text: str):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_axes_expand_to_their_product_with_readable_labels(tmp_path):
    study = spec.load_study(write(tmp_path, "[study]\nseeds = [0, 1]\n" + PARTITIONS + PRIVACY + BASE))
    labels = [v.label for v in study.variants]
    assert labels == [
        "natural · gaussian(ε=2)", "natural · adaptive(ε=8)",
        "dirichlet(α=0.1, K=10) · gaussian(ε=2)", "dirichlet(α=0.1, K=10) · adaptive(ε=8)",
        "iid silos · gaussian(ε=2)", "iid silos · adaptive(ε=8)",
    ]
    assert study.variants[2].axes == {"partition": "dirichlet(α=0.1, K=10)", "privacy": "gaussian(ε=2)"}
    third = study.tasks[2]
    assert third["partition"]["scheme"] == "dirichlet" and third["partition"]["params"]["alpha"] == 0.1
    assert third["privacy"]["mechanism"] == "gaussian" and third["privacy"]["target_epsilon"] == 2.0
    assert len({t.hash for t in study.tasks}) == 6


def test_listed_variants_come_first_and_are_not_crossed(tmp_path):
    text = ("[study]\nseeds = [0]\n[[study.variant]]\nlabel = 'centralized'\n"
            "set = { 'algorithm.name' = 'centralized' }\n" + PARTITIONS + BASE)
    study = spec.load_study(write(tmp_path, text))
    assert [v.label for v in study.variants][:2] == ["centralized", "natural"]
    assert study.variants[0].axes == {} and len(study.variants) == 4


def test_same_task_in_two_studies_has_the_same_hash(tmp_path):
    """Records are keyed by the task hash, so studies sharing a task share its runs."""
    gridded = spec.load_study(write(tmp_path, "[study]\nseeds = [0]\n" + PARTITIONS + BASE))
    listed = tmp_path / "other.toml"
    listed.write_text("[study]\nseeds = [0]\n[[study.variant]]\nlabel = 'my natural'\n"
                      "set = { 'partition.scheme' = 'natural' }\n" + BASE)
    assert spec.load_study(listed).tasks[0].hash == gridded.tasks[0].hash


def test_auto_labels():
    assert grid.auto_label({"partition.scheme": "dirichlet", "partition.alpha": 0.1}) == "dirichlet(α=0.1)"
    assert grid.auto_label({"privacy.mechanism": "none"}) == "none"
    assert grid.auto_label({"model.embedding_dim": 64}) == "embedding_dim=64"
    assert grid.auto_label({"privacy.mechanism": "tree", "privacy.target_epsilon": 2.0,
                            "algorithm.sampling": "shuffle"}) == "tree(ε=2)"


@pytest.mark.parametrize("axis, fragment", [
    ("[[study.axis]]\nvalues = [{ 'model.embedding_dim' = 8 }]\n", "study.axis[0]' needs a string 'name'"),
    ("[[study.axis]]\nname = 'a'\n", "needs exactly one of 'values' or 'zip'"),
    ("[[study.axis]]\nname = 'a'\nzip = { 'model.embedding_dim' = [8, 16], 'model.num_heads' = [1] }\n",
     "one length"),
    ("[[study.axis]]\nname = 'a'\nvalues = []\n", "study.axis[0].values"),
    ("[[study.axis]]\nname = 'a'\nvalues = [3]\n", "study.axis[0].values[0]"),
    ("[[study.axis]]\nname = 'a'\nvalues = [{ 'model.embedding_dim' = 8 }]\ncolor = 'red'\n", "study.axis[0].color"),
    ("[[study.axis]]\nname = 'a'\nzip = { 'model.embedding_dim' = [8, 8] }\n", "repeated labels"),
    ("[[study.axis]]\nname = 'a'\nzip = { 'model.embedding_dim' = [8] }\n"
     "[[study.axis]]\nname = 'b'\nzip = { 'model.embedding_dim' = [16] }\n", "an earlier axis also sets"),
    ("[[study.axis]]\nname = 'a'\nzip = { 'model.embedding_dim' = [8] }\n"
     "[[study.axis]]\nname = 'a'\nzip = { 'model.num_heads' = [1] }\n", "unique"),
    ("[[study.axis]]\nname = 'a'\nzip = { 'algorithm.rounds' = [-8] }\n", "algorithm.rounds"),
])
def test_malformed_axes_are_refused_with_the_key(tmp_path, axis, fragment):
    with pytest.raises(SpecError) as error:
        spec.load_study(write(tmp_path, "[study]\nseeds = [0]\n" + axis + BASE))
    assert fragment in str(error.value) and "study.toml" in str(error.value)
