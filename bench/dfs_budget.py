"""Issue 42, item 3's follow-up: does the miniature's data-flow search stop short for want of budget?

    .venv-vllm/bin/python bench/dfs_budget.py --claims runs/claims --runs runs/dfs-budget            # runs, reports
    .venv-vllm/bin/python bench/dfs_budget.py --claims runs/claims --runs runs/dfs-budget --no-run   # reports

Fixed before it ran: committed while bench/paper_claims.py's PS+DFS arm was still running, before any PS+DFS model
had been scored on held-out problems (seen by then: seed 0's fitness by generation over its first ~55 trials).

Why: the shipped PS+DFS search (search/miniature-ps-dfs.yaml) spends 64 trials (4 generations of 16) with repeats 1,
starting on A's own path with small steps (indicators 3 step sizes from the threshold, sigma 0.05); the paper ran
12,800 evaluations (population 128, 100 generations) with repeats 3. Of the three things issue 42 names (repeats,
scales, budget), budget comes first: at these step sizes a slot changes side in about one candidate in a thousand,
so more slots (repeats) cannot be reached at this budget either, and scales are already searched.

Design: each PS+DFS seed's run of paper_claims (CLAIMS/ps-dfs-sN: 64 trials) is copied and continued to 128 trials
(`budget` is the one field a resume may change: the first 64 trials are the same and the optimiser's state is
restored). The 128-trial best by fitness is exported and scored on the fourth held-out draw with the table's
evaluator, exactly as paper_claims scores every row; its 64-trial twin is paper_claims' own score. Seeds run in the
order given (0, 1, 2 by default) as time allows; the report says which ran.

Reported, nothing judged (one factor, and as many seeds as ran): per seed, the best fitness by generation (still
rising at trial 64?), the 64- and 128-trial bests' held-out acc_ja, their paired difference (problem unit; the search
unit too when all three seeds ran), and each best's path: how many of A's layers it drops, how many hops come from
B, the range of its scales, and the slots whose side differs from A's own path. Results: RUNS/report.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import paper_claims as claims  # noqa: E402  (its evaluator, scoring, pairing and tests, unchanged)
from bench.fitness_steering import evomerge  # noqa: E402

TRIALS = 128


def extend(claims_runs: Path, runs: Path, seed: int) -> Path:
    """The seed's 64-trial PS+DFS run copied (once) and continued to TRIALS trials."""
    source, run = claims_runs / f"ps-dfs-s{seed}", runs / f"ps-dfs-s{seed}"
    if not (run / "run.sqlite").exists():
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(source, run, ignore=shutil.ignore_patterns("run.lock", "best_model"))
    cfg = yaml.safe_load((claims_runs / "configs" / f"ps-dfs-s{seed}.yaml").read_text())
    cfg["budget"]["max_trials"] = TRIALS
    path = runs / "configs" / f"ps-dfs-s{seed}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    claims.log(f"search ps-dfs seed {seed} to {TRIALS} trials")
    evomerge("search", path, "--run-dir", run, "--quiet", "--resume")
    return run


def path_of(recipe_text: str) -> dict:
    """How far a data-flow recipe's path is from A's own (every layer of A once, in order, scale 1)."""
    hops = yaml.safe_load(recipe_text)["dataflow"]["hops"]
    a_layers = [h["layer"] for h in hops if h["model"] == "a"]
    scales = [float(h.get("scale", 1.0)) for h in hops]
    return {"hops": len(hops), "from_b": sum(h["model"] == "b" for h in hops),
            "b_layers": [h["layer"] for h in hops if h["model"] == "b"], "a_layers": len(a_layers),
            "scale_min": min(scales), "scale_max": max(scales)}


def describe(run: Path) -> dict:
    """The run's best by fitness, and its best fitness by generation."""
    from evomerge.search.records.store import RunStore

    with RunStore(run) as store:
        trials = [t for t in store.trials() if t.status == "complete"]
    by_gen: dict[int, float] = {}
    for t in trials:
        by_gen[t.generation] = max(by_gen.get(t.generation, 0.0), t.fitness)
    best = sorted(trials, key=lambda t: (-t.fitness, t.id))[0]
    return {"trials": len(trials), "best_trial": best.id, "best_generation": best.generation,
            "best_fitness": best.fitness, "best_fitness_by_generation": [by_gen[g] for g in sorted(by_gen)],
            "path": path_of(best.recipe)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--claims", type=Path, required=True, help="bench/paper_claims.py's runs folder")
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(claims.SEEDS))
    ap.add_argument("--no-run", action="store_true")
    args = ap.parse_args()
    from evomerge.core.provenance import provenance

    runs, work = args.runs, args.runs / "scores"
    work.mkdir(parents=True, exist_ok=True)
    if not args.no_run:
        with open(runs / "launches.jsonl", "a") as f:
            f.write(json.dumps(provenance()) + "\n")
        for s in args.seeds:
            if not (args.claims / "scores" / f"ps-dfs-s{s}.d.jsonl").exists():
                raise SystemExit(f"paper_claims has not scored ps-dfs-s{s} yet: run it first")
            start = time.time()
            run = extend(args.claims, runs, s)
            claims.score(work, f"ps-dfs-s{s}", claims.model_of(runs, f"ps-dfs-s{s}"), claims.HELD_OUT)
            with open(runs / "seconds.jsonl", "a") as f:
                f.write(json.dumps({"seed": s, "seconds": time.time() - start}) + "\n")
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "provenance": provenance(), "trials": TRIALS,
                    "seeds": {}}
    pairs = {}
    for s in args.seeds:
        long_scores = work / f"ps-dfs-s{s}.d.jsonl"
        short_scores = args.claims / "scores" / f"ps-dfs-s{s}.d.jsonl"
        if not (long_scores.exists() and short_scores.exists()):
            continue
        long_rows, short_rows = claims.rows_of(long_scores), claims.rows_of(short_scores)
        pairs[s] = claims.paired(short_rows, "acc_ja", long_rows, "acc_ja", f"ps-dfs-s{s}")
        report["seeds"][s] = {"64": {**describe(args.claims / f"ps-dfs-s{s}"), **claims.accuracy(short_rows)},
                              str(TRIALS): {**describe(runs / f"ps-dfs-s{s}"), **claims.accuracy(long_rows)}}
    # per seed; pooled and search unit only when all three seeds ran (as paper_claims' tests)
    report["difference_128_minus_64"] = claims.difference_test(pairs) if pairs else None
    launches = runs / "launches.jsonl"
    report["launches"] = [json.loads(x) for x in launches.read_text().splitlines()] if launches.exists() else []
    (runs / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
