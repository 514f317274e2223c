"""`tff-rec tasks schema`: the task-file reference generated from the declarations, and the copy
of it in docs/task-reference.md kept current."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tff_rec import schema
from tff_rec.aggregation import METHODS
from tff_rec.algorithm_registry import ALGORITHMS
from tff_rec.data.sources import SOURCES
from tff_rec.models.loss_registry import LOSSES
from tff_rec.models.registry import MODELS
from tff_rec.partition.schemes import SCHEMES
from tff_rec.privacy.mechanism_registry import MECHANISMS
from tff_rec.sampling import SAMPLERS
from tff_rec.spec import SCHEMA

ROOT = Path(__file__).resolve().parent.parent


def cell(text: str) -> str:
    """As a Markdown table cell shows it."""
    return text.replace("|", "\\|")


def test_the_reference_lists_every_key_and_every_registry_entry_with_its_help():
    text = schema.reference()
    for section, fields in SCHEMA.items():
        assert f"### [{section}]" in text
        for key, field in fields.items():  # every fixed key with its help
            assert field.doc.strip(), f"{section}.{key} has no help"
            assert f"| `{key}` | " in text and cell(field.doc) in text
    for registry in (SOURCES, SCHEMES, MODELS, LOSSES, ALGORITHMS, SAMPLERS, MECHANISMS, METHODS):
        assert f"| `{registry.key}` | what it is |" in text
        for name, entry in registry.items():
            assert f"| `{name}` | {cell(entry.description)} | " in text, name
            for param in entry.params:  # every key an entry adds, with its range and help
                assert param.help and cell(param.describe()) in text, (name, param.name)


def test_the_committed_reference_is_current():
    """Regenerate with `tff-rec tasks schema > docs/task-reference.md` after changing a key."""
    assert (ROOT / "docs" / "task-reference.md").read_text() == schema.reference()


def test_the_command_prints_it_without_importing_tensorflow():
    code = ("import sys\nfrom tff_rec import cli\ncli.main(['tasks', 'schema'])\n"
            "print('TF' if 'tensorflow' in sys.modules else 'no TF', file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == schema.reference() and done.stderr.strip().endswith("no TF")
