"""Pilot for a fourth design (fitness split only): score on the 96 fitness problems (a) each generation's best by
likelihood estimate in gens 0-4 of the third proof's likelihood runs (5-7 were finalists, already scored) and
(b) the CMA-ES mean after generations 4..7 (the distribution's centre)."""
import json, subprocess, sys, time
from pathlib import Path
import numpy as np, yaml
from evomerge.search.records.store import RunStore
from evomerge.search.config import SearchConfig
from evomerge.search.space.spaces import make_space, export_candidate
from evomerge.sources.models import ModelPool

RUNS = Path("/work/runs/steering3"); OUT = Path("/tmp/pilot4")
full_cfg = yaml.safe_load(Path("/tmp/p4/evomerge/configs/search/miniature-steer-full.yaml").read_text())
cfgp = OUT / "fit96.yaml"; cfgp.write_text(yaml.safe_dump(full_cfg, allow_unicode=True))

def ev(model, name):
    samples = OUT / f"{name}.jsonl"
    if not samples.exists():
        r = subprocess.run([sys.executable, "-m", "evomerge", "eval", str(model), "--config", str(cfgp), "--samples",
                            str(samples), "--json"], capture_output=True, text=True)
        if r.returncode: print(r.stderr[-2000:]); raise SystemExit(1)
    rows = [json.loads(l) for l in samples.read_text().splitlines()]
    return rows

results = {}
for seed in (0, 1, 2):
    run = RUNS / f"likelihood-s{seed}"
    with RunStore(run) as store:
        trials = store.trials(); gens = store.generations(); conf = store.config()
    config = SearchConfig.model_validate(conf)
    with ModelPool() as pool:
        space = make_space(config, pool)
        jobs = []
        for g in range(5):
            done = [t for t in trials if t.generation == g and t.status in ("complete", "estimated")]
            top = max(done, key=lambda t: (t.fitness if t.status == "complete" and t.estimate is None else (t.estimate if t.estimate is not None else t.fitness), -t.id))
            jobs.append((f"s{seed}-gbest{g}-t{top.id}", space.candidate(np.asarray(top.genes))))
        for g in (4, 5, 6, 7):
            mean = np.clip(np.asarray(gens[g]["state"]["mean"]), 0, 1)
            jobs.append((f"s{seed}-mean{g}", space.candidate(mean)))
        for name, cand in jobs:
            if (OUT / f"{name}.jsonl").exists():
                continue
            print(time.strftime("%H:%M:%S"), name, flush=True)
            export_candidate(cand, OUT / "model", force=True, progress=False)
            rows = ev(OUT / "model", name)
    for f in sorted(OUT.glob(f"s{seed}-*.jsonl")):
        rows = [json.loads(l) for l in f.read_text().splitlines()]
        print(f.stem, len(rows), round(sum(r["acc_ja"] for r in rows)/len(rows), 4), flush=True)
