"""The live merge of one search candidate on the CPU against its memory-traffic floor.

    python bench/cpu_live_merge.py                       # the quickstart's and the miniature's recipes
    python bench/cpu_live_merge.py --configs search/quickstart.yaml

For each search config it opens the live model the search would open (sources in memory, one model whose
weights each candidate overwrites), then merges candidates drawn from the genome's space (seeded) three ways:
the CPU kernels with DARE tables (evomerge/merging/fused_cpu.py: what a search runs; the tables are built by the first
candidate, timed apart), the CPU kernels without tables (two passes per DARE tensor), and the plain-torch
reference path of every method (what evomerge ran before; the peer). Floor: every source tensor read once and
every output tensor written once, over the copy bandwidth of this machine (a large in-memory copy, read + write),
the best of measurements taken before each config: the highest bandwidth gives the lowest, strictest floor.
Correctness first: each candidate's kernel merge is compared with the reference merge (2 ulp of the output
dtype relative to each tensor's largest magnitude, as the GPU self-check does).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from cpu_merge import copy_bandwidth  # noqa: E402  (bench/ is the script's folder, so on the path)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--configs", nargs="+", default=["evomerge:configs/search/quickstart.yaml",
                                                     "evomerge:configs/search/miniature-ps.yaml"])
    p.add_argument("--candidates", type=int, default=4)
    a = p.parse_args()

    import numpy as np

    from evomerge.merging import fused_cpu
    from evomerge.merging.kernels import merge_task
    from evomerge.sources.models import ModelPool
    from evomerge.merging.plan import plan_merge
    from evomerge.core.resources import resolve_path
    from evomerge.runtime.live import LiveMerge
    from evomerge.search.config import load_search_config
    from evomerge.search.space.spaces import make_space

    bws = [copy_bandwidth()]
    rows = []
    for ref in a.configs:
        bws.append(copy_bandwidth())
        cfg = load_search_config(resolve_path(ref))
        with ModelPool() as pool:
            space = make_space(cfg, pool)
            rs = np.random.default_rng(0)
            recipes = [space.candidate(rs.uniform(0, 1, len(space))) for _ in range(a.candidates)]
            live = LiveMerge(recipes[0], pool, device="cpu")
            plain = LiveMerge(recipes[0], pool, device="cpu", tables_bytes=0)
            plan = plan_merge(recipes[0], pool.get)
            moved = sum(live.sources[k].numel() * live.sources[k].element_size() for t in plan.tasks
                        for k in set(t.inputs)) + sum(p.numel() * p.element_size() for p in live.params.values())
            plain.apply(recipes[0])  # compiles the kernels (numba caches them on disk after the first run)
            t0 = time.perf_counter()
            live.apply(recipes[0])  # builds the DARE tables
            build = time.perf_counter() - t0
            table_mb = sum(t.nbytes for _, t in live._tables.values() if t is not None) / 1e6
            fast = []
            for r in recipes:
                t0 = time.perf_counter()
                live.apply(r)
                fast.append(time.perf_counter() - t0)
                for task in plan_merge(r, pool.get).tasks:  # correctness: every tensor against the reference
                    got = live.params[task.out_name]
                    want = merge_task(plan, task, live.fetch, r.seed or 0, torch.device("cpu"), live.in_dtype)
                    want = want.to(got.dtype).float()
                    tol = 2 * torch.finfo(got.dtype).eps * float(want.abs().max()) + 1e-7
                    err = float((got.float() - want).abs().max())
                    assert err <= tol, f"{task.out_name}: kernels differ from the reference by {err:.3g}"
            two_pass = []
            for r in recipes:
                t0 = time.perf_counter()
                plain.apply(r)
                two_pass.append(time.perf_counter() - t0)
                live.apply(r)
                assert all(torch.equal(plain.params[k], live.params[k]) for k in live.params)  # bit for bit
            del plain
            slow = []
            for r in recipes[:2]:
                rplan = plan_merge(r, pool.get)
                t0 = time.perf_counter()
                for task in rplan.tasks:
                    live.params[task.out_name].copy_(merge_task(rplan, task, live.fetch, r.seed or 0,
                                                                torch.device("cpu"), live.in_dtype))
                slow.append(time.perf_counter() - t0)
        rows.append((ref, recipes[0], moved, min(fast), min(two_pass), min(slow), build, table_mb))
    bw = max(bws)
    print(f"copy bandwidth {bw / 1e9:.1f} GB/s (read + write; best of {len(bws)} measurements: "
          f"{', '.join(f'{b / 1e9:.1f}' for b in bws)}); {torch.get_num_threads()} threads; "
          f"numba {fused_cpu.available()}")
    print("| config | method, dtype | MB moved | floor | kernels + tables | / floor | kernels, two passes | / floor | "
          "reference path | / floor | tables: built once, MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for ref, r0, moved, f, t, s, build, mb in rows:
        floor = moved / bw
        print(f"| {Path(ref).name} | {r0.merge_method}, {r0.dtype} | {moved / 1e6:.0f} | {floor * 1e3:.0f} ms | "
              f"{f * 1e3:.0f} ms | {f / floor:.1f}x | {t * 1e3:.0f} ms | {t / floor:.1f}x | {s * 1e3:.0f} ms | "
              f"{s / floor:.0f}x | {build:.1f} s, {mb:.0f} MB |")


if __name__ == "__main__":
    main()
