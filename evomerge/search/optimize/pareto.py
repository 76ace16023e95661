"""Multi-objective searches: the objectives a config names, each trial's objective vector and constraint
violation (read from the scores the store already keeps), the Pareto front, and its hypervolume.

Every objective is maximised in the store's convention (metrics are higher-is-better: perplexity is recorded as
its negative log); constraints are written in any metric an evaluator records, in that metric's own units
(`{evaluator: perplexity, metric: perplexity, max: 12.0}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Objective:
    key: str  # the name the trial's scores are recorded under (evaluator name, `name#i` when repeated)
    metric: str | None  # the metric maximised (None: the evaluator's first)


def for_run(store: Any) -> tuple[list[Objective], list[dict]]:
    """A run's objectives (as recorded when it started: the metric each evaluator was scored by) and
    constraints."""
    import json

    config = store.config()
    recorded = store.get_meta("objectives")
    objs = [Objective(k, m) for k, m in json.loads(recorded)] if recorded else objectives(config)
    return objs, config.get("constraints") or []


def objectives(config: dict) -> list[Objective]:
    """One objective per fitness term, from a search config as the store keeps it (a dict); a custom evaluator
    that cannot be imported here counts by its configured metric (`for_run` reads what the run recorded)."""
    from evomerge.core.errors import UserError
    from evomerge.evaluators import evaluator_class

    terms = config.get("fitness") or []
    out = []
    for i, term in enumerate(terms):
        key = term["name"] if sum(t["name"] == term["name"] for t in terms) == 1 else f"{term['name']}#{i}"
        try:
            metric = term.get("metric") or evaluator_class(term["name"], "fitness").default_metric
        except UserError:
            metric = term.get("metric")
        out.append(Objective(key, metric or "fitness"))
    return out


def shown(metric: str | None) -> str:
    """How an objective is shown: its metric, in its own units, with its direction."""
    metric = metric or "fitness"
    if metric.startswith("neg_log_"):
        return f"{metric.removeprefix('neg_log_')} (lower is better)"
    return f"{metric} (higher is better)"


def shown_value(metric: str, value: float) -> float:
    import math

    return math.exp(-value) if (metric or "").startswith("neg_log_") else value


def vector(scores: dict | None, objs: list[Objective]) -> list[float] | None:
    """A trial's objective values (None when it has no scores for them: failed, or scored before)."""
    if not scores:
        return None
    try:  # no metric named: the evaluator's first, as the weighted fitness takes it
        return [float(scores[o.key][o.metric or next(iter(scores[o.key]))]) for o in objs]
    except (KeyError, TypeError, ValueError):
        return None


def violation(scores: dict | None, constraints: list[dict]) -> float:
    """How far a trial is outside its constraints, summed over them (0: feasible). A constraint's metric that is
    missing counts as violated by 1 (a failed candidate is never feasible)."""
    total = 0.0
    for c in constraints:
        value = (scores or {}).get(c["evaluator"], {}).get(c["metric"])
        if value is None:
            total += 1.0
            continue
        if c.get("max") is not None:
            total += max(0.0, float(value) - c["max"])
        if c.get("min") is not None:
            total += max(0.0, c["min"] - float(value))
    return total


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Indices of the rows no other row dominates (maximisation: at least as good everywhere, better somewhere).
    Equal rows are all kept."""
    points = np.asarray(points, float)
    keep = []
    for i, p in enumerate(points):
        dominated = np.any(np.all(points >= p, axis=1) & np.any(points > p, axis=1))
        if not dominated:
            keep.append(i)
    return np.array(keep, int)


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """The volume dominated by `points` and bounded below by `reference` (maximisation). Two objectives exactly
    by a sweep; more through Optuna's implementation (it minimises, hence the signs)."""
    points = np.asarray(points, float)
    reference = np.asarray(reference, float)
    points = points[np.all(points > reference, axis=1)]
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(points.max() - reference[0])
    if points.shape[1] == 2:
        front = points[non_dominated(points)]
        front = front[np.argsort(-front[:, 0])]  # x descending, so y ascends along the front
        volume, y_prev = 0.0, reference[1]
        for x, y in front:
            if y > y_prev:
                volume += (x - reference[0]) * (y - y_prev)
                y_prev = y
        return float(volume)
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(-points, -reference))


def front(trials: list[Any], objs: list[Objective], constraints: list[dict]) -> dict[str, Any]:
    """The Pareto front of a run's scored trials among the feasible ones: what `status` and the report show."""
    rows, seen = [], set()
    for t in trials:  # a candidate scored twice (a duplicate's reused result) is one member, the first trial
        v = vector(t.scores, objs)
        if v is not None and t.status == "complete" and t.duplicate_of is None and t.recipe not in seen:
            seen.add(t.recipe)
            rows.append((t, v, violation(t.scores, constraints)))
    feasible = [(t, v) for t, v, c in rows if c == 0]
    if not feasible:
        return {"objectives": [o.__dict__ for o in objs], "members": [], "feasible": 0, "scored": len(rows)}
    idx = non_dominated(np.array([v for _, v in feasible]))
    members = sorted((feasible[i] for i in idx), key=lambda tv: tv[1][0], reverse=True)
    return {"objectives": [o.__dict__ for o in objs], "feasible": len(feasible), "scored": len(rows),
            "members": [{"trial": t.id, "generation": t.generation, "values": v, "params": t.params}
                        for t, v in members]}


def hypervolume_history(trials: list[Any], objs: list[Objective], constraints: list[dict]) -> list[tuple[int, float]]:
    """(generation, hypervolume of the front of the feasible trials scored up to it), with the reference point at
    the worst value of each objective over the whole run, so the curve's growth is comparable across it."""
    rows = [(t.generation, vector(t.scores, objs)) for t in trials
            if t.status == "complete" and violation(t.scores, constraints) == 0]
    rows = [(g, v) for g, v in rows if v is not None]
    if not rows:
        return []
    allv = np.array([v for _, v in rows])
    span = allv.max(0) - allv.min(0)
    reference = allv.min(0) - 0.01 * np.where(span > 0, span, 1.0)
    out = []
    for gen in sorted({g for g, _ in rows}):
        pts = np.array([v for g, v in rows if g <= gen])
        out.append((gen, hypervolume(pts, reference)))
    return out
