"""Client samplers: seeded, and each matching the accounting that assumes it."""
from __future__ import annotations

import numpy as np
import pytest

from tff_rec.sampling import SAMPLERS, sample_cohort

IDS = [f"c{i:03d}" for i in range(100)]


@pytest.mark.parametrize("sampling", sorted(SAMPLERS))
def test_same_seed_same_cohort_other_round_other_cohort(sampling):
    first = sample_cohort(IDS, 7, 1, 10, sampling)
    assert first == sample_cohort(IDS, 7, 1, 10, sampling)
    assert first != sample_cohort(IDS, 7, 2, 10, sampling)
    assert first != sample_cohort(IDS, 8, 1, 10, sampling)
    assert len(set(first)) == len(first) and set(first) <= set(IDS)


def test_fixed_draws_exactly_the_cohort_size():
    assert all(len(sample_cohort(IDS, 0, r, 10, "fixed")) == 10 for r in range(1, 50))


def test_poisson_cohort_size_varies_around_its_mean():
    sizes = np.array([len(sample_cohort(IDS, 0, r, 10, "poisson")) for r in range(1, 2001)])
    assert sizes.std() > 1
    # Binomial(100, 0.1): mean 10, standard error of the mean of 2000 rounds ≈ 0.067.
    assert abs(sizes.mean() - 10) < 0.3


def test_shuffle_takes_each_client_once_per_pass():
    rounds = [sample_cohort(IDS, 3, r, 10, "shuffle") for r in range(1, 11)]
    assert sorted(sum(rounds, [])) == IDS  # one pass: all 100 clients, none twice
    next_pass = [sample_cohort(IDS, 3, r, 10, "shuffle") for r in range(11, 21)]
    assert sorted(sum(next_pass, [])) == IDS
    assert rounds != next_pass  # a new permutation per pass
