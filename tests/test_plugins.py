"""Plugins: registry entries from another installed package, through Python entry points.

A tiny plugin distribution is "installed" into a temporary folder as pip would lay it out (the
package, `<name>-0.1.dist-info/METADATA` and `entry_points.txt`) and put on the PYTHONPATH of
child processes: a task names its partitioner, model and algorithm, validates, and runs end to end; the
plugin is imported only when a task names something not built in; a plugin taking a built-in's
name is refused, naming its distribution (ARCHITECTURE.md, Plugins).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''
"""A tff-rec plugin: the `round_robin` partitioner, the `sasrec_plugin` model and the
`fedavg_plugin` algorithm."""
from tff_rec.algorithm_registry import Algorithm
from tff_rec.lazy import Ref
from tff_rec.models.hparams import SASRecHParams
from tff_rec.models.registry import ModelEntry
from tff_rec.params import AT_LEAST_ONE, Param
from tff_rec.partition.schemes import Scheme


def _round_robin(split, users, rng, *, num_clients):
    """Users dealt to the clients in turn (user k to client k mod K)."""
    return [users[k::num_clients] for k in range(num_clients)]


ROUND_ROBIN = Scheme("round_robin", "silo", (Param("num_clients", int, 7, "clients K", AT_LEAST_ONE),),
                     "Users dealt to K clients in turn.", _round_robin)


def sasrec_plugin():
    """A callable entry point: returns the entry (SASRec under another name)."""
    return ModelEntry("sasrec_plugin", "SASRec under a plugin's name", SASRecHParams,
                      Ref("tff_rec.models.sasrec:SASRec"), examples="next_item")


FEDAVG_PLUGIN = Algorithm("fedavg_plugin", "FedAvg under a plugin's name", "McMahan et al. 2017",
                          Ref("tff_rec.algorithms:build_fedavg"), weighted=True,
                          client_optimizer=Ref("tff_rec.algorithms:own_client_optimizer"))
'''

ENTRY_POINTS = """
[tff_rec.partitioners]
round_robin = tffrec_demo_plugin:ROUND_ROBIN

[tff_rec.models]
sasrec_plugin = tffrec_demo_plugin:sasrec_plugin

[tff_rec.algorithms]
fedavg_plugin = tffrec_demo_plugin:FEDAVG_PLUGIN
"""

CLASHING_ENTRY_POINTS = """
[tff_rec.partitioners]
iid = tffrec_clash_plugin:ROUND_ROBIN
"""

TASK = """
name = "plugin"
[data]
dataset = "synthetic"
users = 120
items = 60
mean_length = 12
[partition]
scheme = "round_robin"
[model]
name = "sasrec_plugin"
max_len = 10
embedding_dim = 16
num_blocks = 1
num_heads = 1
dropout = 0.0
[algorithm]
name = "fedavg_plugin"
rounds = 2
clients_per_round = 3
[algorithm.client]
learning_rate = 0.5
batch_size = 4
[algorithm.server]
optimizer = "sgd"
learning_rate = 1.0
[evaluation]
every = 2
num_negatives = 20
[run]
checkpoint_every = 1
"""


def install(site: Path, package: str, distribution: str, code: str, entry_points: str) -> None:
    """Lay out an installed distribution: the package and its .dist-info metadata."""
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(code)
    info = site / f"{distribution.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points).lstrip())
    (info / "RECORD").write_text("")


@pytest.fixture()
def site(tmp_path) -> Path:
    folder = tmp_path / "site"
    install(folder, "tffrec_demo_plugin", "tffrec-demo-plugin", PLUGIN, ENTRY_POINTS)
    return folder


def child_env(site: Path) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(site) + (os.pathsep + path if path else "")}


def python(code: str, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=ROOT, env=child_env(site), timeout=600)


def test_a_task_naming_the_plugins_partitioner_and_model_validates(site, tmp_path):
    task = tmp_path / "task.toml"
    task.write_text(TASK)
    bad = tmp_path / "bad.toml"
    bad.write_text(TASK.replace('scheme = "round_robin"', 'scheme = "round_robin"\nnum_clients = 0'))
    result = python(f"""
        import json, sys
        from tff_rec import spec
        spec.load_study("tasks/quickstart.toml")  # built-in names only: the plugin is not imported
        before = "tffrec_demo_plugin" in sys.modules
        task = spec.load_task({str(task)!r})
        try:
            spec.load_task({str(bad)!r})
        except spec.SpecError as error:
            refused = str(error)
        print(json.dumps({{
            "before": before, "partition": task["partition"], "model": task["model"]["name"],
            "algorithm": task["algorithm"]["name"],
            "refused": refused, "tensorflow": "tensorflow" in sys.modules,
        }}))
    """, site)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["before"] is False
    assert found["partition"] == {"scheme": "round_robin", "params": {"num_clients": 7}}
    assert found["model"] == "sasrec_plugin" and found["algorithm"] == "fedavg_plugin"
    assert "key 'partition.num_clients' must be at least 1. Found 0." in found["refused"]
    assert found["tensorflow"] is False  # the plugin's declarations are as light as the built-ins'


def test_unknown_names_still_fail_as_before_with_a_plugin_installed(site, tmp_path):
    task = tmp_path / "task.toml"
    task.write_text(TASK.replace('"round_robin"', '"round_robin_typo"'))
    result = python(f"""
        from tff_rec import spec
        try:
            spec.load_task({str(task)!r})
        except spec.SpecError as error:
            print(error)
    """, site)
    assert result.returncode == 0, result.stderr
    # the message of a tree without plugins (a name is looked up, not every plugin loaded)
    assert result.stdout.strip().endswith(
        "key 'partition.scheme' must be one of attribute, dirichlet, iid, natural, pathological, "
        "quantity. Found 'round_robin_typo'.")


def test_a_plugin_may_not_take_a_builtin_name(site, tmp_path):
    install(site, "tffrec_clash_plugin", "tffrec-clash-plugin", PLUGIN, CLASHING_ENTRY_POINTS)
    task = tmp_path / "task.toml"
    task.write_text(TASK)
    result = python(f"""
        from tff_rec import plugins, spec
        try:
            plugins.load_all()
        except plugins.PluginError as error:
            print("listing:", error)
        try:
            spec.load_task({str(task)!r})
        except spec.SpecError as error:
            print("task:", error)
    """, site)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2, result.stdout
    for line in lines:
        assert "plugin 'tffrec-clash-plugin' declares partition scheme 'iid'" in line
        assert "which is a built-in partition scheme" in line


def test_a_task_with_the_plugins_partitioner_runs_end_to_end(site, tmp_path):
    task = tmp_path / "task.toml"
    task.write_text(TASK)
    out = tmp_path / "out"
    executable = shutil.which("tff-rec") or str(Path(sys.executable).parent / "tff-rec")
    result = subprocess.run([executable, "run", str(task), "--out", str(out), "--no-progress"],
                            capture_output=True, text=True, cwd=ROOT, env=child_env(site),
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    [summary_path] = list(out.rglob("summary.json"))
    summary = json.loads(summary_path.read_text())
    assert summary["partition"] == "round_robin" and summary["model"] == "sasrec_plugin"
    assert summary["algorithm"] == "fedavg_plugin"
    heterogeneity = summary["heterogeneity"]
    assert heterogeneity["scheme"] == "round_robin"
    assert heterogeneity["num_clients"] == 7  # the plugin's default K, dealt by the plugin
    assert heterogeneity["privacy_unit"] == "silo"
    assert summary["test"]["ndcg@10"] >= 0
    rows = (summary_path.parent / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # header and the two rounds
