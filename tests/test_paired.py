"""Paired statistics (`rankalign.paired`) against values worked by hand and against brute-force
enumeration of every sign pattern (scipy is not a dependency; where it is installed, its
`wilcoxon` and `binomtest` must agree too)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rankalign.paired import (
    average_ranks,
    holm,
    length_controlled_difference,
    mean_difference,
    paired_comparison,
    sign_test,
    signed_rank_counts,
    wilcoxon_signed_rank,
)

# ----------------------------------------------------------------------------- sign test


def test_sign_test_by_hand():
    # 5 positive, 1 negative, 1 tie (dropped): m = 6, k = 1
    # P(X <= 1) = (C(6,0) + C(6,1)) / 2^6 = 7/64, two-sided p = 14/64 = 0.21875
    out = sign_test([0.5, 1, 2, 3, 4, -1, 0])
    assert (out["n"], out["positive"], out["negative"], out["ties"]) == (6, 5, 1, 1)
    assert out["p_value"] == pytest.approx(14 / 64, abs=1e-15)
    # all 8 positive: p = 2 / 2^8 = 0.0078125
    assert sign_test([1.0] * 8)["p_value"] == pytest.approx(2 / 256, abs=1e-15)
    # balanced 2 vs 2: 2 * P(X <= 2) = 2 * 11/16 > 1, capped at 1
    assert sign_test([1, 1, -1, -1])["p_value"] == 1.0


def _brute_sign_p(d):
    """P(|#pos - m/2| >= observed) over all 2^m equally likely sign patterns."""
    d = [x for x in d if x != 0]
    m, pos = len(d), sum(x > 0 for x in d)
    extreme = sum(
        abs(sum(signs) - m / 2) >= abs(pos - m / 2) - 1e-12
        for signs in itertools.product((0, 1), repeat=m)
    )
    return extreme / 2**m


def _brute_wilcoxon_p(d):
    """P(|W+ - mean| >= observed) over all 2^n sign patterns of the (untied) ranks."""
    d = np.asarray([x for x in d if x != 0])
    ranks = average_ranks(np.abs(d))
    observed = abs(ranks[d > 0].sum() - ranks.sum() / 2)
    extreme = sum(
        abs(sum(r for r, s in zip(ranks, signs) if s) - ranks.sum() / 2) >= observed - 1e-9
        for signs in itertools.product((0, 1), repeat=d.size)
    )
    return extreme / 2**d.size


@pytest.mark.parametrize("seed", range(6))
def test_exact_tests_equal_brute_force_enumeration(seed):
    rng = np.random.default_rng(seed)
    d = rng.normal(0.4, 1.0, size=int(rng.integers(3, 11)))
    assert sign_test(d)["p_value"] == pytest.approx(_brute_sign_p(d), abs=1e-12)
    out = wilcoxon_signed_rank(d)
    assert out["method"] == "exact"
    assert out["p_value"] == pytest.approx(_brute_wilcoxon_p(d), abs=1e-12)


# ----------------------------------------------------------------------------- Wilcoxon


def test_signed_rank_null_distribution():
    # subsets of {1, 2, 3}: {} 0, {1} 1, {2} 2, {3} {1,2} 3, {1,3} 4, {2,3} 5, {1,2,3} 6
    assert signed_rank_counts(3) == [1, 1, 1, 2, 1, 1, 1]
    assert sum(signed_rank_counts(12)) == 2**12


def test_wilcoxon_exact_by_hand():
    # d = 1, -2, 3, 4, 5: ranks 1..5, W+ = 1+3+4+5 = 13, W- = 2
    # subsets of {1..5} with sum <= 2: {}, {1}, {2} -> 3 of 32; p = 2 * 3/32 = 0.1875
    out = wilcoxon_signed_rank([1, -2, 3, 4, 5])
    assert (out["n"], out["w_plus"], out["w_minus"], out["method"]) == (5, 13.0, 2.0, "exact")
    assert out["p_value"] == pytest.approx(0.1875, abs=1e-15)
    # all positive, n = 6: only {} has sum 0: p = 2/64
    assert wilcoxon_signed_rank([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])["p_value"] == pytest.approx(2 / 64)


def test_wilcoxon_normal_approximation_with_ties_by_hand():
    # d = 1, 1, -1, 2, 2, 2, 3, 0: the zero is dropped, n = 7; |d| ties: {1,1,1} take ranks 1-3
    # (average 2), {2,2,2} ranks 4-6 (average 5), 3 rank 7. W+ = 2+2 + 5+5+5 + 7 = 26, W- = 2.
    # mean n(n+1)/4 = 14; variance 7*8*15/24 - [(27-3) + (27-3)]/48 = 35 - 1 = 34;
    # z = (|26 - 14| - 0.5)/sqrt(34) = 1.97222..., p = 2(1 - Phi(z)) = 0.048583
    out = wilcoxon_signed_rank([1, 1, -1, 2, 2, 2, 3, 0])
    assert (out["n"], out["zeros"], out["w_plus"], out["method"]) == (7, 1, 26.0, "normal")
    assert out["p_value"] == pytest.approx(math.erfc(11.5 / math.sqrt(34) / math.sqrt(2)))
    assert out["p_value"] == pytest.approx(0.048583, abs=1e-6)


def test_wilcoxon_large_n_uses_the_normal_approximation():
    d = np.arange(1, 61) * np.where(np.arange(60) % 3 == 0, -1, 1)  # 60 distinct magnitudes
    out = wilcoxon_signed_rank(d)
    assert out["method"] == "normal" and out["n"] == 60
    w_plus = float(np.arange(1, 61)[np.arange(60) % 3 != 0].sum())
    z = (abs(w_plus - 60 * 61 / 4) - 0.5) / math.sqrt(60 * 61 * 121 / 24)
    assert out["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_average_ranks():
    assert average_ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_against_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    for n in (5, 9, 20):
        d = rng.normal(0.3, 1.0, size=n)
        ours = wilcoxon_signed_rank(d)["p_value"]
        assert ours == pytest.approx(stats.wilcoxon(d, method="exact").pvalue)
        pos = int((d > 0).sum())
        assert sign_test(d)["p_value"] == pytest.approx(stats.binomtest(pos, n).pvalue)
    tied = [1, 1, -1, 2, 2, 2, 3, 0]
    theirs = stats.wilcoxon(tied, zero_method="wilcox", correction=True, method="approx").pvalue
    assert wilcoxon_signed_rank(tied)["p_value"] == pytest.approx(theirs)


# ----------------------------------------------------------------------------- Holm


def test_holm_by_hand():
    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> max(0.06, 0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # an undefined test is not counted: m = 2
    adjusted = holm([0.01, None, 0.04])
    assert adjusted[1] is None and adjusted[0] == pytest.approx(0.02)
    assert adjusted[2] == pytest.approx(0.04)
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1 (0.5 x 2), monotone
    assert holm([]) == []


# ----------------------------------------------------------------------------- mean difference


def test_mean_difference_bootstrap_is_seeded_and_holds_the_mean():
    d = [0.3, -0.1, 0.5, 0.2, 0.0, 0.7, -0.2, 0.4]
    out = mean_difference(d, resamples=500, seed=3)
    assert out["n"] == 8 and out["mean_difference"] == pytest.approx(0.225)
    assert out["ci_low"] < 0.225 < out["ci_high"]
    assert mean_difference(d, resamples=500, seed=3) == out  # the same seed, the same interval
    assert mean_difference(d, resamples=500, seed=4) != out


def test_paired_comparison_drops_unknown_units():
    out = paired_comparison([1.0, 2.0, None, 4.0], [0.0, 1.0, 1.0, None], resamples=100)
    assert out["n"] == 2 and out["unscored"] == 2
    assert out["mean_difference"] == pytest.approx(1.0)  # both differences are 1
    assert out["sign_test"]["positive"] == 2 and out["sign_test"]["p_value"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same units"):
        paired_comparison([1.0], [1.0, 2.0])


@pytest.mark.parametrize(
    "d, undefined",
    [
        ([], ["mean_difference", "ci_low", "ci_high"]),
        ([0.5], ["ci_low", "ci_high"]),
        ([0.5, 0.5, 0.5], ["ci_low", "ci_high"]),  # zero variance
    ],
)
def test_degenerate_mean_difference_is_null_with_a_note(d, undefined):
    out = mean_difference(d, resamples=50)
    for key in undefined:
        assert out[key] is None and out["notes"][key]


def test_all_ties_leave_the_tests_undefined():
    out = paired_comparison([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], resamples=50)
    assert out["mean_difference"] == 0.0 and out["ci_low"] is None
    for test in ("sign_test", "wilcoxon"):
        assert out[test]["p_value"] is None and "all ties" in out[test]["notes"]["p_value"]
    assert out["wilcoxon"]["zeros"] == 3 and out["sign_test"]["ties"] == 3
    empty = paired_comparison([None], [1.0], resamples=50)
    assert empty["mean_difference"] is None and empty["sign_test"]["p_value"] is None


# ----------------------------------------------------------------------------- length control


def test_length_controlled_difference_by_hand():
    # dl = 0, 1, 2, 3; dr = 1, 2, 3, 4.5: means 1.5, 2.625; S_xx = 5, S_xy = 5.75
    # slope 1.15, intercept 2.625 - 1.15 * 1.5 = 0.9 (the difference at equal length)
    out = length_controlled_difference([1, 2, 3, 4.5], [0, 1, 2, 3], resamples=300, seed=1)
    assert out["difference"] == pytest.approx(0.9) and out["slope"] == pytest.approx(1.15)
    assert out["n"] == 4 and 0 < out["resamples_used"] <= 300
    assert out["ci_low"] <= out["ci_high"]
    assert length_controlled_difference([1, 2, 3, 4.5], [0, 1, 2, 3], resamples=300, seed=1) == out


def test_length_controlled_difference_removes_a_pure_length_effect():
    # the reward is 0.1 per token and nothing else: at equal length there is no difference
    rng = np.random.default_rng(0)
    dl = rng.integers(-10, 10, size=40).astype(float)
    out = length_controlled_difference(0.1 * dl, dl, resamples=200)
    assert out["difference"] == pytest.approx(0.0, abs=1e-12)
    assert out["slope"] == pytest.approx(0.1)
    assert out["ci_low"] == pytest.approx(0.0, abs=1e-12)
    assert out["ci_high"] == pytest.approx(0.0, abs=1e-12)


def test_length_controlled_degenerate_inputs():
    few = length_controlled_difference([1.0, 2.0], [0.0, 1.0])
    assert few["difference"] is None and "at least 3" in few["notes"]["difference"]
    confounded = length_controlled_difference([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert confounded["difference"] is None and "confounded" in confounded["notes"]["difference"]
    equal = length_controlled_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], resamples=100)
    assert equal["difference"] == pytest.approx(2.0) and equal["slope"] is None
    assert "equal length" in equal["notes"]["slope"]
