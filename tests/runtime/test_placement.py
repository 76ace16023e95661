"""Spreading a live model over several devices: the layer split, the module map, and a live merge through a
spread model equal to the single-device one (on CPU the devices are all 'cpu'; the GPU split itself needs
several GPUs, which the test machine does not have)."""

from __future__ import annotations

import pytest
import torch

from evomerge.core.errors import UserError
from evomerge.runtime.placement import layer_blocks, module_device_map, parse_devices


def test_layer_blocks_are_contiguous_and_balanced():
    assert layer_blocks(8, 2) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert layer_blocks(30, 4) == [0] * 8 + [1] * 7 + [2] * 8 + [3] * 7
    assert layer_blocks(3, 4) == [0, 1, 2]
    for n, d in [(32, 3), (7, 2), (1, 3)]:
        b = layer_blocks(n, d)
        assert b == sorted(b) and len(b) == n
        sizes = [b.count(i) for i in set(b)]
        assert max(sizes) - min(sizes) <= 1


def test_gpus_beyond_what_is_visible_is_a_clear_error():
    with pytest.raises(UserError, match="more GPUs"):
        parse_devices(2, available=1)
    assert [str(d) for d in parse_devices(2, available=4)] == ["cuda:0", "cuda:1"]


def test_module_map_for_causal_lm_and_vlm(family, tiny_llava):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    devs = [torch.device("cuda", 0), torch.device("cuda", 1)]
    lm = AutoModelForCausalLM.from_pretrained(str(family["base"]))
    m = module_device_map(lm, devs)
    assert m["model.embed_tokens"] == devs[0] and m["model.norm"] == devs[1] and m["lm_head"] == devs[1]
    assert [m[f"model.layers.{i}"].index for i in range(4)] == [0, 0, 1, 1]
    vlm = AutoModelForImageTextToText.from_pretrained(str(tiny_llava))
    m = module_device_map(vlm, devs)
    assert m["model.vision_tower"] == devs[0] and m["model.multi_modal_projector"] == devs[0]
    assert m["model.language_model.layers.3"] == devs[1] and m["lm_head"] == devs[1]
    assert m["model.language_model.embed_tokens"] == devs[0]


def test_live_merge_through_a_spread_model_equals_single_device(family):
    from evomerge.runtime.live import LiveMerge
    from evomerge.sources.models import ModelPool
    from evomerge.merging.recipe import recipe_from_dict

    recipe = recipe_from_dict({"merge_method": "dare_ties", "base_model": str(family["base"]), "seed": 3,
                               "models": [{"model": str(family["ja"]), "parameters": {"weight": 0.6, "density": 0.5}},
                                          {"model": str(family["math"]), "parameters": {"weight": 0.5, "density": 0.7}}]})
    ids = torch.tensor([[1, 5, 9, 13]])
    with ModelPool() as pool:
        one = LiveMerge(recipe, pool, "cpu")
        two = LiveMerge(recipe, pool, "cpu", devices=[torch.device("cpu"), torch.device("cpu")])
        one.apply(recipe)
        two.apply(recipe)
        with torch.no_grad():
            assert torch.equal(one.model(ids).logits, two.model(ids).logits)
