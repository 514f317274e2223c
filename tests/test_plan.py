"""The run plan (`tff_rec.plan`): resolved once, frozen, picklable, and what the trainers read.

A plan shipped to another process runs to the same record as one resolved where it runs; the
trainers are loops that yield rows, and a trainer stopped after some rows and started again
yields its checkpointed rows as `Resumed` first and then the rows of an uninterrupted run;
`study --dry-run` and `tasks describe` show what the plan holds.
"""
import dataclasses
import json
import multiprocessing
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from tff_rec import cli, plan, record, runner, spec
from tff_rec.training import TRAINERS
from tff_rec.training.context import Resumed, RunContext

TASK = """
name = "planned"
[data]
dataset = "synthetic"
users = 80
items = 40
mean_length = 10
[model]
max_len = 8
embedding_dim = 8
num_blocks = 1
num_heads = 1
dropout = 0.0
[algorithm]
rounds = 2
clients_per_round = 6
sampling = "poisson"
[algorithm.client]
batch_size = 4
[algorithm.centralized]
epochs = 3
[evaluation]
every = 1
num_negatives = 10
validation_users = 30
[run]
checkpoint_every = 1
"""


DP = {"privacy.mechanism": "gaussian", "privacy.clip": 1.0, "privacy.target_epsilon": 4.0,
      "privacy.delta": 1e-4}
DP_TABLE = '\n[privacy]\nmechanism = "gaussian"\nclip = 1.0\ntarget_epsilon = 4.0\ndelta = 1e-4\n'


def _task(tmp_path, dp: bool = True, **overrides):
    """The task above (with DP-FedAvg calibrated to ε = 4 unless `dp` is False)."""
    path = tmp_path / "planned.toml"
    path.write_text(TASK + (DP_TABLE if dp else ""))
    return spec.load_task(path, overrides)


def test_the_plan_resolves_every_stage_before_training(tmp_path):
    task = _task(tmp_path)
    run = plan.resolve(task, seed=3)
    assert run.trainer == "federated" and run.rounds == 2
    assert run.partition.num_clients == len(run.client_ids) > 6
    # the privacy plan binds mechanism, accountant and the very sampler that draws the cohorts
    assert run.privacy.sampler == run.sampler and run.sampler.scheme == "poisson"
    assert run.privacy.params["noise_multiplier"] > 0  # calibrated to the target
    assert run.privacy.ledger[-1] <= 4.0 and run.privacy.calibrated_epsilon == pytest.approx(
        run.privacy.ledger[-1], rel=1e-6)
    # Poisson: the client updates are the cohorts this seed draws, not rounds × cohort
    drawn = [len(run.sampler.cohort(run.client_ids, r)) for r in (1, 2)]
    assert run.client_updates() == sum(drawn)
    assert len(run.evaluation.validation_users) == 30
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.rounds = 5


def test_a_centralized_plan_has_no_clients_unless_asked(tmp_path):
    task = _task(tmp_path, dp=False, **{"algorithm.name": "centralized"})
    run = plan.resolve(task, seed=0)
    assert run.trainer == "centralized" and run.rounds == 3
    assert run.partition is None and run.sampler is None and run.privacy is None
    assert plan.resolve(task, seed=0, partition=True).partition.num_clients > 0


def test_a_pickled_plan_is_the_same_plan(tmp_path):
    run = plan.resolve(_task(tmp_path), seed=1)
    shipped = pickle.loads(pickle.dumps(run))
    assert shipped.task.hash == run.task.hash and shipped.seed == run.seed
    assert shipped.privacy == run.privacy and shipped.sampler == run.sampler
    assert shipped.model == run.model
    assert shipped.client_ids == run.client_ids
    for cid in run.client_ids:
        assert np.array_equal(shipped.partition.clients[cid], run.partition.clients[cid])
    assert np.array_equal(shipped.evaluation.validation_users, run.evaluation.validation_users)
    assert np.array_equal(shipped.data.get().train_inputs, run.data.get().train_inputs)


def _run_shipped(payload: bytes, out: str) -> str:
    """In a fresh (spawned) process: run a pickled plan, return its record folder."""
    from tff_rec import runtime, threads
    from tff_rec.quiet import silence

    silence()
    threads.fix()
    try:
        return str(runner.run_plan(pickle.loads(payload), out, progress=False).path)
    finally:
        runtime.shutdown()


def _learned(path: Path) -> list[dict]:
    """metrics.csv without the columns that measure the machine."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "rss_mb", "worker_rss_mb")}
            for row in record.read_csv(path / record.METRICS)]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_plan_shipped_to_another_process_makes_the_same_record(tmp_path):
    task = _task(tmp_path, **{"evaluation.validation_users": 20})
    run = plan.resolve(task, seed=0)
    here = runner.run_plan(run, tmp_path / "here", progress=False).path
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        there = pool.apply(_run_shipped, (pickle.dumps(run), str(tmp_path / "there")))
    there = Path(there)
    assert there != here and _learned(there) == _learned(here)
    assert _json(there / record.SUMMARY)["test"] == _json(here / record.SUMMARY)["test"]
    assert _json(there / record.PRIVACY) == _json(here / record.PRIVACY)


def _context(run, tmp_path) -> RunContext:
    return RunContext(plan=run, run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")


def test_a_trainer_yields_rows_and_resumes_with_its_checkpointed_rows(tmp_path):
    task = _task(tmp_path, dp=False, **{"algorithm.name": "centralized"})
    run = plan.resolve(task, seed=0)
    whole = list(TRAINERS[run.trainer](_context(run, tmp_path / "whole")))
    assert [row["round"] for row in whole] == [1, 2, 3]
    assert all("val_ndcg@10" in row for row in whole)

    stopped = TRAINERS[run.trainer](_context(run, tmp_path / "stopped"))
    first = [next(stopped), next(stopped), next(stopped)]  # epoch 2's checkpoint is written when
    stopped.close()                                         # the third row is asked for
    assert [row["round"] for row in first] == [1, 2, 3]
    again = list(TRAINERS[run.trainer](_context(run, tmp_path / "stopped")))
    resumed = [item.row for item in again if isinstance(item, Resumed)]
    fresh = [item for item in again if not isinstance(item, Resumed)]
    assert [row["round"] for row in resumed] and [row["round"] for row in fresh][-1] == 3
    assert [row["round"] for row in resumed + fresh] == [1, 2, 3]

    def learned(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert learned(resumed + fresh) == learned(whole)


def test_dry_run_lists_each_runs_client_updates_and_epsilon(tmp_path, capsys):
    study = tmp_path / "study.toml"
    study.write_text('name = "planned_study"\n[study]\nseeds = [0, 1]\n'
                     '[[study.variant]]\nlabel = "dp"\n'
                     f'set = {{ {", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in DP.items())} }}\n'
                     '[[study.variant]]\nlabel = "central"\n'
                     'set = { "algorithm.name" = "centralized" }\n'
                     + TASK.replace('name = "planned"', ""))
    assert cli.main(["study", str(study), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    loaded = spec.load_study(study)
    for seed in (0, 1):
        run = plan.resolve(loaded.tasks[0], seed)
        line = next(line for line in lines if line.startswith("dp ") and f"seed {seed} " in line)
        assert f"{run.client_updates()} client updates" in line
        assert re.search(rf"ε = {run.privacy.ledger[-1]:.4g}\b", line)
    central = next(line for line in lines if line.startswith("central "))
    assert "0 client updates" in central and "ε" not in central
    assert not (tmp_path / "out").exists(), "a dry run writes nothing"


def test_describe_shows_the_plans_calibration_and_clients(tmp_path, capsys):
    task = _task(tmp_path)
    run = plan.resolve(task, seed=0)
    assert cli.main(["tasks", "describe", str(tmp_path / "planned.toml"), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["partition"]["num_clients"] == run.partition.num_clients
    assert described["privacy"]["calibrated"]["noise_multiplier"] == run.privacy.params["noise_multiplier"]
    assert described["privacy"]["calibrated"]["epsilon"] == run.privacy.calibrated_epsilon
