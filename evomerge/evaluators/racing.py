"""Racing's bound: how high can a candidate's full-set mean still be, after k of n problems?

Problems are drawn without replacement from a finite set, so Serfling's refinement of Hoeffding's inequality
applies: with values in [lo, hi], P(full mean >= mean_k + (hi - lo) sqrt((1 - (k - 1) / n) log(1/delta) / (2k)))
<= delta. The bound is also never above what perfect answers on the n - k remaining problems would give, which
makes it exact once every problem is in.
"""

from __future__ import annotations

import math


def log_term(n: int, chunk: int, min_items: int, confidence: float) -> float:
    """log(looks / (1 - confidence)): the confidence split over every look a candidate may get (Bonferroni)."""
    looks = max(1, math.ceil(max(0, n - min_items) / chunk) + 1)
    return math.log(looks / (1 - confidence))


def upper_bound(mean: float, k: int, n: int, lo: float, hi: float, log_t: float) -> float:
    """Upper confidence bound on the mean over all n problems, from the mean over k of them."""
    serfling = (1 - (k - 1) / n) * log_t / (2 * k)
    return min(mean + (hi - lo) * math.sqrt(serfling), (k * mean + (n - k) * hi) / n)
