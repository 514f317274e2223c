"""`tff-rec privacy epsilon|calibrate`: the JSON contract and the numbers behind it."""
from __future__ import annotations

import json

import pytest

from tff_rec import cli
from tff_rec.privacy import accounting

COMMON = ["--population", "1000", "--clients-per-round", "50", "--rounds", "40"]


def run_json(capsys, *args: str) -> dict:
    assert cli.main(["privacy", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_epsilon_json_has_rdp_pld_and_delta(capsys):
    result = run_json(capsys, "epsilon", *COMMON, "--noise-multiplier", "1.0", "--delta", "1e-5")
    assert set(result["epsilon"]) == {"rdp", "pld"}
    assert result["delta"] == 1e-5
    direct = accounting.epsilon(noise_multiplier=1.0, population=1000, clients_per_round=50,
                                rounds=40, delta=1e-5, sampling="poisson", accountant="rdp")
    assert result["epsilon"]["rdp"] == pytest.approx(direct.epsilon)
    assert 0 < result["epsilon"]["pld"] < result["epsilon"]["rdp"]


def test_epsilon_grows_with_rounds_and_falls_with_noise(capsys):
    base = run_json(capsys, "epsilon", *COMMON, "--noise-multiplier", "1.0")["epsilon"]["rdp"]
    longer = run_json(capsys, "epsilon", "--population", "1000", "--clients-per-round", "50",
                      "--rounds", "80", "--noise-multiplier", "1.0")["epsilon"]["rdp"]
    noisier = run_json(capsys, "epsilon", *COMMON, "--noise-multiplier", "2.0")["epsilon"]["rdp"]
    assert noisier < base < longer


def test_fixed_sampling_pld_is_reported_as_unsupported(capsys):
    result = run_json(capsys, "epsilon", *COMMON, "--noise-multiplier", "1.0", "--sampling", "fixed")
    assert result["epsilon"]["pld"] is None and result["reasons"]["pld"]
    assert result["epsilon"]["rdp"] > 0


def test_calibrate_round_trips(capsys):
    result = run_json(capsys, "calibrate", *COMMON, "--target-epsilon", "3.0", "--delta", "1e-5")
    assert result["epsilon"] <= 3.0
    check = run_json(capsys, "epsilon", *COMMON, "--noise-multiplier", str(result["noise_multiplier"]),
                     "--delta", "1e-5")
    assert check["epsilon"]["rdp"] == pytest.approx(result["epsilon"], rel=1e-6)
    slightly_less = accounting.epsilon(
        noise_multiplier=result["noise_multiplier"] * 0.99, population=1000, clients_per_round=50,
        rounds=40, delta=1e-5, sampling="poisson", accountant="rdp",
    )
    assert slightly_less.epsilon > 3.0


def test_bad_privacy_input_is_a_clear_error(capsys):
    code = cli.main(["privacy", "epsilon", "--population", "10", "--clients-per-round", "50",
                     "--rounds", "5", "--noise-multiplier", "1.0"])
    assert code == 2
    assert "--clients-per-round 50 is larger than --population 10" in capsys.readouterr().err


def test_tree_epsilon_refuses_a_second_pass_and_calibrates(capsys):
    args = ["--population", "100", "--clients-per-round", "10", "--sampling", "shuffle", "--mechanism", "tree"]
    one_pass = run_json(capsys, "epsilon", *args, "--rounds", "10", "--noise-multiplier", "1.0")
    assert one_pass["epsilon"]["rdp"] > 0 and one_pass["epsilon"]["pld"] is None
    assert cli.main(["privacy", "epsilon", *args, "--rounds", "11", "--noise-multiplier", "1.0"]) == 2
    assert "at most once" in capsys.readouterr().err
    calibrated = run_json(capsys, "calibrate", *args, "--rounds", "10", "--target-epsilon", "4.0")
    assert calibrated["epsilon"] <= 4.0
    check = run_json(capsys, "epsilon", *args, "--rounds", "10",
                     "--noise-multiplier", str(calibrated["noise_multiplier"]))
    assert check["epsilon"]["rdp"] == pytest.approx(calibrated["epsilon"], rel=1e-6)


@pytest.mark.parametrize("mechanism", ["adaptive", "tree", "gaussian"])
def test_every_noisy_mechanism_is_accounted_as_its_runs_account_it(capsys, mechanism):
    """`--mechanism` takes every registered mechanism whose noise multiplier sets ε; the command's
    calibrated noise and ε are those a task with that mechanism plans (adaptive: the total z)."""
    from tff_rec.privacy.planning import plan_privacy
    from tff_rec.spec import resolve_task

    sampling = "shuffle" if mechanism == "tree" else "poisson"
    task = resolve_task({
        "algorithm": {"rounds": 8, "clients_per_round": 50, "sampling": sampling},
        "privacy": {"mechanism": mechanism, "target_epsilon": 4.0, "delta": 1e-4},
    })
    planned = plan_privacy(task, population=1000)
    common = ["--population", "1000", "--clients-per-round", "50", "--rounds", "8", "--delta",
              "1e-4", "--sampling", sampling, "--mechanism", mechanism]
    calibrated = run_json(capsys, "calibrate", "--target-epsilon", "4", *common)
    assert calibrated["noise_multiplier"] == planned.params["noise_multiplier"]
    assert calibrated["epsilon"] == pytest.approx(planned.calibrated_epsilon, rel=1e-12)
    accounted = run_json(capsys, "epsilon", "--noise-multiplier",
                         repr(planned.params["noise_multiplier"]), *common)
    assert accounted["epsilon"]["rdp"] == pytest.approx(planned.ledger[-1], rel=1e-9)
    assert accounted["mechanism"] == mechanism and accounted["accounting"]


def test_a_mechanism_without_accounted_noise_is_refused_with_the_allowed_ones(capsys):
    for mechanism in ("clip", "ddp", "laplace"):
        with pytest.raises(SystemExit) as exited:  # argparse's usage error
            cli.main(["privacy", "epsilon", "--population", "100", "--clients-per-round", "10",
                      "--rounds", "5", "--noise-multiplier", "1.0", "--mechanism", mechanism])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert f"found {mechanism!r}; allowed: gaussian, adaptive, tree" in err
