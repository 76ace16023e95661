"""One family's tiny model, answered by vLLM and by `generate` (run as a script by test_vllm.py, one process per
family, so each engine's memory goes with its process). Prints {"equal": n, "of": m, "texts": [...], "equal_after":
n, "stale_without": {safeguard: n}} as JSON: answers equal on the first push, and again after the weights change in
place (a merge's worth) and are pushed again; for a mixture, how many answers are still equal when the CPU experts'
repacking is left out after a change (none should be).

The tests' family configs with vLLM-sized heads (64: its CPU attention kernels take no smaller) and weights drawn
wide enough (std 0.1) that greedy choices are not near-ties between two engines' float32 rounding."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(arch: str) -> None:
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from conftest import save_tokenizer
    from evomerge.generation.greedy import greedy_generate
    from evomerge.generation.vllm_engine import ENGINE_KEY, SAFEGUARDS, bump
    from families import family_config

    cfg = family_config(arch)
    for key, value in dict(hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=1,
                           max_position_embeddings=256, moe_intermediate_size=128).items():
        if hasattr(cfg, key):
            setattr(cfg, key, value)
    cfg.head_dim = 64
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.1)
    folder = tempfile.mkdtemp()
    save_tokenizer(Path(folder))
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    prompts = [" ".join(f"w{(i * j) % 61}" for i in range(3, 8 + j)) for j in range(1, 9)]

    def change(seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.add_(torch.randn(p.shape, generator=generator) * 0.05)
        bump(model)

    def equal(ours, theirs) -> int:
        return sum(a == b for a, b in zip(ours, theirs))

    theirs = greedy_generate(model, tok, prompts, 16, engine="hf")
    ours = greedy_generate(model, tok, prompts, 16, engine="vllm")
    result = {"equal": equal(ours, theirs), "of": len(prompts), "texts": ours, "stale_without": {}}
    change(1)
    result["equal_after"] = equal(greedy_generate(model, tok, prompts, 16, engine="vllm"),
                                  greedy_generate(model, tok, prompts, 16, engine="hf"))
    engine = model.__dict__.get(ENGINE_KEY)
    if engine is not None and any(n.endswith(".experts.gate_up_proj") for n, _ in model.named_parameters()):
        engine.safeguards = set(SAFEGUARDS) - {"cpu_experts"}
        change(2)
        result["stale_without"]["cpu_experts"] = equal(greedy_generate(model, tok, prompts, 16, engine="vllm"),
                                                       greedy_generate(model, tok, prompts, 16, engine="hf"))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
