"""Pilot for a fifth design (fitness split only): the fourth proof's agreement runs kept a ranking of all 64
candidates by estimate; score the top 8 of the whole run (not one per late generation) on the 96 fitness problems,
per problem, so that any final rule over them (best of the top k, successive halving) can be replayed offline."""
import json, subprocess, sys, time
from pathlib import Path
import numpy as np
from evomerge.search.records.store import RunStore
from evomerge.search.config import SearchConfig
from evomerge.search.space.spaces import make_space, export_candidate
from evomerge.sources.models import ModelPool

RUNS = Path("/work/runs/steering4"); OUT = Path("/tmp/pilot5"); FIT96 = Path("/tmp/pilot4/fit96.yaml")
TOP = 8


def estimate(t):
    return t.estimate if t.estimate is not None else t.fitness


for seed in (0, 1, 2):
    with RunStore(RUNS / f"agreement-s{seed}") as store:
        trials = store.trials(); conf = store.config()
    ranked = sorted(trials, key=lambda t: (-estimate(t), t.id))[:TOP]
    print("seed", seed, [(t.id, t.generation, round(estimate(t), 4), t.status) for t in ranked], flush=True)
    config = SearchConfig.model_validate(conf)
    with ModelPool() as pool:
        space = make_space(config, pool)
        for t in ranked:
            samples = OUT / f"s{seed}-t{t.id}.jsonl"
            if samples.exists() or t.status == "complete":  # a finalist: scored on the 96 in the run
                continue
            print(time.strftime("%H:%M:%S"), samples.name, flush=True)
            export_candidate(space.candidate(np.asarray(t.genes)), OUT / "model", force=True, progress=False)
            r = subprocess.run([sys.executable, "-m", "evomerge", "eval", str(OUT / "model"), "--config", str(FIT96),
                                "--samples", str(samples), "--json"], capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-2000:]); raise SystemExit(1)
    for t in ranked:
        if t.status == "complete":
            values = list(t.item_values)
        else:
            values = [json.loads(l)["acc_ja"] for l in (OUT / f"s{seed}-t{t.id}.jsonl").read_text().splitlines()]
        (OUT / f"s{seed}-t{t.id}.items.json").write_text(json.dumps(values))
        acc = sum(values) / len(values)
        print(f"seed {seed} trial {t.id} gen {t.generation} agreement {estimate(t):.4f} acc96 {acc:.4f}"
              f" (in store: {t.fitness if t.status == 'complete' else '-'})", flush=True)
