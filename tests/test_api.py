"""The Python API (`tff_rec.api`): the same records and tables as the CLI, from a script."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tff_rec import api, cli, record, results

TASK = (
    'name = "api"\n[data]\ndataset = "synthetic"\nusers = 200\nitems = 80\n'
    '[model]\nname = "sasrec"\nmax_len = 10\nembedding_dim = 16\nnum_blocks = 1\nnum_heads = 1\n'
    '[algorithm]\nname = "fedavg"\nrounds = 2\nclients_per_round = 20\n'
    '[evaluation]\nnum_negatives = 50\n'
)


def test_run_load_compare_and_reload_the_model(tmp_path):
    path = tmp_path / "api.toml"
    path.write_text(TASK)
    task = api.load_task(path, {"algorithm.rounds": 3})
    assert task["algorithm"]["rounds"] == 3
    planned = api.plan(task, seed=1)  # what the run will draw, before it trains
    out = tmp_path / "results"
    made = api.run(task, seed=1, out=out)
    rows = record.read_csv(made.path / record.METRICS)
    assert [row["clients"] for row in rows] == planned.sampler.sizes(3)
    assert not made.skipped and made.path == record.run_dir(out, task.hash, 1)
    assert api.run(task, seed=1, out=out).skipped  # a complete record is reused, as by the CLI
    runs = api.load_results(out / task.name)  # the manifest the run was listed in
    summary = json.loads((made.path / record.SUMMARY).read_text())
    assert runs["test_ndcg@10"].tolist() == [summary["test"]["ndcg@10"]]
    table = api.compare(runs, ["ndcg@10"])
    assert table["ndcg@10"].tolist() == [summary["test"]["ndcg@10"]]
    # the CLI's table of the same records is the API's, rendered
    assert results.format_table(table, ["ndcg@10"]) in _cli_table(out / task.name)
    model, data = api.load_model(made.path)
    assert model.count_params() > 0 and data.num_items == summary.get("num_items", data.num_items)
    assert api.evaluate_model(made.path) == pytest.approx(summary["test"])


def _cli_table(study_dir) -> str:
    import contextlib
    import io

    stream = io.StringIO()
    with contextlib.redirect_stdout(stream):
        assert cli.main(["compare", str(study_dir), "--metrics", "ndcg@10"]) == 0
    return stream.getvalue()


def test_importing_the_api_silences_tensorflow_and_imports_no_tensorflow():
    code = ("import os, sys; from tff_rec import api; "
            "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), 'tensorflow' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.split() == ["3", "False"]
