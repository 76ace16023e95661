"""Merge speed: fused kernels vs the memory-traffic floor and mergekit, base + 3 sources resident on the GPU.

    python bench/merge.py            # Mistral-7B shapes, bf16, on the GPU machine (one call, ~5 min)
    python bench/merge.py --small    # tiny shapes: checks the script itself (CPU: kernels in Triton's interpreter)

Builds random models (base, and sources = base + small task vectors), checks the fused kernels against the
reference merge on a sample of tensors first, then times each method on the whole model: the fused path as a
live merge writes it (into the model's tensors), the floor (bytes read + written over the copy bandwidth
measured in this run), the reference path (evomerge's per-tensor torch code) and the peer (mergekit's
in-memory merge_state_dicts) where installed. Prints a markdown table; --json writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from evomerge.merging.fused_gpu import FusedMerger  # noqa: E402
from evomerge.merging.plan import TensorTask  # noqa: E402

METHODS = ["linear", "task_arithmetic", "dare_linear", "dare_ties", "ties", "slerp"]


def shapes(small: bool) -> dict[str, tuple[int, ...]]:
    """Mistral-7B's tensors (7.24B parameters), or a tiny model of the same layout."""
    if small:
        layers, h, kv, inter, vocab = 1, 64, 16, 160, 256
    else:
        layers, h, kv, inter, vocab = 32, 4096, 1024, 14336, 32000
    out = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                    p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                    p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
                    p + "mlp.down_proj.weight": (h, inter), p + "input_layernorm.weight": (h,),
                    p + "post_attention_layernorm.weight": (h,)})
    out["model.norm.weight"] = (h,)
    out["lm_head.weight"] = (vocab, h)
    return out


def build(names: dict, n_src: int, device, dtype, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator(device=device).manual_seed(seed)
    models = [dict() for _ in range(n_src + 1)]
    for name, shape in names.items():
        base = torch.randn(shape, generator=g, device=device, dtype=dtype).mul_(0.02)
        models[0][name] = base
        for m in models[1:]:
            m[name] = torch.randn(shape, generator=g, device=device, dtype=dtype).mul_(0.002).add_(base)
    return models


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def copy_bandwidth(device, nbytes: int) -> float:
    """Bytes read + written per second by a device-to-device copy."""
    a = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).normal_()
    b = torch.empty_like(a)
    b.copy_(a)
    t = statistics.median(timed(lambda: b.copy_(a), device, 10))
    return 2 * a.numel() * a.element_size() / t


def params_for(method: str, n_src: int) -> tuple[dict, list[dict]]:
    w = [0.6, 0.5, 0.4, 0.3][:n_src]
    d = [0.5, 0.6, 0.7, 0.8][:n_src]
    if method == "linear":
        return {"normalize": True}, [{"weight": x} for x in [0.4] + w]
    if method == "slerp":
        return {"t": 0.35}, [{}, {}]
    shared = {"normalize": method == "ties", "rescale": method.startswith("dare"), "lambda": 1.0,
              "int8_mask": False}
    per = [{}] + [{"weight": a, "density": b} if method != "task_arithmetic" else {"weight": a} for a, b in zip(w, d)]
    return shared, per


def tasks_for(method: str, names: dict, n_src: int) -> list[TensorTask]:
    shared, per = params_for(method, n_src)
    n_in = 2 if method == "slerp" else n_src + 1
    base = None if method == "linear" else 0
    return [TensorTask(name, [(f"m{i}", name) for i in range(n_in)], base, shared, per[:n_in]) for name in names]


def fused_merge(merger: FusedMerger, method: str, tasks, models, outs, bad) -> None:
    for task in tasks:
        tensors = [models[int(m[1:])][n] for m, n in task.inputs]
        merger.merge_into(method, task, tensors, outs[task.out_name], 7, bad)


def reference_merge(method: str, tasks, models, outs, device) -> None:
    from evomerge.merging.kernels import merge_task
    from evomerge.merging.methods import get_method
    from evomerge.merging.plan import MergePlan

    plan = MergePlan(get_method(method), tasks, [], "m0", None)
    for task in tasks:
        out = merge_task(plan, task, lambda m, n: models[int(m[1:])][n], 7, device)
        outs[task.out_name].copy_(out)


def peer_merge(method: str, models, n_src: int):
    from mergekit.merge_methods.api import merge_state_dicts

    shared, per = params_for(method, n_src)
    if method == "slerp":
        return merge_state_dicts([models[0], models[1]], "slerp", parameters={"t": shared["t"]}, base=0)
    params = dict(shared)
    keys = {k for p in per for k in p}
    for k in keys:
        params[k] = [p.get(k, 0.0) for p in per]
    base = None if method == "linear" else 0
    if base == 0:
        for k in keys:
            params[k] = {i: v for i, v in enumerate(params[k]) if i != 0}
    return merge_state_dicts(models, method, parameters=params, base=base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--methods", nargs="*", default=METHODS)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    n_src = 3
    names = shapes(a.small)
    t0 = time.perf_counter()
    models = build(names, n_src, device, dtype)
    numel = sum(t.numel() for t in models[0].values())
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; {numel / 1e9:.3f}B parameters "
          f"per model, built in {time.perf_counter() - t0:.1f} s", flush=True)
    bw = copy_bandwidth(device, 2**31 if device.type == "cuda" else 2**24)
    print(f"copy bandwidth {bw / 1e12:.3f} TB/s (read + written)", flush=True)
    outs = {n: torch.empty(s, dtype=dtype, device=device) for n, s in names.items()}
    bad = torch.zeros(1, dtype=torch.int32, device=device)
    rows, results = [], {"device": str(device), "bandwidth_Bps": bw, "params": numel, "methods": {}}
    sample = [n for n in names if ".layers.0." in n or "embed" in n]
    for method in a.methods:
        tasks = tasks_for(method, names, n_src)
        n_in = len(tasks[0].inputs)
        floor = (n_in + 1) * numel * 2 / bw
        merger = FusedMerger(None)
        # correctness first, on a sample of tensors: fused vs the reference merge
        sample_tasks = [t for t in tasks if t.out_name in sample]
        ref_out = {n: torch.empty_like(outs[n]) for n in sample}
        reference_merge(method, sample_tasks, models, ref_out, device)
        fused_merge(merger, method, sample_tasks, models, outs, bad)
        sync(device)
        worst = max(float((outs[n].float() - ref_out[n].float()).abs().max() /
                          ref_out[n].float().abs().max().clamp_min(1e-30)) for n in sample)
        del ref_out
        t_stats = timed(lambda: fused_merge(merger, method, tasks, models, outs, bad), device, 1)[0]  # + stats
        t_fused = statistics.median(timed(lambda: fused_merge(merger, method, tasks, models, outs, bad), device,
                                          a.repeat))
        ok = worst <= 2 ** -7 and int(bad.item()) == 0
        row = {"fused_s": t_fused, "first_call_s": t_stats, "floor_s": floor, "ratio": t_fused / floor,
               "max_rel_err_vs_reference": worst, "correct": ok}
        if not a.no_reference and not (method == "ties" and not a.small):  # ties' reference sorts on the CPU
            row["reference_s"] = timed(lambda: reference_merge(method, tasks, models, outs, device), device, 1)[0]
        if not a.no_peer:
            try:
                import mergekit  # noqa: F401

                del outs
                sync(device)
                peer_out = None

                def run_peer():
                    nonlocal peer_out
                    peer_out = None
                    peer_out = peer_merge(method, models, n_src)

                row["peer_s"] = statistics.median(timed(run_peer, device, 2))
                del peer_out
                outs = {n: torch.empty(s, dtype=dtype, device=device) for n, s in names.items()}
            except ImportError:
                row["peer_s"] = None
        results["methods"][method] = row
        peer = row.get("peer_s")
        rows.append(f"| {method} | {t_fused * 1e3:.1f} | {floor * 1e3:.1f} | {t_fused / floor:.2f} | "
                    f"{(row.get('reference_s') or float('nan')) * 1e3:.0f} | "
                    f"{(peer or float('nan')) * 1e3:.0f} | {(peer / t_fused) if peer else float('nan'):.1f} | "
                    f"{t_stats * 1e3:.0f} | {'yes' if ok else 'NO'} ({worst:.1e}) |")
        print(rows[-1], flush=True)
    print("\n| method | fused ms | floor ms | x floor | evomerge reference ms | mergekit ms | speed-up vs mergekit "
          "| first call ms (with per-search stats) | matches reference (max rel err) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
