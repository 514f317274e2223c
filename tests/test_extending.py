"""docs/extending.md, run as written: its three files and pyproject.toml are installed as a
package, and its task validates without TensorFlow and runs with the plugin's partitioner, model
and DP mechanism, whose accountant's ε lands in the record."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "extending.md"


def doc_files() -> dict[str, str]:
    """The page's code blocks that name a file (```python my_recs/model.py), by file name."""
    blocks = re.findall(r"```\w+ (\S+)\n(.*?)```", DOC.read_text(), flags=re.S)
    return {name: text for name, text in blocks}


def install(site: Path, files: dict[str, str]) -> None:
    """Lay the package out as pip installs it: its modules and a .dist-info with the entry points
    of its pyproject.toml."""
    for name, text in files.items():
        if name.endswith(".py"):
            (site / name).parent.mkdir(parents=True, exist_ok=True)
            (site / name).write_text(text)
    (site / "my_recs" / "__init__.py").write_text("")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    info = site / "my_recs-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: 0.1\n")
    groups = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items())
              for group, entries in project["entry-points"].items()]
    (info / "entry_points.txt").write_text("\n".join(groups))


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    folder = tmp_path_factory.mktemp("extending")
    files = doc_files()
    assert {"my_recs/partitioner.py", "my_recs/model.py", "my_recs/mechanism.py",
            "pyproject.toml", "task.toml"} <= set(files)
    install(folder / "site", files)
    task = folder / "task.toml"
    task.write_text(files["task.toml"])
    env = {**os.environ, "PYTHONPATH": str(folder / "site")}
    return folder, env, task


def _python(code: str, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cli(arguments: list[str], env: dict[str, str]) -> dict:
    """A `tff-rec` command's --json output."""
    done = subprocess.run([sys.executable, "-m", "tff_rec.cli", *arguments], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def zcdp_epsilon(noise: float, rounds: int, delta: float) -> float:
    """The doc's accountant, written again: replace-one (fixed cohorts) sensitivity 2 clips."""
    rho = rounds * 2.0**2 / (2 * noise**2)
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))


def test_the_task_validates_without_tensorflow(setup):
    _, env, task = setup
    found = _python(
        "import json, sys\nfrom tff_rec import spec\n"
        f"task = spec.load_task({str(task)!r})\n"
        "print(json.dumps({'partition': task['partition'], 'model': task['model']['name'],"
        " 'mechanism': task['privacy']['mechanism'], 'tf': 'tensorflow' in sys.modules}))", env)
    assert found == {"partition": {"scheme": "activity_silos", "params": {"num_silos": 8}},
                     "model": "cumulative_mean", "mechanism": "gaussian_zcdp", "tf": False}


def test_the_task_runs_with_the_plugins_and_their_accountant(setup):
    folder, env, task = setup
    out = folder / "results"
    done = subprocess.run([sys.executable, "-m", "tff_rec.cli", "run", str(task), "--out", str(out),
                           "--progress", "none"], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    record = next(out.glob("runs/*/seed-0"))
    summary = json.loads((record / "summary.json").read_text())
    privacy = json.loads((record / "privacy.json").read_text())
    assert summary["model"] == "cumulative_mean" and summary["privacy_unit"] == "silo"
    assert summary["heterogeneity"]["num_clients"] == 8
    noise = privacy["params"]["noise_multiplier"]  # calibrated by the plugin to ε = 8
    assert privacy["epsilon"] == pytest.approx(zcdp_epsilon(noise, 3, privacy["delta"]), rel=1e-9)
    assert privacy["epsilon"] == pytest.approx(8.0, rel=1e-6)
    assert privacy["epsilon_by_round"][0] == pytest.approx(zcdp_epsilon(noise, 1, privacy["delta"]))
    assert 0 <= summary["test"]["ndcg@10"] <= 1


NOMINAL = {"privacy.noise_cohort_size": 100, "privacy.population": 10_000, "algorithm.rounds": 2}


def test_the_mechanism_declares_a_nominal_cohort_as_privacy_epsilon_accounts_it(setup):
    """The page's mechanism declares `nominal_cohort`: its task with privacy.noise_cohort_size and
    privacy.population validates and runs; the run's calibrated noise and ε are those `privacy
    calibrate|epsilon --mechanism gaussian_zcdp --noise-cohort-size` print for it, and its query
    adds the noise scaled by C / C_nom."""
    folder, env, task = setup
    out = folder / "nominal"
    settings = [arg for key, value in NOMINAL.items() for arg in ("--set", f"{key}={value}")]
    done = subprocess.run([sys.executable, "-m", "tff_rec.cli", "run", str(task), "--out", str(out),
                           "--progress", "none", *settings], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    privacy = json.loads((next(out.glob("runs/*/seed-0")) / "privacy.json").read_text())
    simulated = privacy["simulated"]
    assert (simulated["noise_cohort_size"], simulated["population"]) == (100, 10_000)
    noise = privacy["params"]["noise_multiplier"]
    assert simulated["aggregator_noise_multiplier"] == pytest.approx(noise * 4 / 100)
    nominal = ["--population", "10000", "--clients-per-round", "4", "--noise-cohort-size", "100",
               "--rounds", "2", "--sampling", "fixed", "--mechanism", "gaussian_zcdp", "--json"]
    calibrated = _cli(["privacy", "calibrate", "--target-epsilon", "8", *nominal], env)
    accounted = _cli(["privacy", "epsilon", "--noise-multiplier", repr(calibrated["noise_multiplier"]),
                      *nominal], env)
    state = _python(
        "import json\nfrom tff_rec.privacy import mechanisms\n"
        "state = mechanisms.initial_query_state('gaussian_zcdp', clients_per_round=4, noise_seed=0,"
        f" noise_cohort_size=100, clip=1.0, noise_multiplier={noise!r})\n"
        "print(json.dumps({'stddev': float(state.numerator_state.stddev)}))", env)
    commands = {"noise": calibrated["noise_multiplier"], "epsilon": accounted["epsilon"]["rdp"],
                "delta": accounted["delta"], "stddev": state["stddev"]}
    assert calibrated["epsilon"] == pytest.approx(8.0, rel=1e-6)
    assert accounted["accounting"] == "zCDP of the Gaussian mechanism, composed over every round"
    assert privacy["params"]["noise_multiplier"] == commands["noise"]
    assert privacy["epsilon"] == commands["epsilon"] == pytest.approx(8.0, rel=1e-6)
    assert privacy["delta"] == commands["delta"]
    # zCDP has no amplification: the nominal setting's ε is the plain composition over 2 rounds
    assert privacy["epsilon"] == pytest.approx(zcdp_epsilon(noise, 2, privacy["delta"]), rel=1e-9)
    assert commands["stddev"] == pytest.approx(1.0 * noise * 4 / 100)
