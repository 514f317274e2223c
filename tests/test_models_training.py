"""Every model learns through the real trainers; BERT4Rec's evaluation inputs; `tasks describe`."""
from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from tff_rec import cli, evaluation, models, runner, runtime, spec
from tff_rec.prepare import prepare

TASK = """
[data]
dataset = "synthetic"
users = 200
items = 40
mean_length = 15
[model]
name = "{model}"
size = "tiny"
max_len = 12
dropout = 0.0
{model_keys}
[partition]
scheme = "iid"
num_clients = 4
[algorithm]
name = "{algorithm}"
rounds = 2
clients_per_round = 4
[algorithm.client]
optimizer = "adam"
learning_rate = 0.01
local_epochs = 2
batch_size = 16
[algorithm.centralized]
epochs = 5
batch_size = 32
learning_rate = 0.01
[evaluation]
every = 5
num_negatives = 5
"""


@pytest.fixture(scope="module", autouse=True)
def _stop_tff_worker() -> Iterator[None]:
    yield
    runtime.stop_workers()


def _task(model: str, algorithm: str, model_keys: str = "") -> spec.TaskSpec:
    text = TASK.format(model=model, algorithm=algorithm, model_keys=model_keys)
    return spec.resolve_task(tomllib.loads(text), "<test>")


def _run(task: spec.TaskSpec, out: Path) -> runner.RunResult:
    return runner.run_task(task, 0, out, progress=False)


def _losses(result: runner.RunResult) -> list[float]:
    with open(result.path / "metrics.csv") as stream:
        return [float(row["loss"]) for row in csv.DictReader(stream)]


@pytest.fixture(scope="module")
def popularity_ndcg(tmp_path_factory: pytest.TempPathFactory) -> float:
    result = _run(_task("sasrec", "popularity"), tmp_path_factory.mktemp("popularity"))
    return result.summary["test"]["ndcg@10"]


@pytest.mark.parametrize(
    "model, model_keys",
    [("sasrec", ""), ("gru4rec", ""), ("bert4rec", "dupe_factor = 8")],
    ids=["sasrec", "gru4rec", "bert4rec"],
)
def test_centralized_training_beats_popularity(
    model: str, model_keys: str, popularity_ndcg: float, tmp_path: Path
) -> None:
    result = _run(_task(model, "centralized", model_keys), tmp_path)
    losses = _losses(result)
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert result.summary["test"]["ndcg@10"] > popularity_ndcg + 0.05


def test_federated_bert4rec_with_sampled_softmax_trains(tmp_path: Path) -> None:
    task = _task("bert4rec", "fedavg", 'loss = "sampled_softmax"\nnum_sampled = 8')
    result = _run(task, tmp_path)
    losses = _losses(result)
    assert len(losses) == 2 and losses[1] < losses[0]
    # Each client holds dupe_factor (default 10) masked copies of each of its users.
    data = prepare(task, 0)
    assert len(data.train_inputs) == 10 * len(data.split.train)
    assert np.isfinite(result.summary["test"]["ndcg@10"])


def test_bert4rec_evaluation_inputs_end_with_the_mask_and_hide_the_target() -> None:
    data = prepare(_task("bert4rec", "centralized"), 0)
    for stage in ("validation", "test"):
        _, inputs, targets, _ = evaluation.evaluation_inputs(
            data.split, stage, data.max_len, data.history_inputs
        )
        assert (inputs[:, -1] == models.mask_token(data.num_items)).all()
        assert not (inputs == targets[:, None]).any()  # synthetic users never repeat an item
    assert prepare(_task("bert4rec", "centralized"), 1).identity != data.identity  # seeded masking
    assert prepare(_task("sasrec", "centralized"), 1).identity == prepare(
        _task("sasrec", "centralized"), 0).identity  # next-item examples do not depend on it


def test_tasks_describe_reports_the_exact_parameter_count(tmp_path: Path, capsys) -> None:
    path = tmp_path / "task.toml"
    path.write_text(TASK.format(model="bert4rec", algorithm="fedavg", model_keys="embedding_dim = 24"))
    assert cli.main(["tasks", "describe", str(path), "--json", "--set", "model.size=small"]) == 0
    described = json.loads(capsys.readouterr().out)["model"]
    built = models.build_model(
        "bert4rec", 40, seed=0, size="small", embedding_dim=24, max_len=12, dropout=0.0
    )
    assert described["parameters"] == built.count_params()
    assert (described["embedding_dim"], described["num_heads"], described["intermediate_dim"]) == (24, 2, 96)
    assert cli.main(["tasks", "describe", str(path)]) == 0
    assert f"parameters: {models.build_model('bert4rec', 40, seed=0, size='tiny', embedding_dim=24, max_len=12).count_params():,}" in capsys.readouterr().out
    assert cli.main(["tasks", "describe", str(path), "--set", "model.size=huge"]) == 2
    assert "key 'model.size' must be one of tiny, small, base, large. Found 'huge'." in capsys.readouterr().err
