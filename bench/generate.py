"""Generation speed for fitness: evomerge's engine vs the floor and plain transformers `generate`.

    python bench/generate.py           # Mistral-7B shapes, bf16, 256 prompts x 128 tokens, 256 new (GPU machine)
    python bench/generate.py --small   # a tiny model on the CPU: checks the script itself

Random weights (speed does not depend on them). Correctness first: a float32 two-layer model must give the
same greedy tokens through the engine and through `generate`; at bf16 on the full model the share of equal
rows is reported (greedy decoding may flip where two logits tie). Then the timed runs, all in this process:
the engine with every row running to the full length, the engine with answers of different lengths (rows end
between 1/8 and all of the budget: finished rows must stop costing), and plain `generate` (dynamic cache, one
batch) for the same work. The floor adds, step by step, the larger of (weights + KV cache read) / bandwidth
and FLOPs / matmul rate, both measured here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evomerge.generation.engine import Engine  # noqa: E402


def config(small: bool, layers: int | None = None):
    from transformers import MistralConfig

    if small:
        return MistralConfig(vocab_size=512, hidden_size=64, intermediate_size=224, num_hidden_layers=layers or 2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                             sliding_window=None)
    return MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=layers or 32, num_attention_heads=32, num_key_value_heads=8,
                         max_position_embeddings=4096, sliding_window=None)


def random_model(cfg, device, dtype):
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02, generator=g)
    model.generation_config.eos_token_id = None  # run to the budget
    model.generation_config.pad_token_id = 0
    return model.eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def hf_generate(model, prompts, max_new, batch):
    out = []
    for i in range(0, len(prompts), batch):
        ids = torch.tensor(prompts[i:i + batch], device=model.device)
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                             num_beams=1, pad_token_id=0, eos_token_id=None, min_new_tokens=max_new)
        out += gen[:, ids.shape[1]:].tolist()
    return out


def rates(device, small: bool) -> tuple[float, float]:
    """Copy bandwidth (bytes read + written per second) and bf16 matmul rate (FLOP/s), measured now."""
    n = 2**30 if not small else 2**22
    a = torch.empty(n, dtype=torch.bfloat16, device=device).normal_()
    b = torch.empty_like(a)
    b.copy_(a)
    bw = 2 * a.numel() * 2 / statistics.median(timed(lambda: b.copy_(a), device) for _ in range(10))
    k = 8192 if not small else 256
    x = torch.randn(k, k, dtype=torch.bfloat16, device=device)
    x @ x
    flops = 2 * k**3 / statistics.median(timed(lambda: x @ x, device) for _ in range(10))
    return bw, flops


def floor_seconds(cfg, n_prompts, prompt_len, lengths, bw, flops) -> float:
    """Prefill FLOPs at the matmul rate, then per decode step max(bytes / bandwidth, FLOPs / rate)."""
    h, L = cfg.hidden_size, cfg.num_hidden_layers
    kv_dim = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    params = L * (2 * h * h + 2 * h * kv_dim + 3 * h * cfg.intermediate_size) + 2 * cfg.vocab_size * h
    weight_bytes = params * 2
    kv_bytes_per_token = L * 2 * kv_dim * 2
    total = 2 * params * n_prompts * prompt_len / flops
    for step in range(max(lengths)):
        active = sum(1 for n in lengths if n > step)
        ctx = prompt_len + step
        mem = weight_bytes + active * ctx * kv_bytes_per_token
        total += max(mem / bw, 2 * params * active / flops)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if a.small:
        a.prompts, a.prompt_len, a.new = min(a.prompts, 24), min(a.prompt_len, 16), min(a.new, 24)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(1)
    cfg = config(a.small)
    prompts = torch.randint(3, cfg.vocab_size, (a.prompts, a.prompt_len), generator=g).tolist()
    results: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}

    # correctness: float32 two-layer model, engine == generate token for token
    small32 = random_model(config(True, 2) if a.small else config(False, 2), device, torch.float32)
    probe = [p[: 8 + i] for i, p in enumerate(prompts[:8])]
    ours = Engine(small32, max_batch=4, sync_every=3).generate(probe, 32)
    ref = [hf_generate(small32, [p], 32, 1)[0] for p in probe]
    results["fp32_exact"] = ours == ref
    print(f"float32 2-layer model: engine == generate on {sum(x == y for x, y in zip(ours, ref))}/8 rows", flush=True)
    del small32

    model = random_model(cfg, device, torch.bfloat16)
    bw, flops = rates(device, a.small)
    results.update(bandwidth_Bps=bw, matmul_flops=flops)
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s, bf16 matmul {flops / 1e12:.0f} TFLOP/s", flush=True)
    engine = Engine(model, max_batch=a.prompts)
    t_warm = timed(lambda: engine.generate(prompts[:4], 4), device)
    ours = engine.generate(prompts[:16], 32)
    ref = hf_generate(model, prompts[:16], 32, 16)
    same = sum(x == y for x, y in zip(ours, ref))
    results["bf16_rows_equal"] = f"{same}/16"
    print(f"bf16 full model: {same}/16 rows equal to generate over 32 tokens (ties may flip)", flush=True)

    n_tok = a.prompts * a.new
    t_full = timed(lambda: engine.generate(prompts, a.new), device)
    floor_full = floor_seconds(cfg, a.prompts, a.prompt_len, [a.new] * a.prompts, bw, flops)
    lengths = torch.randint(a.new // 8, a.new + 1, (a.prompts,), generator=g).tolist()
    t_var = timed(lambda: engine.generate(prompts, lengths), device)
    floor_var = floor_seconds(cfg, a.prompts, a.prompt_len, lengths, bw, flops)
    t_peer = None if a.no_peer else timed(lambda: hf_generate(model, prompts, a.new, a.prompts), device)
    results.update(warmup_s=t_warm, engine_s=t_full, floor_s=floor_full, engine_var_s=t_var, floor_var_s=floor_var,
                   peer_s=t_peer, new_tokens=n_tok, var_tokens=sum(lengths))
    print("\n| case | engine s | tok/s | floor s | x floor | generate s | tok/s | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    peer = f"{t_peer:.2f} | {n_tok / t_peer:,.0f} | {t_peer / t_full:.1f}" if t_peer else "- | - | -"
    print(f"| {a.prompts} x {a.prompt_len} in, {a.new} out | {t_full:.2f} | {n_tok / t_full:,.0f} | {floor_full:.2f} | "
          f"{t_full / floor_full:.2f} | {peer} |")
    peer_var = (f"{t_peer:.2f} | {sum(lengths) / t_peer:,.0f} | {t_peer / t_var:.1f}" if t_peer else "- | - | -")
    print(f"| answers of {a.new // 8}-{a.new} tokens ({sum(lengths)} in all) | {t_var:.2f} | "
          f"{sum(lengths) / t_var:,.0f} | {floor_var:.2f} | {t_var / floor_var:.2f} | {peer_var} |")
    print(f"\nwarm-up (first call, once per search): {t_warm:.2f} s; float32 exact: {results['fp32_exact']}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
