"""Task files choosing algorithms, server optimizers and uplink aggregators: validation, refusals
of unsound combinations, hashes, and one end-to-end run that records its communication."""
from __future__ import annotations

import csv
import json

import pytest

from tff_rec import cli, record, runtime
from tff_rec.spec import SpecError, apply_overrides, resolve_task

from test_end_to_end import task_text


def resolve(**overrides):
    return resolve_task(apply_overrides({}, overrides), source="task.toml")


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"algorithm.name": "fedadam"}, ["algorithm.name", "'fedprox'", "'mime_lite'", "'fedadam'"]),
        ({"algorithm.name": "mime_lite", "privacy.mechanism": "gaussian"},
         ["task.toml", "privacy.mechanism = 'gaussian'", "algorithm.name = 'mime_lite'", "full gradient"]),
        ({"aggregation.method": "compression", "privacy.mechanism": "gaussian"},
         ["aggregation.method = 'compression'", "privacy.mechanism = 'gaussian'", "'ddp'"]),
        ({"aggregation.method": "secure", "privacy.mechanism": "adaptive"},
         ["aggregation.method = 'secure'", "does not compose"]),
        ({"aggregation.method": "zip"}, ["key 'aggregation.method' must be one of", "compression", "'zip'"]),
        ({"aggregation.method": "compression", "aggregation.quantization_bits": 40},
         ["key 'aggregation.quantization_bits' must be in [1, 16]. Found 40."]),
        ({"aggregation.method": "secure", "aggregation.threshold": 10},
         ["unknown key 'aggregation.threshold'", "clipping", "zeroing"]),
        ({"algorithm.name": "centralized", "aggregation.method": "compression"},
         ["needs a federated algorithm"]),
        ({"algorithm.server.beta_1": 0.8}, ["algorithm.server.beta_1", "adam, yogi", "'sgd'", "momentum"]),
        ({"algorithm.server.optimizer": "adam", "algorithm.server.beta_2": 1.0},
         ["algorithm.server.beta_2", "must be in [0, 1)", "1.0"]),
        ({"algorithm.server.optimizer": "adam", "algorithm.server.initial_accumulator": 0.1},
         ["initial_accumulator", "yogi, adagrad"]),
        ({"algorithm.name": "fedsgd", "algorithm.client.lr_decay": 0.9},
         ["algorithm.client.lr_decay", "'fedsgd'", "algorithm.server.lr_decay"]),
        ({"algorithm.fedprox.mu": 0.5}, ["algorithm.fedprox.mu", "'fedprox'", "'fedavg'"]),
        ({"algorithm.name": "fedprox", "algorithm.fedprox.mu": -1}, ["algorithm.fedprox.mu", "must be >= 0"]),
        ({"privacy.mechanism": "ddp", "privacy.target_epsilon": 2.0}, ["target_epsilon", "'ddp'", "not accounted"]),
        ({"privacy.mechanism": "ddp", "privacy.noise_multiplier": 5.0, "algorithm.clients_per_round": 10},
         ["'ddp'", "noise_multiplier < 0.1", "= 1", "5.0"]),
        ({"privacy.mechanism": "ddp", "privacy.noise_multiplier": 0.5, "privacy.bits": 16},
         ["'ddp' cannot run here", "DecodeError"]),
    ],
)
def test_refused_and_invalid_settings_name_file_key_and_value(overrides, fragments):
    with pytest.raises(SpecError) as error:
        resolve(**overrides)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"algorithm.name": name, "privacy.mechanism": "gaussian", "privacy.noise_multiplier": 1.0}
        for name in ("fedavg", "fedavg_unweighted", "fedprox", "fedsgd")
    ] + [
        {"algorithm.name": "mime_lite", "aggregation.method": "compression"},
        {"algorithm.name": "fedsgd", "privacy.mechanism": "tree", "algorithm.sampling": "shuffle",
         "privacy.noise_multiplier": 1.0},
        {"algorithm.server.optimizer": "yogi", "algorithm.server.beta_1": 0.5,
         "algorithm.server.epsilon": 1e-4, "algorithm.server.initial_accumulator": 1e-5},
        {"algorithm.server.optimizer": "adagrad", "algorithm.server.initial_accumulator": 0.05},
        {"algorithm.name": "mime_lite", "algorithm.client.lr_decay": 0.9, "algorithm.server.lr_decay": 0.9},
    ],
)
def test_sound_combinations_load(overrides):
    resolve(**overrides)


def test_ddp_reports_no_epsilon_and_says_why():
    from tff_rec.privacy import accounting, mechanisms

    ddp = mechanisms.get_mechanism("ddp")
    ledger, reason = accounting.mechanism_ledger(
        ddp, mechanisms.validate_params("ddp", {}), 3,
        dict(population=100, clients_per_round=10, delta=1e-5, sampling="poisson", accountant="rdp"),
    )
    assert ledger == [None] * 3 and "Skellam" in reason and "no event" in reason


def test_new_keys_at_their_defaults_keep_the_task_hash():
    base = resolve()
    explicit = resolve(**{"aggregation.method": "plain", "algorithm.fedprox.mu": 0.01,
                          "algorithm.server.beta_1": None})
    assert explicit.hash == base.hash
    assert resolve(**{"aggregation.method": "compression"}).hash != base.hash
    assert resolve(**{"algorithm.server.optimizer": "adam", "algorithm.server.beta_1": 0.8}).hash \
        != resolve(**{"algorithm.server.optimizer": "adam"}).hash


def test_cli_refuses_an_unsound_combination_with_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(task_text().replace('[algorithm]\n', '[algorithm]\nname = "mime_lite"\n')
                    + '\n[privacy]\nmechanism = "gaussian"\n')
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "does not compose with algorithm.name = 'mime_lite'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("summary.json"))


def test_a_compressed_fedprox_run_records_its_bytes(tmp_path, capsys):
    path = tmp_path / "prox.toml"
    text = task_text(rounds="2").replace('[algorithm]\n', '[algorithm]\nname = "fedprox"\n')
    path.write_text(text + '\n[algorithm.fedprox]\nmu = 0.1\n'
                    '\n[aggregation]\nmethod = "compression"\nthreshold = 500\n')
    out = tmp_path / "out"
    try:
        assert cli.main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    finally:
        runtime.stop_workers()
    run = record.find_runs([out])[0]
    summary = json.loads((run / record.SUMMARY).read_text())
    traffic = summary["communication"]
    with open(run / record.METRICS) as stream:
        rows = list(csv.DictReader(stream))
    assert [int(r["bytes_up"]) for r in rows] == [traffic["bytes_up_per_client"] * 10] * 2
    assert [int(r["bytes_down"]) for r in rows] == [traffic["bytes_down_per_client"] * 10] * 2
    assert traffic["bytes_up_total"] == 2 * 10 * traffic["bytes_up_per_client"]
    assert 8 < traffic["uplink_bits_per_parameter"] < 32  # 8 bits above the threshold, 32 below
    # The tiny SASRec's item embedding (61 × 16 = 976 > 500) is quantized: the uplink is well below
    # float32 size, while the downlink still carries every float32 weight.
    params = traffic["trainable_parameters"]
    assert traffic["bytes_down_per_client"] >= 4 * params
    assert traffic["bytes_up_per_client"] < 4 * params * 0.8
    capsys.readouterr()
    assert cli.main(["compare", str(out), "--columns", "bytes_up_total", "uplink_bits_per_parameter"]) == 0
    table = capsys.readouterr().out
    assert str(traffic["bytes_up_total"]) in table and "uplink_bits_per_parameter" in table
