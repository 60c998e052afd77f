"""Intervals for benchmark claims (rlprompt.stats), checked against hand-computed and simulated values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlprompt.stats import correctness, digits, mean_interval, paired_bootstrap


def test_mean_interval_matches_the_student_t_formula():
    ci = mean_interval([0.60, 0.65, 0.70])
    half = 4.302652729911275 * 0.05 / math.sqrt(3)  # t(0.975, df=2) * sd / sqrt(n)
    assert ci.mean == pytest.approx(0.65) and ci.low == pytest.approx(0.65 - half) and ci.high == pytest.approx(0.65 + half)
    assert ci.n == 3 and ci.excludes_zero
    one = mean_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.low) and f"{one}" == "0.500"
    assert f"{ci:.2f}" == f"0.65 [{0.65 - half:.2f}, {0.65 + half:.2f}]"


def test_paired_bootstrap_detects_a_real_gap_and_not_a_null_one():
    rng = np.random.default_rng(0)
    gold = rng.random((3, 800))
    better = (gold < 0.75).astype(float)  # accuracy ~0.75
    worse = (gold < 0.65).astype(float)   # ~0.65, nested: every example worse gets right, better gets right too
    gap = paired_bootstrap(better, worse, resamples=2000)
    assert gap.mean == pytest.approx(float((better - worse).mean()))
    assert gap.excludes_zero and 0.05 < gap.low < gap.mean < gap.high < 0.15
    same = paired_bootstrap(better, rng.permutation(better, axis=1), resamples=2000)  # same accuracy, unrelated errors
    assert not same.excludes_zero and same.low < 0 < same.high
    assert (gap.reading, same.reading) == ("better", "inside the noise")
    assert paired_bootstrap(worse, better, resamples=2000).reading == "worse"


def test_paired_bootstrap_with_one_seed_and_unequal_example_sets():
    a, b = [1, 1, 1, 0] * 50, [0, 1, 1, 0] * 50
    one = paired_bootstrap([a], [b], resamples=1000)
    assert one.n == 1 and one.mean == pytest.approx(0.25) and one.low > 0.1
    mixed = paired_bootstrap([a, a[:100]], [b, b[:100]], resamples=500)
    assert mixed.n == 2 and mixed.excludes_zero
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap([a], [b[:10]])


def test_digit_strings_round_trip_to_correctness():
    assert digits([0, 3, 1]) == "031"
    assert correctness("031", [0, 1, 1]).tolist() == [1.0, 0.0, 1.0] == correctness([0, 3, 1], "011").tolist()
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        correctness("031", [0, 1])
    with pytest.raises(ValueError, match="0-9"):
        digits([12])


def test_benchmark_protocol_seeds_samples_and_commit():
    from rlprompt.benchmarking import BENCHMARK_SEEDS, code_commit, policy_seed, sample_indices

    assert [policy_seed(s) for s in BENCHMARK_SEEDS] == [0, 1, 2]  # distinct, whatever process runs which seed
    with pytest.raises(ValueError, match="'16-7' is not one of RLPrompt's"):
        policy_seed("16-7")
    a, b = sample_indices(1821, 1000), sample_indices(1821, 1000)
    assert a.tolist() == b.tolist() and a.tolist() == sorted(set(a.tolist())) and len(a) == 1000
    assert a.max() > 1000  # a sample of the whole file, not its first rows
    assert sample_indices(5, None).tolist() == sample_indices(5, 9).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="limit must be >= 1"):
        sample_indices(5, 0)
    commit = code_commit()
    assert len(commit.removesuffix("+dirty")) == 40
