"""The statistics the retention gate decides with, exact and dependency-free.

- Wilson score interval: a confidence interval for an accuracy that stays inside [0, 1] and is
  sensible at 0/n and n/n, where the normal approximation is not (small suites are the norm).
- Exact McNemar test: candidate and champion answer the *same* cases, so only the discordant
  pairs carry information (b: champion right, candidate wrong; c: the reverse). Under "no
  difference" b ~ Binomial(b + c, 1/2). This is the sign test on paired outcomes, and the same
  test serves continuous per-case scores (drift) via the signs of their differences.
- Backward transfer (Lopez-Paz & Ranzato, 2017): BWT = mean over i < T of (R[T, i] - R[i, i]),
  where R[i, j] is the accuracy on skill j after learning skill i. Negative means forgetting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

Z95 = 1.959963984540054  # two-sided 95% normal quantile
ALTERNATIVES = ("two-sided", "greater", "less")


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (the whole [0, 1] when n is 0)."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def binom_sf_half(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), computed exactly."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return float(Fraction(sum(math.comb(n, i) for i in range(k, n + 1)), 2 ** n))


def mcnemar_exact(b: int, c: int, alternative: str = "two-sided") -> float:
    """Exact McNemar p-value from the discordant counts.

    b: pairs where the first (champion) is right and the second (candidate) wrong; c: the
    reverse. alternative "greater": the first is better (b > c), which is the gate's question
    "did the candidate regress?"; "less": the reverse; "two-sided": either.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    n = b + c
    if n == 0:
        return 1.0
    if alternative == "greater":
        return binom_sf_half(b, n)
    if alternative == "less":
        return binom_sf_half(c, n)
    return min(1.0, 2 * binom_sf_half(max(b, c), n))


def sign_test(diffs: Sequence[float], alternative: str = "two-sided") -> tuple[int, int, float]:
    """(positives, negatives, p) for paired differences; zeros (ties) carry no information.

    "greater" asks whether differences tend to be positive.
    """
    pos = sum(1 for d in diffs if d > 0)
    neg = sum(1 for d in diffs if d < 0)
    return pos, neg, mcnemar_exact(pos, neg, alternative)


def bwt(R: Sequence[Sequence[float | None]]) -> float | None:
    """Backward transfer of a square accuracy matrix (rows: after learning skill i, columns:
    skill j, same order). None when it is undefined (fewer than two rows, or missing cells)."""
    T = len(R) - 1
    terms = [R[T][i] - R[i][i] for i in range(T) if R[T][i] is not None and R[i][i] is not None]
    return sum(terms) / len(terms) if terms else None


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def mean_ci(xs: Sequence[float], z: float = Z95) -> tuple[float, float]:
    """Normal-approximation interval for the mean of continuous scores (drift)."""
    n = len(xs)
    if n < 2:
        m = mean(xs)
        return m, m
    m = mean(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = z * sd / math.sqrt(n)
    return m - half, m + half
