"""One registry shape: every entry a task can name declares its keys as `Param`s, and task
validation reads those declarations, so every type and range is checked when the task loads."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from tff_rec import registry
from tff_rec.aggregation import METHODS
from tff_rec.algorithm_registry import ALGORITHMS
from tff_rec.data.sources import SOURCES
from tff_rec.errors import SpecError
from tff_rec.models.hparams import CommonHParams, declared
from tff_rec.models.loss_registry import LOSSES
from tff_rec.models.registry import MODELS
from tff_rec.params import Param
from tff_rec.partition.schemes import SCHEMES
from tff_rec.privacy.mechanism_registry import MECHANISMS
from tff_rec.sampling import SAMPLERS
from tff_rec.spec import resolve_task

REGISTRIES = (SOURCES, SCHEMES, MODELS, LOSSES, ALGORITHMS, SAMPLERS, MECHANISMS, METHODS)


@pytest.mark.parametrize("entries", REGISTRIES, ids=lambda entries: entries.key)
def test_every_entry_has_one_shape(entries):
    assert isinstance(entries, registry.Registry) and entries
    for name, entry in entries.items():
        assert entry.name == name and entry.description.strip(), name
        assert all(isinstance(param, Param) and param.help.strip() for param in entry.params), name
        assert len({param.name for param in entry.params}) == len(entry.params), name


def _bad_values(param: Param) -> list:
    """Values the declaration refuses: the wrong type, and each side of its range or choices."""
    bad: list = [[1]] if param.kind is str else ["text"]
    if param.kind in (int, float) and param.range is not None:
        if param.range.low is not None:
            bad.append(param.range.low - 1 if param.range.low_inclusive else param.range.low)
        if param.range.high is not None:
            bad.append(param.range.high + 1 if param.range.high_inclusive else param.range.high)
    if param.choices is not None:
        bad.append("not-a-choice")
    if param.kind is int:
        bad.append(1.5)
    return bad


CASES = [
    (section, name, param, value)
    for section in registry.SECTIONS
    for name, entry in registry.of_section(section).items()
    for param in entry.params
    for value in _bad_values(param)
]


@pytest.mark.parametrize(("section", "name", "param", "value"), CASES,
                         ids=[f"{s}.{n}.{p.name}={v!r}" for s, n, p, v in CASES])
def test_every_declared_parameter_is_checked_when_the_task_loads(section, name, param, value):
    key = registry.SECTIONS[section][0]
    with pytest.raises(SpecError) as error:
        resolve_task({section: {key: name, param.name: value}}, source="tasks/t.toml")
    message = str(error.value)
    assert message.startswith("tasks/t.toml: ") and f"'{section}.{param.name}'" in message
    assert repr(value) in message or str(value) in message


def test_a_section_refuses_an_unknown_entry_with_the_allowed_names():
    for section, (key, _) in registry.SECTIONS.items():
        entries = registry.of_section(section)
        with pytest.raises(SpecError) as error:
            resolve_task({section: {key: "no-such-entry"}}, source="t.toml")
        assert f"key '{section}.{key}' must be one of" in str(error.value)
        assert ", ".join(sorted(entries)) in str(error.value) and "'no-such-entry'" in str(error.value)


def test_int_written_for_a_float_is_typed_and_defaults_are_filled():
    task = resolve_task({"partition": {"scheme": "dirichlet", "alpha": 1},
                         "privacy": {"mechanism": "gaussian", "clip": 2, "noise_multiplier": 1}})
    assert task.sections["partition"]["params"] == {"num_clients": 10, "alpha": 1.0}
    assert task.sections["privacy"]["params"] == {"clip": 2.0, "noise_multiplier": 1.0}
    assert isinstance(task.sections["privacy"]["params"]["clip"], float)


def test_a_plugin_model_key_without_a_declaration_is_typed_by_its_default():
    """A plugin's hyperparameter class may add plain dataclass fields: each is a key of its own,
    typed by its default, and the rest is the class's `validate`."""
    @dataclasses.dataclass(frozen=True)
    class Plain(CommonHParams):
        PRESETS: ClassVar[dict] = {"base": {"embedding_dim": 8}}
        width: int = 3
        note: object = None

    assert Plain(width=5).width == 5 and Plain(note=[1]).note == [1]
    with pytest.raises(ValueError, match=r"^model.width must be an integer. Found 'x'.$"):
        Plain(width="x")
    assert [param.name for param in declared(Plain)][-2:] == ["width", "note"]
