"""`tff-rec privacy signal`: the signal-to-noise ceilings of item rows and of the whole update
(tff_rec/privacy/signal.py), checked against independent computations."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_end_to_end import TINY, task_text

from tff_rec import cli, describe
from tff_rec.privacy import signal
from tff_rec.privacy.mechanism_registry import adaptive_noise_split


def brute_force_rows(client_of_user: np.ndarray, user_items: np.ndarray, num_items: int):
    """Holders per item and distinct items per client, one client at a time."""
    clients = int(client_of_user.max()) + 1
    held = [set() for _ in range(clients)]
    for user, client in enumerate(client_of_user):
        if client >= 0:
            held[client] |= {int(i) for i in user_items[user] if i > 0}
    holders = np.zeros(num_items + 1, dtype=np.int64)
    for items in held:
        for item in items:
            holders[item] += 1
    return holders, np.array([len(items) for items in held])


def test_item_rows_match_a_per_client_count():
    rng = np.random.default_rng(3)
    users, items = 400, 50
    client_of_user = rng.integers(-1, 90, size=users)  # several users per client, some in none
    client_of_user[:90] = np.arange(90)  # every client has a user
    user_items = rng.integers(0, items + 1, size=(users, 14))  # 0 = padding, repeats within a user
    rows = signal.item_rows(client_of_user, user_items, items)
    masked = np.where(rng.random(user_items.shape) < 0.1, items + 1, user_items)  # a mask token
    assert np.array_equal(signal.item_rows(client_of_user, masked, items).holders,
                          brute_force_rows(client_of_user, np.where(masked > items, 0, masked), items)[0])
    holders, per_client = brute_force_rows(client_of_user, user_items, items)
    assert rows.clients == 90
    np.testing.assert_array_equal(rows.holders, holders)
    np.testing.assert_array_equal(rows.rows_per_client, per_client)
    assert rows.holders[0] == 0  # padding is no item


def test_ceilings_follow_the_formula():
    rows = signal.ItemRows(holders=np.array([0, 40, 10, 0]), rows_per_client=np.array([2] * 80), clients=80)
    found = signal.analyse(rows, np.array([1, 2, 2, 3]), mechanism="gaussian",
                           params={"noise_multiplier": 0.5, "clip": 2.0}, population=1000,
                           cohort=20, simulated=False, rounds=16, embedding_dim=4, parameters=400)
    # item 2: √16 · (10/80) · 20 / (0.5 · √4) = 10; item 3, held by no one: 0
    np.testing.assert_allclose(found.snr_ceiling, [0.0, 40.0, 10.0, 0.0])
    assert found.noise_per_coordinate == pytest.approx(0.5 * 2.0 / 20)
    assert found.model_snr_ceiling == pytest.approx(4 * 20 / (0.5 * 20))
    assert found.holders_per_round_median == pytest.approx(20 * 10 / 80)  # items 1, 2, 2, 3 → 2.5
    record = found.to_json()
    assert record["median_test_snr_ceiling"] == pytest.approx(10.0)
    assert record["test_share_snr_ceiling_ge_1"] == pytest.approx(0.75)
    assert record["item_share_snr_ceiling_ge_1"] == pytest.approx(2 / 3)
    noisier = signal.analyse(rows, np.array([2]), mechanism="gaussian",
                             params={"noise_multiplier": 1.0, "clip": 2.0}, population=1000,
                             cohort=20, simulated=False, rounds=16, embedding_dim=4, parameters=400)
    np.testing.assert_allclose(noisier.snr_ceiling, found.snr_ceiling / 2)


def test_adaptive_counts_only_the_noise_on_the_update_sum():
    z_value, _ = adaptive_noise_split(1.0, 200, None)
    assert signal.value_noise_multiplier("adaptive", {"noise_multiplier": 1.0}, 200) == pytest.approx(z_value)
    assert z_value > 1.0  # part of the budget went to the clipped count


def test_a_zero_noise_multiplier_is_refused_not_divided_by():
    with pytest.raises(signal.NoNoise, match="noise_multiplier = 0.0: gaussian adds no noise"):
        signal.value_noise_multiplier("gaussian", {"noise_multiplier": 0.0, "clip": 1.0}, 10)


@pytest.mark.parametrize("mechanism, reason", [("tree", "correlated across rounds"), ("clip", "no noise")])
def test_mechanisms_it_does_not_cover_are_refused_with_the_reason(mechanism, reason):
    with pytest.raises(signal.SignalError, match=reason):
        signal.value_noise_multiplier(mechanism, {"noise_multiplier": 1.0}, 10)


def write_task(folder, **privacy: str):
    text = task_text() + "\n[privacy]\n" + "".join(f"{key} = {value}\n" for key, value in privacy.items())
    path = folder / "task.toml"
    path.write_text(text)
    return path


def test_the_command_reads_the_plan_and_the_data(tmp_path, capsys):
    """z is the calibration `privacy calibrate` gives for the task's setting; holders and rows
    per client are those of the task's own training examples."""
    path = write_task(tmp_path, mechanism='"gaussian"', clip="0.5", target_epsilon="4.0")
    assert cli.main(["privacy", "signal", str(path), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    (_, task), = describe.load_tasks(path)
    from tff_rec import plan

    run = plan.resolve(task, 0)
    assert cli.main(["privacy", "calibrate", "--target-epsilon", "4.0", "--population",
                     str(run.partition.num_clients), "--clients-per-round", "10", "--rounds", "3",
                     "--delta", repr(run.privacy.delta), "--sampling", run.privacy.sampling,
                     "--json"]) == 0
    calibrated = json.loads(capsys.readouterr().out)
    assert found["noise_multiplier"] == pytest.approx(calibrated["noise_multiplier"])
    assert found["noise_per_coordinate"] == pytest.approx(calibrated["noise_multiplier"] * 0.5 / 10)
    inputs, targets = run.data.get().user_examples()
    per_user = [len({int(i) for i in np.concatenate([inputs[u].ravel(), targets[u].ravel()]) if i > 0})
                for u in range(len(inputs)) if (targets[u] > 0).any()]
    assert found["clients"] == run.partition.num_clients == len(per_user)  # natural: a user a client
    assert found["rows_per_client_median"] == pytest.approx(float(np.median(per_user)))
    assert found["embedding_dim"] == 16 and found["rounds"] == 3
    assert found["model_snr_ceiling"] == pytest.approx(
        math.sqrt(3) * 10 / (found["noise_multiplier"] * math.sqrt(found["parameters"])))


def test_a_study_lists_its_noiseless_variants_and_a_task_without_noise_is_refused(tmp_path, capsys):
    study = tmp_path / "study.toml"
    study.write_text(TINY)
    assert cli.main(["privacy", "signal", str(study)]) == 0
    out = capsys.readouterr().out
    assert "| fedavg + DP | " in out
    assert "Without DP noise (left out): popularity, centralized, fedavg." in out
    path = write_task(tmp_path, mechanism='"tree"', clip="1.0", noise_multiplier="1.0")
    assert cli.main(["privacy", "signal", str(path), "--set", 'algorithm.sampling="shuffle"']) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "tree" in error and "correlated across rounds" in error
    plain = tmp_path / "plain.toml"
    plain.write_text(task_text())
    assert cli.main(["privacy", "signal", str(plain)]) == 2
    assert "without DP noise" in capsys.readouterr().err
