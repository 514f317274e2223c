"""Commands that only read task files or records import no TensorFlow.

Loading and validating a task or study, `--help`, `privacy epsilon|calibrate`, `compare` and
`plot` read the registries' declarations (`models/hparams.py`, `privacy/mechanism_registry.py`,
`algorithm_registry.py`, ...), never their TF builders (ARCHITECTURE.md, Registries and
plugins). Each case runs in a fresh interpreter and reports which heavy modules it imported; no
test measures time.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "tensorflow_federated", "tensorflow_privacy", "keras_nlp", "keras")
TASK_FILES = sorted((ROOT / "tasks").rglob("*.toml"))


def heavy_modules_after(code: str) -> list[str]:
    """Run `code` in a new interpreter (cwd: the repository); the heavy modules it imported."""
    return modules_after(code, list(HEAVY))


def test_the_task_files_exist():
    assert any(path.name == "quickstart.toml" for path in TASK_FILES)
    assert any("studies" in path.parts for path in TASK_FILES)


def test_loading_every_task_and_study_imports_no_tensorflow():
    code = f"""
        from tff_rec import spec
        for path in {[str(p) for p in TASK_FILES]!r}:
            if spec.STUDY_SECTION in spec.read_toml(path):
                study = spec.load_study(path)
                assert study.variants, path
                if "full" in spec.read_toml(path)["study"]:  # the full size ([study.full]) too
                    assert spec.load_study(path, full=True).variants, path
            else:
                spec.load_task(path)
    """
    assert heavy_modules_after(code) == []


def test_refused_tasks_import_no_tensorflow_either(tmp_path):
    """Validation errors come from the same declarations (unknown names look for plugins)."""
    cases = {
        "model.name": '[model]\nname = "nope"\n',
        "model.num_heads": '[model]\nembedding_dim = 10\nnum_heads = 3\n',
        "privacy.mechanism": '[privacy]\nmechanism = "nope"\n',
        "privacy.clip": '[privacy]\nmechanism = "gaussian"\nclip = -1.0\nnoise_multiplier = 1.0\n',
        "algorithm.name": '[algorithm]\nname = "nope"\n',
        "mime_lite + DP": ('[algorithm]\nname = "mime_lite"\n[privacy]\nmechanism = "gaussian"\n'
                           'noise_multiplier = 1.0\n'),
        "partition.scheme": '[partition]\nscheme = "nope"\n',
        "data.dataset": '[data]\ndataset = "nope"\n',
    }
    paths = []
    for number, text in enumerate(cases.values()):
        paths.append(tmp_path / f"bad{number}.toml")
        paths[-1].write_text(text)
    code = f"""
        from tff_rec import spec
        from tff_rec.data.errors import DataError
        for path in {[str(p) for p in paths]!r}:
            try:
                spec.load_task(path)
            except (spec.SpecError, DataError) as error:
                print("refused:", error)
            else:
                raise AssertionError(path + " was accepted")
    """
    assert heavy_modules_after(code) == []


def _fake_records(folder: Path) -> Path:
    """Two complete run records (as `results.load_runs` reads them), made without training."""
    for seed in (0, 1):
        run = folder / "runs" / "abc123def456" / f"seed-{seed}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({
            "label": "fedavg", "task_hash": "abc123def456", "seed": seed, "algorithm": "fedavg",
            "test": {"ndcg@10": 0.1 + seed / 10, "hr@10": 0.3},
            "validation": {"ndcg@10": 0.2, "hr@10": 0.3},
        }))
        (run / "metrics.csv").write_text("round,loss,val_ndcg@10\n1,1.0,0.1\n2,0.9,0.2\n")
    return folder / "runs"


def _commands(tmp_path: Path) -> dict[str, list[str]]:
    runs = _fake_records(tmp_path)
    return {
        "help": ["--help"],
        "privacy epsilon": ["privacy", "epsilon", "--noise-multiplier", "1", "--population", "1000",
                            "--clients-per-round", "50", "--rounds", "100"],
        "privacy calibrate": ["privacy", "calibrate", "--target-epsilon", "3", "--population",
                              "1000", "--clients-per-round", "50", "--rounds", "100", "--json"],
        "compare": ["compare", str(runs), "--format", "csv"],
        "plot": ["plot", str(runs), "--output", str(tmp_path / "figure")],
    }


@pytest.mark.parametrize("command", ["help", "privacy epsilon", "privacy calibrate", "compare", "plot"])
def test_commands_import_no_tensorflow(tmp_path, command):
    argv = _commands(tmp_path)[command]
    code = f"""
        from tff_rec import cli
        try:
            status = cli.main({argv!r})
        except SystemExit as stop:  # --help
            status = stop.code
        assert status == 0, status
    """
    assert heavy_modules_after(code) == []
    if command == "plot":
        assert (tmp_path / "figure.png").is_file() and (tmp_path / "figure.svg").is_file()


def test_building_a_model_still_imports_tensorflow():
    """The declarations are the registries' light half; their builders still work (and load TF)."""
    code = """
        from tff_rec import models
        model = models.build_model("sasrec", 20, seed=0, size="tiny", max_len=5)
        assert model.count_params() > 0
        assert models.training_loss(model).__class__.__name__ == "MaskedNextItemLoss"
    """
    assert "tensorflow" in heavy_modules_after(code)


# What each privacy command needs of dp-accounting and scipy, and what it must not load: the
# PLD library (scipy.signal, scipy.stats) only where a PLD accountant runs, scipy.optimize only
# where a noise multiplier is calibrated, and never the task loader (`tff_rec.spec`) or pandas.
PRIVACY_IMPORTS = {
    "privacy epsilon": {
        "needs": ["dp_accounting.pld", "dp_accounting.rdp"],
        "avoids": ["dp_accounting.mechanism_calibration", "pandas", "tff_rec.spec"]},
    "privacy epsilon --mechanism tree": {
        "needs": ["dp_accounting.rdp"],
        "avoids": ["dp_accounting.pld", "dp_accounting.mechanism_calibration", "pandas",
                   "scipy.optimize", "scipy.signal", "scipy.stats", "tff_rec.spec"]},
    "privacy calibrate": {
        "needs": ["dp_accounting.mechanism_calibration", "dp_accounting.rdp"],
        "avoids": ["dp_accounting.pld", "pandas", "scipy.signal", "scipy.stats", "tff_rec.spec"]},
}


def modules_after(code: str, names: list[str]) -> list[str]:
    """Run `code` in a new interpreter (cwd: the repository); which of `names` it imported."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json as _json, sys as _sys
        print("LOADED=" + _json.dumps(sorted(m for m in {names!r} if m in _sys.modules)))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    line = [text for text in result.stdout.splitlines() if text.startswith("LOADED=")][-1]
    return json.loads(line[len("LOADED="):])


@pytest.mark.parametrize("command", sorted(PRIVACY_IMPORTS))
def test_privacy_commands_load_only_the_accountants_they_use(command):
    """dp-accounting's package `__init__` imports every accountant; `accounting` defers it, so an
    RDP-only command (calibrate, DP-FTRL) loads neither the PLD library nor scipy.stats, and no
    privacy command loads the task loader or pandas. The needed modules are checked too, so a
    command that stopped computing would not pass."""
    argv = ["privacy", "epsilon", "--noise-multiplier", "2", "--population", "1000",
            "--clients-per-round", "5", "--rounds", "100"]
    if command == "privacy epsilon --mechanism tree":
        argv += ["--mechanism", "tree", "--sampling", "shuffle"]
    elif command == "privacy calibrate":
        argv = ["privacy", "calibrate", "--target-epsilon", "3", *argv[4:]]
    expected = PRIVACY_IMPORTS[command]
    code = f"""
        from tff_rec import cli
        assert cli.main({argv!r}) == 0
        import dp_accounting
        assert "__getattr__" in vars(dp_accounting)  # its __init__ never ran
    """
    loaded = modules_after(code, [*expected["needs"], *expected["avoids"]])
    assert loaded == sorted(expected["needs"])


def test_the_deferred_dp_accounting_is_complete_when_read():
    """Whoever reads a name dp-accounting's `__init__` defines (tensorflow-privacy does) gets the
    complete package, with the same classes the accounting module already used."""
    code = """
        from tff_rec.privacy import accounting
        result = accounting.epsilon(noise_multiplier=1.0, population=1000, clients_per_round=10,
                                    rounds=5, delta=1e-5)
        import dp_accounting
        from dp_accounting import GaussianDpEvent, calibrate_dp_mechanism
        assert "__getattr__" not in vars(dp_accounting)
        assert GaussianDpEvent is accounting.events.GaussianDpEvent
        assert dp_accounting.rdp.RdpAccountant is accounting._rdp().RdpAccountant
        assert dp_accounting.pld.PLDAccountant is accounting._pld().PLDAccountant
        assert callable(calibrate_dp_mechanism) and result.epsilon > 0
    """
    assert modules_after(code, ["dp_accounting.mechanism_calibration", "dp_accounting.pld"]) == [
        "dp_accounting.mechanism_calibration", "dp_accounting.pld"]
