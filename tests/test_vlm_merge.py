"""Merging the language model inside a LLaVA-style VLM with a text LLM (the EvoVLM-JP recipe shape)."""

from __future__ import annotations

import pytest
import torch

from conftest import build_model, load_state
from evomerge.errors import UserError
from evomerge.merge import run_merge
from evomerge.recipe import recipe_from_dict


@pytest.fixture(scope="module", params=["llava", "llava_next"])
def vlm_family(request, tmp_path_factory):
    """A text Mistral base, a Japanese text fine-tune of it, and a LLaVA (or LLaVA-NeXT) whose language model is
    another fine-tune of it."""
    from transformers import (CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig,
                              LlavaNextForConditionalGeneration)

    from conftest import tiny_config

    root = tmp_path_factory.mktemp(request.param)
    base = build_model(root / "base", arch="mistral", seed=31)
    build_model(root / "ja", arch="mistral", seed=32, base_state=base)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=30, patch_size=10, projection_dim=16)
    if request.param == "llava":
        vlm = LlavaForConditionalGeneration(
            LlavaConfig(vision_config=vision, text_config=tiny_config("mistral"), image_token_index=63))
    else:
        vlm = LlavaNextForConditionalGeneration(LlavaNextConfig(
            vision_config=vision, text_config=tiny_config("mistral"), image_token_index=63,
            image_grid_pinpoints=[[30, 30], [30, 60]]))
    torch.manual_seed(33)
    with torch.no_grad():
        lm = vlm.model.language_model
        for name, p in lm.named_parameters():
            p.copy_(base[f"model.{name}"] + 0.02 * torch.randn_like(p))
        vlm.lm_head.weight.copy_(base["lm_head.weight"] + 0.02 * torch.randn_like(vlm.lm_head.weight))
    vlm.save_pretrained(str(root / "vlm"))
    from conftest import save_tokenizer

    save_tokenizer(root / "vlm")
    return {"base": root / "base", "ja": root / "ja", "vlm": root / "vlm"}


def recipe(f, **extra):
    return recipe_from_dict({
        "merge_method": "task_arithmetic", "base_model": str(f["base"]),
        "models": [{"model": str(f["vlm"]), "parameters": {"weight": 0.6}},
                   {"model": str(f["ja"]), "parameters": {"weight": 0.7}}], **extra})


def test_language_model_merged_vision_untouched(vlm_family, tmp_path):
    from transformers import AutoModelForImageTextToText

    run_merge(recipe(vlm_family), tmp_path / "out", device="cpu", progress=False)
    merged, vlm = load_state(tmp_path / "out"), load_state(vlm_family["vlm"])
    base, ja = load_state(vlm_family["base"]), load_state(vlm_family["ja"])
    assert set(merged) == set(vlm)  # the output is the VLM's architecture
    for name in vlm:
        if not name.startswith("language_model."):
            assert torch.equal(merged[name], vlm[name]), name  # vision tower and projector unchanged
    # language-model tensors equal a text-only merge of the same tensors
    for text_name in ["model.layers.1.mlp.up_proj.weight", "model.embed_tokens.weight", "model.norm.weight",
                      "lm_head.weight"]:
        v = vlm["language_model." + text_name]
        expect = base[text_name] + 0.6 * (v - base[text_name]) + 0.7 * (ja[text_name] - base[text_name])
        torch.testing.assert_close(merged["language_model." + text_name], expect, rtol=0, atol=1e-6)
    model = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "out"))
    assert model.config.text_config.num_hidden_layers == 4
    assert type(model).__name__.startswith("Llava")
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1, 5, 9]]))
    assert torch.isfinite(out.logits).all()


def test_mismatched_language_model_is_a_clear_error(vlm_family, tmp_path):
    build_model(tmp_path / "wide", arch="mistral", seed=5, hidden=48)
    bad = recipe_from_dict({"merge_method": "task_arithmetic", "base_model": str(vlm_family["base"]),
                            "models": [{"model": str(vlm_family["vlm"]), "parameters": {"weight": 1}},
                                       {"model": str(tmp_path / "wide"), "parameters": {"weight": 1}}]})
    with pytest.raises(UserError, match="shapes differ"):
        run_merge(bad, tmp_path / "out", device="cpu", progress=False)
    assert not (tmp_path / "out").exists()


def test_live_vlm_merge_equals_the_exported_merge(vlm_family, tmp_path):
    """A VLM candidate merged in place (as searches do) has exactly the exported model's weights."""
    from transformers import AutoModelForImageTextToText

    from evomerge.live import LiveMerge
    from evomerge.models import ModelPool

    r = recipe(vlm_family)
    with ModelPool() as pool:
        live = LiveMerge(r, pool, "cpu")
        live.apply(r)
        run_merge(r, tmp_path / "out", device="cpu", progress=False)
        exported_model = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "out"))
        assert type(live.model) is type(exported_model)
        exported = exported_model.state_dict()
        ours = live.model.state_dict()
        assert set(ours) == set(exported)
        assert all(torch.equal(ours[k], exported[k]) for k in exported)
