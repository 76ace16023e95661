"""`evomerge merge` against `mergekit-yaml` on the CPU, and both against the memory-traffic floor.

    python bench/cpu_merge.py                      # hidden 2048, 24 layers: the 1.2B shape of issue 21 (long)
    python bench/cpu_merge.py --hidden 1024 --layers 8 --methods linear ties   # a quicker look
    python bench/cpu_merge.py --small              # tiny shapes: checks the script itself

It builds its own models (a random Llama base in bf16 safetensors and three fine-tunes = base + small task
vectors), checks correctness before it times anything: every tensor of every shard of evomerge's output against
mergekit's, for every method (dare_ties too: mergekit is run in-process once with the masks evomerge draws from the
same seed, each task vector recognised by its content), per tensor, to bf16 rounding (TIES and Breadcrumbs: a
handful of elements may differ where bf16 magnitudes tie or a sign election's sum is near zero); a method that differs is not timed and the script
exits non-zero. Then it runs each tool on each recipe as users run it (a
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

The raw numbers go to bench/json/cpu_merge-<date>.json (or --json PATH); every ratio in bench/RESULTS.md is
computed from such a file (`--table FILE` prints the table of a recorded run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

METHODS = ["linear", "task_arithmetic", "ties", "dare_ties", "breadcrumbs", "slerp"]
RANDOM = {"dare_ties"}  # masks from evomerge.core.rng vs torch's generator: checked with evomerge's masks handed over
# methods that elect a sign or rank magnitudes: mergekit sums and sorts in bf16, so where a sum is near zero or two
# bf16 magnitudes tie, a few elements go the other way (by up to one task-vector entry; README)
TIE_ORDER = {"ties", "breadcrumbs", "dare_ties"}
ATOL = 1e-2  # bf16 rounding of values ~0.02-0.1: both tools round their own float32 arithmetic
TIE_SHARE = 1e-4  # TIES/Breadcrumbs: at most this share of a tensor's elements may differ by more than ATOL
JSON_DIR = Path(__file__).resolve().parent / "json"


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
    p.add_argument("--json", type=Path, help="where the raw numbers go (default: bench/json/cpu_merge-DATE.json)")
    p.add_argument("--table", type=Path, help="print the table of a recorded run's JSON and exit")
    a = p.parse_args()
    if a.table:
        print_table(json.loads(a.table.read_text()))
        return
    if a.small:
        a.hidden, a.layers = 256, 2
    import yaml

    evomerge = [sys.executable, "-m", "evomerge", "merge"]
    mergekit = [str(Path(sys.executable).parent / "mergekit-yaml")]
    if not Path(mergekit[0]).exists():
        sys.exit("mergekit-yaml is not installed next to this Python: pip install mergekit==0.1.5")
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
        recipes = {}
        for method in a.methods:
            recipes[method] = recipe(method, models)
            (root / f"{method}.yaml").write_text(yaml.safe_dump(recipes[method]))
        cmds = {method: ([*evomerge, str(root / f"{method}.yaml"), str(root / f"ours-{method}"), "--device", "cpu",
                          "--quiet"],
                         [*mergekit, str(root / f"{method}.yaml"), str(root / f"mk-{method}"), "--device", "cpu",
                          "--lazy-unpickle", "--no-copy-tokenizer", "--allow-crimes"]) for method in a.methods}
        # 1. correctness before speed: nothing is timed until every method's output equals mergekit's
        checks = {}
        for method in a.methods:
            ours, theirs = root / f"ours-{method}", root / f"mk-{method}"
            subprocess.run(cmds[method][0], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if method in RANDOM:
                mergekit_with_our_masks(recipes[method], models, theirs)
            else:
                subprocess.run(cmds[method][1], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            checks[method] = compare_outputs(ours, theirs, method)
            print(f"check {method}: {checks[method]['tensors']} tensors, max abs diff {checks[method]['max_abs']:.3g}, "
                  f"{checks[method]['elements_over_atol']} elements over {ATOL}: "
                  + ("equal to mergekit" if checks[method]["ok"] else "DIFFERS"), flush=True)
            shutil.rmtree(ours, ignore_errors=True)  # 2.4 GB each at the default shape
            shutil.rmtree(theirs, ignore_errors=True)
        wrong = [m for m, c in checks.items() if not c["ok"]]
        if wrong:
            sys.exit(f"not timed: evomerge's output differs from mergekit's for {', '.join(wrong)}")
        # 2. timing
        probe_gb = 0.125 if a.small else 1.0  # --small checks the script, not the machine
        bw = copy_bandwidth(probe_gb)
        wbw = write_bandwidth(root, probe_gb)
        rows = []
        for method in a.methods:
            r = recipes[method]
            n_read = len({m["model"] for m in r["models"]} | ({r["base_model"]} if "base_model" in r else set()))
            ours, theirs = root / f"ours-{method}", root / f"mk-{method}"
            t_ours = t_mk = float("inf")
            rss_ours = rss_mk = 0.0
            for attempt in range(a.repeat):
                for cmd, out_dir, who in ((cmds[method][0], ours, "ours"), (cmds[method][1], theirs, "mk")):
                    shutil.rmtree(out_dir, ignore_errors=True)
                    os.sync()  # no dirty pages of an earlier run left to flush while this one writes
                    t, rss = rss_of(cmd)
                    if who == "ours":
                        t_ours, rss_ours = min(t_ours, t), max(rss_ours, rss)
                    else:
                        t_mk, rss_mk = min(t_mk, t), max(rss_mk, rss)
                if t_mk > 60:  # the slow merges: one run each says enough
                    break
            shutil.rmtree(ours, ignore_errors=True)
            shutil.rmtree(theirs, ignore_errors=True)
            rows.append({"method": method, "evomerge_s": t_ours, "mergekit_s": t_mk, "sources_read": n_read,
                         "evomerge_peak_gb": rss_ours, "mergekit_peak_gb": rss_mk, "check": checks[method]})
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "hidden": a.hidden,
              "layers": a.layers, "model_bytes": size, "bandwidth": bw, "write_bandwidth": wbw, "repeat": a.repeat,
              "rows": rows}
    path = a.json or JSON_DIR / f"cpu_merge-{time.strftime('%Y%m%d-%H%M')}{'-small' if a.small else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    print_table(record)
    print(f"raw numbers: {path}")


def machine() -> str:
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{cpu}, {os.cpu_count()} threads, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"


def print_table(record: dict) -> None:
    """The RESULTS.md table, every ratio computed here from the recorded numbers."""
    size, bw, wbw = record["model_bytes"], record["bandwidth"], record["write_bandwidth"]
    print(f"\nmodels: Llama hidden {record['hidden']}, {record['layers']} layers, {size / 2**30:.2f} GiB each in "
          f"bf16; copy bandwidth {bw / 1e9:.1f} GB/s (read + write); new-file write bandwidth {wbw / 1e9:.2f} GB/s "
          f"(the better of plain and O_DIRECT writes); {record['machine']}; best of {record['repeat']} runs where "
          f"mergekit takes under a minute; {record['date']}")
    print("| method | evomerge | mergekit-yaml | mergekit / evomerge | memory floor | evomerge / memory floor | "
          "floor with the write | evomerge / floor with the write | peak RSS evomerge | peak RSS mergekit |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in record["rows"]:
        floor = (r["sources_read"] + 1) * size / bw  # every source read once, the output written once
        disk_floor = floor + size / wbw  # and the output into a new file
        print(f"| {r['method']} | {r['evomerge_s']:.1f} s | {r['mergekit_s']:.1f} s | "
              f"{r['mergekit_s'] / r['evomerge_s']:.2f}x | {floor:.3f} s | {r['evomerge_s'] / floor:.1f}x | "
              f"{disk_floor:.2f} s | {r['evomerge_s'] / disk_floor:.1f}x | {r['evomerge_peak_gb']:.2f} GB | "
              f"{r['mergekit_peak_gb']:.2f} GB |")


def _tensor_files(folder: Path) -> dict[str, Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return {name: folder / f for name, f in json.loads(index.read_text())["weight_map"].items()}
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {name: folder / "model.safetensors" for name in f.keys()}


def compare_outputs(ours: Path, theirs: Path, method: str) -> dict:
    """Every tensor of every shard: same names, shapes and dtypes; per tensor, no element further than ATOL (TIES
    and Breadcrumbs: at most TIE_SHARE of the elements) and a mean difference under 1e-4."""
    from safetensors import safe_open

    a, b = _tensor_files(ours), _tensor_files(theirs)
    out = {"tensors": len(a), "max_abs": 0.0, "elements_over_atol": 0, "problems": []}
    if set(a) != set(b):
        out["problems"].append(f"tensor names differ: {sorted(set(a) ^ set(b))[:5]}")
    for name in sorted(set(a) & set(b)):
        with safe_open(str(a[name]), "pt") as fa, safe_open(str(b[name]), "pt") as fb:
            x, y = fa.get_tensor(name), fb.get_tensor(name)
        if x.shape != y.shape or x.dtype != y.dtype:
            out["problems"].append(f"{name}: {list(x.shape)} {x.dtype} vs {list(y.shape)} {y.dtype}")
            continue
        d = (x.float() - y.float()).abs()
        over = int((d > ATOL).sum())
        out["max_abs"] = max(out["max_abs"], float(d.max()))
        out["elements_over_atol"] += over
        allowed = int(TIE_SHARE * d.numel()) if method in TIE_ORDER else 0
        if over > allowed or float(d.mean()) > 1e-4:
            out["problems"].append(f"{name}: {over} elements over {ATOL}, mean {float(d.mean()):.2g}")
    out["ok"] = not out["problems"]
    out["problems"] = out["problems"][:10]
    return out


def mergekit_with_our_masks(r: dict, models: dict[str, Path], out: Path) -> None:
    """mergekit's own merge, in-process, with each DARE mask replaced by the one evomerge draws for the same
    tensor and source from the recipe's seed (evomerge.core.rng), so the two outputs must agree to rounding.
    Task vectors are recognised by their content (model - base, as mergekit computes it)."""
    import hashlib

    import mergekit.merge_methods.generalized_task_arithmetic as gta
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge as mk_run
    from mergekit.options import MergeOptions
    from mergekit.sparsify import SparsificationMethod, rescaled_masked_tensor
    from safetensors import safe_open

    from evomerge.core import rng

    def key(t: torch.Tensor) -> str:
        return hashlib.sha1(t.detach().contiguous().float().numpy().tobytes()).hexdigest()

    order = [str(m["model"]) for m in r["models"]]
    base = str(r["base_model"])
    where = {}  # task vector content -> (tensor name, source position, density)
    with safe_open(str(Path(base) / "model.safetensors"), "pt") as fb:
        for name in fb.keys():
            b = fb.get_tensor(name)
            for i, m in enumerate(order):
                if m == base:
                    continue
                with safe_open(str(Path(m) / "model.safetensors"), "pt") as fm:
                    t = fm.get_tensor(name)
                density = r["models"][i]["parameters"]["density"]
                for delta in (t - b, t.float() - b.float()):  # whichever dtype mergekit subtracts in
                    where[key(delta)] = (name, i, density)
    real = gta.sparsify

    def with_our_masks(tensor, density, method, gamma=0, epsilon=0, rescale_norm=None):
        if method != SparsificationMethod.random or density >= 1 or density <= 0:
            return real(tensor, density=density, method=method, gamma=gamma, epsilon=epsilon,
                        rescale_norm=rescale_norm)
        name, i, d = where[key(tensor)]
        keep = rng.uniform_like(rng.mask_keys(r["seed"], name, i), tensor.shape) < d
        return rescaled_masked_tensor(tensor, keep.to(tensor.dtype), rescale_norm)

    gta.sparsify = with_our_masks
    try:
        config = MergeConfiguration.model_validate(r)
        mk_run(config, str(out), options=MergeOptions(device="cpu", quiet=True, random_seed=0,
                                                      write_model_card=False, lazy_unpickle=True,
                                                      copy_tokenizer=False))
    finally:
        gta.sparsify = real


if __name__ == "__main__":
    main()
