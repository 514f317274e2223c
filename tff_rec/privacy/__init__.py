"""Differential privacy for tff-rec: DP aggregators (mechanisms) and ε accounting.

- `mechanisms`: registry `MECHANISMS` of named DP aggregation mechanisms; `build_aggregator`
  returns the TFF aggregation factory of one, `validate_params` checks its parameters.
- `queries`: tensorflow-privacy DPQueries with seeded, per-round-fresh noise (pure TF).
- `accounting`: ε of T rounds under Poisson or fixed-size client sampling (RDP / PLD),
  per-round ledgers, noise calibration, the default δ rule.
- `mechanism_registry`: the mechanisms' declarations (parameters, analysis, sampling, rules),
  without TensorFlow.
- `planning`, `nominal`: a run's privacy plan; noise and ε for a nominal cohort.
- `audit`, `signal`: the canary audit's empirical ε lower bound; signal-to-noise ceilings.

`accounting` does not import TensorFlow; import `mechanisms` only where TFF is needed.
"""
from tff_rec.privacy.accounting import (
    ACCOUNTANTS,
    SAMPLINGS,
    EpsilonResult,
    UnsupportedAccountingError,
    calibrate_noise_multiplier,
    default_delta,
    epsilon,
    epsilon_ledger,
)

__all__ = [
    "ACCOUNTANTS",
    "SAMPLINGS",
    "EpsilonResult",
    "UnsupportedAccountingError",
    "calibrate_noise_multiplier",
    "default_delta",
    "epsilon",
    "epsilon_ledger",
]
