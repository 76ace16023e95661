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
(`finalists_from: run`) the `finalists` best by estimate of the whole run (search/loop/driver.py).

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


class SubsetPolicy:
    """Subset fitness's decisions, in one place for a run (search/loop/driver.py) and for `evomerge replay
    --subset` (economy/replay.py), so the two cannot drift: which problems a generation is scored on, whether it
    gets more (`grow`), and which candidates are scored on every problem at the end (`check: final`). Every
    decision is a pure function of the config, the seed and what the run has recorded, so a resumed run decides
    the same."""

    def __init__(self, config, n_items: int, popsize: int, max_trials: int):
        self.config, self.n_items, self.popsize = config, n_items, popsize
        self.first_full = config.first_generation == "full"
        self.checks_each_generation = config.check == "generation"
        # the generations scored on subsets (growth's budget is spread over them)
        self.estimated_generations = -(-max_trials // popsize) - (1 if self.first_full else 0)

    def estimated(self, gen: int) -> bool:
        """Whether generation `gen` is scored on a subset (else on every problem)."""
        return not (gen == 0 and self.first_full)

    def anchors(self, gen: int, full_results: list[dict[int, float]]) -> tuple[list[int], list[float]]:
        """Generation `gen`'s problems and weights. `full_results`: the item results of the candidates scored on
        every problem so far; with `check: final` none are used (each generation draws a fresh seeded subset)."""
        known = full_results if self.checks_each_generation else []
        return choose_anchors(known, self.n_items, self.config.items, self.config.seed + gen)

    def wants_more(self, total: float, sizes: list[int]) -> bool:
        """`grow`: whether a generation whose candidates scored `total` in all (item values summed) on its
        problems gets `step` more; `sizes`: problems per candidate of each estimated generation so far."""
        grow = self.config.grow
        return (grow is not None and total + 1e-9 < grow.min_total
                and can_grow(sizes, self.estimated_generations, self.popsize, self.config.items, self.n_items, grow))

    def more(self, anchors: list[int], gen: int) -> list[int]:
        """The `step` problems growth adds to generation `gen` (seeded: a resume and a replay draw the same)."""
        return more_anchors(anchors, self.n_items, self.config.grow.step, self.config.seed, gen)

    @staticmethod
    def best_of(rows: list[tuple[float, int]]) -> int:
        """The trial a generation is represented by: the best by estimate, ties to the earlier trial.
        `rows`: (estimate, trial id)."""
        return max(rows, key=lambda r: (r[0], -r[1]))[1]

    def finalists(self, rows: list[tuple[float, int, int, bool]]) -> tuple[list[int], str | None]:
        """`check: final`: the trials to score on every problem, and the note when fewer are there than asked.
        `rows`: (estimate, trial id, generation, proposed again) of every scored trial. From the run: the best
        distinct candidates (a candidate proposed again is its first trial); from the generations: the best trial
        of each of the last ones (one already scored in full needs nothing more)."""
        asked = self.config.finalists
        if self.config.finalists_from == "run":
            ranked = sorted((r for r in rows if not r[3]), key=lambda r: (-r[0], r[1]))
            return [r[1] for r in ranked[:asked]], finalists_note(asked, len(ranked), "run")
        generations = sorted({r[2] for r in rows})
        chosen = [self.best_of([(r[0], r[1]) for r in rows if r[2] == gen]) for gen in generations[-asked:]]
        return chosen, finalists_note(asked, len(generations), "generations")
