"""Paired bootstrap of differences and the verdicts drawn from it, on synthetic data whose answer
is known by construction."""
import numpy as np
import pytest

from elchat.evaluation import paired
from elchat.evaluation.results import item_metric


def _pair(shift, n=100, item_sd=1.0, noise_sd=0.05, seed=0):
    """Two models on the same n items: a shared per-item difficulty (large) plus small own noise;
    A's true mean is B's + shift."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, item_sd, n)
    b = difficulty + rng.normal(0, noise_sd, n)
    a = difficulty + shift + rng.normal(0, noise_sd, n)
    return item_metric(a, ids=range(n)), item_metric(b, ids=range(n))


def test_paired_interval_decides_what_separate_intervals_cannot():
    a, b = _pair(0.05)
    d = paired.difference(a, b)
    assert d["n"] == 100 and d["value"] == pytest.approx(a["value"] - b["value"])
    assert 0 < d["ci95"][0] < 0.05 < d["ci95"][1] < 0.1
    assert a["ci95"][0] < b["ci95"][1]  # the two separate intervals overlap widely
    assert paired.verdict(d) == "holds"
    assert paired.verdict(d, lower_is_better=True) == "does not hold"
    assert paired.verdict(paired.difference(b, a)) == "does not hold"


def test_no_difference_is_inconclusive_and_says_n():
    a, b = _pair(0.0, n=60, seed=3)
    assert paired.verdict(paired.difference(a, b)) == "inconclusive at n = 60"


def test_margin_turns_a_small_loss_into_non_inferiority():
    a, b = _pair(-0.02, seed=1)  # A slightly worse, decidedly so
    d = paired.difference(a, b)
    assert paired.verdict(d) == "does not hold"
    assert paired.verdict(d, margin=0.1) == "holds"


def test_coverage_of_the_true_difference():
    """Over 200 synthetic studies the 95% interval covers the true shift about 95% of the time."""
    hits = 0
    for seed in range(200):
        a, b = _pair(0.03, n=50, noise_sd=0.1, seed=seed)
        lo, hi = paired.difference(a, b, n_boot=500, seed=seed)["ci95"]
        hits += lo <= 0.03 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_ratio_statistic_and_common_items_only():
    a = {"items": {"id": ["x", "y", "z"], "num": [2.0, 4.0, 9.0], "den": [4.0, 4.0, 1.0]}}
    b = {"items": {"id": ["y", "x"], "num": [1.0, 1.0], "den": [4.0, 4.0]}}
    d = paired.difference(a, b)
    assert d["n"] == 2 and d["value"] == pytest.approx(6 / 8 - 2 / 8)  # "z" is not shared


def test_speed_like_ratio_against_one():
    assert paired.verdict({"value": 1.4, "ci95": [1.2, 1.6], "n": 5}, line=1.0) == "holds"
    assert paired.verdict({"value": 0.6, "ci95": [0.5, 0.7], "n": 5}, lower_is_better=True, line=1.0) == "holds"
    assert paired.verdict({"value": 1.0, "ci95": [0.9, 1.1], "n": 5}, line=1.0) == "inconclusive at n = 5"


def test_no_signal_at_floor_or_ceiling():
    assert paired.no_signal([0.8, 4.1, 2.0], floor=5)
    assert not paired.no_signal([0.8, 14.1], floor=5)
    assert paired.no_signal([1.0, 1.0], ceiling=0.99) and paired.no_signal([None])


def test_missing_items_is_an_error():
    with pytest.raises(ValueError, match="per-item"):
        paired.difference({"value": 1.0}, {"value": 2.0})
