"""DP calibrated for a nominal cohort (`privacy.noise_cohort_size`, `privacy.population`).

The noise the aggregator adds to the average is the nominal cohort's; ε is the accountant's for
the nominal setting and equals `tff-rec privacy epsilon` with the same settings; settings whose
claim would be wrong are refused with a SpecError naming the key; tasks without the keys keep
their hashes and records; a run with them is marked as simulated.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_rec import checks, cli, runtime, spec
from tff_rec.privacy import accounting, mechanism_registry, mechanisms, nominal
from tff_rec.privacy.planning import plan_privacy

DIM = 20_000


@pytest.fixture(scope="module", autouse=True)
def stop_tff_worker():
    """TFF's worker outlives Python: stop the ones this module started."""
    yield
    runtime.stop_workers()


def _noised_average(query, clients: int, dim: int = DIM) -> np.ndarray:
    """The query's release on `clients` zero records: its noise on the average."""
    state = query.initial_global_state()
    params = query.derive_sample_params(state)
    sample = query.initial_sample_state(tf.zeros([dim]))
    for _ in range(clients):
        sample = query.accumulate_record(params, sample, tf.zeros([dim]))
    result, _, _ = query.get_noised_result(sample, state)
    return np.asarray(result)


# ---------------------------------------------------------------- the noise actually added


def test_gaussian_adds_the_nominal_cohorts_noise_to_the_average():
    clip, z, trained, nominal_size = 2.0, 1.5, 5, 5000
    build = mechanisms.MECHANISMS["gaussian"].query_builder
    simulated = build(clients_per_round=trained, noise_seed=3, clip=clip, noise_multiplier=z,
                      noise_cohort_size=nominal_size)
    real = build(clients_per_round=nominal_size, noise_seed=3, clip=clip, noise_multiplier=z)
    # the sum's stddev is z·clip·C/C_nom, the denominator C
    state = simulated.initial_global_state()
    assert float(state.numerator_state.stddev) == pytest.approx(clip * z * trained / nominal_size)
    assert float(state.denominator) == trained
    expected = clip * z / nominal_size  # σ of a real C_nom round's average
    # std of 20,000 normals: relative s.e. 0.5%; 3% is 6 s.e. A missing scale is off by 1000x.
    assert np.std(_noised_average(simulated, trained)) == pytest.approx(expected, rel=0.03)
    assert np.std(_noised_average(real, nominal_size, dim=DIM)) == pytest.approx(expected, rel=0.03)


def test_adaptive_splits_for_the_nominal_cohort_and_scales_both_noises():
    z, trained, nominal_size, clip = 0.8, 10, 1000, 0.5
    value_z, count_stddev = mechanisms.adaptive_noise_split(z, nominal_size, None)
    query = mechanisms.MECHANISMS["adaptive"].query_builder(
        clients_per_round=trained, noise_seed=5, noise_multiplier=z, initial_clip=clip,
        target_unclipped_quantile=0.5, clip_learning_rate=0.2, clipped_count_stddev=None,
        noise_cohort_size=nominal_size)
    state = query.initial_global_state().numerator_state
    scale = trained / nominal_size
    assert float(state.sum_state.stddev) == pytest.approx(clip * value_z * scale, rel=1e-6)
    count = state.quantile_estimator_state.below_estimate_state
    # the clipped fraction's noise: count stddev / denominator = the nominal s / C_nom
    assert float(count.numerator_state.stddev) / float(count.denominator) == pytest.approx(
        count_stddev / nominal_size, rel=1e-6)
    assert np.std(_noised_average(query, trained)) == pytest.approx(
        clip * value_z / nominal_size, rel=0.03)


def test_the_tff_aggregator_adds_the_nominal_noise():
    clip, z, trained, nominal_size = 1.0, 1.0, 4, 400
    factory = mechanisms.build_aggregator("gaussian", clients_per_round=trained, noise_seed=1,
                                          clip=clip, noise_multiplier=z,
                                          noise_cohort_size=nominal_size)
    process = factory.create(tff.TensorType(np.float32, [DIM]))
    output = process.next(process.initialize(), [np.zeros(DIM, np.float32)] * trained)
    assert np.std(np.asarray(output.result)) == pytest.approx(clip * z / nominal_size, rel=0.03)


def test_tree_scales_its_noise_and_mechanisms_without_sound_scaling_are_refused():
    factory = mechanisms.build_aggregator("tree", clients_per_round=4, noise_seed=0, clip=1.0,
                                          noise_multiplier=2.0, noise_cohort_size=400)
    assert factory._noise_multiplier == pytest.approx(2.0 * 4 / 400)
    for mechanism, params in (("clip", {"clip": 1.0}), ("ddp", {"noise_multiplier": 0.1})):
        with pytest.raises(ValueError, match="noise_cohort_size"):
            mechanisms.build_aggregator(mechanism, clients_per_round=4, noise_seed=0,
                                        noise_cohort_size=400, **params)


# ---------------------------------------------------------------- ε for the nominal setting


def _task(**privacy) -> spec.TaskSpec:
    raw = {
        "data": {"dataset": "synthetic", "users": 120, "items": 60, "mean_length": 12},
        "model": {"max_len": 10, "embedding_dim": 16, "num_blocks": 1, "num_heads": 1,
                  "dropout": 0.0},
        "algorithm": {"rounds": 3, "clients_per_round": 10, "client": {"batch_size": 4}},
        "evaluation": {"every": 3, "num_negatives": 20},
        "privacy": {"mechanism": "gaussian", "clip": 1.0, **privacy},
    }
    if "target_epsilon" not in privacy:
        raw["privacy"].setdefault("noise_multiplier", 1.0)
    return spec.resolve_task(raw, source="nominal.toml")


def _cli_epsilon(capsys, *arguments: str) -> dict:
    assert cli.main(["privacy", "epsilon", *arguments, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("sampling", ["fixed", "poisson"])
def test_recorded_epsilon_is_privacy_epsilon_for_the_nominal_cohort(capsys, sampling):
    task = _task(noise_cohort_size=5000, population=1_000_000, noise_multiplier=1.2)
    task = spec.resolve_task(spec.apply_overrides(task.to_dict(), {"algorithm.sampling": sampling}),
                             source="nominal.toml")
    plan = plan_privacy(task, population=117)
    record = plan.to_record()
    shown = _cli_epsilon(capsys, "--population", "1000000", "--clients-per-round", "10",
                         "--noise-cohort-size", "5000", "--rounds", "3", "--sampling", sampling,
                         "--noise-multiplier", "1.2")
    assert record["epsilon"] == pytest.approx(shown["epsilon"]["rdp"], rel=1e-9)
    assert record["delta"] == shown["delta"] == accounting.default_delta(1_000_000)
    assert record["simulated"]["noise_cohort_size"] == 5000
    assert record["simulated"]["population"] == 1_000_000
    assert record["simulated"]["aggregator_noise_multiplier"] == pytest.approx(
        shown["simulated"]["aggregator_noise_multiplier"]) == pytest.approx(1.2 * 10 / 5000)
    # and it is not the ε of the cohort that trained
    trained = accounting.epsilon(noise_multiplier=1.2, population=117, clients_per_round=10,
                                 rounds=3, delta=record["delta"], sampling=sampling)
    assert trained.epsilon != pytest.approx(record["epsilon"], rel=1e-3)


def test_target_epsilon_is_calibrated_for_the_nominal_cohort(capsys):
    task = _task(noise_cohort_size=2000, population=100_000, target_epsilon=2.0)
    plan = plan_privacy(task, population=117)
    assert plan.ledger[-1] <= 2.0
    assert cli.main(["privacy", "calibrate", "--population", "100000", "--clients-per-round", "10",
                     "--noise-cohort-size", "2000", "--rounds", "3", "--sampling", "fixed",
                     "--accountant", "rdp", "--target-epsilon", "2", "--json"]) == 0
    calibrated = json.loads(capsys.readouterr().out)
    assert plan.params["noise_multiplier"] == pytest.approx(calibrated["noise_multiplier"], rel=1e-9)


def test_population_alone_accounts_over_the_larger_population():
    plan = plan_privacy(_task(population=50_000), population=117)
    assert plan.population == 50_000 and plan.noise_cohort_size == 10
    expected = accounting.epsilon(noise_multiplier=1.0, population=50_000, clients_per_round=10,
                                  rounds=3, delta=accounting.default_delta(50_000),
                                  sampling="fixed")
    assert plan.ledger[-1] == pytest.approx(expected.epsilon)
    assert plan.to_record()["simulated"]["label"] == "noise for C=10, N=50000"


# ---------------------------------------------------------------- refused combinations


@pytest.mark.parametrize("privacy, key, words", [
    ({"noise_cohort_size": 5}, "privacy.noise_cohort_size", "smaller than algorithm.clients_per_round"),
    ({"noise_cohort_size": 500, "population": 400}, "privacy.population", "smaller than privacy.noise_cohort_size"),
    ({"population": 5}, "privacy.population", "smaller than algorithm.clients_per_round"),
    ({"mechanism": "clip", "noise_cohort_size": 100}, "privacy.noise_cohort_size", "no noise"),
    ({"mechanism": "none", "population": 1000}, "privacy.population", "no noise"),
    ({"noise_cohort_size": 0}, "privacy.noise_cohort_size", "must be positive"),
    ({"noise_cohort_size": 1.5}, "privacy.noise_cohort_size", "must be an integer"),
])
def test_wrong_claims_are_spec_errors_naming_the_key(privacy, key, words):
    raw = {"algorithm": {"clients_per_round": 10, "rounds": 3},
           "privacy": {"mechanism": "gaussian", "noise_multiplier": 1.0, **privacy}}
    if privacy.get("mechanism") in ("clip", "none"):
        raw["privacy"].pop("noise_multiplier")
    with pytest.raises(spec.SpecError) as error:
        spec.resolve_task(raw, source="bad.toml")
    message = str(error.value)
    assert message.startswith("bad.toml: ") and f"'{key}'" in message
    assert words.replace("a integer", "an integer") in message or words in message


def _registered(monkeypatch, name: str, **declaration) -> mechanism_registry.Mechanism:
    """A mechanism registered in this process as a plugin's would be: the gaussian's parameters,
    builder and analysis, with the nominal-cohort declaration left at its default unless given."""
    gaussian = mechanism_registry.MECHANISMS["gaussian"]
    fields = {field.name: getattr(gaussian, field.name) for field in dataclasses.fields(gaussian)
              if not field.name.startswith("nominal_")}
    entry = mechanism_registry.Mechanism(**{**fields, "name": name, **declaration})
    monkeypatch.setitem(mechanism_registry.MECHANISMS, name, entry)
    return entry


def test_a_mechanism_takes_a_nominal_cohort_only_when_it_declares_it(monkeypatch):
    """`Mechanism.nominal_cohort` decides, not a list of names: an entry that declares it is
    accepted and listed among the allowed mechanisms; one that does not is refused by the task
    and by the aggregator builder, saying its scaling is not derived."""
    _registered(monkeypatch, "declared_gaussian", nominal_cohort=True)
    _registered(monkeypatch, "undeclared_gaussian")  # the default: refused
    raw = {"algorithm": {"clients_per_round": 10, "rounds": 3},
           "privacy": {"mechanism": "declared_gaussian", "noise_multiplier": 1.0,
                       "noise_cohort_size": 100, "population": 1000}}
    task = spec.resolve_task(raw, source="declared.toml")
    assert task["privacy"]["noise_cohort_size"] == 100
    raw["privacy"]["mechanism"] = "undeclared_gaussian"
    with pytest.raises(spec.SpecError) as error:
        spec.resolve_task(raw, source="undeclared.toml")
    message = str(error.value)
    assert "key 'privacy.noise_cohort_size'" in message and "'undeclared_gaussian'" in message
    assert "the scaling of its noise to a nominal cohort is not derived" in message
    allowed = message.split("Allowed: privacy.mechanism = ")[1].rstrip(".").split(" | ")
    assert allowed == ["gaussian", "adaptive", "tree", "declared_gaussian"]
    with pytest.raises(ValueError, match="not derived.*declared_gaussian"):
        mechanisms.build_aggregator("undeclared_gaussian", clients_per_round=4, noise_seed=0,
                                    clip=1.0, noise_multiplier=1.0, noise_cohort_size=400)
    state = mechanisms.initial_query_state("declared_gaussian", clients_per_round=4, noise_seed=0,
                                           clip=1.0, noise_multiplier=2.0, noise_cohort_size=400)
    assert float(state.numerator_state.stddev) == pytest.approx(2.0 * 4 / 400)


def test_tree_needs_a_single_nominal_pass():
    raw = {"algorithm": {"clients_per_round": 10, "rounds": 10, "sampling": "shuffle"},
           "privacy": {"mechanism": "tree", "noise_multiplier": 1.0, "noise_cohort_size": 100,
                       "population": 500}}
    with pytest.raises(spec.SpecError, match="'privacy.population'.*single pass"):
        spec.resolve_task(raw, source="tree.toml")


def test_data_dependent_refusals_name_the_key():
    # the tiny synthetic task has ~117 clients: a smaller population, or a larger nominal cohort
    # without a population, would claim a population the simulated clients are not part of
    for privacy, key in (({"population": 50}, "privacy.population"),
                         ({"noise_cohort_size": 500}, "privacy.noise_cohort_size")):
        task = _task(**privacy)
        with pytest.raises(spec.SpecError, match=f"nominal.toml: key '{key}'"):
            checks.check_task(task, seed=0)
        with pytest.raises(spec.SpecError, match=f"key '{key}'"):
            plan_privacy(task, population=117)


# ---------------------------------------------------------------- defaults change nothing


def test_default_keys_leave_hashes_unchanged():
    plain, explicit_none = _task(), _task(noise_cohort_size=None, population=None)
    assert plain.hash == explicit_none.hash
    assert "noise_cohort_size" not in spec._hashed_sections(plain.sections)["privacy"]
    assert _task(noise_cohort_size=100, population=1000).hash != plain.hash
    root = Path(__file__).resolve().parent.parent
    quickstart = spec.load_study(root / "tasks" / "quickstart.toml")
    reference = json.loads((root / "results" / "reference" / "quickstart.json").read_text())
    pinned = {run["label"]: run["task_hash"] for run in reference["runs"]}
    assert {task.name: task.hash for task in quickstart.tasks} == pinned  # DP rows included
    plan = plan_privacy(plain, population=117)
    assert plan.nominal is None and "simulated" not in plan.to_record()


def test_results_table_marks_simulated_rows():
    import pandas as pd

    from tff_rec import results

    table = pd.DataFrame([
        {"epsilon": 2.0, "delta": 1e-6, "privacy": "gaussian", "simulated": "noise for C=5000"},
        {"epsilon": 2.0, "delta": 1e-6, "privacy": "gaussian", "simulated": None},
    ])
    cells = [results._epsilon_cell(row) for _, row in table.iterrows()]
    assert cells == ["2.00 (δ=1e-06) (noise for C=5000)", "2.00 (δ=1e-06)"]
    assert nominal.label(5000) == "noise for C=5000"


# ---------------------------------------------------------------- a run is marked as simulated


def test_a_federated_run_with_a_nominal_cohort_is_marked_simulated(tmp_path, capsys):
    task_file = tmp_path / "nominal.toml"
    task_file.write_text("""
name = "nominal"
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
rounds = 2
clients_per_round = 10
[algorithm.client]
batch_size = 4
[evaluation]
every = 2
num_negatives = 20
[privacy]
mechanism = "gaussian"
clip = 1.0
noise_multiplier = 1.0
noise_cohort_size = 1000
population = 100000
""")
    assert cli.main(["run", str(task_file), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    capsys.readouterr()
    [summary_file] = (tmp_path / "out").rglob("summary.json")
    summary = json.loads(summary_file.read_text())
    privacy = json.loads((summary_file.parent / "privacy.json").read_text())
    assert summary["privacy_simulated"]["noise_cohort_size"] == 1000
    assert summary["privacy_simulated"]["population"] == 100_000
    assert privacy["simulated"]["label"] == "noise for C=1000, N=100000"
    shown = _cli_epsilon(capsys, "--population", "100000", "--clients-per-round", "10",
                         "--noise-cohort-size", "1000", "--rounds", "2", "--sampling", "fixed",
                         "--noise-multiplier", "1.0")
    assert summary["epsilon"] == pytest.approx(shown["epsilon"]["rdp"], rel=1e-9)
    from tff_rec import results

    runs = results.load_runs([tmp_path / "out"])
    table = results.display_table(results.compare(runs))
    assert table["ε"].iloc[0].endswith("(noise for C=1000, N=100000)")
