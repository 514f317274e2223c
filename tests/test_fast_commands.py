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
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json as _json, sys as _sys
        print("HEAVY=" + _json.dumps(sorted(m for m in {HEAVY!r} if m in _sys.modules)))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    line = [text for text in result.stdout.splitlines() if text.startswith("HEAVY=")][-1]
    return json.loads(line[len("HEAVY="):])


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
