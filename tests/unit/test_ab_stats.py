"""The A/B review's statistics: Wilson intervals, the mSPRT and the verdict it gives,
on simulated traffic with fixed seeds."""

from __future__ import annotations

import random

import pytest

from orchard.ab_stats import (
    KEEP_TESTING,
    PROMOTE,
    ROLL_BACK,
    SideCounts,
    mean_interval,
    msprt,
    review,
    wilson,
)


def test_wilson_matches_the_textbook_values():
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)  # z²/(n+z²)
    low, high = wilson(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 0) is None
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson(11, 10)


def test_the_mean_interval_narrows_with_the_square_root_of_the_count():
    wide = mean_interval(100, 500.0, 500.0**2 + 100.0**2)
    narrow = mean_interval(400, 500.0, 500.0**2 + 100.0**2)
    assert wide[0] < 500 < wide[1]
    assert (wide[1] - wide[0]) / (narrow[1] - narrow[0]) == pytest.approx(2.0, rel=0.01)
    assert mean_interval(1, 3.0, 9.0) is None


def _look(rng: random.Random, p: float, n: int) -> int:
    return sum(rng.random() < p for _ in range(n))


def _sequential(p_champion: float, p_challenger: float, seed: int, looks: int, per_look: int):
    """Hourly looks at cumulative thumbs: the first look at which the mSPRT decides (None
    if it never does), and the comparison at the last look."""
    rng = random.Random(seed)
    s0 = s1 = n = 0
    for look in range(1, looks + 1):
        s0 += _look(rng, p_champion, per_look * 9)  # a 10 % challenger: 9 champion answers
        s1 += _look(rng, p_challenger, per_look)  # for each challenger answer
        n += per_look
        result = msprt((s0, n * 9), (s1, n))
        if result.decided:
            return look, result
    return None, result


def test_a_clearly_better_challenger_stops_the_test_early():
    look, result = _sequential(0.5, 0.75, seed=7, looks=50, per_look=10)
    assert look is not None and look < 20, "0.75 against 0.5 should decide within 200 answers"
    assert result.challenger_better and result.difference > 0.1


def test_a_clearly_worse_challenger_is_decided_worse():
    look, result = _sequential(0.6, 0.3, seed=11, looks=50, per_look=10)
    assert look is not None and result.challenger_better is False


def test_equal_sides_keep_testing_at_every_look():
    look, result = _sequential(0.6, 0.6, seed=3, looks=40, per_look=25)
    assert look is None and not result.decided
    assert abs(result.difference) < 0.1


def test_peeking_every_hour_keeps_false_alarms_below_alpha():
    """Always valid: 200 A/A experiments, each looked at 20 times, reject at most ~α."""
    alarms = sum(
        _sequential(0.5, 0.5, seed, looks=20, per_look=10)[0] is not None for seed in range(200)
    )
    assert alarms / 200 <= 0.05


def _side(answers, up, down, regenerated=0, stopped=0, failed=0) -> SideCounts:
    return SideCounts(
        answers=answers,
        rated=up + down,
        thumbs_up=up,
        thumbs_down=down,
        regenerated=regenerated,
        stopped=stopped,
        failed=failed,
        latency_ms_mean=800.0,
        latency_ms_mean_sq=800.0**2 + 200.0**2,
        credits_mean=5.0,
        credits_mean_sq=30.0,
    )


def test_the_verdict_promotes_keeps_testing_or_rolls_back():
    champion = _side(900, 300, 300)
    assert review(champion, _side(100, 60, 10))["verdict"] == PROMOTE
    assert review(champion, _side(100, 35, 35))["verdict"] == KEEP_TESTING
    worse = review(champion, _side(100, 35, 35, failed=30))
    assert worse["verdict"] == ROLL_BACK and "error_rate" in worse["reason"]
    early = review(_side(90, 5, 5), _side(10, 9, 0))  # better, but 9 rated answers
    assert early["verdict"] == KEEP_TESTING
    sides = review(champion, _side(100, 60, 10))["sides"]
    rate = sides["challenger"]["thumbs_up_rate"]
    assert rate["value"] == pytest.approx(60 / 70)
    assert rate["low"] < rate["value"] < rate["high"]
    latency = sides["champion"]["latency_ms"]
    assert latency["low"] < 800 < latency["high"]


def test_rated_answers_to_decide_counts_the_ratings_the_test_needed():
    from orchard.ab_review import rated_answers_to_decide

    rng = random.Random(5)
    champion = [("1", "champion", rng.random() < 0.4) for _ in range(900)]
    challenger = [("2", "challenger", rng.random() < 0.8) for _ in range(100)]
    needed = rated_answers_to_decide(champion, challenger)
    assert needed is not None and needed < 1000
    same = [("2", "challenger", rng.random() < 0.4) for _ in range(100)]
    assert rated_answers_to_decide(champion, same) is None
    assert rated_answers_to_decide(champion, []) is None
