"""Merging the language model inside a LLaVA-style VLM with a text LLM (the EvoVLM-JP recipe shape)."""

from __future__ import annotations

import pytest
import torch

from conftest import build_model, load_state
from evomerge.core.errors import UserError
from evomerge.merging.merge import run_merge
from evomerge.merging.recipe import recipe_from_dict


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

    from evomerge.runtime.live import LiveMerge
    from evomerge.sources.models import ModelPool

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


@pytest.fixture(scope="module")
def qwen_family(tmp_path_factory):
    """Qwen2-VL-style: a text Qwen2 base, a Japanese fine-tune of it, and a Qwen2-VL whose language model is
    another fine-tune. Qwen2-VL checkpoints name the language model exactly as a text Qwen2 does (model.layers...,
    lm_head) and keep the vision tower under `visual.`, so the name mapping is the identity."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from conftest import save_tokenizer, tiny_config

    root = tmp_path_factory.mktemp("qwen2vl")
    base = build_model(root / "base", arch="qwen2", seed=41)
    build_model(root / "ja", arch="qwen2", seed=42, base_state=base)
    text = tiny_config("qwen2").to_dict()
    text["rope_scaling"] = {"type": "mrope", "mrope_section": [1, 1, 2]}
    cfg = Qwen2VLConfig(text_config=text, vision_config=dict(
        depth=1, embed_dim=16, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2,
        temporal_patch_size=2), image_token_id=63, video_token_id=62, vision_start_token_id=61)
    torch.manual_seed(43)
    vlm = Qwen2VLForConditionalGeneration(cfg)
    with torch.no_grad():
        for name, p in vlm.model.language_model.named_parameters():
            p.copy_(base[f"model.{name}"] + 0.02 * torch.randn_like(p))
        vlm.lm_head.weight.copy_(base["lm_head.weight"] + 0.02 * torch.randn_like(vlm.lm_head.weight))
    vlm.save_pretrained(str(root / "vlm"))
    save_tokenizer(root / "vlm")
    return {"base": root / "base", "ja": root / "ja", "vlm": root / "vlm"}


def qwen_image_inputs():
    """One 28x28 image as Qwen2-VL's processor would give it: 4 patches merged into 1 image token."""
    torch.manual_seed(0)
    pixel_values = torch.randn(4, 3 * 2 * 14 * 14)
    ids = torch.tensor([[5, 61, 63, 9, 13, 17]])
    return {"input_ids": ids, "pixel_values": pixel_values, "image_grid_thw": torch.tensor([[1, 2, 2]]),
            "mm_token_type_ids": (ids == 63).long()}


def test_qwen2_vl_language_model_merged_vision_untouched(qwen_family, tmp_path):
    from transformers import AutoModelForImageTextToText

    from evomerge.runtime.live import LiveMerge
    from evomerge.sources.models import ModelPool

    r = recipe(qwen_family)
    run_merge(r, tmp_path / "out", device="cpu", progress=False)
    merged, vlm = load_state(tmp_path / "out"), load_state(qwen_family["vlm"])
    base, ja = load_state(qwen_family["base"]), load_state(qwen_family["ja"])
    assert set(merged) == set(vlm) and any(n.startswith("visual.") for n in vlm)
    for name in vlm:
        if name.startswith("visual."):
            assert torch.equal(merged[name], vlm[name]), name
        else:  # language model: the text-only merge of the same tensors
            expect = base[name] + 0.6 * (vlm[name] - base[name]) + 0.7 * (ja[name] - base[name])
            torch.testing.assert_close(merged[name], expect, rtol=0, atol=1e-6)
    model = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "out")).eval()
    with ModelPool() as pool:  # the live (search) model equals the export
        live = LiveMerge(r, pool, "cpu")
        live.apply(r)
    exported = model.state_dict()
    assert all(torch.equal(live.model.state_dict()[k], exported[k]) for k in exported)
    with torch.no_grad():
        assert torch.isfinite(model(**qwen_image_inputs()).logits).all()


def test_qwen2_vl_data_flow_identity_path_is_exact(qwen_family):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from evomerge.merging.dataflow import DataflowPath, Hop
    from evomerge.runtime.dataflow import HopModel

    a = AutoModelForImageTextToText.from_pretrained(str(qwen_family["vlm"])).eval()
    b = AutoModelForCausalLM.from_pretrained(str(qwen_family["ja"])).eval()
    hops = HopModel(a, b)
    ident = hops.build(DataflowPath(model_a="a", model_b="b", hops=[Hop(model="a", layer=i) for i in range(4)]))
    mixed = hops.build(DataflowPath(model_a="a", model_b="b", hops=[
        Hop(model="a", layer=0), Hop(model="b", layer=1, scale=0.9), Hop(model="a", layer=2), Hop(model="a", layer=3)]))
    inputs = qwen_image_inputs()
    with torch.no_grad():
        assert torch.equal(ident(**inputs).logits, a(**inputs).logits)
        assert not torch.allclose(mixed(**inputs).logits, a(**inputs).logits, atol=1e-4)


def test_a_vlm_stored_under_runtime_names_merges_its_head_too(vlm_family, tmp_path):
    """A LLaVA stored with the loaded model's names (`model.language_model.layers...` and a top-level `lm_head`,
    as a scaled data-flow export writes it): its head is merged like the rest of its language model, not copied."""
    import shutil

    from safetensors.torch import save_file

    runtime = tmp_path / "vlm-runtime"
    shutil.copytree(vlm_family["vlm"], runtime)
    renamed = {}
    for n, t in load_state(vlm_family["vlm"]).items():
        if n.startswith("language_model.model."):
            n = "model.language_model." + n[len("language_model.model."):]
        elif n == "language_model.lm_head.weight":
            n = "lm_head.weight"
        renamed[n] = t
    assert "lm_head.weight" in renamed and any(n.startswith("model.language_model.layers.") for n in renamed)
    for f in runtime.glob("*.safetensors"):
        f.unlink()
    save_file(renamed, str(runtime / "model.safetensors"))
    run_merge(recipe({**vlm_family, "vlm": runtime}), tmp_path / "out", device="cpu", progress=False)
    merged, base, ja = load_state(tmp_path / "out"), load_state(vlm_family["base"]), load_state(vlm_family["ja"])
    head = "lm_head.weight"
    expect = base[head] + 0.6 * (renamed[head] - base[head]) + 0.7 * (ja[head] - base[head])
    torch.testing.assert_close(merged[head], expect, rtol=0, atol=1e-6)
