"""Privacy audit (tff_rec/privacy/audit.py): the one-run bound against known values, and the game
against known answers: the real mechanisms stay below their accounted ε, broken ones are caught.

The game tests run the aggregators through TFF with 500 canary slots (population 500, Poisson
cohorts of 50, 20 rounds): enough canaries for a one-run audit to certify ε ≈ 3.5, so that a
broken mechanism claiming ε = 2 at δ_a is caught.
"""
from __future__ import annotations

import json
import math
import tomllib

import numpy as np
import pytest
from scipy import stats

from tff_rec import runtime, spec
from tff_rec.privacy import accounting, audit
from tff_rec.spec import SpecError

POPULATION, COHORT, ROUNDS, CANARIES = 500, 50, 20, 500
DELTA_A = 1e-6


@pytest.fixture(scope="module", autouse=True)
def stop_tff_worker():
    """Stop TFF's worker after this module (it outlives Python and holds our stdout open)."""
    yield
    runtime.stop_workers()


# ---------------------------------------------------------------- the bound


@pytest.mark.parametrize("r", [5, 10, 100, 1000])
def test_all_correct_without_delta_is_the_closed_form(r):
    # P[Binomial(r, q) >= r] = q^r = 0.05  <=>  q = 0.05^(1/r), ε = ln(q / (1 - q)).
    q = 0.05 ** (1 / r)
    expected = math.log(q / (1 - q))  # positive from r = 5 (r = 1 gives 0: ε ≥ 0)
    found = audit.epsilon_lower_bound(r, r, r, delta=0.0, confidence=0.95)
    assert found == pytest.approx(expected, abs=1e-6)


def test_known_value_r_100():
    # 100 guesses, all correct, 95%: ε_lb = 3.4930 (0.05^(1/100) = 0.970487).
    assert audit.epsilon_lower_bound(100, 100, 100, delta=0.0, confidence=0.95) == pytest.approx(
        3.49297, abs=1e-4)


def test_chance_level_guessing_bounds_nothing():
    assert audit.epsilon_lower_bound(1000, 100, 50, delta=0.0, confidence=0.95) == 0.0
    assert audit.epsilon_lower_bound(1000, 100, 58, delta=0.0, confidence=0.95) == 0.0  # p ≈ 0.067
    assert audit.epsilon_lower_bound(1000, 0, 0, delta=0.0, confidence=0.95) == 0.0


def test_bound_grows_with_correct_guesses_and_confidence_is_respected():
    bounds = [audit.epsilon_lower_bound(1000, 200, v, delta=1e-6, confidence=0.95)
              for v in (120, 150, 180, 200)]
    assert bounds == sorted(bounds) and bounds[0] > 0
    # at ε_lb the p-value is at the level; just above it, not below
    m, r, v = 1000, 200, 180
    found = audit.epsilon_lower_bound(m, r, v, delta=1e-6, confidence=0.95)
    assert audit.p_value(m, r, v, found, 1e-6) < 0.05 <= audit.p_value(m, r, v, found + 1e-6, 1e-6)


def test_p_value_delta_term_is_the_papers():
    m, r, v, eps, delta = 50, 20, 18, 1.0, 1e-3
    q = math.exp(eps) / (1 + math.exp(eps))
    beta = sum(stats.binom.pmf(k, r, q) for k in range(v, r + 1))
    alpha = max(sum(stats.binom.pmf(k, r, q) for k in range(v - i, v)) / i for i in range(1, v + 1))
    assert audit.p_value(m, r, v, eps, delta) == pytest.approx(beta + 2 * m * delta * alpha, rel=1e-9)


def test_a_large_delta_leaves_nothing_to_certify():
    # δ = 5e-4 (the default δ of 1000 clients) with 1000 canaries: 2mδ = 1.
    assert audit.epsilon_lower_bound(1000, 400, 400, delta=5e-4, confidence=1 - 0.05 / 12) == 0.0
    assert audit.epsilon_lower_bound(1000, 400, 400, delta=1e-6, confidence=1 - 0.05 / 12) > 4.0


def test_best_guesses_perfect_and_random():
    rng = np.random.default_rng(0)
    coins = rng.random(1000) < 0.5
    perfect = audit.best_guesses(coins.astype(float), coins, delta=1e-6, confidence=0.95)
    assert perfect.correct == perfect.guesses and perfect.epsilon_lower_bound > 4.0
    chance = audit.best_guesses(rng.standard_normal(1000), coins, delta=1e-6, confidence=0.95)
    assert chance.epsilon_lower_bound < 0.3


# ---------------------------------------------------------------- settings


def _audit_table(text: str) -> dict:
    return spec.resolve_task(tomllib.loads(f"[privacy.audit]\n{text}"), "t.toml")["privacy.audit"]


def test_settings_are_task_keys_with_defaults_and_errors():
    task = spec.resolve_task({}, "t.toml")
    assert audit.AuditSettings.from_task(task) == audit.AuditSettings()
    assert audit.AuditSettings(**_audit_table("canaries = 300\nconfidence = 0.9")).canaries == 300
    for text, message in [
        ("canary = 3", "unknown key 'privacy.audit.canary'"),
        ("canaries = 1", "'privacy.audit.canaries' must be at least 2"),
        ("canaries = 2.5", "'privacy.audit.canaries' must be an integer"),
        ("confidence = 1.0", "'privacy.audit.confidence' must be in \\(0, 1\\)"),
        ('fault = "leaky"', "'privacy.audit.fault' must be one of 'none', 'no_noise'"),
    ]:
        with pytest.raises(SpecError, match=message):
            _audit_table(text)
    # Audit keys are not part of the task: a run of the task is the same run.
    assert spec.resolve_task(tomllib.loads("[privacy.audit]\ncanaries = 300"), "t").hash == task.hash
    assert audit_faults_agree()


def audit_faults_agree() -> bool:
    """The spec's names (checked without TensorFlow) are the registry's."""
    from tff_rec.privacy import broken

    return tuple(spec.AUDIT_FAULTS) == tuple(broken.FAULTS)


# ---------------------------------------------------------------- the game through TFF


def _noise_for(epsilon_at_delta_a: float) -> float:
    z, _ = accounting.calibrate_noise_multiplier(
        target_epsilon=epsilon_at_delta_a, population=POPULATION, clients_per_round=COHORT,
        rounds=ROUNDS, delta=DELTA_A, sampling="poisson")
    return z


def _audit(mechanism: str, params: dict, fault: str = "none", sampling: str = "poisson",
           cohort: int = COHORT, seed: int = 0) -> audit.Guesses:
    settings = audit.AuditSettings(canaries=CANARIES, delta=DELTA_A, fault=fault)
    game = audit.play(mechanism, params, population=POPULATION, clients_per_round=cohort,
                      rounds=ROUNDS, sampling=sampling, seed=seed, noise_seed=seed + 1,
                      settings=settings)
    return audit.best_guesses(game.scores, game.coins, delta=DELTA_A, confidence=0.95,
                              tie_seed=(seed,))


@pytest.mark.parametrize("epsilon", [2.0, 8.0])
def test_real_gaussian_stays_below_its_accounted_epsilon(epsilon):
    found = _audit("gaussian", {"clip": 1.0, "noise_multiplier": _noise_for(epsilon)})
    assert found.epsilon_lower_bound <= epsilon


@pytest.mark.parametrize("fault", ["no_noise", "unclipped", "noise_before_clip", "weighted_average"])
def test_broken_gaussian_is_caught(fault):
    claimed = 2.0  # the accountant's ε at δ_a of the intended mechanism
    found = _audit("gaussian", {"clip": 1.0, "noise_multiplier": _noise_for(claimed)}, fault=fault)
    assert found.epsilon_lower_bound > claimed + 1.0, found


def test_real_tree_stays_below_its_accounted_epsilon():
    # DP-FTRL, one shuffled pass: 20 rounds × 20 clients = 400 of the 500 slots take part.
    ledger, _ = accounting.tree_epsilon_ledger(noise_multiplier=1.0, population=POPULATION,
                                               clients_per_round=20, rounds=ROUNDS, delta=DELTA_A)
    found = _audit("tree", {"clip": 1.0, "noise_multiplier": 1.0, "efficient": True},
                   sampling="shuffle", cohort=20)
    assert found.epsilon_lower_bound <= ledger[-1]


def test_the_game_refuses_more_canaries_than_clients():
    settings = audit.AuditSettings(canaries=POPULATION + 1)
    with pytest.raises(ValueError, match="canaries must be between 2 and the population"):
        audit.play("gaussian", {"clip": 1.0, "noise_multiplier": 1.0}, population=POPULATION,
                   clients_per_round=COHORT, rounds=1, sampling="poisson", seed=0, noise_seed=0,
                   settings=settings)


# ---------------------------------------------------------------- the command


def test_cli_privacy_audit_json(tmp_path, capsys):
    from tff_rec import cli

    task = tmp_path / "audit.toml"
    task.write_text(
        'name = "audit"\n[data]\ndataset = "synthetic"\nusers = 300\nitems = 100\n'
        '[algorithm]\nname = "fedavg"\nrounds = 5\nclients_per_round = 30\nsampling = "poisson"\n'
        '[privacy]\nmechanism = "gaussian"\nclip = 1.0\nnoise_multiplier = 1.0\n'
        '[privacy.audit]\ncanaries = 200\nfault = "no_noise"\n'
        '[evaluation]\nnum_negatives = 50\n'
    )
    assert cli.main(["privacy", "audit", str(task), "--json", "--seed", "3"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert list(record)[:4] == ["epsilon_lower_bound", "epsilon_accounted", "canaries", "confidence"]
    assert record["canaries"] == 200 and record["confidence"] == 0.95 and record["fault"] == "no_noise"
    assert record["epsilon_accounted"] > 0 and record["epsilon_lower_bound"] > 0
    assert cli.main(["privacy", "audit", str(task), "--canaries", "100000"]) == 2
    assert "canaries must be between 2 and the population" in capsys.readouterr().err


def test_audit_is_kept_in_the_run_record_and_compare_shows_it(tmp_path, capsys):
    from tff_rec import cli, record, results, spec

    task = tmp_path / "audited.toml"
    task.write_text(
        'name = "audited"\n[data]\ndataset = "synthetic"\nusers = 300\nitems = 100\n'
        '[model]\nname = "sasrec"\nmax_len = 10\nembedding_dim = 16\nnum_blocks = 1\nnum_heads = 1\n'
        '[algorithm]\nname = "fedavg"\nrounds = 3\nclients_per_round = 30\nsampling = "poisson"\n'
        '[privacy]\nmechanism = "gaussian"\nclip = 1.0\nnoise_multiplier = 1.0\n'
        '[privacy.audit]\ncanaries = 200\n'
        '[evaluation]\nnum_negatives = 50\n'
    )
    out = tmp_path / "results"
    assert cli.main(["privacy", "audit", str(task), "--json", "--out", str(out)]) == 0
    audited = json.loads(capsys.readouterr().out)
    directory = record.run_dir(out, spec.load_task(task).hash, 0)
    assert json.loads((directory / record.AUDIT).read_text()) == audited
    # A broken control is not the run's mechanism: it does not replace the record's audit.
    assert cli.main(["privacy", "audit", str(task), "--out", str(out),
                     "--set", "privacy.audit.fault=no_noise"]) == 0
    assert json.loads((directory / record.AUDIT).read_text()) == audited
    # The run (made after the audit, into the same record folder) keeps it.
    assert cli.main(["run", str(task), "--out", str(out), "--progress", "none"]) == 0
    runs = results.load_runs([out])
    assert runs["epsilon_lower_bound"].tolist() == [audited["epsilon_lower_bound"]]
    assert runs["audit_epsilon_accounted"].tolist() == [audited["epsilon_accounted"]]
    table = results.compare(runs, ["ndcg@10"])
    assert table["audited_seeds"].tolist() == [1]
    capsys.readouterr()
    assert cli.main(["compare", str(out), "--metrics", "ndcg@10"]) == 0
    shown = capsys.readouterr().out
    assert "ε_lb / ε accounted (audit)" in shown
    assert f"{audited['epsilon_lower_bound']:.2f} / {audited['epsilon_accounted']:.2f}" in shown
