"""Quality diversity in the spirit of CycleQD: a MAP-Elites archive per objective, each objective taking its turn
as the quality while the others are the behaviour descriptors.

With objectives f_1..f_K, archive k keeps, for every cell of the grid over the other objectives (each cut into
`bins` equal steps over its range), the trial with the highest f_k that landed there. Generation g improves
archive g mod K: each new candidate merges two of its elites in gene space (a random point on the segment
between them, as CycleQD crosses models by merging them) and then varies the result (Gaussian noise,
`mutation` wide, clipped to [0, 1]). Ranges not given in `archive.ranges` are fixed from generation 0's scores
(5% margin), so the grid never moves. The archive is not stored as such: it is a pure function of the run's
trials in the order they were told, so `status`, `report` and a resumed search (which replays the told
generations) all rebuild the very same one. Candidates that break a constraint never enter it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Archive:
    def __init__(self, n_objectives: int, bins: int, ranges: list[tuple[float, float] | None]):
        self.k, self.bins = n_objectives, bins
        self.ranges = list(ranges)
        self.elites: list[dict[tuple[int, ...], tuple[float, Any, np.ndarray]]] = [{} for _ in range(n_objectives)]

    @property
    def fixed(self) -> bool:
        return all(r is not None for r in self.ranges)

    def fix_ranges(self, values: list[list[float]]) -> None:
        """Ranges still open are set from these objective vectors (generation 0), with a 5% margin."""
        v = np.array(values, float)
        for j, r in enumerate(self.ranges):
            if r is None:
                lo, hi = (float(v[:, j].min()), float(v[:, j].max())) if len(v) else (0.0, 1.0)
                pad = 0.05 * (hi - lo) if hi > lo else max(abs(lo), 1.0) * 0.05
                self.ranges[j] = (lo - pad, hi + pad)

    def cell(self, k: int, values: list[float]) -> tuple[int, ...]:
        """Archive k's cell of an objective vector: the bin of every objective but the k-th."""
        out = []
        for j, v in enumerate(values):
            if j == k:
                continue
            lo, hi = self.ranges[j]
            out.append(int(np.clip(np.floor((v - lo) / (hi - lo) * self.bins), 0, self.bins - 1)))
        return tuple(out)

    def add(self, key: Any, genes: np.ndarray, values: list[float]) -> None:
        """Offer a scored candidate to every archive (first come wins a tie, so order matters: replay keeps it)."""
        for k in range(self.k):
            c = self.cell(k, values)
            held = self.elites[k].get(c)
            if held is None or values[k] > held[0]:
                self.elites[k][c] = (float(values[k]), key, np.asarray(genes, float))

    def parents(self, k: int) -> list[np.ndarray]:
        return [self.elites[k][c][2] for c in sorted(self.elites[k])]


def archive_of_run(store: Any) -> tuple[Archive, list[Any]] | None:
    """Rebuild a quality-diversity run's archive from its store (the told trials, in told order)."""
    from evomerge.search.optimize import pareto
    from evomerge.search.records.store import SCORED

    config = store.config()
    if config["optimizer"]["name"] != "map_elites":
        return None
    objs, constraints = pareto.for_run(store)
    archive = new_archive(config, objs)
    for g in store.generations():
        told = sorted((t for t in store.generation_trials(g["generation"]) if t.told is not None), key=lambda t: t.told)
        offer(archive, [(t.id, np.array(t.genes), pareto.vector(t.scores, objs) if t.status in SCORED else None,
                         pareto.violation(t.scores if t.status in SCORED else None, constraints)) for t in told])
    return archive, objs


def new_archive(config: dict, objs: list[Any]) -> Archive:
    settings = config.get("archive") or {}
    given = settings.get("ranges") or {}
    return Archive(len(objs), settings.get("bins", 8), [tuple(given[o.key]) if o.key in given else None
                                                        for o in objs])


def offer(archive: Archive, told: list[tuple[Any, np.ndarray, list[float] | None, float]]) -> None:
    """One told generation: (key, genes, objective vector or None, violation) per candidate."""
    feasible = [(key, x, v) for key, x, v, c in told if v is not None and c == 0]
    if not archive.fixed:
        archive.fix_ranges([v for _, _, v in feasible])
    for key, x, v in feasible:
        archive.add(key, x, v)


def describe(archive: Archive, objs: list[Any]) -> list[dict[str, Any]]:
    """Per objective as the quality: its cells and their elites (what `status` lists and `report` draws)."""
    from evomerge.search.optimize import pareto

    out = []
    for k, o in enumerate(objs):
        descriptors = [objs[j] for j in range(len(objs)) if j != k]
        cells = [{"cell": list(c), "trial": key, "quality": q, "shown": pareto.shown_value(o.metric, q)}
                 for c, (q, key, _) in sorted(archive.elites[k].items())]
        out.append({"quality": o.key, "metric": o.metric, "shown": pareto.shown(o.metric),
                    "descriptors": [{"key": d.key, "metric": d.metric,
                                     "range": list(archive.ranges[objs.index(d)])} for d in descriptors],
                    "bins": archive.bins, "cells": cells})
    return out
