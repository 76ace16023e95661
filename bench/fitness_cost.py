"""Issue 17's proof: what racing and subset fitness save against full evaluation, and what they cost in quality.

    python bench/fitness_cost.py --runs runs/cost            # runs the arms that are missing, then reports
    python bench/fitness_cost.py --runs runs/cost --no-run   # only reports on runs already there

The arms are the miniature's PS search with a 256-problem fitness split, one config each
(search/miniature-cost-{full,racing,subset}.yaml: same seed, same budget in trials). For each arm it reports what
the search spent (prompt and generated tokens, seconds merging and scoring, wall time), exports the arm's best and
scores it on 400 held-out problems (`evomerge eval --samples`, the test family of wordings, never seen by the
search), and compares each cheaper arm's best with the full arm's best on those problems item by item
(`evomerge compare`: McNemar's exact test). Then it replays racing and subset settings on the full arm's recorded
item results (`evomerge replay`): problems used and top-half agreement with full evaluation, per generation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ARMS = ("full", "racing", "subset")
HELD_OUT = "evomerge:data/ja_math_heldout_400.jsonl"


def evomerge(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "evomerge", *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"evomerge {' '.join(map(str, args))} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def config_path(arm: str) -> Path:
    from evomerge.core.resources import resolve_path

    return resolve_path(f"evomerge:configs/search/miniature-cost-{arm}.yaml")


def spent(run: Path) -> dict:
    from evomerge.search.records.store import RunStore

    with RunStore(run) as store:
        trials = store.trials()
        s = store.spent()
        best = store.result()
        status = {k: sum(t.status == k for t in trials) for k in ("complete", "raced", "estimated", "failed")}
        checks = [t for t in trials if t.estimate is not None and t.status == "complete"]
    started = [t.started for t in trials if t.started]
    finished = [t.finished for t in trials if t.finished]
    return {**s, "trials": len(trials), **status, "trials_span_s": max(finished) - min(started),
            "best": best.id, "best_fitness": best.fitness,
            "check_errors": [t.estimate - t.fitness for t in checks]}


def held_out(run: Path, work: Path, arm: str) -> Path:
    model, samples = work / f"{arm}-best", work / f"{arm}-heldout.jsonl"
    if not samples.exists():
        evomerge("export", run, model, "--force", "--quiet")
        cfg = yaml.safe_load(config_path("full").read_text())
        cfg["fitness"][0]["data"] = HELD_OUT
        path = work / "heldout.yaml"
        path.write_text(yaml.safe_dump(cfg))
        evomerge("eval", model, "--config", path, "--samples", samples, "--json")
    return samples


def screened_racing(run: Path, chunk: int = 16, min_items: int = 32, confidence: float = 0.95) -> dict:
    """What-if, on a run scored in full: racing with a screening schedule instead of the driver's sequential one.
    Every candidate of a generation first scores the same `min_items` problems; then they continue best-first
    (by that screen), so the first to finish set a high cut at once, and each later one stops as soon as its bound
    falls below the cut. Same bound and rules as the driver (survivors are scored in full)."""
    import numpy as np

    from evomerge.evaluators.racing import log_term, upper_bound
    from evomerge.search.economy.replay import _generations, _item_kind, _top

    gens, config = _generations(run)
    (lo, hi), binary = _item_kind(config)
    used_all = total_all = 0
    agree = []
    for trials in gens:
        n = len(trials[0].item_values)
        order = np.random.default_rng(0).permutation(n).tolist()
        log_t = log_term(n, chunk, min_items, confidence)
        mu = max(1, len(trials) // 2)
        screen = [sum(t.item_values[i] for i in order[:min_items]) / min_items for t in trials]
        full, told, used = [], [0.0] * len(trials), [0] * len(trials)
        for j in sorted(range(len(trials)), key=lambda j: (-screen[j], j)):
            t, k, out = trials[j], min_items, False
            while True:
                cut = sorted(full, reverse=True)[mu - 1] if len(full) >= mu else None
                mean = sum(t.item_values[i] for i in order[:k]) / k
                if cut is not None and k < n and upper_bound(mean, k, n, lo, hi, log_t, binary) < cut:
                    out = True
                    break
                if k >= n:
                    break
                k = min(n, k + chunk)
            used[j], told[j] = k, mean if out else t.fitness
            if not out:
                full.append(t.fitness)
        truth = [t.fitness for t in trials]
        agree.append(len(_top(truth, mu) & _top(told, mu)) / mu)
        used_all += sum(used)
        total_all += n * len(trials)
    return {"chunk": chunk, "min_items": min_items, "problems_used": used_all, "problems_full": total_all,
            "saving": total_all / used_all, "top_half_agreement": agree}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--no-run", action="store_true")
    args = ap.parse_args()
    from evomerge.evaluators.compare import compare_files
    from evomerge.search.economy.replay import replay_racing, replay_subset

    work = args.runs / "held-out"
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"date": time.strftime("%Y-%m-%d"), "arms": {}}
    for arm in ARMS:
        run = args.runs / arm
        if not (run / "run.sqlite").exists():
            if args.no_run:
                continue
            evomerge("search", config_path(arm), "--run-dir", run, "--quiet")
        report["arms"][arm] = spent(run)
    for arm in report["arms"]:
        samples = held_out(args.runs / arm, work, arm)
        rows = [json.loads(line) for line in samples.read_text().splitlines()]
        report["arms"][arm]["held_out_acc_ja"] = sum(r["acc_ja"] for r in rows) / len(rows)
        if arm != "full" and "full" in report["arms"]:
            report["arms"][arm]["vs_full"] = compare_files(work / "full-heldout.jsonl", samples, "acc_ja")
    full = args.runs / "full"
    if (full / "run.sqlite").exists():
        report["replay_racing"] = [replay_racing(full, chunk=c, min_items=m, confidence=0.95, binary=b)
                                   for c, m in ((16, 32), (16, 16), (32, 32), (8, 16)) for b in (1, 0)]
        report["replay_subset"] = [replay_subset(full, items=k, first_random=f) for k in (16, 32, 64) for f in (1, 0)]
        report["what_if_screened_racing"] = [screened_racing(full, c, m) for c, m in ((16, 32), (16, 16), (8, 16))]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
