"""Is one approval rate better than another? Tests and sample sizes for two proportions.

Stdlib only (``statistics.NormalDist`` and ``math.lgamma``), checked in the tests against
published values: R's ``prop.test(..., correct = FALSE)`` and ``fisher.test``, and the usual
sample-size formula for two proportions (Fleiss, without continuity correction).
"""

from __future__ import annotations

import math
from statistics import NormalDist

_NORMAL = NormalDist()
ALPHA = 0.05  # two-sided
POWER = 0.80


def z_test(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (no continuity correction)."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("both groups need at least one trial")
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance == 0:  # all successes or all failures in both: no evidence of a difference
        return 1.0
    z = (x1 / n1 - x2 / n2) / math.sqrt(variance)
    return min(1.0, 2 * (1 - _NORMAL.cdf(abs(z))))


def fisher_exact(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of Fisher's exact test on the 2x2 table [[x1, n1-x1], [x2, n2-x2]]:
    the total probability, given the margins, of every table no more likely than this one
    (R's ``fisher.test`` convention, with its relative tolerance for ties)."""
    if not (0 <= x1 <= n1 and 0 <= x2 <= n2):
        raise ValueError("successes must lie between 0 and the trials")
    successes, total = x1 + x2, n1 + n2
    low, high = max(0, successes - n2), min(successes, n1)

    def log_p(k: int) -> float:  # hypergeometric: k successes in group 1
        return (_log_comb(n1, k) + _log_comb(n2, successes - k) - _log_comb(total, successes))

    observed = log_p(x1)
    tolerance = 1 + 1e-7
    p = math.fsum(math.exp(lp) for k in range(low, high + 1) if (lp := log_p(k)) <= observed + math.log(tolerance))
    return min(1.0, p)


def small(x1: int, n1: int, x2: int, n2: int) -> bool:
    """Whether a 2x2 table is too small for the normal approximation: an expected count below 5."""
    successes, total = x1 + x2, n1 + n2
    if total == 0:
        return True
    failures = total - successes
    return min(n1, n2) * min(successes, failures) / total < 5


def compare(x1: int, n1: int, x2: int, n2: int) -> tuple[str, float]:
    """(test name, two-sided p-value): Fisher's exact test for small tables, else the z-test."""
    if small(x1, n1, x2, n2):
        return "fisher", fisher_exact(x1, n1, x2, n2)
    return "z", z_test(x1, n1, x2, n2)


def sample_size(p1: float, p2: float, *, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Trials needed in each group to detect ``p1`` vs ``p2`` with a two-sided test at ``alpha``
    and ``power``; None when the two are equal (no size detects no difference)."""
    if p1 == p2:
        return None
    z_alpha = _NORMAL.inv_cdf(1 - alpha / 2)
    z_beta = _NORMAL.inv_cdf(power)
    mean = (p1 + p2) / 2
    root = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root * root / (p1 - p2) ** 2)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
