"""Cost of one search candidate for a 7B model: merge (dare_ties of base + 3) + an MGSM-JA-sized evaluation.

    python bench/candidate.py          # Mistral-7B shapes, bf16, on the GPU machine
    python bench/candidate.py --small  # tiny shapes on the CPU: checks the script itself

250 prompts of 100-220 tokens, up to 512 new tokens each, greedy: once with every answer running to 512
(random weights never stop: the worst case), once with answer lengths drawn from 64-512. Two placements of the
sources: resident on the GPU (the KV cache gets what memory is left, so fewer rows decode at once) and streamed
from pinned host memory (room for all 250 rows). The peer does the same work the usual way: mergekit's
in-memory merge (merge_tensors per tensor, copied into the model) and plain `generate` in batches as large as
memory allows. Prints the breakdown per candidate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generate import config, hf_generate, random_model, timed  # noqa: E402
from bench.merge import build, tasks_for  # noqa: E402
from evomerge.generation.engine import Engine  # noqa: E402
from evomerge.merging.fused_gpu import FusedMerger  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--prompts", type=int, default=250)
    ap.add_argument("--new", type=int, default=512)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.small:
        a.prompts, a.new = min(a.prompts, 12), min(a.new, 16)
    cfg = config(a.small)
    model = random_model(cfg, device, torch.bfloat16)
    params = dict(model.named_parameters())
    names = {n: tuple(p.shape) for n, p in params.items()}
    g = torch.Generator().manual_seed(3)
    lo, hi = (100, 220) if not a.small else (4, 12)
    prompts = [torch.randint(3, cfg.vocab_size, (int(torch.randint(lo, hi + 1, (1,), generator=g)),),
                             generator=g).tolist() for _ in range(a.prompts)]
    lengths = torch.randint(max(1, a.new // 8), a.new + 1, (a.prompts,), generator=g).tolist()
    kv_per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 2
    tasks = tasks_for("dare_ties", names, 3)
    results: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}

    def rows_that_fit() -> int:
        if device.type != "cuda":
            return a.prompts
        free, _ = torch.cuda.mem_get_info()
        return max(1, min(a.prompts, int(0.7 * free / ((hi + a.new + 16) * kv_per_token))))

    def measure(models, placement: str) -> dict:
        merger = FusedMerger(None)
        bad = torch.zeros(1, dtype=torch.int32, device=device)

        def merge():
            for task in tasks:
                ts = [models[int(m[1:])][n] for m, n in task.inputs]
                if placement == "host":
                    ts = [t.to(device, non_blocking=True) for t in ts]
                merger.merge_into("dare_ties", task, ts, params[task.out_name].data, 7, bad)

        first = timed(merge, device)
        t_merge = min(timed(merge, device) for _ in range(2))
        rows = rows_that_fit()
        engine = Engine(model, max_batch=rows)
        engine.generate(prompts[:2], 2)
        t_worst = timed(lambda: engine.generate(prompts, a.new), device)
        t_typical = timed(lambda: engine.generate(prompts, lengths), device)
        return {"merge_s": t_merge, "merge_first_s": first, "rows": rows, "gen_worst_s": t_worst,
                "gen_typical_s": t_typical}

    t0 = time.perf_counter()
    resident = build(names, 3, device, torch.bfloat16)
    print(f"sources built in {time.perf_counter() - t0:.0f} s", flush=True)
    results["resident"] = measure(resident, "device")
    print("resident:", results["resident"], flush=True)
    if device.type == "cuda":
        host = [{n: t.cpu().pin_memory() for n, t in m.items()} for m in resident]
        del resident
        torch.cuda.empty_cache()
        results["streamed"] = measure(host, "host")
        print("streamed:", results["streamed"], flush=True)
        resident = [{n: t.to(device) for n, t in m.items()} for m in host]
        del host
    if not a.no_peer:
        try:
            from mergekit.merge_methods.api import merge_tensors

            def peer_merge():
                for task in tasks:
                    ts = [resident[int(m[1:])][n] for m, n in task.inputs]
                    w = {i: p["weight"] for i, p in enumerate(task.per_input) if i != 0}
                    d = {i: p["density"] for i, p in enumerate(task.per_input) if i != 0}
                    out = merge_tensors(ts, "dare_ties", base_index=0, parameters={
                        "weight": w, "density": d, "normalize": False, "rescale": True, "lambda": 1.0,
                        "int8_mask": False})
                    params[task.out_name].data.copy_(out)

            t_peer_merge = timed(peer_merge, device)
        except ImportError:
            t_peer_merge = None
        rows = rows_that_fit()
        t_peer_gen = timed(lambda: hf_generate(model, [p[:lo] for p in prompts], a.new, rows), device)
        results["peer"] = {"merge_s": t_peer_merge, "rows": rows, "gen_worst_s": t_peer_gen}
        print("peer:", results["peer"], flush=True)
    print("\n| per candidate | merge s | rows at once | generation s (all 512) | generation s (64-512) | total s |")
    print("|---|---|---|---|---|---|")
    for key in ("resident", "streamed"):
        if key in results:
            r = results[key]
            print(f"| evomerge, sources {key} | {r['merge_s']:.3f} | {r['rows']} | {r['gen_worst_s']:.1f} | "
                  f"{r['gen_typical_s']:.1f} | {r['merge_s'] + r['gen_typical_s']:.1f} |")
    if "peer" in results:
        r = results["peer"]
        m = r["merge_s"]
        print(f"| mergekit + generate | {m if m is None else f'{m:.3f}'} | {r['rows']} | {r['gen_worst_s']:.1f} | "
              f"(no early stop without EOS) | {(m or 0) + r['gen_worst_s']:.1f} |")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
