"""Subset fitness: score candidates on a few informative problems and estimate their full-set score.

Anchors (as tinyBenchmarks and MERGE3 do): the problems are clustered by how the candidates scored on the full set
so far answered them (one column of item results per problem; problems that the same candidates get right and
wrong fall together), one anchor per cluster, the problem nearest its centre (scipy's k-means). A candidate is
scored on the anchors only, and its full-set mean is estimated as the anchors' values weighted by their clusters'
sizes (the `weighted` estimator). With `check: generation` each generation's best is re-scored on the full set:
that score is what the run reports and exports, its item results join the matrix the next anchors come from, and
the gap between estimate and full score is recorded as the estimation error. With `check: final` nothing is
re-scored until the search ends (so there are no full-set rows to cluster: each generation draws a fresh seeded
random subset), then the finalists are: the best by estimate of each of the last `finalists` generations, or
(`finalists_from: run`) the `finalists` best by estimate of the whole run (search/driver.py).

Everything here is a pure function of the recorded item results and the seed, so a resumed run chooses the same
anchors.
"""

from __future__ import annotations

import warnings

import numpy as np


def choose_anchors(results: list[dict[int, float]], n_items: int, k: int, seed: int) -> tuple[list[int], list[float]]:
    """(anchor problem indices, weights summing to 1) from full-set item results of earlier candidates.

    `results`: one {problem index: value} per full-scored candidate. With fewer than two candidates, or fewer
    problems than anchors, a seeded random subset with equal weights stands in."""
    k = min(k, n_items)
    rng = np.random.default_rng(seed)
    if len(results) < 2 or k >= n_items:
        idx = sorted(rng.choice(n_items, size=k, replace=False).tolist())
        return idx, [1.0 / k] * k
    # items x candidates: each problem described by how the candidates so far did on it
    x = np.array([[r.get(i, 0.0) for r in results] for i in range(n_items)], dtype=float)
    from scipy.cluster.vq import kmeans2

    jitter = 1e-9 * rng.standard_normal(x.shape)  # identical rows are common (all right, all wrong)
    with warnings.catch_warnings():  # problems with identical results can leave a cluster empty: it gets no anchor
        warnings.simplefilter("ignore", UserWarning)
        centres, labels = kmeans2(x + jitter, k, minit="++", seed=seed)
    anchors, weights = [], []
    for c in range(len(centres)):
        members = np.flatnonzero(labels == c)
        if members.size == 0:
            continue
        dist = ((x[members] - centres[c]) ** 2).sum(1)
        anchors.append(int(members[int(np.argmin(dist))]))
        weights.append(members.size / n_items)
    order = np.argsort(anchors)
    return [anchors[i] for i in order], [weights[i] for i in order]


def estimate(values: dict[int, float], anchors: list[int], weights: list[float]) -> float:
    """The full-set mean, estimated from the anchors' values."""
    return float(sum(w * values[a] for a, w in zip(anchors, weights)))


def more_anchors(anchors: list[int], n_items: int, step: int, seed: int, gen: int) -> list[int]:
    """Subset growth (`grow`): `step` more problems for generation `gen`, a draw from those it has not seen,
    seeded by (seed, generation, round) so that a resumed run and a replay draw the same."""
    rest = sorted(set(range(n_items)) - set(anchors))
    rng = np.random.default_rng([seed, gen, len(anchors)])
    return sorted(int(i) for i in rng.choice(rest, size=min(step, len(rest)), replace=False))


def can_grow(items_by_generation: list[int], generations: int, popsize: int, items: int, n_items: int,
             grow) -> bool:
    """Whether the last of the estimated generations so far (`items_by_generation`: problems per candidate of
    each, oldest first) may take `grow.step` more: within `max_items` and the fitness set, and with the generations
    still to come (of `generations` estimated ones in the run) able to pay for their `items`, all within
    `grow.mean_items` problems per candidate. Counted per generation of `popsize` candidates."""
    now = items_by_generation[-1]
    if now + grow.step > min(grow.max_items, n_items):
        return False
    spent = sum(items_by_generation) * popsize
    reserve = max(0, generations - len(items_by_generation)) * items * popsize
    return spent + grow.step * popsize + reserve <= grow.mean_items * popsize * generations


def finalists_note(asked: int, available: int, source: str) -> str | None:
    """The one line a run (and its replay) says when `finalists` asks for more than there are: all of them are
    scored in full instead (a product decision: the run still ends with every candidate it could check; the
    setting is not refused, since how many a run will have depends on when it stops). `source` is "run" or
    "generations"."""
    if asked <= available:
        return None
    what = "distinct estimated candidate(s)" if source == "run" else "generation(s)"
    each = "all of them are" if source == "run" else "the best of each is"
    return (f"note: subset.finalists is {asked}, but the run has {available} {what}: {each} scored on every "
            "problem")
