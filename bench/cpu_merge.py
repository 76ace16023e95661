"""`evomerge merge` against `mergekit-yaml` on the CPU, and both against the memory-traffic floor.

    python bench/cpu_merge.py                      # hidden 2048, 24 layers: the 1.2B shape of issue 21 (long)
    python bench/cpu_merge.py --hidden 1024 --layers 8 --methods linear ties   # a quicker look
    python bench/cpu_merge.py --small              # tiny shapes: checks the script itself

It builds its own models (a random Llama base in bf16 safetensors and three fine-tunes = base + small task
vectors), checks correctness first (evomerge's output against mergekit's for the methods without random masks,
to 1e-2 in bf16, where both round their own arithmetic), then runs each tool on each recipe as users run it (a
fresh process, `--device cpu`), one after the other, and reports wall seconds, peak resident memory, and the
ratio to the floor: bytes read (every source tensor once) plus bytes written, over the copy bandwidth of this
machine measured in the same run (a large in-memory copy; the sources sit in the page cache after the first run,
so disk speed is not the floor).

What peak RSS holds: mergekit maps the source files (safetensors' mmap), so every source page it touches counts
in its RSS (file-backed, reclaimable, but resident) for the rest of the merge; evomerge maps one tensor's pages at
a time and unmaps them once that tensor is merged, writes each output tensor out of a reused buffer (O_DIRECT from
a 16 MB staging buffer where the file system allows, so the output does not pass through the page cache either),
so its RSS is the interpreter plus a few tensors, while the same source files sit in the page cache, outside any
process's RSS. Both numbers are what `/usr/bin/time` reports.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

METHODS = ["linear", "task_arithmetic", "ties", "dare_ties", "breadcrumbs", "slerp"]
RANDOM = {"dare_ties"}  # masks from evomerge.core.rng vs torch's generator: outputs differ by design
TIE_ORDER = {"ties", "breadcrumbs"}  # mergekit's sort orders equal bf16 magnitudes its own way (README)


def build_models(root: Path, hidden: int, layers: int, seed: int = 0) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=int(hidden * 2.75) // 64 * 64,
                      num_hidden_layers=layers, num_attention_heads=max(1, hidden // 128),
                      num_key_value_heads=max(1, hidden // 512), max_position_embeddings=2048, dtype="bfloat16",
                      architectures=["LlamaForCausalLM"])
    torch.manual_seed(seed)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(cfg)
    shapes = {n: p.shape for n, p in skeleton.state_dict().items()}
    out = {}
    from safetensors.torch import save_file

    base = {n: (torch.randn(s) * 0.02).to(torch.bfloat16) for n, s in shapes.items()}
    for i, name in enumerate(["base", "a", "b", "c"]):
        folder = root / name
        folder.mkdir(parents=True)
        g = torch.Generator().manual_seed(seed + i)
        state = base if i == 0 else {n: (t.float() + 0.002 * torch.randn(t.shape, generator=g)).to(torch.bfloat16)
                                     for n, t in base.items()}
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        cfg.save_pretrained(str(folder))
        out[name] = folder
    return out


def recipe(method: str, m: dict[str, Path]) -> dict:
    if method == "linear":
        return {"merge_method": "linear", "dtype": "bfloat16", "models": [
            {"model": str(m[k]), "parameters": {"weight": w}} for k, w in (("a", 0.4), ("b", 0.3), ("c", 0.3))]}
    if method == "slerp":
        return {"merge_method": "slerp", "base_model": str(m["base"]), "dtype": "bfloat16",
                "parameters": {"t": 0.4}, "models": [{"model": str(m["base"])}, {"model": str(m["a"])}]}
    per = {"weight": 0.4, "density": 0.5}
    if method == "breadcrumbs":
        per["gamma"] = 0.01
    return {"merge_method": method, "base_model": str(m["base"]), "dtype": "bfloat16", "seed": 0,
            "models": [{"model": str(m["base"])}] + [{"model": str(m[k]), "parameters": dict(per)} for k in "abc"]}


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 2**20  # kB -> GB (ru_maxrss of the largest child so far)


def rss_of(cmd: list[str]) -> tuple[float, float]:
    """Like `run`, measured through /usr/bin/time when present (per process, not the max over children)."""
    if Path("/usr/bin/time").exists():
        with tempfile.NamedTemporaryFile("r") as f:
            t0 = time.perf_counter()
            subprocess.run(["/usr/bin/time", "-f", "%M", "-o", f.name, *cmd], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return time.perf_counter() - t0, int(Path(f.name).read_text().split()[-1]) / 2**20
    return run(cmd)


def copy_bandwidth(gb: float = 1.0) -> float:
    """Bytes read + written per second by a large in-memory copy (the floor's denominator)."""
    x = torch.empty(int(gb * 2**30) // 4, dtype=torch.float32).normal_()
    y = torch.zeros_like(x)  # touched: page faults are not copying
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        y.copy_(x)
        best = min(best, time.perf_counter() - t0)
    return 2 * x.numel() * 4 / best


def write_bandwidth(folder: Path, gb: float = 1.0) -> float:
    """Bytes per second written into a new file: the better of writing through the page cache (as mergekit
    does) and around it with O_DIRECT (as evomerge does where the file system allows), so the floor is the
    strictest either tool could meet."""
    from evomerge.merging.direct_write import SequentialFile

    buf = torch.zeros(64 << 20, dtype=torch.uint8)
    best = 0.0
    for direct in (False, True):
        path = folder / "write-probe"
        os.sync()
        t0 = time.perf_counter()
        f = SequentialFile(path, direct=direct)
        for _ in range(int(gb * 2**30) // buf.numel()):
            f.write(buf)
        f.close()
        best = max(best, gb * 2**30 / (time.perf_counter() - t0))
        path.unlink()
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--small", action="store_true")
    p.add_argument("--repeat", type=int, default=2, help="runs per tool where mergekit takes under a minute")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    if a.small:
        a.hidden, a.layers = 256, 2
    import yaml

    from safetensors import safe_open

    evomerge = [sys.executable, "-m", "evomerge", "merge"]
    mergekit = [str(Path(sys.executable).parent / "mergekit-yaml")]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        root = Path(tmp)
        # numba compiles evomerge's CPU kernels on a machine's first merge and caches them on disk: warm the
        # cache on tiny models, as any earlier use of evomerge would have, so the table times merging
        warm = build_models(root / "warm", 64, 1)
        for method in a.methods:
            (root / f"warm-{method}.yaml").write_text(yaml.safe_dump(recipe(method, warm)))
            subprocess.run([*evomerge, str(root / f"warm-{method}.yaml"), str(root / f"warm-{method}"), "--device",
                            "cpu", "--quiet"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        models = build_models(root / "models", a.hidden, a.layers)
        size = (models["base"] / "model.safetensors").stat().st_size
        probe_gb = 0.125 if a.small else 1.0  # --small checks the script, not the machine
        bw = copy_bandwidth(probe_gb)
        wbw = write_bandwidth(root, probe_gb)
        rows = []
        for method in a.methods:
            r = recipe(method, models)
            (root / f"{method}.yaml").write_text(yaml.safe_dump(r))
            n_read = len({m["model"] for m in r["models"]} | ({r["base_model"]} if "base_model" in r else set()))
            floor = (n_read + 1) * size / bw
            disk_floor = floor + size / wbw  # the output also has to go into a new file
            ours = root / f"ours-{method}"
            theirs = root / f"mk-{method}"
            cmd_ours = [*evomerge, str(root / f"{method}.yaml"), str(ours), "--device", "cpu", "--quiet"]
            cmd_mk = [*mergekit, str(root / f"{method}.yaml"), str(theirs), "--device", "cpu", "--lazy-unpickle",
                      "--no-copy-tokenizer", "--allow-crimes"]
            import shutil

            t_ours = t_mk = float("inf")
            rss_ours = rss_mk = 0.0
            for attempt in range(a.repeat):
                for cmd, out_dir, who in ((cmd_ours, ours, "ours"), (cmd_mk, theirs, "mk")):
                    if who == "mk" and not Path(mergekit[0]).exists():
                        t_mk = rss_mk = float("nan")
                        continue
                    shutil.rmtree(out_dir, ignore_errors=True)
                    os.sync()  # no dirty pages of an earlier run left to flush while this one writes
                    t, rss = rss_of(cmd)
                    if who == "ours":
                        t_ours, rss_ours = min(t_ours, t), max(rss_ours, rss)
                    else:
                        t_mk, rss_mk = min(t_mk, t), max(rss_mk, rss)
                if t_mk > 60:  # the slow merges: one run each says enough
                    break
            err = None
            if method not in RANDOM and theirs.exists():  # correctness before speed
                err, total, count = 0.0, 0.0, 0
                with safe_open(str(next(ours.glob("*.safetensors"))), "pt") as fo, \
                        safe_open(str(next(theirs.glob("*.safetensors"))), "pt") as fm:
                    for name in fo.keys():
                        d = (fo.get_tensor(name).float() - fm.get_tensor(name).float()).abs()
                        err, total, count = max(err, d.max().item()), total + d.sum().item(), count + d.numel()
                # bf16: both round their own arithmetic; TIES and Breadcrumbs also break ties between equal bf16
                # magnitudes their own way (README), which moves a few elements by up to a task-vector entry
                assert total / count < 1e-4 and (method in TIE_ORDER or err < 1e-2), \
                    f"{method}: evomerge and mergekit differ (max {err}, mean {total / count})"
            shutil.rmtree(ours, ignore_errors=True)  # 2.4 GB each at the default shape
            shutil.rmtree(theirs, ignore_errors=True)
            rows.append({"method": method, "evomerge_s": t_ours, "mergekit_s": t_mk, "floor_s": floor,
                         "disk_floor_s": disk_floor,
                         "evomerge_peak_gb": rss_ours, "mergekit_peak_gb": rss_mk, "max_abs_diff": err})
    print(f"\nmodels: Llama hidden {a.hidden}, {a.layers} layers, {size / 2**30:.2f} GiB each in bf16; copy bandwidth "
          f"{bw / 1e9:.1f} GB/s (read + write); new-file write bandwidth {wbw / 1e9:.2f} GB/s (the better of plain "
          f"and O_DIRECT writes); "
          f"{os.cpu_count()} CPU threads; best of {a.repeat} runs where mergekit takes under a minute")
    print("| method | evomerge | mergekit-yaml | mergekit / evomerge | evomerge / memory floor | evomerge / floor with "
          "the write | peak RSS evomerge | peak RSS mergekit |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['evomerge_s']:.1f} s | {r['mergekit_s']:.1f} s | "
              f"{r['mergekit_s'] / r['evomerge_s']:.2f}x | {r['evomerge_s'] / r['floor_s']:.0f}x | "
              f"{r['evomerge_s'] / r['disk_floor_s']:.1f}x | {r['evomerge_peak_gb']:.2f} GB | "
              f"{r['mergekit_peak_gb']:.2f} GB |")
    if a.json:
        a.json.write_text(json.dumps({"hidden": a.hidden, "layers": a.layers, "bandwidth": bw, "write_bandwidth": wbw,
                                   "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
