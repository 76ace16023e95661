"""Racing's bound: how high can a candidate's full-set mean still be, after k of n problems?

Problems are drawn without replacement from a finite set. For items that are right or wrong (`binary`), the bound
is exact: the largest number of right answers among all n problems that still gives the observed count in k draws
a probability above delta (the hypergeometric tail, Clopper-Pearson's construction without replacement). It is
several times tighter than a range-based bound where it matters, near 0 and 1 (after 64 of 256 problems all wrong,
at 95% over 16 looks, it says 0.074 where Hoeffding-Serfling says 0.18). For other items in [lo, hi], Serfling's refinement of Hoeffding's
inequality: P(full mean >= mean_k + (hi - lo) sqrt((1 - (k - 1) / n) log(1/delta) / (2k))) <= delta. Either bound
is never above what perfect answers on the n - k remaining problems would give, which makes it exact once every
problem is in.
"""

from __future__ import annotations

import math


def log_term(n: int, chunk: int, min_items: int, confidence: float) -> float:
    """log(looks / (1 - confidence)): the confidence split over every look a candidate may get (Bonferroni)."""
    looks = max(1, math.ceil(max(0, n - min_items) / chunk) + 1)
    return math.log(looks / (1 - confidence))


def binary_upper_count(right: int, k: int, n: int, delta: float) -> int:
    """The largest count K of right answers among n problems with P(at most `right` right in k draws | K) > delta."""
    from scipy.stats import hypergeom

    lo, hi = right, right + (n - k)  # K = right is never rejected; n - k unseen problems could all be right
    while lo < hi:  # the tail probability falls as K grows: bisect for the last K it keeps
        mid = (lo + hi + 1) // 2
        if hypergeom.cdf(right, n, mid, k) > delta:
            lo = mid
        else:
            hi = mid - 1
    return lo


def upper_bound(mean: float, k: int, n: int, lo: float, hi: float, log_t: float, binary: bool = False) -> float:
    """Upper confidence bound on the mean over all n problems, from the mean over k of them."""
    if binary:
        right = round((mean - lo) / (hi - lo) * k)
        return lo + (hi - lo) * binary_upper_count(right, k, n, math.exp(-log_t)) / n
    serfling = (1 - (k - 1) / n) * log_t / (2 * k)
    return min(mean + (hi - lo) * math.sqrt(serfling), (k * mean + (n - k) * hi) / n)


def parents_cut(full: list[float], popsize: int) -> float | None:
    """Racing's threshold for the next candidate of a generation: the mu-th best full-set fitness among the
    generation's candidates scored so far (mu = popsize // 2, CMA-ES's parents); below it a candidate cannot be a
    parent. None until mu candidates are in (they are scored on every problem)."""
    mu = max(1, popsize // 2)
    ranked = sorted(full, reverse=True)
    return ranked[mu - 1] if len(ranked) >= mu else None


class Race:
    """Racing's policy for scoring one candidate, in one place for the search (evaluators' `score_raced`) and for
    `evomerge replay --racing` (search/economy/replay.py): the problems in a seeded order, `chunk` at a time, and
    after each look (from `min_items` on) a stop when the bound on the full-set fitness falls below the cut."""

    def __init__(self, n: int, chunk: int, min_items: int, confidence: float, seed: int,
                 item_range: tuple[float, float] | None, binary: bool, weight: float = 1.0):
        import numpy as np

        self.n, self.chunk, self.min_items, self.weight = n, chunk, min_items, weight
        self.lo, self.hi = item_range or (0.0, 1.0)
        self.binary = binary
        self.order = np.random.default_rng(seed).permutation(n).tolist()
        self.log_t = log_term(n, chunk, min_items, confidence)

    @classmethod
    def from_config(cls, racing, n: int, item_range, binary: bool, weight: float = 1.0) -> "Race":
        """From a search config's `racing:` section (RacingConfig)."""
        return cls(n, racing.chunk, racing.min_items, racing.confidence, racing.seed, item_range, binary, weight)

    def looks(self) -> list[list[int]]:
        """The problems of each look, in order."""
        return [self.order[start:start + self.chunk] for start in range(0, self.n, self.chunk)]

    def stop(self, values: list[float], cut: float | None) -> tuple[float | None, bool]:
        """(bound, stop) after the problems scored so far (`values`, item values in the metric's units): no bound
        without a cut, before `min_items` or once every problem is in."""
        k = len(values)
        if cut is None or k >= self.n or k < self.min_items:
            return None, False
        bound = self.weight * upper_bound(sum(values) / k, k, self.n, self.lo, self.hi, self.log_t, self.binary)
        return bound, bound < cut
