"""Is one model's score on a set of items really different from another's? A paired test on the same items.

Two `evomerge eval --samples` files scored on the same data pair item by item. Right-or-wrong items get McNemar's
exact test (only the items where the two models disagree carry information: under "no difference" each such item
goes either way with probability 1/2, scipy's binomial test); other values get the Wilcoxon signed-rank test. A
seeded paired bootstrap gives the 95% interval of the difference in means. Used by results/fitness-cost.md to ask
whether a cheaper search's best is worse on held-out problems.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.core.errors import UserError

PAIR_KEYS = ("evaluator", "question", "answer")  # what must agree for two rows to be the same item


def load_samples(path: Path, metric: str) -> tuple[list[float], list[tuple]]:
    """Each row's `metric` (booleans as 0/1) and its identity (evaluator, question, answer where present)."""
    if not Path(path).is_file():
        raise UserError("no such samples file", str(path))
    values, ids = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"line {n} is not JSON", str(path)) from None
        if not isinstance(row, dict):
            raise UserError(f"line {n} is a JSON {type(row).__name__}, not an object (one sample per line)", str(path))
        value = row.get(metric)
        if metric not in row:
            have = ", ".join(k for k, v in row.items() if isinstance(v, (bool, int, float))) or "none"
            raise UserError(f"line {n} has no {metric!r} (numbers there: {have})", str(path))
        if not (isinstance(value, (bool, int, float)) and math.isfinite(value)):
            raise UserError(f"line {n}: {metric} is {json.dumps(value)[:40]}, not a finite number", str(path))
        values.append(float(value))
        ids.append(tuple(json.dumps(row.get(k), ensure_ascii=False) for k in PAIR_KEYS))
    if not values:
        raise UserError("no samples", str(path))
    return values, ids


def paired_test(a: list[float], b: list[float], seed: int = 0, resamples: int = 10000,
                clusters: list | None = None) -> dict[str, Any]:
    """B against A on the same items: means, difference, its 95% bootstrap interval and a two-sided p-value.
    `clusters` (one label per item) resamples whole clusters instead of items: items that share a label (one image's
    questions, problems that ask the same arithmetic in other words) are not independent, and an item bootstrap
    would call them so and draw the interval too narrow. The p-value stays the item-level test's."""
    from scipy.stats import binomtest, wilcoxon

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = y - x
    binary = bool(np.isin(np.concatenate([x, y]), (0.0, 1.0)).all())
    if binary:
        b_only, a_only = int(((y == 1) & (x == 0)).sum()), int(((x == 1) & (y == 0)).sum())
        p = binomtest(b_only, b_only + a_only, 0.5).pvalue if b_only + a_only else 1.0
        test = {"test": "McNemar exact", "b_right_a_wrong": b_only, "a_right_b_wrong": a_only}
    else:
        p = float(wilcoxon(y, x).pvalue) if np.any(d != 0) else 1.0
        test = {"test": "Wilcoxon signed-rank"}
    rng = np.random.default_rng(seed)
    if clusters is None:
        means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    else:
        if len(clusters) != len(d):
            raise ValueError(f"{len(clusters)} cluster labels for {len(d)} items")
        _, label = np.unique(np.asarray([json.dumps(c) for c in clusters]), return_inverse=True)
        sums, sizes = np.bincount(label, weights=d), np.bincount(label).astype(float)
        pick = rng.integers(0, len(sums), size=(resamples, len(sums)))
        means = sums[pick].sum(axis=1) / sizes[pick].sum(axis=1)
        test["clusters"] = int(len(sums))
    low, high = np.percentile(means, [2.5, 97.5])
    return {"items": len(d), "mean_a": float(x.mean()), "mean_b": float(y.mean()), "difference": float(d.mean()),
            "interval_95": [float(low), float(high)], "p_value": float(p), **test}


def compare_files(path_a: Path, path_b: Path, metric: str) -> dict[str, Any]:
    a, ids_a = load_samples(path_a, metric)
    b, ids_b = load_samples(path_b, metric)
    if len(a) != len(b):
        raise UserError(f"{len(a)} items here, {len(b)} in {path_b}: not scored on the same data", str(path_a))
    for n, (i, j) in enumerate(zip(ids_a, ids_b), 1):
        if i != j:
            raise UserError(f"item {n} differs from item {n} of {path_a} (question or answer): not the same data",
                            str(path_b))
    return {"metric": metric, **paired_test(a, b)}


def search_unit_interval(differences: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """The interval of a mean difference with the search as the unit: one difference per search (seed), a
    Student t interval with n - 1 degrees of freedom. Resampling problems says how sure one is about these
    searches; this says how sure one is about the next search with the setting (between-seed spread dominates
    it: three seeds give t = 4.30). None bounds with fewer than two searches."""
    from scipy.stats import t as student

    d = np.asarray(differences, dtype=float)
    n = len(d)
    if n < 2:
        return {"searches": n, "difference": float(d.mean()) if n else None, "interval_95": [None, None],
                "sd_between_searches": None}
    half = float(student.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return {"searches": n, "difference": float(d.mean()), "interval_95": [float(d.mean()) - half,
                                                                          float(d.mean()) + half],
            "sd_between_searches": float(d.std(ddof=1))}
