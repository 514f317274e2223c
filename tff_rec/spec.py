"""Task and study specifications: TOML loading, validation, defaults, hashing.

A task file names a dataset, a partitioning, a model, a federated algorithm, a privacy setting and
an evaluation protocol. Every key is validated before anything trains: an unknown key, a wrong
type or an out-of-range value raises ``SpecError`` naming the file, the key and what is allowed.
The content hash of the resolved task (canonical JSON, without its name) names its results.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from tff_rec import algorithm_registry, grid, registry
from tff_rec.errors import SpecError
from tff_rec.sampling import SAMPLERS

SPEC_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Field:
    """One key of a section: its type(s), default, and an optional range check.

    check returns an error fragment (e.g. "must be positive") or None when the value is fine.
    """

    types: tuple[type, ...]
    default: Any
    check: Optional[Callable[[Any], Optional[str]]] = None
    doc: str = ""
    # False for keys added after tasks were first hashed: at their default they are left out of
    # the task hash, so a task written before the key existed keeps its hash (and its results).
    hashed_at_default: bool = True
    # False for keys that say where a task runs, not what it computes: never in the task hash.
    hashed: bool = True


def positive(value: Any) -> Optional[str]:
    return None if value > 0 else "must be positive"


def non_negative(value: Any) -> Optional[str]:
    return None if value >= 0 else "must be >= 0"


def one_of(*allowed: str) -> Callable[[Any], Optional[str]]:
    def check(value: Any) -> Optional[str]:
        return None if value in allowed else f"must be one of {', '.join(map(repr, allowed))}"

    return check


def worker_addresses(value: Any) -> Optional[str]:
    """A list of distinct HOST:PORT strings (`workers.parse_addresses`)."""
    from tff_rec import workers

    if not all(isinstance(item, str) for item in value):
        return "must be a list of \"HOST:PORT\" strings"
    if not value:
        return None
    try:
        workers.parse_addresses(",".join(value))
    except ValueError as error:
        return f"must list TFF worker services: {error}"
    return None


def positive_at_most(limit: int, why: str) -> Callable[[Any], Optional[str]]:
    """A range check for sizes: 1..limit, the limit explained (bounded before anything allocates)."""

    def check(value: Any) -> Optional[str]:
        if value < 1:
            return f"must be positive; allowed: 1 to {limit}"
        return None if value <= limit else f"must be at most {limit} ({why}); allowed: 1 to {limit}"

    return check


# Upper bounds of sizes that would otherwise fail as out-of-memory errors or hours-long loops.
MAX_ROUNDS = 100_000
ROUNDS_WHY = "one metrics row and one ε ledger entry per round are kept and computed up front"
MAX_SEED = 2**63 - 1  # TOML integers are 64-bit: every seed can be written to a study file


def positive_int_list(value: Any) -> Optional[str]:
    if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return "must be a non-empty list of positive integers"
    return None


def at_least(low: int) -> Callable[[Any], Optional[str]]:
    def check(value: Any) -> Optional[str]:
        return None if value >= low else f"must be at least {low}"

    return check


def fraction(value: Any) -> Optional[str]:
    return None if 0 < value < 1 else "must be in (0, 1)"


def beta(value: Any) -> Optional[str]:
    return None if 0 <= value < 1 else "must be in [0, 1)"


INT = (int,)
FLOAT = (float, int)
STR = (str,)
LIST = (list,)
OPTIONAL_STR = (str, type(None))
OPTIONAL_FLOAT = (float, int, type(None))
OPTIONAL_INT = (int, type(None))
BOOL = (bool,)

OPTIMIZERS = ("sgd", "sgdm", "adam", "adagrad", "yogi")  # tff.learning.optimizers
KERAS_OPTIMIZERS = ("sgd", "sgdm", "adam", "adagrad")  # centralized training (Keras has no Yogi)
# [algorithm.centralized] hyperparameters each Keras optimizer takes besides the learning rate.
KERAS_OPTIMIZER_HPARAMS: dict[str, tuple[str, ...]] = {
    "sgd": (), "sgdm": (), "adam": ("beta_1", "beta_2", "epsilon"), "adagrad": ("epsilon",),
}
# Negative controls of the privacy audit (the registry `tff_rec.privacy.broken.FAULTS`).
AUDIT_FAULTS = ("none", "no_noise", "unclipped", "noise_before_clip", "weighted_average")
# The built-in federated algorithms (the registry `tff_rec.algorithm_registry.ALGORITHMS`, which
# imports no TensorFlow) and the trainers without clients.
FEDERATED_ALGORITHMS = tuple(algorithm_registry.ALGORITHMS)
ALGORITHMS = FEDERATED_ALGORITHMS + ("centralized", "popularity")


def algorithm_name(value: Any) -> Optional[str]:
    """A built-in trainer or a registered federated algorithm (a plugin's is loaded here)."""
    if value in ALGORITHMS or algorithm_registry.get_algorithm(value) is not None:
        return None
    return one_of(*ALGORITHMS)(value)


# Fixed sections: key → Field. Sections with registry-defined keys (dataset params, partition
# params, model hparams, privacy params) are validated against their registries in `_resolve`.
SCHEMA: dict[str, dict[str, Field]] = {
    "data": {
        "dataset": Field(STR, "synthetic", doc="the dataset source (Datasets, below, lists them with the keys each adds)"),
        "path": Field(OPTIONAL_STR, None, doc="local folder or file for real datasets"),
        # Absent (None): the dataset's own default, filled in at load (`_fill_data_defaults`).
        "min_user_interactions": Field(
            OPTIONAL_INT, None, non_negative,
            "k-core: users with fewer are dropped (default: 5 for raw logs, 0 for pre-filtered files)",
        ),
        "min_item_interactions": Field(
            OPTIONAL_INT, None, non_negative,
            "k-core: items with fewer are dropped (default: 5 for raw logs, 0 for pre-filtered files)",
        ),
    },
    "partition": {
        "scheme": Field(STR, "natural", doc="how users are grouped into clients"),
    },
    "model": {
        "name": Field(STR, "sasrec", doc="model builder"),
        "seed_offset": Field(INT, 0, non_negative, "extra offset for model init seeds (ablations)"),
    },
    "algorithm": {
        "name": Field(STR, "fedavg", algorithm_name, "a federated algorithm (Federated algorithms, below), or centralized | popularity"),
        "rounds": Field(INT, 20, positive_at_most(MAX_ROUNDS, ROUNDS_WHY), "federated rounds (one metrics row each)"),
        "clients_per_round": Field(INT, 32, positive, "clients a round trains (the expected number under poisson sampling)"),
        "sampling": Field(
            STR, "fixed", one_of(*SAMPLERS),
            "client sampling: " + "; ".join(f"{s.name}: {s.description}" for s in SAMPLERS.values()),
        ),
    },
    "algorithm.client": {
        "optimizer": Field(STR, "sgd", one_of(*OPTIMIZERS), "the optimizer of each client's local steps"),
        "learning_rate": Field(FLOAT, 0.5, positive, "the clients' learning rate (round 1, see lr_decay)"),
        "local_epochs": Field(INT, 1, positive, "passes over its data a client makes in a round"),
        "batch_size": Field(INT, 16, positive, "examples per local step"),
        "lr_decay": Field(
            FLOAT, 1.0, positive,
            "client learning rate in round r = learning_rate × lr_decay^(r-1) (1 = constant)", False,
        ),
    },
    "algorithm.server": {
        "optimizer": Field(STR, "sgd", one_of(*OPTIMIZERS), "the optimizer that applies the round's average update to the global model (sgd with lr 1: FedAvg; adam: FedAdam; yogi: FedYogi)"),
        "learning_rate": Field(FLOAT, 1.0, positive, "the server's learning rate (round 1, see lr_decay)"),
        "momentum": Field(FLOAT, 0.0, non_negative, "sgd: momentum (0 = none); sgdm: 0 means 0.9"),
        # Absent (None) = TFF's default for the chosen optimizer; see algorithms.OPTIMIZER_HPARAMS.
        "beta_1": Field(OPTIONAL_FLOAT, None, beta, "adam, yogi: first-moment decay (TFF: 0.9)", False),
        "beta_2": Field(OPTIONAL_FLOAT, None, beta, "adam, yogi: second-moment decay (TFF: 0.999)", False),
        "epsilon": Field(
            OPTIONAL_FLOAT, None, positive,
            "adam, adagrad: TFF 1e-7; yogi: TFF 1e-3 (adaptivity / numerical stability)", False,
        ),
        "initial_accumulator": Field(
            OPTIONAL_FLOAT, None, non_negative,
            "adagrad: TFF 0.1; yogi: TFF 1e-6 (initial preconditioner value)", False,
        ),
        "lr_decay": Field(
            FLOAT, 1.0, positive,
            "server learning rate in round r = learning_rate × lr_decay^(r-1) (1 = constant)", False,
        ),
    },
    "algorithm.fedprox": {
        "mu": Field(FLOAT, algorithm_registry.FEDPROX_MU, non_negative, "proximal strength (0 = FedAvg)", False),
    },
    "algorithm.centralized": {
        "epochs": Field(INT, 10, positive_at_most(MAX_ROUNDS, "one metrics row per epoch"), "passes over the training data"),
        "batch_size": Field(INT, 64, positive, "examples per step"),
        "optimizer": Field(STR, "adam", one_of(*KERAS_OPTIMIZERS), "the Keras optimizer (no yogi in Keras)"),
        "learning_rate": Field(FLOAT, 1e-3, positive, "its learning rate"),
        # Absent (None) = Keras's default; see KERAS_OPTIMIZER_HPARAMS.
        "beta_1": Field(OPTIONAL_FLOAT, None, beta, "adam: first-moment decay (Keras: 0.9)", False),
        "beta_2": Field(
            OPTIONAL_FLOAT, None, beta, "adam: second-moment decay (Keras: 0.999; SASRec: 0.98)", False,
        ),
        "epsilon": Field(OPTIONAL_FLOAT, None, positive, "adam, adagrad: Keras 1e-7", False),
    },
    "privacy": {
        "mechanism": Field(STR, "none", doc="none | gaussian | ..."),
        "delta": Field(OPTIONAL_FLOAT, None, doc="target δ; default from the population size"),
        "target_epsilon": Field(
            OPTIONAL_FLOAT, None, doc="calibrate the noise multiplier to reach this ε after all rounds"
        ),
        "accountant": Field(STR, "rdp", one_of("rdp", "pld"), "ε accountant of dp-accounting: rdp (Rényi DP) or pld (privacy loss distributions)"),
        # Nominal cohort (tff_rec/privacy/nominal.py): noise and ε of C_nom clients out of a
        # population, while C = algorithm.clients_per_round train. Absent: not hashed.
        "noise_cohort_size": Field(
            OPTIONAL_INT, None, positive,
            "calibrate noise and ε for this cohort size (simulated: clients_per_round train)", False,
        ),
        "population": Field(
            OPTIONAL_INT, None, positive,
            "population ε is accounted over (default: the partition's clients); simulated", False,
        ),
    },
    "evaluation": {
        "every": Field(INT, 5, positive, "validate every N rounds (epochs for centralized)"),
        "ks": Field(LIST, [10], positive_int_list, "cut-offs K for HR@K and NDCG@K"),
        "num_negatives": Field(INT, 100, positive, "negatives for sampled ranking"),
        "negative_sampling": Field(STR, "uniform", one_of("uniform", "popularity"), "how sampled-ranking negatives are drawn among the items the user never interacted with"),
        "batch_size": Field(INT, 512, positive, "users ranked at once (fewer when a batch's [b, V] arrays would pass 512 MiB)"),
        "validation_users": Field(
            (int, type(None)), None, positive,
            "validate on a seeded sample of N users, the same at every validation (absent: all; test: all)",
            hashed_at_default=False,
        ),
        "test_curve": Field(
            BOOL, False, None,
            "also rank the test users at every validation (test_* columns: a learning curve, "
            "never used to choose anything)",
            hashed_at_default=False,
        ),
        "select": Field(
            STR, "last", one_of("last", "best"),
            "the model whose test metrics the record reports: the last round's, or the round with "
            "the best validation full-ranking ndcg@K (K = the first of ks; ties: the earliest)",
            hashed_at_default=False,
        ),
    },
    # The privacy audit (tff_rec/privacy/audit.py, `tff-rec privacy audit`); training ignores it.
    "privacy.audit": {
        "canaries": Field(INT, 1000, at_least(2), "canary clients m among the population", False),
        "confidence": Field(FLOAT, 0.95, fraction, "confidence of the lower bound", False),
        "delta": Field(FLOAT, 1e-6, fraction, "δ_a of the audited claim (m·δ_a ≪ 1)", False),
        "fault": Field(
            STR, "none", one_of(*AUDIT_FAULTS),
            "a deliberately broken gaussian aggregator (negative control of the audit)", False,
        ),
        "canary_norm": Field(FLOAT, 1000.0, positive, "a canary's update norm, in clips", False),
        "benign_norm": Field(FLOAT, 0.5, non_negative, "a benign client's update norm, in clips", False),
        "canary_weight": Field(
            FLOAT, 100.0, positive,
            "a canary's example weight, a benign client's being 1 (fault = weighted_average only)", False,
        ),
    },
    "aggregation": {
        "method": Field(
            STR, "plain", doc="uplink aggregator: plain | compression | secure (tff_rec.aggregation)",
            hashed_at_default=False,
        ),
    },
    "run": {
        "checkpoint_every": Field(INT, 5, positive, "checkpoint every N rounds (centralized: epochs); a re-run resumes from the last one"),
        # Hashed when set: the split changes the order of a round's float sums, so the numbers
        # differ in the last bits; at 0 (absent) it is left out, so existing tasks keep their hash.
        "subcohort_size": Field(
            INT, 0, non_negative,
            "aggregate a federated round of more clients in sub-cohorts of at most this many, in "
            "turn, on the one TFF worker (bounds its memory; DP noise still once per round); "
            "0: unsplit. Sums split change the last bits of the numbers: hashed when set",
            hashed_at_default=False,
        ),
        "workers": Field(
            LIST, [], worker_addresses,
            "TFF worker services HOST:PORT (`tff-rec worker`) that each round's cohort is spread "
            "over (as `--workers`, which wins); where rounds run, not what they compute: not hashed",
            hashed_at_default=False, hashed=False,
        ),
    },
}

# Sections whose remaining keys are parameters declared by the registry entry they name.
OPEN_SECTIONS = registry.SECTIONS
TOP_LEVEL = {"name", "description"}
STUDY_SECTION = "study"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A validated task: every key resolved to a value (defaults filled in)."""

    name: str
    description: str
    sections: Mapping[str, Mapping[str, Any]]
    source: str = "<memory>"

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self.sections[section]

    def to_dict(self) -> dict[str, Any]:
        """Nested dict shaped like a task file: loading it again gives the same task."""
        nested: dict[str, Any] = {"name": self.name, "description": self.description}
        for dotted, values in self.sections.items():
            node = nested
            for part in dotted.split("."):
                node = node.setdefault(part, {})
            values = copy.deepcopy(dict(values))
            params = values.pop("params", {})
            if dotted == "privacy" and values.get("target_epsilon") is not None:
                params.pop("noise_multiplier", None)  # calibrated to the target: not a choice
            node.update(params)  # registry parameters sit beside fixed keys
            node.update(values)
        return nested

    @property
    def hash(self) -> str:
        """Content hash of the resolved task without its name and description (12 hex digits)."""
        payload = {"spec_version": SPEC_VERSION, "sections": _hashed_sections(self.sections)}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# Registry parameters added after tasks were first hashed: left out of the hash at these values.
UNHASHED_PARAM_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"size": "base", "loss": "softmax", "num_sampled": 100, "num_negatives": 1,
              "gbce_t": 0.75, "scale_embeddings": None},
}


# Sections that do not change what a run trains or records (read by other commands).
UNHASHED_SECTIONS = ("privacy.audit",)


def _hashed_sections(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The sections as hashed: keys added later (`hashed_at_default=False`, and the registry
    parameters of `UNHASHED_PARAM_DEFAULTS`) are left out while at their default, as are empty
    registry parameters and sections that end up empty."""
    hashed: dict[str, Any] = {}
    for name, values in sections.items():
        if name in UNHASHED_SECTIONS:
            continue
        schema = SCHEMA.get(name, {})
        kept = {
            key: value for key, value in values.items()
            if not (key in schema and not schema[key].hashed_at_default
                    and value == schema[key].default)
            and not (key in schema and not schema[key].hashed)
        }
        unhashed = UNHASHED_PARAM_DEFAULTS.get(name, {})
        if unhashed and "params" in kept:
            kept["params"] = {k: v for k, v in kept["params"].items()
                              if not (k in unhashed and v == unhashed[k])}
        if name in OPEN_SECTIONS and not kept.get("params", True) and set(kept) == {"params"}:
            kept = {}
        if kept or all(field.hashed_at_default for field in schema.values()):
            hashed[name] = kept
    return hashed


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of a study: its label, its overrides of the base task, and its grid coordinates."""

    label: str
    overrides: Mapping[str, Any]
    axes: Mapping[str, str] = dataclasses.field(default_factory=dict)  # axis name → value label
    skip_without_data: bool = False  # left out, with a note, where its data file is absent


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A base task plus labelled variants (each a set of dotted-key overrides), run over seeds.

    Variants are the file's `[[study.variant]]` rows followed by the grid of its `[[study.axis]]`
    axes (see `tff_rec.grid`).
    """

    name: str
    seeds: tuple[int, ...]
    variants: tuple[Variant, ...]
    tasks: tuple[TaskSpec, ...]
    metrics: tuple[str, ...]
    source: str

    def with_data_present(self) -> tuple["StudySpec", list[tuple[str, str]]]:
        """The study without its `skip_without_data` rows whose data is not on this machine,
        and (label, why) for each row left out."""
        from tff_rec.data.registry import data_missing

        kept, skipped = [], []
        for variant, task in zip(self.variants, self.tasks):
            why = data_missing(task["data"]["dataset"], task["data"]["path"]) if variant.skip_without_data else None
            if why is None:
                kept.append((variant, task))
            else:
                skipped.append((variant.label, why))
        if not skipped:
            return self, []
        return dataclasses.replace(self, variants=tuple(v for v, _ in kept),
                                   tasks=tuple(t for _, t in kept)), skipped


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning IO/syntax problems into SpecError naming the file."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such task file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory; expected a task or study file (TOML)") from None
    except OSError as error:
        raise SpecError(f"{path}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        line = error.object[:error.start].count(b"\n") + 1
        raise SpecError(
            f"{path}:{line}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
            f"{error.start}); task and study files are TOML, which must be UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None


def parse_override(text: str, flag: str = "--set") -> tuple[str, Any]:
    """Parse `key=value` from the command line; the value is read as TOML, else as a string."""
    if "=" not in text:
        example = {"--set": "algorithm.rounds=10", "--param": "users=500",
                   "--where": "partition=natural"}.get(flag, "key=value")
        raise SpecError(f"{flag} {text!r}: expected key=value, e.g. {example}")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a nested task dict with dotted-key overrides applied."""
    result = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        node = result
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"override {dotted!r}: {part!r} is not a table")
            node = child
        node[parts[-1]] = value
    return result


def _type_name(types: tuple[type, ...]) -> str:
    """'an integer', 'a number or absent', 'true or false': what a key of `types` must be."""
    names = {int: "an integer", float: "a number", str: "a string", list: "a list",
             type(None): "absent", bool: "true or false"}
    return " or ".join(dict.fromkeys(names.get(t, f"a {t.__name__}") for t in types))


def _check_value(source: str, key: str, value: Any, field: Field) -> Any:
    is_bool = isinstance(value, bool) and bool not in field.types  # a bool is an int to Python
    if is_bool or not isinstance(value, field.types):
        raise SpecError(
            f"{source}: key '{key}' must be {_type_name(field.types)}. Found {value!r}."
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{source}: key '{key}' must be finite. Found {value!r}.")
    if value is not None and field.check is not None:
        problem = field.check(value)
        if problem:
            raise SpecError(f"{source}: key '{key}' {problem}. Found {value!r}.")
    if float in field.types and isinstance(value, int):
        value = float(value)
    return value


def _registry_params(source: str, section: str, resolved: Mapping[str, Any],
                     given: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of the registry entry a section names, checked against its declarations
    (`tff_rec.registry`), defaults filled in."""
    from tff_rec.rules import keyed

    schema, label = SCHEMA[section], _entry_label(section, resolved)
    entries = registry.of_section(section)
    name = resolved[registry.SECTIONS[section][0]]
    try:
        declared = {param.name: param for param in entries.params(name)}
    except ValueError as error:  # an unknown entry: the registry's message names the key
        raise SpecError(f"{source}: {keyed(str(error))}") from None
    for key in given:
        if key not in declared:
            raise SpecError(
                f"{source}: unknown key '{section}.{key}' for {label}; "
                f"allowed: {', '.join(sorted(schema) + sorted(declared)) or 'none'}"
            )
    params = {}
    for key, param in declared.items():
        if key not in given:
            params[key] = copy.deepcopy(param.default)
            continue
        try:
            value = param.validate(given[key], section)
        except ValueError as error:
            raise SpecError(f"{source}: {keyed(str(error))} ({label})") from None
        # Typed as declared (`clip = 1` is 1.0), except keys whose default is derived, which keep
        # the value as written: the task hash (and so every existing record) depends on it.
        params[key] = value if param.default is not None else given[key]
    return params


def _resolve_section(source: str, section: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    schema = SCHEMA[section]
    resolved: dict[str, Any] = {}
    for key, field in schema.items():
        value = raw.get(key, copy.deepcopy(field.default))
        resolved[key] = _check_value(source, f"{section}.{key}", value, field)
    nested = {k for k in SCHEMA if k.startswith(section + ".")}
    extra = {
        k: v for k, v in raw.items() if k not in schema and f"{section}.{k}" not in nested
    }
    if section in OPEN_SECTIONS:
        resolved["params"] = _registry_params(source, section, resolved, extra)
    elif extra:
        key = next(iter(extra))
        raise SpecError(
            f"{source}: unknown key '{section}.{key}'; allowed: {', '.join(sorted(schema))}"
        )
    return resolved


def _entry_label(section: str, resolved: Mapping[str, Any]) -> str:
    name_key = OPEN_SECTIONS[section][0]
    return f"{section}.{name_key} = {resolved[name_key]!r}"


def _sub_table(raw: Mapping[str, Any], dotted: str, source: str = "<memory>") -> Mapping[str, Any]:
    node: Any = raw
    for part in dotted.split("."):
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    if not isinstance(node, Mapping):
        raise SpecError(f"{source}: key '{dotted}' must be a table ([{dotted}]). Found {node!r}.")
    return node


def resolve_task(raw: Mapping[str, Any], source: str = "<memory>") -> TaskSpec:
    """Validate a nested task dict and fill in defaults; raise SpecError naming file and key."""
    top_sections = {name.split(".")[0] for name in SCHEMA}
    for key, value in raw.items():
        if key in TOP_LEVEL or key == STUDY_SECTION:
            continue
        if key not in top_sections:
            allowed = sorted(top_sections | TOP_LEVEL)
            raise SpecError(f"{source}: unknown key '{key}'; allowed: {', '.join(allowed)}")
        if not isinstance(value, Mapping):
            raise SpecError(f"{source}: key '{key}' must be a table ([{key}]). Found {value!r}.")
    sections: dict[str, dict[str, Any]] = {}
    for section in SCHEMA:
        table = _sub_table(raw, section, source)
        sections[section] = _resolve_section(source, section, table)
        if section == "data":
            _fill_data_defaults(sections[section])
    name = raw.get("name", Path(source).stem if source != "<memory>" else "task")
    description = raw.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            raise SpecError(f"{source}: key '{key}' must be a string. Found {value!r}.")
    if not name.strip():
        raise SpecError(
            f"{source}: key 'name' must be a non-empty label (it names the task in tables). "
            f"Found {name!r}."
        )
    _cross_checks(source, sections)
    _check_nominal_cohort(source, sections)
    _check_noise_choice(source, _sub_table(raw, "privacy", source), sections)
    _mechanism_rules(source, sections)
    return TaskSpec(name=name, description=description, sections=sections, source=source)


def _fill_data_defaults(data: dict[str, Any]) -> None:
    """The k-core thresholds a task leaves unset: the dataset's own (a pre-filtered file is not
    filtered again). Filled in, so records and hashes hold the numbers that were used."""
    from tff_rec.data import sources

    defaults = sources.default_min_interactions(data["dataset"])
    for key, default in zip(("min_user_interactions", "min_item_interactions"), defaults):
        if data[key] is None:
            data[key] = default


def _check_noise_choice(source: str, raw: Mapping[str, Any],
                        sections: Mapping[str, Mapping[str, Any]]) -> None:
    """Exactly one of privacy.noise_multiplier and privacy.target_epsilon for a noisy mechanism:
    both would leave one silently ignored, neither a default noise nobody chose."""
    from tff_rec.privacy.mechanism_registry import get_mechanism

    privacy = sections["privacy"]
    mechanism = privacy["mechanism"]
    if not get_mechanism(mechanism).noise_sets_epsilon:  # its noise multiplier sets ε
        return
    noise, target = raw.get("noise_multiplier"), privacy["target_epsilon"]
    if noise is not None and target is not None:
        raise SpecError(
            f"{source}: keys 'privacy.noise_multiplier' and 'privacy.target_epsilon' are both set "
            f"(Found {noise!r} and {target!r}); allowed: one of them. noise_multiplier fixes the "
            f"noise; target_epsilon calibrates it before training to reach that ε after "
            f"algorithm.rounds rounds."
        )
    if noise is None and target is None:
        raise SpecError(
            f"{source}: privacy.mechanism = {mechanism!r} needs its noise: set "
            f"'privacy.noise_multiplier' (noise stddev / clip, e.g. 1.0) or "
            f"'privacy.target_epsilon' (the ε the noise is calibrated to). Found neither."
        )


def _check_nominal_cohort(source: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
    """privacy.noise_cohort_size / privacy.population: refuse settings whose claim would be wrong."""
    from tff_rec.privacy import nominal

    try:
        nominal.check_task(sections["privacy"], sections["algorithm"])
    except nominal.NominalError as error:
        raise SpecError(f"{source}: {error}") from None


def _mechanism_rules(source: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
    """The DP mechanism's own rules on the other keys, once its noise is chosen."""
    from tff_rec import rules

    rules.check_mechanism_rules(source, sections)


def _cross_checks(source: str, sections: Mapping[str, Mapping[str, Any]]) -> None:
    """Checks that span sections."""
    from tff_rec import rules

    rules.cross_check(source, sections)
    _check_centralized_optimizer(source, sections["algorithm.centralized"])


def _check_centralized_optimizer(source: str, centralized: Mapping[str, Any]) -> None:
    """beta_1, beta_2 and epsilon only for the Keras optimizers that take them."""
    optimizer = centralized["optimizer"]
    for key in ("beta_1", "beta_2", "epsilon"):
        if centralized[key] is not None and key not in KERAS_OPTIMIZER_HPARAMS[optimizer]:
            users = [o for o, keys in KERAS_OPTIMIZER_HPARAMS.items() if key in keys]
            takes = ", ".join(KERAS_OPTIMIZER_HPARAMS[optimizer]) or "no other hyperparameter"
            raise SpecError(
                f"{source}: key 'algorithm.centralized.{key}' applies to optimizer "
                f"{', '.join(users)}; algorithm.centralized.optimizer = {optimizer!r} takes "
                f"{takes}. Found {centralized[key]!r}."
            )


def load_task(path: Path | str, overrides: Optional[Mapping[str, Any]] = None) -> TaskSpec:
    """Load and validate a task file (a study file's base task is accepted as a task too)."""
    path = Path(path)
    raw = read_toml(path)
    if STUDY_SECTION in raw:
        raise SpecError(
            f"{path}: this is a study file ([study] table); run it with `tff-rec study {path}`"
        )
    task = resolve_task(apply_overrides(raw, overrides or {}), source=str(path))
    _check_folder_name(str(path), "name", task.name)
    return task


def _check_folder_name(source: str, key: str, name: str) -> None:
    """A name that becomes a folder (results/<name>/study.json) must stay one folder."""
    if any(c in name for c in "/\\\0") or name.strip() in ("", ".", ".."):
        raise SpecError(
            f"{source}: key '{key}' names the results folder <out>/<name>/; allowed: a non-empty "
            f"name without '/', '\\' or NUL that is not '.' or '..'. Found {name!r}."
        )


def task_metrics(task: TaskSpec) -> list[str]:
    """The test metrics a run of `task` records: hr@K, ndcg@K per evaluation.ks, mrr, and their
    sampled_ versions (ranked against evaluation.num_negatives negatives)."""
    ks = task["evaluation"]["ks"]
    full = [f"{name}@{k}" for k in ks for name in ("hr", "ndcg")] + ["mrr"]
    return full + [f"sampled_{name}" for name in full]


STUDY_KEYS = {"name", "seeds", "metrics", "variant", "axis", "full"}
# `[study.full]`: the study's full size (`tff-rec study --full`). Its seeds and metrics replace the
# default size's where given, its variants and axes (if any) all of the default's rows; `set`
# overrides the base task.
FULL_KEYS = {"seeds", "metrics", "variant", "axis", "set"}
FULL_SUFFIX = "_full"  # the full size's name: its own manifest and results folder


def load_study(path: Path | str, overrides: Optional[Mapping[str, Any]] = None,
               full: bool = False) -> StudySpec:
    """Load a study: the file's task keys form the base task; variants and axes override it, and
    `overrides` (dotted keys) override every variant. `full`: the size its `[study.full]` table
    describes, named `<name>_full`."""
    path = Path(path)
    raw = read_toml(path)
    study = raw.get(STUDY_SECTION)
    source = str(path)
    if not isinstance(study, Mapping):
        raise SpecError(f"{source}: a study file needs a [study] table (with seeds and variants)")
    for key in study:
        if key not in STUDY_KEYS:
            raise SpecError(f"{source}: unknown key 'study.{key}'; allowed: {', '.join(sorted(STUDY_KEYS))}")
    name_key = "study.name" if "name" in study else "name"
    name = study.get("name", raw.get("name", path.stem))
    if not isinstance(name, str):
        raise SpecError(f"{source}: key '{name_key}' must be a string. Found {name!r}.")
    _check_folder_name(source, name_key, name)
    base = {k: v for k, v in raw.items() if k != STUDY_SECTION}
    from_full: set[str] = set()  # the keys the full size sets: errors name study.full.<key>
    if full:
        study, base, from_full = _full_size(source, study, base)
        name += FULL_SUFFIX

    def key(field: str) -> str:
        return f"study.full.{field}" if field in from_full else f"study.{field}"

    seeds = study.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds
    ):
        raise SpecError(
            f"{source}: key '{key('seeds')}' must be a non-empty list of integers from 0 to "
            f"{MAX_SEED}. Found {seeds!r}."
        )
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise SpecError(
            f"{source}: key '{key('seeds')}' must list distinct seeds (a seed twice is one run counted "
            f"twice, and a confidence interval from copies). Found {seeds!r}: "
            f"{', '.join(map(str, repeated))} repeated."
        )
    metrics = study.get("metrics", ["ndcg@10", "hr@10"])
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise SpecError(
            f"{source}: key '{key('metrics')}' must be a non-empty list of metric names. Found {metrics!r}."
        )
    table = "study.full" if from_full & {"variant", "axis"} else "study"  # where the rows were read
    variants = _listed_variants(source, study, table) + _grid_variants(source, study, table)
    if not variants:
        raise SpecError(
            f"{source}: key '{table}.variant' is empty and there is no [[{table}.axis]]: the study has "
            f"no runs. Found {study.get('variant')!r}; allowed: at least one [[{table}.variant]] or "
            f"[[{table}.axis]] (or neither key, for one 'base' row)."
        )
    tasks = []
    for index, variant in enumerate(variants):
        where = f"study.axis grid point {variant.label!r}" if variant.axes else (
            f"{table}.variant[{index}], label {variant.label!r}")
        if not variant.label.strip():
            key = f"label of a {table}.axis value" if variant.axes else f"{table}.variant[{index}].label"
            raise SpecError(f"{source}: key '{key}' must be a non-empty label. Found {variant.label!r}.")
        try:
            changes = {**variant.overrides, **(overrides or {})}
            task_raw = apply_overrides(_leave_other_entry_params(base, changes), changes)
        except SpecError as error:
            raise SpecError(f"{source} ({where}): {error}") from None
        task_raw["name"] = variant.label
        tasks.append(resolve_task(task_raw, source=f"{source} ({where})"))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise SpecError(f"{source}: variant labels must be unique. Found {labels}.")
    for variant, task in zip(variants, tasks):
        unknown = [m for m in metrics if m not in task_metrics(task)]
        if unknown:
            raise SpecError(
                f"{source}: key '{key('metrics')}' names {unknown[0]!r}, which variant "
                f"{variant.label!r} does not record (evaluation.ks = {task['evaluation']['ks']}). "
                f"Found {metrics!r}; allowed: {', '.join(task_metrics(task))}."
            )
    return StudySpec(
        name=name, seeds=tuple(seeds), variants=tuple(variants), tasks=tuple(tasks),
        metrics=tuple(metrics), source=source,
    )


def _full_size(source: str, study: Mapping[str, Any],
               base: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """The [study] table and base task of the study's full size (`[study.full]`), and the
    [study] keys it took from `[study.full]`."""
    full = study.get("full")
    if full is None:
        raise SpecError(f"{source}: --full asks for the study's full size, and the file has no "
                        f"[study.full] table: this study has one size")
    if not isinstance(full, Mapping):
        raise SpecError(f"{source}: key 'study.full' must be a table. Found {full!r}.")
    for key in full:
        if key not in FULL_KEYS:
            raise SpecError(f"{source}: unknown key 'study.full.{key}'; allowed: {', '.join(sorted(FULL_KEYS))}")
    changes = full.get("set", {})
    if not isinstance(changes, Mapping):
        raise SpecError(f"{source}: key 'study.full.set' must be a table of dotted keys. Found {changes!r}.")
    rows = ("variant", "axis")  # the full size's rows and axes, if it has any, replace all of the default's
    replaced = ("full",) + (rows if any(key in full for key in rows) else ())
    sized = {**{k: v for k, v in study.items() if k not in replaced},
             **{k: v for k, v in full.items() if k != "set"}}
    changes = grid.flatten(changes)
    return sized, apply_overrides(_leave_other_entry_params(base, changes), changes), set(full) - {"set"}


def _leave_other_entry_params(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` without the parameters of registry entries that `changes` replace: a variant that
    names another dataset (model, mechanism, ...) than the base's starts from that entry's
    defaults, not from parameters only the base's entry takes (synthetic's `users`, say)."""
    result = copy.deepcopy(dict(base))
    for section, (name_key, _) in registry.SECTIONS.items():
        chosen = changes.get(f"{section}.{name_key}")
        table = _sub_table(result, section)
        old = table.get(name_key, SCHEMA[section][name_key].default)
        if chosen is None or chosen == old or not isinstance(chosen, str) or not table:
            continue
        entries = registry.of_section(section)
        try:
            old_params = {param.name for param in entries.params(old)}
            new_params = {param.name for param in entries.params(chosen)}
        except ValueError:
            continue  # an unknown entry: resolving the task names the key
        for key in old_params - new_params:
            table.pop(key, None)  # a mutable copy: _sub_table returns the node itself
    return result


def _listed_variants(source: str, study: Mapping[str, Any], table: str = "study") -> list[Variant]:
    """The `[[study.variant]]` rows (label, set, skip_without_data); one `base` row when the
    study has no rows at all."""
    default = [] if "axis" in study else [{"label": "base"}]
    variants = []
    for index, entry in enumerate(study.get("variant", default)):
        where = f"{table}.variant[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("label"), str):
            raise SpecError(f"{source}: '{where}' needs a string 'label'")
        unknown = set(entry) - VARIANT_KEYS
        if unknown:
            raise SpecError(f"{source}: unknown key '{where}.{sorted(unknown)[0]}'; "
                            f"allowed: {', '.join(sorted(VARIANT_KEYS))}")
        overrides = entry.get("set", {})
        if not isinstance(overrides, Mapping):
            raise SpecError(f"{source}: '{where}.set' must be a table of dotted keys")
        optional = entry.get("skip_without_data", False)
        if not isinstance(optional, bool):
            raise SpecError(f"{source}: key '{where}.skip_without_data' must be true or false. "
                            f"Found {optional!r}.")
        variants.append(Variant(label=entry["label"], overrides=grid.flatten(overrides),
                                skip_without_data=optional))
    return variants


VARIANT_KEYS = {"label", "set", "skip_without_data"}


def _grid_variants(source: str, study: Mapping[str, Any], table: str = "study") -> list[Variant]:
    """The cartesian product of the `[[study.axis]]` axes, one variant per combination."""
    if "axis" not in study:
        return []
    try:
        points = grid.expand(grid.parse_axes(study["axis"]))
    except grid.GridError as error:
        raise SpecError(f"{source}: {str(error).replace('study.axis', f'{table}.axis')}") from None
    return [Variant(label=p.label, overrides=p.overrides, axes=p.axes) for p in points]
