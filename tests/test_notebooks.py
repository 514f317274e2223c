"""The analysis notebooks 02–04 execute on small studies of their kind (01 runs on the shared
study of test_end_to_end.py). A file of their own, so that the two test processes share the work."""
from __future__ import annotations

import json
from typing import Iterator

import pytest

from test_end_to_end import execute_notebook, summaries, write_study
from tff_rec import cli, record, runtime


@pytest.fixture(scope="module", autouse=True)
def _stop_tff_worker() -> Iterator[None]:
    yield
    runtime.stop_workers()


def test_partitioning_notebook_executes_on_a_partition_study(tmp_path):
    study = write_study(tmp_path, "parts", {
        "natural": "",
        "iid": '"partition.scheme" = "iid", "partition.num_clients" = 4, "algorithm.clients_per_round" = 2',
    }, rounds=1)
    out = tmp_path / "results"
    assert cli.main(["study", str(study), "--out", str(out), "--no-progress"]) == 0
    text = execute_notebook("02_partitioning.ipynb", TFF_REC_STUDY=str(study),
                            TFF_REC_RESULTS=str(out / "parts"))
    assert "| iid | 1 |" in text and "mean_js_divergence" in text


def test_privacy_notebook_executes_on_a_privacy_study(tmp_path):
    study = write_study(tmp_path, "priv", {
        "no DP": "",
        "gaussian (ε=20)": '"privacy.mechanism" = "gaussian", "privacy.target_epsilon" = 20.0',
        "gaussian (ε=50)": '"privacy.mechanism" = "gaussian", "privacy.target_epsilon" = 50.0',
    }, rounds=2)
    out = tmp_path / "results"
    assert cli.main(["study", str(study), "--out", str(out), "--no-progress"]) == 0
    found = summaries(out / "priv")
    assert found["gaussian (ε=20)", 0]["epsilon"] == pytest.approx(20.0, rel=1e-3)
    dp_run = record.run_dir(out, found["gaussian (ε=20)", 0]["task_hash"], 0)
    privacy = json.loads((dp_run / record.PRIVACY).read_text())
    assert privacy["target_epsilon"] == 20.0 and privacy["params"]["noise_multiplier"] > 0
    text = execute_notebook("03_privacy_utility.ipynb", TFF_REC_RESULTS=str(out / "priv"))
    assert "gaussian (ε=50)" in text


def test_grid_notebook_executes_on_a_partition_x_privacy_grid(tmp_path):
    """A 2 × 2 grid plus centralized, one seed: notebook 04's pivot, tests and plots run."""
    axes = """
[[study.axis]]
name = "partition"
values = [{ "partition.scheme" = "natural" },
          { "partition.scheme" = "iid", "partition.num_clients" = 12, "algorithm.clients_per_round" = 3 }]
[[study.axis]]
name = "privacy"
values = [{ "privacy.mechanism" = "none" },
          { "privacy.mechanism" = "gaussian", "privacy.target_epsilon" = 20.0 }]
"""
    study = write_study(tmp_path, "grid", {"centralized": '"algorithm.name" = "centralized"'}, rounds=2)
    study.write_text(study.read_text().replace("[data]", axes + "[data]", 1))
    out = tmp_path / "results"
    assert cli.main(["study", str(study), "--out", str(out), "--no-progress"]) == 0
    text = execute_notebook("04_partition_x_privacy.ipynb", TFF_REC_RESULTS=str(out / "grid"))
    assert "| partition \\ privacy | none | gaussian(ε=20) |" in text
    assert "iid(K=12, m=3)" in text and "best private cell" in text
