"""`evomerge doctor`: what this machine will do with a search, checked rather than assumed.

It reports the devices and dtypes, Triton, which fast paths apply to a config (the fused merge kernels for its
merge method, the generation engine for its models), runs the GPU path's self-check on a small random model of
the config's architecture (fused kernels against the reference merge, the engine against `generate`), and a short
speed probe (merge throughput against this device's copy bandwidth; engine tokens/s against `generate`). On a
CPU-only machine it says what it checked and what it could not.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _row(rows: list, check: str, result: str, detail: str = "") -> None:
    rows.append({"check": check, "result": result, "detail": detail})


def _timed(fn, device: torch.device, repeat: int = 3) -> float:
    fn()  # warm-up: compilation, allocation
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def tiny_family(root: Path, config: Any | None, seed: int = 0) -> dict[str, Path]:
    """A base and two fine-tunes of a small random model of `config`'s architecture (2 layers, hidden 64), with
    a word-level tokenizer: enough to run every fast path the real model would take."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    from evomerge.core.architecture import text_config

    vocab = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(125)]
    if config is not None:
        cfg = text_config(config).__class__.from_dict(text_config(config).to_dict())
    else:
        cfg = LlamaConfig()
    for key, value in {"vocab_size": len(vocab), "hidden_size": 64, "intermediate_size": 128,
                       "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                       "head_dim": 16, "max_position_embeddings": 256, "bos_token_id": 1, "eos_token_id": 2,
                       "pad_token_id": 0, "tie_word_embeddings": False, "layer_types": None}.items():
        if hasattr(cfg, key) or key in ("head_dim",):
            setattr(cfg, key, value)
    if getattr(cfg, "layer_types", 0) is None:
        delattr(cfg, "layer_types") if "layer_types" in cfg.__dict__ else None
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>")
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in base.parameters():
            p.normal_(0, 0.1 if p.dim() > 1 else 0.05).add_(1.0 if p.dim() == 1 else 0.0)
    out = {}
    for i, name in enumerate(["base", "a", "b"]):
        model = base
        if i:
            model = AutoModelForCausalLM.from_config(cfg)
            with torch.no_grad():
                for (_, p), (_, q) in zip(model.named_parameters(), base.named_parameters()):
                    p.copy_(q + 0.02 * torch.randn_like(q))
        model.save_pretrained(str(root / name))
        fast.save_pretrained(str(root / name))
        out[name] = root / name
    return out


def diagnose(config_path: str | None = None, device: str = "auto", speed: bool = True) -> dict[str, Any]:
    """Every check, as rows of (check, result, detail), plus what could not be checked here."""
    from transformers.utils import logging as hf_logging

    from evomerge.core.devices import pick_device
    from evomerge.merging import fused_gpu as fused_kernels

    hf_logging.disable_progress_bar()  # transformers' bars would break the table
    rows: list[dict[str, str]] = []
    dev = pick_device(device, "--device")
    gpu = dev.type == "cuda"
    _row(rows, "torch", torch.__version__, f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build")
    if gpu:
        props = torch.cuda.get_device_properties(dev)
        _row(rows, "device", f"{dev}: {props.name}",
             f"compute capability {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB, "
             f"{torch.cuda.device_count()} GPU(s)")
        _row(rows, "bfloat16", "yes" if torch.cuda.is_bf16_supported() else "no", "")
    else:
        import os

        _row(rows, "device", "cpu", f"{os.cpu_count()} cores; no CUDA GPU: fused kernels and the engine's speed "
             "are GPU features")
    _row(rows, "triton", getattr(fused_kernels.triton, "__version__", "not installed"),
         "fused merge kernels available" if fused_kernels.available() else "pip install triton for fused merges")

    config, method, donor_cfg = None, None, None
    if config_path:
        from evomerge.sources.models import ModelPool
        from evomerge.search.config import load_search_config

        config = load_search_config(config_path)
        with ModelPool() as pool:
            if config.merge is not None:
                template = config.template(config_path)
                from evomerge.merging.methods import get_method

                method = get_method(template.merge_method)
                donor_cfg = pool.get(template.base_model or template.models[0].model).config
            else:
                donor_cfg = pool.get(config.dataflow.model_a).config
        fusable = method is not None and method.fused is not None and method.fused.gpu
        _row(rows, "fast path: fused merge", "applies" if fusable and gpu else "does not apply",
             (f"{method.name} has a fused form" if fusable else
              f"{method.name if method else 'a data-flow search'} merges on the reference path")
             + ("" if gpu else "; fused kernels run on GPUs only"))
        from evomerge.generation.engine import FAMILY

        mtype = getattr(donor_cfg, "model_type", None)
        generative = any(e.name == "mgsm_ja" for e in config.fitness)
        engine_ok = mtype in FAMILY
        _row(rows, "fast path: generation engine",
             "applies" if engine_ok and gpu and generative else "does not apply",
             f"model type {mtype}" + ("" if engine_ok else " is not in the Llama family")
             + ("" if generative else "; the fitness does not generate") + ("" if gpu else "; GPU only by default"))

    with tempfile.TemporaryDirectory() as tmp:
        family = tiny_family(Path(tmp), donor_cfg)
        _self_check_rows(rows, family, method, dev, gpu)
        if speed:
            _speed_rows(rows, family, dev, gpu)
    return {"rows": rows, "device": str(dev)}


def _self_check_rows(rows, family, method, dev, gpu) -> None:
    from evomerge.sources.models import ModelPool
    from evomerge.merging.recipe import recipe_from_dict
    from evomerge.merging import fused_gpu as fused_kernels
    from evomerge.runtime.live import LiveMerge

    name = method.name if method is not None and method.fused is not None and method.fused.gpu else "dare_ties"
    per = {"weight": 0.6} if name in ("linear", "task_arithmetic") else {"weight": 0.6, "density": 0.5}
    if name == "slerp":
        recipe = recipe_from_dict({"merge_method": "slerp", "base_model": str(family["base"]), "parameters":
                                   {"t": 0.3}, "models": [{"model": str(family["base"])}, {"model": str(family["a"])}]})
    else:
        base = {} if name == "linear" else {"base_model": str(family["base"])}
        recipe = recipe_from_dict({"merge_method": name, **base, "seed": 1, "models": [
            {"model": str(family["a"]), "parameters": per}, {"model": str(family["b"]), "parameters": per}]})
    if not fused_kernels.available():
        _row(rows, "self-check: fused merge", "not run", "Triton is not installed")
    elif not gpu:
        _row(rows, "self-check: fused merge", "not run", "no GPU here (the suite runs the kernels in Triton's "
             "interpreter and compiles them for sm_90 and sm_80)")
    else:
        with ModelPool() as pool:
            live = LiveMerge(recipe, pool, str(dev), fused=True)
            t0 = time.perf_counter()
            why = live.check_fused(recipe)
        _row(rows, "self-check: fused merge", "ok" if why is None else "FAILED",
             (f"{name}: every tensor equals the reference merge ({time.perf_counter() - t0:.2f}s)"
              if why is None else why))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.generation.greedy import check_engine

    model = AutoModelForCausalLM.from_pretrained(str(family["a"]), dtype=torch.float32).to(dev).eval()
    tok = AutoTokenizer.from_pretrained(str(family["a"]))
    prompts = [" ".join(f"w{(7 * i + j) % 120 + 3}" for j in range(5 + i)) for i in range(4)]
    why = check_engine(model, tok, prompts, 24, [], engine="fast", n=4)
    _row(rows, "self-check: generation engine", "ok" if why is None else "FAILED",
         "greedy answers equal generate's on 4 prompts (float32)" if why is None else why)


def _speed_rows(rows, family, dev, gpu) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.generation.greedy import fast_generate, greedy_generate
    from evomerge.merging.methods import get_method
    from evomerge.merging.kernels import merge_into
    from evomerge.merging.plan import MergePlan, TensorTask

    n = (64 << 20) if gpu else (8 << 20)  # elements per source: past the caches
    g = torch.Generator(device="cpu").manual_seed(0)
    srcs = [torch.randn(n, generator=g).to(dev) for _ in range(3)]
    copy_s = _timed(lambda: srcs[0].clone(), dev)
    copy_gbs = 2 * n * 4 / copy_s / 1e9  # read + write
    task = TensorTask("probe", [("m0", "t"), ("m1", "t"), ("m2", "t")], 0,
                      {"normalize": False, "rescale": True, "lambda": 1.0, "int8_mask": False},
                      [{}, {"weight": 0.5, "density": 0.5}, {"weight": 0.5, "density": 0.5}])
    plan = MergePlan(get_method("dare_ties"), [task], [], "m0", None)
    lookup = dict(zip(task.inputs, srcs))
    out = torch.empty_like(srcs[0])
    if gpu:
        from evomerge.merging.fused_gpu import FusedMerger

        merger, flag = FusedMerger(None), torch.zeros(1, dtype=torch.int32, device=dev)
        merge_s = _timed(lambda: merger.merge_into("dare_ties", task, srcs, out, 1, flag), dev)
        path = "fused kernels"
    else:
        from evomerge.merging import fused_cpu

        fetch = lambda m, t: lookup[(m, t)]  # noqa: E731
        merge_s = _timed(lambda: merge_into(plan, task, fetch, 1, out), dev)
        path = "CPU kernels" if fused_cpu.available() else "reference path"
    floor_bytes = 4 * n * 4  # three sources read, one output written, float32
    _row(rows, "speed: merge (dare_ties, 3 x %d MiB)" % (n * 4 >> 20), f"{floor_bytes / merge_s / 1e9:.1f} GB/s",
         f"{path}; copy bandwidth {copy_gbs:.1f} GB/s, so {merge_s / (floor_bytes / (copy_gbs * 1e9)):.1f}x "
         "the memory-traffic floor")
    model = AutoModelForCausalLM.from_pretrained(str(family["a"]), dtype=torch.float32).to(dev).eval()
    tok = AutoTokenizer.from_pretrained(str(family["a"]))
    prompts = [" ".join(f"w{(5 * i + j) % 120 + 3}" for j in range(8)) for i in range(16)]
    new = 32
    hf_s = _timed(lambda: greedy_generate(model, tok, prompts, new, [], batch_size=16, engine="hf"), dev, 1)
    fast_s = _timed(lambda: fast_generate(model, tok, prompts, new, [], 16), dev, 1)
    _row(rows, "speed: generation (16 x 32 new tokens)", f"{16 * new / fast_s:.0f} tokens/s engine",
         f"generate: {16 * new / hf_s:.0f} tokens/s ({hf_s / fast_s:.2f}x); a 2-layer model measures overheads, "
         "not the real model's speed")


def render(report: dict[str, Any]) -> str:
    rows = report["rows"]
    w1 = max(len(r["check"]) for r in rows)
    w2 = max(len(r["result"]) for r in rows)
    return "\n".join(f"{r['check']:<{w1}}  {r['result']:<{w2}}  {r['detail']}".rstrip() for r in rows)
