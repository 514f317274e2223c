"""End-to-end tests of the `tff-rec` commands on tiny synthetic data.

One tiny study (popularity, centralized, FedAvg, DP-FedAvg × 2 seeds) runs once per session,
in-process; the other tests read its records or run single tasks next to it.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Optional

import pytest

from tff_rec import cli, record, runtime, spec, stale

ROOT = Path(__file__).resolve().parent.parent
TINY = """
name = "tiny"
[study]
seeds = [0, 1]
metrics = ["ndcg@10", "hr@10"]
[[study.variant]]
label = "popularity"
set = { "algorithm.name" = "popularity" }
[[study.variant]]
label = "centralized"
set = { "algorithm.name" = "centralized" }
[[study.variant]]
label = "fedavg"
[[study.variant]]
label = "fedavg + DP"
set = { "privacy.mechanism" = "gaussian", "privacy.clip" = 1.0, "privacy.noise_multiplier" = 1.0 }

[data]
dataset = "synthetic"
users = 120
items = 60
mean_length = 12
[model]
max_len = 10
embedding_dim = 16
num_blocks = 1
num_heads = 1
dropout = 0.0
[algorithm]
rounds = 3
clients_per_round = 10
[algorithm.client]
learning_rate = 0.5
batch_size = 4
[algorithm.server]
optimizer = "sgd"
learning_rate = 1.0
[algorithm.centralized]
epochs = 2
[evaluation]
every = 2
num_negatives = 20
[run]
checkpoint_every = 1
"""


def task_text(**overrides: str) -> str:
    """The tiny study's base task (no [study] table), with top-level keys replaced."""
    text = re.sub(r"\[study\].*?(?=\n\[data\])", "", TINY, flags=re.S)
    for key, value in overrides.items():
        text = text.replace(f"{key} = ", f"{key} = {value} #", 1)
    return text


def tff_rec(*args: str, timeout: float = 240,
            env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run the installed console script in a child process, reading its output to EOF
    (`env`: variables added to this process's environment)."""
    executable = shutil.which("tff-rec") or str(Path(sys.executable).parent / "tff-rec")
    return subprocess.run(
        [executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    path = root / "tiny.toml"
    path.write_text(TINY)
    out = root / "results"
    assert cli.main(["study", str(path), "--out", str(out), "--no-progress"]) == 0
    yield out / "tiny"
    runtime.stop_workers()


def write_study(folder: Path, name: str, variants: dict[str, str], rounds: int) -> Path:
    """A one-seed study over the tiny task: `variants` maps labels to their `set = {...}` bodies."""
    entries = "".join(
        f'[[study.variant]]\nlabel = "{label}"\n' + (f"set = {{ {body} }}\n" if body else "")
        for label, body in variants.items()
    )
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\n[study]\nseeds = [0]\n{entries}'
                    + task_text(rounds=str(rounds)).replace('name = "tiny"', ""))
    return path


def summaries(study: Path) -> dict[tuple[str, int], dict]:
    """(label, seed) → summary of the complete runs a study folder's manifest lists."""
    manifest = record.read_manifest(study)
    found = {}
    for variant in manifest["variants"]:
        for seed in manifest["seeds"]:
            run = record.run_dir(study.parent, variant["task_hash"], seed)
            if record.is_complete(run):
                found[variant["label"], seed] = json.loads((run / record.SUMMARY).read_text())
    return found


def metric_rows(run: Path) -> list[dict]:
    with open(run / record.METRICS) as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:  # measurements of the machine, not of the learning
        for column in ("seconds", "rss_mb", "worker_rss_mb"):
            row.pop(column, None)
    return rows


def test_study_writes_complete_records(study_dir):
    found = summaries(study_dir)
    assert set(found) == {(label, seed) for label in ("popularity", "centralized", "fedavg", "fedavg + DP") for seed in (0, 1)}
    for (label, seed), summary in found.items():
        run = record.run_dir(study_dir.parent, summary["task_hash"], seed)
        for name in (record.CONFIG, record.METRICS, record.ENV, record.SUMMARY):
            assert (run / name).is_file(), (label, name)
        assert not (run / record.CHECKPOINTS).exists()
        assert 0.0 <= summary["test"]["ndcg@10"] <= summary["test"]["hr@10"] <= 1.0
        assert summary["test"]["users"] > 0
    fed = found["fedavg", 0]
    assert fed["privacy_unit"] == "user" and fed["epsilon"] is None
    assert len(metric_rows(record.run_dir(study_dir.parent, fed["task_hash"], 0))) == 3
    env = json.loads((record.run_dir(study_dir.parent, fed["task_hash"], 0) / record.ENV).read_text())
    assert env["packages"]["tensorflow-federated"] == "0.87.0"


def test_dp_run_reports_epsilon_and_ledger(study_dir):
    dp = summaries(study_dir)["fedavg + DP", 0]
    run = record.run_dir(study_dir.parent, dp["task_hash"], 0)
    privacy = json.loads((run / record.PRIVACY).read_text())
    ledger = privacy["epsilon_by_round"]
    assert len(ledger) == 3 and ledger == sorted(ledger) and ledger[0] > 0
    assert dp["epsilon"] == pytest.approx(ledger[-1])
    assert privacy["sampling"] == "fixed" and 0 < dp["delta"] < 1
    assert privacy["privacy_unit"] == "user" and privacy["accountant"] == "rdp"
    rows = metric_rows(run)
    assert [float(r["epsilon"]) for r in rows] == pytest.approx(ledger)


def test_rerunning_a_study_skips_complete_runs(study_dir, capsys):
    before = {p: p.stat().st_mtime_ns for p in (study_dir.parent / record.RUNS).rglob(record.SUMMARY)}
    path = study_dir.parent.parent / "tiny.toml"
    assert cli.main(["study", str(path), "--out", str(study_dir.parent), "--no-progress"]) == 0
    output = capsys.readouterr().out
    assert "8 runs (8 already complete, 0 failed)" in output
    assert {p: p.stat().st_mtime_ns for p in (study_dir.parent / record.RUNS).rglob(record.SUMMARY)} == before
    for label in ("popularity", "centralized", "fedavg", "fedavg + DP"):
        assert f"| {label} | 2 |" in output


@pytest.mark.parametrize("fmt, marker", [("markdown", "| task |"), ("csv", "ndcg@10_ci"), ("latex", r"\toprule")])
def test_compare_formats(study_dir, capsys, fmt, marker):
    assert cli.main(["compare", str(study_dir), "--format", fmt]) == 0
    output = capsys.readouterr().out
    assert marker in output
    assert "fedavg + DP" in output


def test_compare_table_values_are_means_over_seeds(study_dir, capsys):
    assert cli.main(["compare", str(study_dir), "--format", "csv", "--metrics", "ndcg@10"]) == 0
    rows = {r["label"]: r for r in csv.DictReader(capsys.readouterr().out.splitlines())}
    found = summaries(study_dir)
    for label, row in rows.items():
        expected = (found[label, 0]["test"]["ndcg@10"] + found[label, 1]["test"]["ndcg@10"]) / 2
        assert float(row["ndcg@10"]) == pytest.approx(expected, rel=1e-5)
        assert int(row["seeds"]) == 2
    assert float(rows["fedavg + DP"]["epsilon"]) > 0
    assert rows["fedavg"]["epsilon"] == ""


def test_compare_adds_heterogeneity_columns(study_dir, capsys):
    assert cli.main(["compare", str(study_dir), "--columns", "het_mean_js_divergence", "het_num_clients"]) == 0
    output = capsys.readouterr().out
    assert "mean_js_divergence" in output and "num_clients" in output
    fed = next(line for line in output.splitlines() if line.startswith("| fedavg |"))
    clients = summaries(study_dir)["fedavg", 0]["heterogeneity"]["num_clients"]
    assert fed.rstrip(" |").endswith(f" {clients}")
    assert cli.main(["compare", str(study_dir), "--columns", "het_nonsense"]) == 2
    assert "het_mean_js_divergence" in capsys.readouterr().err


def test_same_seed_reproduces_metrics_and_another_seed_differs(study_dir, tmp_path):
    path = tmp_path / "task.toml"
    path.write_text(task_text())
    for label in ("fedavg", "fedavg + DP"):
        extra = [] if label == "fedavg" else [
            "--set", "privacy.mechanism=gaussian", "--set", "privacy.clip=1.0",
            "--set", "privacy.noise_multiplier=1.0",
        ]
        assert cli.main(["run", str(path), "--out", str(tmp_path / "again"), "--study", "tiny",
                         "--no-progress", *extra]) == 0
        original = summaries(study_dir)
        seed0 = original[label, 0]
        rerun = record.run_dir(tmp_path / "again", seed0["task_hash"], 0)
        assert rerun.is_dir(), "the task file should resolve to the study variant's hash"
        first = metric_rows(record.run_dir(study_dir.parent, seed0["task_hash"], 0))
        assert metric_rows(rerun) == first
        other = metric_rows(record.run_dir(study_dir.parent, original[label, 1]["task_hash"], 1))
        assert [r["loss"] for r in other] != [r["loss"] for r in first]


def execute_notebook(name: str, **environment: str) -> str:
    """Run a notebook from notebooks/ with extra environment variables; return its text output.

    Fails on any cell error (nbclient raises) and when no plot was drawn.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    saved = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} drew no plot"
    return "".join(o.get("text", "") for o in outputs)


def test_notebook_executes_on_the_study_records(study_dir):
    text = execute_notebook("01_quickstart.ipynb", TFF_REC_RESULTS=str(study_dir))
    assert "fedavg + DP" in text


def _orphaned_workers(marker: str) -> set[int]:
    """worker_binary processes whose parent has exited (re-parented to init) and that carry
    `marker` in their environment: what a command started with that marker leaves behind when it
    does not stop its worker. Workers of live processes, and of other tests running at the same
    time (pytest-xdist), do not count."""
    found = subprocess.run(["pgrep", "-x", "worker_binary"], capture_output=True, text=True)
    orphans = set()
    for pid in map(int, found.stdout.split()):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == 1 and marker.encode() in environment:
            orphans.add(pid)
    return orphans


@pytest.mark.parametrize("algorithm", ["fedavg", "centralized"])
def test_cli_leaves_no_worker_and_closes_its_output(tmp_path, algorithm):
    """Output read through a pipe reaches EOF (capture_output waits for it), no TFF worker
    outlives the command, and nothing is printed at exit (a centralized run starts no worker but
    imports TFF, whose import-time context used to print a traceback at interpreter teardown)."""
    path = tmp_path / "task.toml"
    path.write_text(task_text(rounds="1", epochs="1").replace("[algorithm]", f'[algorithm]\nname = "{algorithm}"', 1))
    marker = f"TFF_REC_TEST_MARKER={uuid.uuid4().hex}"
    done = tff_rec("run", str(path), "--out", str(tmp_path / "out"), timeout=180,
                   env={marker.split("=")[0]: marker.split("=")[1]})
    assert done.returncode == 0, done.stderr
    assert "test ndcg@10" in done.stdout
    assert "Using TensorFlow backend" not in done.stdout + done.stderr
    assert "Exception ignored" not in done.stderr
    assert _orphaned_workers(marker) == set()


BAD_INPUTS = {
    "malformed task": ("[algorithm]\nrounds = -3\n", None, ["algorithm.rounds", "must be positive"]),
    "unknown dataset": ("[data]\ndataset = 'netflix'\n", None, ["netflix", "movielens-1m"]),
    "missing data path": ("[data]\ndataset = 'movielens-1m'\npath = '{tmp}/nowhere'\n", None, ["nowhere", "ratings.dat"]),
    "malformed data line": (
        "[data]\ndataset = 'sequences'\npath = '{tmp}/seq.txt'\nmin_user_interactions = 0\nmin_item_interactions = 0\n",
        "1 1\n1 2\n1 3\n2 1\n2 x\n", ["seq.txt:5"],
    ),
    "too many clients per round": (task_text(clients_per_round="100000"), None, ["clients_per_round", "100000", "number of clients"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, capsys, case):
    text, data, fragments = BAD_INPUTS[case]
    if data is not None:
        (tmp_path / "seq.txt").write_text(data)
    path = tmp_path / "bad.toml"
    path.write_text(text.replace("{tmp}", str(tmp_path)))
    out = tmp_path / "results"
    code = cli.main(["run", str(path), "--out", str(out), "--no-progress"])
    assert code == 2
    message = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in message, message
    assert not [p for p in out.rglob("*") if p.parent.name != ".cache" and p.name != ".cache"] if out.exists() else True


def test_bad_input_message_from_the_command(tmp_path):
    text, data, fragments = BAD_INPUTS["malformed data line"]
    if data is not None:
        (tmp_path / "seq.txt").write_text(data)
    path = tmp_path / "bad.toml"
    path.write_text(text.replace("{tmp}", str(tmp_path)))
    done = tff_rec("run", str(path), "--out", str(tmp_path / "results"))
    assert done.returncode == 2
    for fragment in fragments:
        assert fragment in done.stderr
    assert not (tmp_path / "results").exists()


def test_data_info_json():
    done = tff_rec("data", "info", "synthetic", "--param", "users=200", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    for section in ("raw", "filtered"):
        assert set(info[section]) >= {"users", "items", "interactions"}
    assert info["raw"]["users"] == 200
    assert info["filtered"]["interactions"] <= info["raw"]["interactions"]


def test_adaptive_clip_is_logged_every_round_and_moves(tmp_path):
    path = tmp_path / "task.toml"
    path.write_text(task_text(rounds="4"))
    out = tmp_path / "results"
    assert cli.main(["run", str(path), "--out", str(out), "--no-progress",
                     "--set", "privacy.mechanism=adaptive", "--set", "privacy.initial_clip=0.05",
                     "--set", "privacy.noise_multiplier=0.5"]) == 0
    rows = metric_rows(next(out.rglob("seed-0")))
    clips = [float(r["clip"]) for r in rows]
    assert clips[0] == pytest.approx(0.05)
    assert len(set(clips)) == 4, clips  # the clip adapts every round
    assert all(float(r["epsilon"]) > 0 for r in rows)


def test_tree_run_reports_single_pass_epsilon(tmp_path):
    path = tmp_path / "task.toml"
    path.write_text(task_text(rounds="3"))
    out = tmp_path / "results"
    assert cli.main(["run", str(path), "--out", str(out), "--no-progress",
                     "--set", "privacy.mechanism=tree", "--set", "algorithm.sampling=shuffle",
                     "--set", "privacy.noise_multiplier=1.0",
                     "--set", "algorithm.server.learning_rate=0.5"]) == 0
    run = next(out.rglob("seed-0"))
    privacy = json.loads((run / record.PRIVACY).read_text())
    assert privacy["sampling"] == "shuffle" and privacy["reason"] is None
    ledger = privacy["epsilon_by_round"]
    assert len(ledger) == 3 and 0 < ledger[0] <= ledger[-1]


def test_study_dry_run_lists_every_run_and_its_state(study_dir, capsys):
    path = study_dir.parent.parent / "tiny.toml"
    assert cli.main(["study", str(path), "--out", str(study_dir.parent), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 9 and all(" done " in line for line in lines[:8])
    fed = next(line for line in lines if line.startswith("fedavg ") and "seed 0" in line)
    assert "30 client updates" in fed  # 3 rounds × 10 clients
    assert lines[-1].startswith("8 runs, 8 done; still to run: 0 runs")
    elsewhere = study_dir.parent / "elsewhere"
    assert cli.main(["study", str(path), "--out", str(elsewhere), "--dry-run"]) == 0
    assert "8 runs, 0 done; still to run: 8 runs, 120 client updates" in capsys.readouterr().out
    assert not elsewhere.exists(), "a dry run writes nothing"


def test_a_failing_run_is_recorded_and_retried_only_when_asked(tmp_path, capsys):
    """A run that fails while training (here: its checkpoint folder's path is taken by a file,
    which no check at load can see) is recorded in failed.json; the other runs go on."""
    study = write_study(tmp_path, "mixed", {
        "popularity": '"algorithm.name" = "popularity"',
        "blocked": "",
    }, rounds=1)
    out = tmp_path / "results"
    blocked = spec.load_study(study).tasks[1]
    obstacle = record.run_dir(out, blocked.hash, 0) / record.CHECKPOINTS
    obstacle.parent.mkdir(parents=True)
    obstacle.write_text("not a folder")
    assert cli.main(["study", str(study), "--out", str(out), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "1 failed" in captured.out and "| popularity | 1 |" in captured.out
    assert "checkpoints" in captured.err and "--retry-failed" in captured.err
    failure = next(out.rglob(record.FAILED))
    assert "checkpoints" in json.loads(failure.read_text())["error"]
    before = failure.stat().st_mtime_ns
    assert cli.main(["study", str(study), "--out", str(out), "--no-progress"]) == 1
    assert failure.stat().st_mtime_ns == before, "a recorded failure is not retried unasked"
    capsys.readouterr()
    assert cli.main(["study", str(study), "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(
        "2 runs, 1 done, 1 failed (kept; --retry-failed runs them); still to run: 0 runs")
    assert cli.main(["study", str(study), "--out", str(out), "--no-progress", "--retry-failed"]) == 1
    assert failure.stat().st_mtime_ns != before


def test_parallel_study_matches_the_serial_records(study_dir, tmp_path, capsys):
    """Two jobs write one results tree: every record complete, metrics identical to serial runs.
    (One seed: three runs keep both jobs busy at once; each job pays TensorFlow's import.)"""
    study = write_study(tmp_path, "par", {
        "centralized": '"algorithm.name" = "centralized"',  # the driver's thread count matters here
        "fedavg": "",
        "fedavg + DP": '"privacy.mechanism" = "gaussian", "privacy.clip" = 1.0, "privacy.noise_multiplier" = 1.0',
    }, rounds=3)
    out = tmp_path / "results"
    assert cli.main(["study", str(study), "--out", str(out), "--no-progress", "--jobs", "2"]) == 0
    assert "3 runs (0 already complete, 0 failed)" in capsys.readouterr().out
    serial, parallel = summaries(study_dir), summaries(out / "par")
    assert len(parallel) == 3
    for (label, seed), summary in parallel.items():
        assert summary["task_hash"] == serial[label, seed]["task_hash"]
        assert metric_rows(record.run_dir(out, summary["task_hash"], seed)) == metric_rows(
            record.run_dir(study_dir.parent, summary["task_hash"], seed))
        assert summary["test"] == serial[label, seed]["test"]
        if label != "centralized":
            assert summary["worker_cpu_seconds"] > 0 and summary["worker_peak_rss_mb"] > 0
    assert not list(out.rglob(record.FAILED)) and not list(out.rglob("*.tmp"))


def test_studies_sharing_a_task_share_its_records(study_dir, capsys):
    """A second study naming the tiny FedAvg task under another label runs nothing new."""
    other = write_study(study_dir.parent.parent, "other", {"my fedavg": ""}, rounds=3)
    other.write_text(other.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    assert cli.main(["study", str(other), "--out", str(study_dir.parent), "--dry-run"]) == 0
    assert "2 runs, 2 done" in capsys.readouterr().out
    assert cli.main(["study", str(other), "--out", str(study_dir.parent), "--no-progress"]) == 0
    output = capsys.readouterr().out
    assert "2 runs (2 already complete, 0 failed)" in output and "| my fedavg | 2 |" in output


def test_run_records_provenance(study_dir):
    fed = summaries(study_dir)["fedavg", 0]
    run = record.run_dir(study_dir.parent, fed["task_hash"], 0)
    env = json.loads((run / record.ENV).read_text())
    assert env["cpu_model"] and env["cpu_count"] >= 1 and env["uv_lock_sha256"]
    assert set(env["git"]) == {"commit", "dirty"}
    assert fed["started"] <= fed["finished"]
    assert fed["cpu_seconds"] == pytest.approx(fed["driver_cpu_seconds"] + fed["worker_cpu_seconds"], abs=2e-3)
    assert fed["peak_rss_mb"] > 100 and fed["worker_peak_rss_mb"] > 0


def test_compare_warns_when_runs_differ_in_code(study_dir, tmp_path, capsys):
    copy = tmp_path / "results"
    shutil.copytree(study_dir.parent, copy, ignore=shutil.ignore_patterns(".cache"))
    fed = summaries(study_dir)["fedavg", 1]
    env_path = record.run_dir(copy, fed["task_hash"], 1) / record.ENV
    env = json.loads(env_path.read_text())
    env["git"] = {"commit": "0" * 40, "dirty": True}
    env_path.write_text(json.dumps(env))
    assert cli.main(["compare", str(copy / "tiny")]) == 0
    warnings = capsys.readouterr().err
    assert "git commits" in warnings and "modified working tree" in warnings and "fedavg" in warnings


def test_compare_pivot_baseline_and_html(study_dir, capsys):
    assert cli.main(["compare", str(study_dir), "--pivot", "privacy", "algorithm",
                     "--format", "html"]) == 0
    output = capsys.readouterr().out
    assert output.startswith("<table>") and "privacy \\ algorithm" in output and "gaussian" in output
    assert cli.main(["compare", str(study_dir), "--baseline", "fedavg"]) == 0
    assert "Δ ndcg@10 vs fedavg" in capsys.readouterr().out


@pytest.mark.parametrize("kind, legend", [("convergence", "fedavg + DP"), ("privacy-utility", "natural")])
def test_plot_writes_png_and_svg(study_dir, tmp_path, capsys, kind, legend):
    stem = tmp_path / "figures" / kind
    assert cli.main(["plot", str(study_dir), "--kind", kind, "--output", str(stem)]) == 0
    png, svg = stem.parent / f"{kind}.png", stem.parent / f"{kind}.svg"
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
    text = svg.read_text()
    assert "<svg" in text and legend in text and "centralized" in text  # legend and reference lines
    assert capsys.readouterr().out.split() == [str(png), str(svg)]


def test_runs_differing_only_in_state_values_share_a_build_and_match_their_own_builds(tmp_path, capsys):
    """Learning rates and DP settings go into one built process's state (`training.processes`)."""
    from tff_rec.training import processes

    dp = '"privacy.mechanism" = "gaussian", '
    variants = {
        "lr": '"algorithm.client.learning_rate" = 0.3, "algorithm.server.learning_rate" = 0.8',
        "dp": dp + '"privacy.clip" = 1.0, "privacy.noise_multiplier" = 1.0',
        "other lr": '"algorithm.client.learning_rate" = 0.1, "algorithm.server.learning_rate" = 1.5',
        "other dp": dp + '"privacy.clip" = 0.3, "privacy.noise_multiplier" = 2.0, "algorithm.clients_per_round" = 6',
    }
    earlier = dict(processes._BUILT)  # the session's builds, put back for the tests after this one
    try:
        processes._BUILT.clear()
        shared = write_study(tmp_path, "shared", variants, rounds=2)
        assert cli.main(["study", str(shared), "--out", str(tmp_path / "shared"), "--no-progress"]) == 0
        assert len(processes._BUILT) == 2  # one without DP, one gaussian
        reused = summaries(tmp_path / "shared" / "shared")
        for label in ("other lr", "other dp"):
            processes._BUILT.clear()
            alone = write_study(tmp_path, "alone", {label: variants[label]}, rounds=2)
            assert cli.main(["study", str(alone), "--out", str(tmp_path / "alone"), "--no-progress"]) == 0
            task_hash = reused[label, 0]["task_hash"]
            assert metric_rows(record.run_dir(tmp_path / "alone", task_hash, 0)) == metric_rows(
                record.run_dir(tmp_path / "shared", task_hash, 0))
    finally:
        processes._BUILT.update(earlier)
    rows = [metric_rows(record.run_dir(tmp_path / "shared", reused[label, 0]["task_hash"], 0))
            for label in ("lr", "other lr")]
    assert rows[0][-1]["loss"] != rows[1][-1]["loss"]  # the learning rates took effect


def test_records_of_other_code_are_stale_reused_with_a_warning_and_remade_on_request(study_dir, tmp_path, capsys):
    """A complete record whose env.json names other code is stale: `study` counts it in one
    warning line and reuses it, `compare` marks it, `--rerun-stale` re-makes it (same numbers)."""
    out = tmp_path / "results"
    shutil.copytree(study_dir.parent, out, ignore=shutil.ignore_patterns(".cache"))
    study = tmp_path / "tiny.toml"
    study.write_text(TINY)
    fedavg = summaries(out / "tiny")["fedavg", 0]
    run = record.run_dir(out, fedavg["task_hash"], 0)
    environment = json.loads((run / record.ENV).read_text())
    assert environment["code_sha256"] == stale.code_sha256()
    record.write_json(run / record.ENV, {**environment, "code_sha256": "0" * 64})  # made by other code
    made = (run / record.SUMMARY).stat().st_mtime_ns

    assert cli.main(["study", str(study), "--out", str(out), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert re.search(rf"{fedavg['task_hash']}\s+seed 0\s+stale", listing)
    assert listing.strip().splitlines()[-1].startswith(
        "8 runs, 7 done, 1 stale (reused; --rerun-stale re-makes them); still to run: 0 runs")
    assert cli.main(["study", str(study), "--out", str(out), "--dry-run", "--rerun-stale"]) == 0
    assert "8 runs, 7 done; still to run: 1 runs, 30 client updates" in capsys.readouterr().out
    assert cli.main(["study", str(study), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "stale" in line]
    assert len(warnings) == 1 and "1 of 8" in warnings[0] and "--rerun-stale" in warnings[0]
    assert (run / record.SUMMARY).stat().st_mtime_ns == made, "reused by default"
    header = next(line for line in captured.out.splitlines() if line.startswith("| task"))
    assert header.rstrip(" |").endswith("stale"), "the study's table marks the stale row"

    assert cli.main(["compare", str(out / "tiny"), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    table = list(csv.DictReader(captured.out.splitlines()))
    assert {row["label"]: row["stale"] for row in table} == {
        "popularity": "0", "centralized": "0", "fedavg": "1", "fedavg + DP": "0"}
    assert "1 of 8 runs are stale" in captured.err

    assert cli.main(["study", str(study), "--out", str(out), "--no-progress", "--rerun-stale"]) == 0
    assert "stale" not in capsys.readouterr().err
    assert json.loads((run / record.ENV).read_text())["code_sha256"] == stale.code_sha256()
    assert metric_rows(run) == metric_rows(record.run_dir(study_dir.parent, fedavg["task_hash"], 0))


def test_privacy_signal_shows_each_dp_variants_measured_metric(study_dir, capsys):
    """`privacy signal --results`: the measured column is the records' mean over seeds, as in
    `compare`, joined by task hash."""
    study = study_dir.parent.parent / "tiny.toml"
    assert cli.main(["privacy", "signal", str(study), "--results", str(study_dir), "--json"]) == 0
    (found,) = json.loads(capsys.readouterr().out)  # the one DP variant
    assert found["variant"] == "fedavg + DP"
    runs = summaries(study_dir)
    mean = (runs["fedavg + DP", 0]["test"]["ndcg@10"] + runs["fedavg + DP", 1]["test"]["ndcg@10"]) / 2
    assert found["test_ndcg@10"] == pytest.approx(mean)
    assert cli.main(["privacy", "signal", str(study), "--results", str(study_dir), "--metric", "test_nope"]) == 2
    assert "--metric 'test_nope' is not a column of the records" in capsys.readouterr().err
