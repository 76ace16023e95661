"""Pilot B (fitness split only): per-token teacher-forced log-probs of the worked solutions of the first 32 fitness
problems, for every candidate of a few generations of the second proof's full runs (whose 96-problem acc_ja is
known), to compare candidate signals offline."""
import json, sys, time
from pathlib import Path
import numpy as np, torch
from evomerge.search.records.store import RunStore
from evomerge.search.config import SearchConfig
from evomerge.search.space.spaces import make_space, candidate_from_yaml
from evomerge.sources.models import ModelPool
from evomerge.evaluators.likelihood import encode_pair

RUNS = Path("/work/runs/steering3"); OUT = Path("/tmp/pilot4/signals"); OUT.mkdir(exist_ok=True)
PICK = [(0, 2), (0, 6), (1, 3), (1, 6), (2, 2), (2, 6)]
N = 32
rows = [json.loads(l) for l in Path("/tmp/p4/evomerge/data/ja_math_fitness_256.jsonl").read_text().splitlines()][:N]
torch.set_num_threads(2)
for seed, gen in PICK:
    out = OUT / f"s{seed}-g{gen}.json"
    if out.exists(): continue
    run = RUNS / f"full-s{seed}"
    with RunStore(run) as store:
        trials = [t for t in store.trials() if t.generation == gen]; conf = store.config()
    config = SearchConfig.model_validate(conf)
    result = []
    with ModelPool() as pool:
        space = make_space(config, pool)
        live = space.live(pool)
        tok = live.tokenizer
        from evomerge.evaluators.mgsm_ja import MgsmJa  # noqa
        prompts = None
        for t in trials:
            print(time.strftime("%H:%M:%S"), seed, gen, t.id, flush=True)
            live.apply(candidate_from_yaml(t.recipe, "x", conf))
            model = live.model
            if prompts is None:
                from evomerge.evaluators import Fitness
                ev = Fitness(config.fitness).terms[0].evaluator
                prompts = ev.prompts(tok)[:N]
            items = []
            with torch.no_grad():
                for i, r in enumerate(rows):
                    ids, head = encode_pair(tok, prompts[i], " " + r["solution"])
                    x = torch.tensor([ids])
                    logits = model(input_ids=x).logits[0, head - 1: len(ids) - 1].float()
                    lp = torch.log_softmax(logits, -1)
                    tgt = torch.tensor(ids[head:])
                    items.append({"lp": lp.gather(1, tgt[:, None])[:, 0].tolist(),
                                  "top": (lp.argmax(-1) == tgt).int().tolist(),
                                  "toks": [tok.decode([j]) for j in ids[head:]]})
            result.append({"trial": t.id, "acc96": t.fitness, "items96": t.item_values, "items": items})
    out.write_text(json.dumps(result))
