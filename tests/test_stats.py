"""Intervals and paired tests of store/analysis/stats.py against scipy's own computations and
hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from whyclip.store.analysis.stats import accuracy_figure, bootstrap_ci, compare, mcnemar_exact, paired_bootstrap, wilson


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 9), (3, 9), (6, 9), (9, 9), (17, 40), (412, 1000)])
def test_wilson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx([ci.low, ci.high], abs=1e-9)


def random_pairs(seed, n, p1, p2):
    rng = np.random.default_rng(seed)
    return rng.random(n) < p1, rng.random(n) < p2


@pytest.mark.parametrize(
    ("seed", "n", "p1", "p2"), [(0, 30, 0.6, 0.4), (1, 200, 0.7, 0.68), (2, 12, 0.5, 0.9), (3, 500, 0.3, 0.2)]
)
def test_mcnemar_exact_is_scipys_binomial_test_on_the_discordant_pairs(seed, n, p1, p2):
    a, b = random_pairs(seed, n, p1, p2)
    t = mcnemar_exact(a, b)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert (t["only_first"], t["only_second"]) == (only_a, only_b)
    assert t["p_value"] == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue, rel=1e-9)


def test_mcnemar_hand_worked():
    first = np.array([False] * 6 + [True] * 4)
    second = np.array([True] * 10)
    assert mcnemar_exact(first, second)["p_value"] == pytest.approx(2 / 2**6)  # 0 of 6 discordant, both tails
    assert mcnemar_exact(second, second)["p_value"] == 1.0


def test_compare_says_not_significant():
    a = np.array([True, False] * 10)
    b = np.roll(a, 1)  # 10 discordant each way
    c = compare("the class name", a, b)
    assert c["p_value"] == 1.0
    assert not c["significant"]
    assert "not significant" in c["statement"]
    strong = compare("random words", np.ones(20, bool), np.zeros(20, bool))
    assert strong["p_value"] == pytest.approx(2 * 0.5**20)
    assert strong["significant"]
    assert "not significant" not in strong["statement"]
    assert strong["ci95"] == pytest.approx(wilson(0, 20))
    assert strong["descriptors_ci95"] == pytest.approx(wilson(20, 20))
    assert accuracy_figure(np.ones(20, bool))["ci95"] == pytest.approx(wilson(20, 20))


def test_bootstraps():
    values = np.random.default_rng(5).random(400)
    lo, hi = bootstrap_ci(values, seed=1)
    se = values.std() / math.sqrt(len(values))
    assert lo < values.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    same = paired_bootstrap(values, values)
    assert same == {"difference": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}
    far = paired_bootstrap(values + 1, values)
    assert far["p_value"] <= 1e-3
    assert far["ci95"][0] > 0.9
