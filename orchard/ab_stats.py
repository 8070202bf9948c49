"""The statistics of the champion/challenger A/B review: confidence intervals per side and
a sequential test that may be looked at every hour without inflating its error rate.

Rates (thumbs-up, regeneration, abandonment, errors) get **Wilson score intervals**:
unlike the normal ("Wald") interval they stay inside [0, 1] and keep close to their
nominal coverage at the small counts a 10 % challenger sees in its first hours.
Means (latency, cost per answer) get a **normal interval on the mean** (central limit
theorem, from the count, mean and mean of squares the platform API reports): their
samples are hundreds of answers, where the CLT interval is adequate, and the API can
give it without shipping every sample.

The decision uses **mSPRT**, the mixture sequential probability ratio test with a normal
mixing distribution (Robbins 1970; Johari, Koomen, Pekelis & Walsh, "Always valid
inference", 2017/2022, the test behind Optimizely's "Stats Engine"). For the difference
θ = p_challenger − p_champion of a rate with estimate θ̂ and variance V, and a N(0, τ²)
prior on θ under the alternative, the likelihood ratio against θ = 0 is

    Λ = sqrt(V / (V + τ²)) · exp(θ̂² τ² / (2 V (V + τ²))).

Λ is a non-negative martingale under H0, so by Ville's inequality P(Λ ever ≥ 1/α) ≤ α:
the hourly DAG may stop at the first look where Λ ≥ 1/α, with no fixed horizon and no
penalty for looking. That is why it was chosen over a group-sequential O'Brien–Fleming
design, which needs the number and timing of looks and the maximum sample size fixed in
advance; the traffic a challenger gets per hour is not known in advance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # two-sided 95 %

PROMOTE, KEEP_TESTING, ROLL_BACK = "promote", "keep testing", "roll back"
VERDICTS = (PROMOTE, KEEP_TESTING, ROLL_BACK)


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a rate (None without trials)."""
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return None
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    # At 0 or all successes the bound is exactly 0 or 1 (not 4e-17 from rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def mean_interval(
    count: int, mean: float | None, mean_of_squares: float | None, z: float = Z95
) -> tuple[float, float] | None:
    """Normal (CLT) interval of a mean from its count, mean and mean of squares (None with
    fewer than two samples)."""
    if count < 2 or mean is None or mean_of_squares is None:
        return None
    variance = max(0.0, mean_of_squares - mean * mean) * count / (count - 1)
    half = z * math.sqrt(variance / count)
    return mean - half, mean + half


@dataclass(frozen=True)
class Comparison:
    """One rate, challenger against champion, after the mSPRT."""

    difference: float | None  # challenger − champion
    likelihood_ratio: float  # Λ; 1.0 before there is anything to compare
    decided: bool  # Λ ≥ 1/α: the sides differ
    challenger_better: bool | None  # the sign of the difference once decided


def msprt(
    champion: tuple[int, int],
    challenger: tuple[int, int],
    *,
    alpha: float = 0.05,
    tau: float = 0.1,
    higher_is_better: bool = True,
) -> Comparison:
    """mSPRT on the difference of two rates, each given as (successes, trials).

    V is estimated from the pooled rate (its value under H0), which keeps Λ finite when
    one side has not yet had a failure (p̂ = 0 or 1). `tau` is the standard deviation of
    the effects one expects (0.1: differences of about ten points)."""
    if not 0 < alpha < 1 or tau <= 0:
        raise ValueError("alpha must be in (0, 1) and tau above 0")
    (s0, n0), (s1, n1) = champion, challenger
    if min(n0, n1) == 0:
        return Comparison(None, 1.0, False, None)
    pooled = (s0 + s1) / (n0 + n1)
    difference = s1 / n1 - s0 / n0
    variance = pooled * (1 - pooled) * (1 / n0 + 1 / n1)
    if variance == 0:  # both sides all successes or all failures: no evidence either way
        return Comparison(difference, 1.0, False, None)
    tau2 = tau * tau
    log_ratio = 0.5 * math.log(variance / (variance + tau2)) + difference**2 * tau2 / (
        2 * variance * (variance + tau2)
    )
    ratio = math.exp(min(log_ratio, 700.0))
    decided = ratio >= 1 / alpha
    better = None
    if decided:
        better = difference > 0 if higher_is_better else difference < 0
    return Comparison(difference, ratio, decided, better)


@dataclass(frozen=True)
class SideCounts:
    """What the platform API reports for one side of the split (`/admin/models/split/stats`)."""

    answers: int
    rated: int
    thumbs_up: int
    thumbs_down: int
    regenerated: int
    stopped: int
    failed: int
    latency_ms_mean: float | None = None
    latency_ms_mean_sq: float | None = None
    credits_mean: float | None = None
    credits_mean_sq: float | None = None
    chat_answers: int | None = None  # what latency and credits are means of (None: answers)


# The rates the review compares: name -> (numerator field, denominator field, higher is better)
RATES: dict[str, tuple[str, str, bool]] = {
    "thumbs_up_rate": ("thumbs_up", "rated", True),
    "regeneration_rate": ("regenerated", "answers", False),
    "abandonment_rate": ("stopped", "answers", False),
    "error_rate": ("failed", "answers", False),
}
PRIMARY = "thumbs_up_rate"
MEANS: dict[str, tuple[str, str]] = {
    "latency_ms": ("latency_ms_mean", "latency_ms_mean_sq"),
    "credits_per_answer": ("credits_mean", "credits_mean_sq"),
}


def _side_summary(side: SideCounts) -> dict:
    summary: dict = {"answers": side.answers, "rated": side.rated}
    for name, (num, den, _) in RATES.items():
        s, n = getattr(side, num), getattr(side, den)
        interval = wilson(s, n)
        summary[name] = {
            "value": s / n if n else None,
            "low": interval[0] if interval else None,
            "high": interval[1] if interval else None,
            "n": n,
        }
    for name, (mean_field, square_field) in MEANS.items():
        mean = getattr(side, mean_field)
        n = side.answers if side.chat_answers is None else side.chat_answers
        interval = mean_interval(n, mean, getattr(side, square_field))
        summary[name] = {
            "value": mean,
            "low": interval[0] if interval else None,
            "high": interval[1] if interval else None,
            "n": n,
        }
    return summary


def review(
    champion: SideCounts,
    challenger: SideCounts,
    *,
    alpha: float = 0.05,
    tau: float = 0.1,
    min_rated: int = 20,
) -> dict:
    """The verdict and everything behind it, as a JSON-ready dict.

    - "roll back": the challenger is decided worse on any rate (thumbs-up, regeneration,
      abandonment, errors);
    - "promote": it is decided better on the thumbs-up rate (the primary metric, at
      least `min_rated` rated answers a side) and worse on none;
    - "keep testing" otherwise.
    Each rate is its own mSPRT at `alpha`; a "roll back" on any of four is deliberately
    quick to trigger (the cost of a bad challenger in production is asymmetric)."""
    tests: dict[str, dict] = {}
    for name, (num, den, higher_is_better) in RATES.items():
        result = msprt(
            (getattr(champion, num), getattr(champion, den)),
            (getattr(challenger, num), getattr(challenger, den)),
            alpha=alpha,
            tau=tau,
            higher_is_better=higher_is_better,
        )
        tests[name] = {
            "difference": result.difference,
            "likelihood_ratio": result.likelihood_ratio,
            "threshold": 1 / alpha,
            "decided": result.decided,
            "challenger_better": result.challenger_better,
        }
    worse = [name for name, t in tests.items() if t["decided"] and not t["challenger_better"]]
    primary = tests[PRIMARY]
    enough = min(champion.rated, challenger.rated) >= min_rated
    if worse:
        verdict, reason = ROLL_BACK, f"challenger worse on {', '.join(worse)}"
    elif primary["decided"] and primary["challenger_better"] and enough:
        verdict, reason = PROMOTE, "challenger better on thumbs_up_rate, worse on nothing"
    else:
        verdict, reason = KEEP_TESTING, "no side is clearly better yet"
    return {
        "verdict": verdict,
        "reason": reason,
        "test": "mSPRT (normal mixture), always valid",
        "alpha": alpha,
        "tau": tau,
        "sides": {"champion": _side_summary(champion), "challenger": _side_summary(challenger)},
        "tests": tests,
    }
