"""Score every one-move neighbour of a model's own layer path: can a data-flow search improve it at all?

A DFS around a working model (PS+DFS) can only add if some change of the path helps. This scans the simplest
changes one at a time, on the same problems, so the answer does not depend on a search's budget or luck:
  dup:i     layer i of A runs twice
  ins:M:i   layer i of model M runs right after A's layer i
  swap:M:i  layer i of model M replaces A's layer i
Each line of --out holds a move and its per-problem correctness (the scan resumes from it). Paired with the
unchanged path on the same problems, a move's gain is measured without the between-set noise.

    python scripts/dfs_neighbourhood.py --a runs/miniature-small/ps/best_model \
        --b builtin:smollm2-ja-instruct --b builtin:smollm2-math-instruct \
        --data evaluators/data/ja_math_fitness.jsonl --limit 40 --out dfs-scan.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from evomerge.merging.dataflow import DataflowPath, Hop
from evomerge.runtime.dataflow import HopModel
from evomerge.evaluators.mgsm_ja import MgsmJa, MgsmJaOptions
from evomerge.sources.loading import load_for_eval


def moves(n_layers: int, n_b: int, kinds: list[str]) -> list[str]:
    out = ["none"]
    for i in range(n_layers - 1):  # the last layer stays A's last layer
        if "dup" in kinds:
            out.append(f"dup:{i}")
        for m in range(n_b):
            if "ins" in kinds:
                out.append(f"ins:{m}:{i}")
            if "swap" in kinds and i > 0:
                out.append(f"swap:{m}:{i}")
    return out


def path_of(move: str, n_layers: int) -> list[tuple[int, int]]:
    """(source, layer) pairs; source 0 is A, source m+1 is the m-th --b model."""
    hops = [(0, i) for i in range(n_layers)]
    kind, *rest = move.split(":")
    if kind == "dup":
        i = int(rest[0])
        hops.insert(i + 1, (0, i))
    elif kind == "ins":
        m, i = map(int, rest)
        hops.insert(i + 1, (m + 1, i))
    elif kind == "swap":
        m, i = map(int, rest)
        hops[i] = (m + 1, i)
    return hops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", action="append", default=[])
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--kinds", default="dup,ins", help="comma list of dup, ins, swap")
    ap.add_argument("--moves", default=None, help="comma list: score only these moves (and none)")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    torch.manual_seed(0)
    a, tok = load_for_eval(args.a, args.device)
    bs = [load_for_eval(b, args.device)[0] for b in args.b]
    n = a.config.num_hidden_layers
    todo = ["none", *args.moves.split(",")] if args.moves else moves(n, len(bs), args.kinds.split(","))
    done = {}
    if args.out.exists():
        done = {r["move"]: r for r in map(json.loads, args.out.read_text().splitlines())}
    ev = MgsmJa(MgsmJaOptions(data=args.data, limit=args.limit, max_new_tokens=args.max_new_tokens, batch_size=32))
    # HopModel takes two models; a B slot per --b model is enough for one-move paths
    builders = [HopModel(a, b) for b in bs] or [HopModel(a, a)]
    for k, move in enumerate(todo):
        if move in done:
            continue
        hops = path_of(move, n)
        src = {s for s, _ in hops if s}
        b = max(src) - 1 if src else 0
        path = DataflowPath(model_a=args.a, model_b=args.b[b] if args.b else args.a,
                            hops=[Hop(model="a" if s == 0 else "b", layer=i) for s, i in hops])
        model = builders[b].build(path)
        metrics = ev.evaluate(model, tok)
        row = {"move": move, **metrics, "correct": [bool(s["correct"] and s["japanese"]) for s in ev.samples()]}
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        done[move] = row
        print(f"[{k + 1}/{len(todo)}] {move}: acc_ja {metrics['acc_ja']:.3f}", flush=True)

    base = done["none"]["correct"]
    print(f"unchanged path: acc_ja {sum(base) / len(base):.3f} on {len(base)} problems")
    ranked = sorted((r for r in done.values() if r["move"] != "none"), key=lambda r: -r["acc_ja"])
    for r in ranked[:10]:
        won = sum(c and not b0 for c, b0 in zip(r["correct"], base))
        lost = sum(b0 and not c for c, b0 in zip(r["correct"], base))
        print(f"{r['move']:>12}: acc_ja {r['acc_ja']:.3f} (+{won} -{lost} problems vs unchanged)")


if __name__ == "__main__":
    main()
