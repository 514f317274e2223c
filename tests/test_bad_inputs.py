"""A corpus of bad inputs: every one is a clear error, exits 2, and writes nothing.

Each case runs `tff_rec.cli.main` in-process on files written into a fresh folder and asserts the
exit code, that the message names the file (where there is one), the key and the bad value, and
that the folder holds exactly what the case wrote (no results, no run folder, no `.lock` file).
Nothing trains: every case fails before training starts.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Union

import pytest

from tff_rec import cli, record, runner, spec

TASK = """\
name = "tiny"
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
[algorithm]
rounds = 3
clients_per_round = 10
[evaluation]
every = 2
num_negatives = 20
"""

SEQUENCES_TASK = """\
[data]
dataset = "sequences"
path = "{tmp}/seq.txt"
min_user_interactions = 0
min_item_interactions = 0
[model]
max_len = 5
[algorithm]
clients_per_round = 2
[evaluation]
num_negatives = 2
"""
MOVIELENS = '[data]\ndataset = "{name}"\npath = "{{tmp}}/nowhere"\n'
# Four users with five interactions each: valid sequence data.
SEQUENCES = "".join(f"{user} {item}\n" for user in range(1, 5) for item in range(1, 6))


def study(body: str, task: str = TASK) -> str:
    """A study file: `body` holds the [study] keys and tables, the task follows."""
    return body + "\n" + task.replace('name = "tiny"', "")


VARIANTS = """\
[study]
seeds = [0]
[[study.variant]]
label = "popularity"
set = { "algorithm.name" = "popularity" }
"""


@dataclasses.dataclass(frozen=True)
class Case:
    """argv and fragments may hold {tmp} (the case's folder); files maps names to contents
    (str, bytes, or None for a folder)."""

    argv: tuple[str, ...]
    fragments: tuple[str, ...]
    files: dict[str, Union[str, bytes, None]] = dataclasses.field(default_factory=dict)
    code: int = 2


def run_case(*argv: str, files: Optional[dict] = None, fragments: tuple[str, ...] = (),
             code: int = 2, set_: tuple[str, ...] = ()) -> Case:
    return Case(tuple(argv) + tuple(a for s in set_ for a in ("--set", s)), tuple(fragments),
                {"task.toml": TASK, **(files or {})}, code)


RUN = ("run", "{tmp}/task.toml", "--out", "{tmp}/out", "--no-progress")
STUDY = ("study", "{tmp}/study.toml", "--out", "{tmp}/out", "--no-progress")
FILE = "{tmp}/task.toml"
STUDY_FILE = "{tmp}/study.toml"


def task_case(set_: tuple[str, ...], *fragments: str, text: str = TASK,
              files: Optional[dict] = None) -> Case:
    """`tff-rec run` of the tiny task with overrides: the message must name the task file."""
    return Case(RUN + tuple(a for s in set_ for a in ("--set", s)), (FILE, *fragments),
                {"task.toml": text, **(files or {})})


def text_case(text: str, *fragments: str, files: Optional[dict] = None) -> Case:
    """`tff-rec run` of a task file with this text."""
    return task_case((), *fragments, text=text, files=files)


def study_case(text: str, *fragments: str, argv: tuple[str, ...] = STUDY) -> Case:
    return Case(argv, (STUDY_FILE, *fragments), {"study.toml": text})


def cli_case(argv: tuple[str, ...], *fragments: str, files: Optional[dict] = None) -> Case:
    return Case(argv, fragments, {"task.toml": TASK, **(files or {})})


def seq_case(data: Union[str, bytes, None], *fragments: str, set_: tuple[str, ...] = ()) -> Case:
    """A `sequences` task reading {tmp}/seq.txt (None: no such file)."""
    files = {"task.toml": SEQUENCES_TASK} if data is None else {
        "task.toml": SEQUENCES_TASK, "seq.txt": data}
    return Case(RUN + tuple(a for s in set_ for a in ("--set", s)), (FILE, *fragments), files)


GAUSSIAN = ("privacy.mechanism=gaussian",)
PRIVACY = ("privacy", "epsilon", "--population", "1000", "--clients-per-round", "10",
           "--noise-multiplier", "1.0")

CASES: dict[str, Case] = {
    # --- task files: the file itself
    "task file is a directory": Case(("run", "{tmp}/folder", "--out", "{tmp}/out"),
                                     ("{tmp}/folder", "is a directory"), {"folder": None}),
    "task file missing": Case(("run", "{tmp}/absent.toml", "--out", "{tmp}/out"),
                              ("{tmp}/absent.toml", "no such task file")),
    "task file not UTF-8": text_case(b'name = "caf\xe9"\n', "task.toml:1", "not UTF-8", "0xe9", "offset 11"),
    "task file not TOML": text_case("this is = not toml [", "not valid TOML"),
    "run given a study file": Case(RUN, (FILE, "study file", "tff-rec study"),
                                   {"task.toml": study(VARIANTS)}),
    # --- task files: keys and values
    "empty name": text_case(TASK.replace('"tiny"', '""'), "key 'name'", "non-empty", "''"),
    "blank name": text_case(TASK.replace('"tiny"', '"  "'), "key 'name'", "non-empty", "'  '"),
    "name with a slash": text_case(TASK.replace('"tiny"', '"a/b"'), "key 'name'", "'a/b'", "'/'"),
    "name not a string": text_case(TASK.replace('"tiny"', "3"), "key 'name'", "string", "3"),
    "unknown section": text_case(TASK + "[dataa]\nx = 1\n", "unknown key 'dataa'", "data"),
    "section not a table": text_case("algorithm = 3\n", "key 'algorithm'", "table", "3"),
    "subsection not a table": text_case("[algorithm]\nclient = 3\n", "'algorithm.client'",
                                        "table", "3"),
    "unknown key": task_case(("algorithm.round=3",), "unknown key 'algorithm.round'", "rounds"),
    "wrong type": task_case(("algorithm.rounds='ten'",), "'algorithm.rounds'", "integer", "'ten'"),
    "rounds negative": task_case(("algorithm.rounds=-3",), "'algorithm.rounds'", "must be positive",
                                 "1 to 100000", "-3"),
    "rounds 10**12": task_case(("algorithm.rounds=1000000000000",), "'algorithm.rounds'",
                               "at most 100000", "1000000000000"),
    "epochs 10**7": task_case(("algorithm.centralized.epochs=10000000",),
                              "'algorithm.centralized.epochs'", "1 to 100000", "10000000"),
    "ks with 0": task_case(("evaluation.ks=[10, 0]",), "'evaluation.ks'", "positive integers",
                           "[10, 0]"),
    "users 10**15": task_case(("data.users=1000000000000000",), "'data.users'",
                              "in [1, 10000000]", "1000000000000000"),
    "users 0": task_case(("data.users=0",), "'data.users'", "in [1, 10000000]", "Found 0"),
    "users × mean_length too large": task_case(
        ("data.users=10000000", "data.items=300", "data.mean_length=100"), "'data.users'",
        "expected interactions", "at most 100000000"),
    "items 10**9": task_case(("data.items=1000000000",), "'data.items'", "1000000",
                             "1000000000"),
    "mean_length above items": task_case(("data.mean_length=61",), "'data.mean_length'",
                                         "between 3 and 60", "61"),
    "synthetic seed negative": task_case(("data.seed=-1",), "'data.seed'", "nonnegative", "-1"),
    "dataset param wrong type": task_case(("data.users='many'",), "'data.users'", "'many'"),
    "unknown dataset": task_case(("data.dataset=netflix",), "'data.dataset'", "'netflix'",
                                 "movielens-1m"),
    "unknown model": task_case(("model.name=transformer",), "'model.name'", "'transformer'",
                               "sasrec"),
    "unknown scheme": task_case(("partition.scheme=random",), "partition.scheme", "'random'",
                                "dirichlet"),
    "unknown mechanism": task_case(("privacy.mechanism=magic",), "privacy.mechanism", "'magic'",
                                   "gaussian"),
    "unknown model size": task_case(("model.size=huge",), "model.size", "'huge'", "tiny"),
    "max_len 10**9": task_case(("model.max_len=1000000000",), "'model.max_len'",
                               "in [1, 10000]", "1000000000"),
    "embedding_dim 10**6": task_case(("model.embedding_dim=1000000",), "'model.embedding_dim'",
                                     "in [1, 10000]", "1000000"),
    "partition alpha -1": task_case(("partition.scheme=dirichlet", "partition.alpha=-1"),
                                    "'partition.alpha'", "positive", "-1"),
    "partition num_clients 0": task_case(("partition.scheme=iid", "partition.num_clients=0"),
                                         "'partition.num_clients'", "at least 1", "0"),
    "partition law unknown": task_case(("partition.scheme=quantity", "partition.law=zipf"),
                                       "'partition.law'", "power", "'zipf'"),
    "param of another scheme": task_case(("partition.num_clients=3",),
                                         "unknown key 'partition.num_clients'", "natural"),
    "noise and target both set": task_case(
        GAUSSIAN + ("privacy.noise_multiplier=1.0", "privacy.target_epsilon=2.0"),
        "'privacy.noise_multiplier'", "'privacy.target_epsilon'", "both set", "1.0", "2.0",
        "one of them"),
    "gaussian with neither": task_case(GAUSSIAN, "privacy.mechanism = 'gaussian'",
                                       "'privacy.noise_multiplier'", "'privacy.target_epsilon'",
                                       "Found neither"),
    "adaptive with neither": task_case(("privacy.mechanism=adaptive",),
                                       "privacy.mechanism = 'adaptive'", "Found neither"),
    "delta out of range": task_case(GAUSSIAN + ("privacy.noise_multiplier=1.0", "privacy.delta=2.0"),
                                    "'privacy.delta'", "(0, 1)", "2.0"),
    "target_epsilon negative": task_case(GAUSSIAN + ("privacy.target_epsilon=-1",),
                                         "'privacy.target_epsilon'", "positive", "-1"),
    "clip negative": task_case(GAUSSIAN + ("privacy.noise_multiplier=1.0", "privacy.clip=-1"),
                               "privacy.clip", "positive", "-1"),
    "DP with centralized": task_case(GAUSSIAN + ("privacy.noise_multiplier=1.0",
                                                 "algorithm.name=centralized"),
                                     "privacy.mechanism", "'centralized'"),
    "tree without shuffle": task_case(("privacy.mechanism=tree", "privacy.noise_multiplier=1.0"),
                                      "algorithm.sampling = 'shuffle'", "'fixed'"),
    "target ε under PLD with fixed sampling": task_case(
        GAUSSIAN + ("privacy.target_epsilon=2.0", "privacy.accountant=pld"),
        "'privacy.target_epsilon'", "'pld'", "'fixed'", "2.0"),
    "target ε under shuffled passes": task_case(
        GAUSSIAN + ("privacy.target_epsilon=2.0", "algorithm.sampling=shuffle"),
        "'privacy.target_epsilon'", "'shuffle'", "'poisson' or 'fixed'"),
    "tree target ε under PLD": task_case(
        ("privacy.mechanism=tree", "privacy.target_epsilon=2.0", "algorithm.sampling=shuffle",
         "privacy.accountant=pld"), "'privacy.target_epsilon'", "'rdp'", "Found 'pld'"),
    "adaptive noise above the count's": task_case(
        ("privacy.mechanism=adaptive", "privacy.noise_multiplier=5.0"),
        "'privacy.clipped_count_stddev'", "noise_multiplier / 2 = 2.5", "5.0"),
    "fedprox mu on fedavg": task_case(("algorithm.fedprox.mu=0.5",), "'algorithm.fedprox.mu'",
                                      "'fedprox'", "'fedavg'"),
    # --- task files: what the data cannot satisfy (checked before the run's lock and folder)
    "num_negatives above the catalogue": task_case(
        ("evaluation.num_negatives=100000",), "'evaluation.num_negatives'", "catalogue",
        "Found 100000", "allowed: 1 to"),
    "clients_per_round above the clients": task_case(
        ("algorithm.clients_per_round=100000",), "'algorithm.clients_per_round'",
        "number of clients", "Found 100000", "allowed: 1 to"),
    "iid num_clients above the users": task_case(
        ("partition.scheme=iid", "partition.num_clients=1000"), "'partition.num_clients'",
        "(1000)", "training users"),
    "attribute the data lacks": task_case(
        ("partition.scheme=attribute", "partition.attribute=age"), "'partition.attribute'",
        "'age'", "available: group"),
    "pathological classes above categories": task_case(
        ("partition.scheme=pathological", "partition.classes_per_client=50"),
        "'partition.classes_per_client'", "(50)", "item categories"),
    "tree second pass": task_case(
        ("privacy.mechanism=tree", "privacy.noise_multiplier=1.0", "algorithm.sampling=shuffle",
         "algorithm.rounds=20"), "privacy.mechanism = 'tree'", "at most once", "20 × 10 = 200"),
    "filters leave no data": task_case(("data.min_user_interactions=1000",),
                                       "'data.min_user_interactions' (1000)",
                                       "no interactions left"),
    # --- data files
    "sequences: bad item": seq_case(SEQUENCES + "5 x\n", "'data.path'", "seq.txt:21",
                                    "expected an integer item", "'x'"),
    "sequences: three fields": seq_case("1 2\n1 2 3\n", "'data.path'", "seq.txt:2",
                                        "expected 2 whitespace-separated fields", "found 3"),
    "sequences: not UTF-8": seq_case(SEQUENCES.encode() + b"5 \xff\n", "'data.path'", "seq.txt:21",
                                     "utf-8"),
    "sequences: id above int64": seq_case("1 99999999999999999999\n", "'data.path'", "seq.txt:1",
                                          "99999999999999999999"),
    "sequences: empty file": seq_case("", "'data.path'", "seq.txt", "holds no interactions"),
    "sequences: blank lines only": seq_case("\n \n\n", "'data.path'", "seq.txt",
                                           "holds no interactions"),
    "sequences: no such file": seq_case(None, "'data.path'", "seq.txt", "nothing usable"),
    "sequences: path is a folder": Case(RUN, (FILE, "'data.path'", "nothing usable"), {
        "task.toml": SEQUENCES_TASK, "seq.txt": None}),
    "sequences: too short to evaluate": seq_case(
        "".join(f"{u} {2 * u + i}\n" for u in range(1, 5) for i in (0, 1)),
        "'data.min_user_interactions' (0)", "leave-one-out", "3 interactions"),
    "sequences: dirichlet without categories": seq_case(
        SEQUENCES, "partition.scheme", "'dirichlet'", "needs item categories",
        set_=("partition.scheme=dirichlet", "partition.num_clients=2")),
    "movielens-1m: no folder": text_case(
        MOVIELENS.format(name="movielens-1m"), "'data.path'", "nowhere", "ratings.dat"),
    "movielens-100k: bad line": text_case(
        MOVIELENS.format(name="movielens-100k"), "'data.path'", "u.data:2",
        "expected an integer user", "'x'",
        files={"nowhere": None, "nowhere/u.data": "1\t10\t5\t7\nx\t20\t3\t8\n"}),
    # --- study files
    "study: repeated seed": study_case(study("[study]\nseeds = [0, 0]\n"), "'study.seeds'",
                                       "[0, 0]", "distinct", "0 repeated"),
    "study: negative seed": study_case(study("[study]\nseeds = [-1]\n"), "'study.seeds'", "[-1]",
                                       "from 0 to"),
    "study: no seeds": study_case(study("[study]\nseeds = []\n"), "'study.seeds'", "non-empty"),
    "study: unknown metric": study_case(study('[study]\nmetrics = ["ndcg@20"]\n'),
                                        "'study.metrics'", "'ndcg@20'", "ndcg@10", "sampled_mrr"),
    "study: metrics not a list": study_case(study('[study]\nmetrics = "ndcg@10"\n'),
                                            "'study.metrics'", "'ndcg@10'"),
    "study: empty label": study_case(study('[study]\n[[study.variant]]\nlabel = ""\n'),
                                     "'study.variant[0].label'", "non-empty", "''"),
    "study: labels repeated": study_case(
        study('[study]\n[[study.variant]]\nlabel = "a"\n[[study.variant]]\nlabel = "a"\n'),
        "labels must be unique", "['a', 'a']"),
    "study: name with a slash": study_case(study('[study]\nname = "x/y"\n'), "'study.name'",
                                           "'x/y'"),
    "study: name not a string": study_case(study("[study]\nname = 7\n"), "'study.name'", "7"),
    "study: unknown key": study_case(study("[study]\nseed = [0]\n"), "unknown key 'study.seed'",
                                     "seeds"),
    "study: bad override": study_case(
        study('[study]\n[[study.variant]]\nlabel = "x"\nset = { "algorithm.rounds" = -1 }\n'),
        "study.variant[0]", "'algorithm.rounds'", "-1"),
    "study: override through a value": study_case(
        study('[study]\n[[study.variant]]\nlabel = "x"\nset = { "data.users.x" = 1 }\n'),
        "study.variant[0]", "'data.users.x'", "not a table"),
    "study: set not a table": study_case(
        study('[study]\n[[study.variant]]\nlabel = "x"\nset = 3\n'), "'study.variant[0].set'",
        "table"),
    "study: variant the data cannot satisfy": study_case(
        study(VARIANTS + '[[study.variant]]\nlabel = "crowd"\n'
              'set = { "algorithm.clients_per_round" = 100000 }\n'),
        "study.variant[1], label 'crowd'", "'algorithm.clients_per_round'", "100000"),
    "study: axis without values": study_case(study('[study]\n[[study.axis]]\nname = "p"\n'),
                                             "study.axis"),
    "study: no variants": study_case(study("[study]\nvariant = []\n"), "'study.variant'",
                                     "no runs", "[]"),
    "study: variant without label": study_case(
        study('[study]\n[[study.variant]]\nset = { "algorithm.rounds" = 2 }\n'),
        "'study.variant[0]'", "label"),
    "study: no [study] table": study_case(TASK, "needs a [study] table"),
    "study: file is a directory": Case(("study", "{tmp}/folder", "--out", "{tmp}/out"),
                                       ("{tmp}/folder", "is a directory"), {"folder": None}),
    # --- command-line arguments
    "run --seed -1": cli_case(RUN + ("--seed", "-1"), "--seed", "found -1", "from 0 to"),
    "run --seed x": cli_case(RUN + ("--seed", "x"), "--seed", "'x'", "integer"),
    "run --out is a file": cli_case(("run", FILE, "--out", "{tmp}/task.toml"), "--out",
                                    "{tmp}/task.toml", "is a file"),
    "run --out under a file": cli_case(("run", FILE, "--out", "{tmp}/task.toml/out"),
                                       "--out", "{tmp}/task.toml", "which is a file"),
    "run --study with a slash": cli_case(RUN + ("--study", "a/b"), "--study", "'a/b'"),
    "run --set without =": cli_case(RUN + ("--set", "algorithm.rounds"), "--set",
                                    "'algorithm.rounds'", "key=value"),
    "run --set through a value": cli_case(RUN + ("--set", "data.users.x=1"), "'data.users.x'",
                                          "not a table"),
    "study --jobs 0": Case(STUDY + ("--jobs", "0"), ("--jobs", "found 0", ">= 1"),
                           {"study.toml": study(VARIANTS)}),
    "study --out is a file": Case(("study", STUDY_FILE, "--out", STUDY_FILE),
                                  ("--out", STUDY_FILE, "is a file"), {"study.toml": study(VARIANTS)}),
    "study --format unknown": Case(STUDY + ("--format", "pdf"), ("--format", "'pdf'"),
                                   {"study.toml": study(VARIANTS)}),
    "compare: no records": cli_case(("compare", "{tmp}/nothing"), "{tmp}/nothing",
                                    "no complete run records"),
    "plot --output under a file": cli_case(("plot", "{tmp}/nothing", "--output",
                                            "{tmp}/task.toml/figure"), "--output",
                                           "{tmp}/task.toml", "is a file"),
    "plot without --output": cli_case(("plot", "{tmp}/nothing"), "--output", "required"),
    "reference save under a file": cli_case(("reference", "save", "{tmp}/nothing",
                                             "{tmp}/task.toml/ref.json"), "REFERENCE",
                                            "{tmp}/task.toml", "is a file"),
    "reference check: no reference": cli_case(("reference", "check", "{tmp}/nothing",
                                               "{tmp}/absent.json"), "{tmp}/absent.json",
                                              "not a readable reference file"),
    "reference check --seeds -1": cli_case(("reference", "check", "{tmp}/n", "{tmp}/r.json",
                                            "--seeds", "-1"), "--seeds", "found -1"),
    "data info: unknown dataset": cli_case(("data", "info", "netflix"), "'netflix'", "synthetic"),
    "data info: users 10**15": cli_case(("data", "info", "synthetic", "--param",
                                         "users=1000000000000000"), "users",
                                        "in [1, 10000000]", "1000000000000000"),
    "data info: seed -1": cli_case(("data", "info", "synthetic", "--param", "seed=-1"),
                                   "synthetic: seed", "nonnegative", "-1"),
    "data info: unknown param": cli_case(("data", "info", "synthetic", "--param", "user=5"),
                                         "user is not a parameter of dataset 'synthetic'", "users"),
    "data info: --param without =": cli_case(("data", "info", "synthetic", "--param", "users"),
                                             "--param", "'users'", "key=value"),
    "data info: negative filter": cli_case(("data", "info", "synthetic",
                                            "--min-user-interactions", "-1"),
                                           "--min-user-interactions", "found -1", ">= 0"),
    "data info: sequences path is a folder": cli_case(("data", "info", "sequences", "--path",
                                                       "{tmp}"), "{tmp}", "nothing usable"),
    "data partition --seed -1": cli_case(("data", "partition", FILE, "--seed", "-1"), "--seed",
                                         "found -1"),
    "data partition: scheme the data cannot satisfy": cli_case(
        ("data", "partition", FILE, "--set", "algorithm.name=centralized", "--set",
         "partition.scheme=iid", "--set", "partition.num_clients=1000"),
        FILE, "'partition.num_clients'", "(1000)"),
    "data download: unknown dataset": cli_case(("data", "download", "netflix", "--cache",
                                                "{tmp}/cache"), "'netflix'", "movielens-1m"),
    "data download --cache under a file": cli_case(("data", "download", "movielens-1m",
                                                    "--cache", "{tmp}/task.toml/cache"),
                                                   "--cache", "{tmp}/task.toml", "is a file"),
    "tasks describe --seed -1": cli_case(("tasks", "describe", FILE, "--seed", "-1"), "--seed",
                                         "found -1"),
    "tasks describe: num_negatives above the catalogue": cli_case(
        ("tasks", "describe", FILE, "--set", "evaluation.num_negatives=1000"), FILE,
        "'evaluation.num_negatives'", "Found 1000"),
    "privacy epsilon --rounds 10**12": cli_case(PRIVACY + ("--rounds", "1000000000000"),
                                                "--rounds", "1000000000000", "from 1 to 10000000"),
    "privacy epsilon --rounds 0": cli_case(PRIVACY + ("--rounds", "0"), "--rounds", "found 0"),
    "privacy epsilon --population 1": cli_case(
        ("privacy", "epsilon", "--population", "1", "--clients-per-round", "1",
         "--noise-multiplier", "1", "--rounds", "10"), "--population", "found 1", ">= 2"),
    "privacy epsilon: cohort above population": cli_case(
        ("privacy", "epsilon", "--population", "100", "--clients-per-round", "1000",
         "--noise-multiplier", "1", "--rounds", "10"), "--clients-per-round 1000",
        "--population 100", "allowed: 1 to 100"),
    "privacy epsilon --noise-multiplier nan": cli_case(
        ("privacy", "epsilon", "--population", "100", "--clients-per-round", "10",
         "--noise-multiplier", "nan", "--rounds", "10"), "--noise-multiplier", "nan", "finite"),
    "privacy epsilon --noise-multiplier -1": cli_case(
        ("privacy", "epsilon", "--population", "100", "--clients-per-round", "10",
         "--noise-multiplier", "-1", "--rounds", "10"), "--noise-multiplier", "found -1", "[0, inf)"),
    "privacy epsilon --delta 2": cli_case(PRIVACY + ("--rounds", "10", "--delta", "2"), "--delta",
                                          "found 2", "(0, 1)"),
    "privacy epsilon: tree rounds 10**6": cli_case(
        ("privacy", "epsilon", "--mechanism", "tree", "--sampling", "shuffle", "--population",
         "1000000000", "--clients-per-round", "1", "--noise-multiplier", "1", "--rounds",
         "1000000"), "--rounds 1000000", "tree", "1 to 100000"),
    "privacy calibrate --target-epsilon -1": cli_case(
        ("privacy", "calibrate", "--population", "100", "--clients-per-round", "10",
         "--target-epsilon", "-1", "--rounds", "10"), "--target-epsilon", "found -1", "(0, inf)"),
    "privacy calibrate --target-epsilon inf": cli_case(
        ("privacy", "calibrate", "--population", "100", "--clients-per-round", "10",
         "--target-epsilon", "inf", "--rounds", "10"), "--target-epsilon", "inf", "finite"),
    "unknown command": cli_case(("train", FILE), "invalid choice", "'train'"),
}


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _write(folder: Path, files: dict[str, Union[str, bytes, None]]) -> None:
    for name, content in files.items():
        path = folder / name
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{tmp}", str(folder)))


def _main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as stop:  # argparse's usage errors
        return int(stop.code)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_a_clear_error_and_writes_nothing(name, tmp_path, capsys):
    case = CASES[name]
    _write(tmp_path, case.files)
    before = _tree(tmp_path)
    code = _main([arg.replace("{tmp}", str(tmp_path)) for arg in case.argv])
    captured = capsys.readouterr()
    message = captured.err
    assert code == case.code, message
    assert "Traceback" not in message
    for fragment in case.fragments:
        assert fragment.replace("{tmp}", str(tmp_path)) in message, message
    assert _tree(tmp_path) == before, "a bad input wrote files"
    assert not captured.out  # nothing reported as done


def test_corpus_is_large():
    assert len(CASES) >= 100


def test_help_documents_the_exit_status(capsys):
    assert _main(["--help"]) == 0
    text = capsys.readouterr().out
    for line in ("exit status:", "0    success", "1    a run failed", "2    bad input or usage",
                 "130  interrupted"):
        assert line in text, text


def test_a_failure_while_running_exits_1_not_2(tmp_path, capsys, monkeypatch):
    """A ValueError raised by training is a failed run (1), not bad input (2)."""
    def fail(*args, **kwargs):
        raise ValueError("the model diverged")

    monkeypatch.setattr(runner, "_run", fail)
    (tmp_path / "task.toml").write_text(TASK)
    code = _main(["run", str(tmp_path / "task.toml"), "--out", str(tmp_path / "out"),
                  "--no-progress", "--set", "algorithm.name=popularity"])
    assert code == 1
    message = capsys.readouterr().err
    assert "tiny (task " in message and "failed: ValueError: the model diverged" in message


def test_a_record_of_a_calibrated_task_loads_again(tmp_path):
    """config.toml of a target_epsilon run leaves the calibrated noise out: loading it again
    gives the same task instead of 'both set'."""
    path = tmp_path / "task.toml"
    path.write_text(TASK + '[privacy]\nmechanism = "gaussian"\ntarget_epsilon = 4.0\n')
    task = spec.load_task(path)
    again = tmp_path / "again.toml"
    again.write_text(record.to_toml(task.to_dict()))
    assert spec.load_task(again).hash == task.hash
