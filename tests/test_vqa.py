"""VQA evaluators on a tiny LLaVA with a real processor and fixture images; a merged VLM exports and reloads
with its processor and generates the same answers."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("fugashi")

from conftest import VOCAB  # noqa: E402
from evomerge.evaluators.vqa import JaVgVqa, JaVgVqaOptions, JaVlmWild, VqaOptions  # noqa: E402

PROMPT = "<image> {question}"


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast)

    from conftest import tiny_config

    root = tmp_path_factory.mktemp("llava") / "llava"
    words = VOCAB + ["<image>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}),
        tokenizer=fast, patch_size=10, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1)
    text = tiny_config("mistral")
    text.vocab_size = len(words)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=30, patch_size=10, projection_dim=16)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=len(words) - 1,
                      vision_feature_select_strategy="default")
    torch.manual_seed(7)
    model = LlavaForConditionalGeneration(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    model.save_pretrained(str(root))
    processor.save_pretrained(str(root))
    return root


@pytest.fixture(scope="module")
def vqa_data(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("vqa")
    rows = []
    for i, color in enumerate([(255, 0, 0), (0, 128, 255), (40, 200, 40)]):
        Image.new("RGB", (40, 36), color).save(root / f"img{i}.png")
        rows.append({"image": f"img{i}.png", "qas": [
            {"question": f"w{i + 1} w{i + 2}", "answer": "赤いりんごがあります"},
            {"question": "w9", "answer": "青い空です"}]})
    (root / "vg.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    flat = [{"image": r["image"], "question": q["question"], "answer": q["answer"]} for r in rows for q in r["qas"]]
    (root / "wild.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in flat))
    return root


def load(folder):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(str(folder)).eval(), AutoProcessor.from_pretrained(str(folder))


def test_first_qa_per_image_by_default(vqa_data):
    first = JaVgVqa(JaVgVqaOptions(data=str(vqa_data / "vg.jsonl")))
    every = JaVgVqa(JaVgVqaOptions(data=str(vqa_data / "vg.jsonl"), all_qas=True))
    assert len(first.items) == 3 and len(every.items) == 6


def test_batched_generation_equals_one_by_one(tiny_llava, vqa_data):
    model, processor = load(tiny_llava)
    opts = dict(data=str(vqa_data / "wild.jsonl"), prompt=PROMPT, max_new_tokens=5, num_beams=2)
    batched = JaVlmWild(VqaOptions(**opts, batch_size=4))
    single = JaVlmWild(VqaOptions(**opts, batch_size=1))
    metrics = batched.evaluate(model, processor)
    assert set(metrics) == {"rougeL", "rougeL_ja"} and all(0 <= v <= 100 for v in metrics.values())
    assert batched.last_predictions == single.generate(model, processor)
    assert any(batched.last_predictions)  # a random model also emits special tokens, which decode to ""


def test_merged_vlm_exports_with_processor_and_same_answers(tiny_llava, vqa_data, tmp_path):
    from evomerge.merge import run_merge
    from evomerge.recipe import recipe_from_dict

    recipe = recipe_from_dict({"merge_method": "passthrough",
                               "slices": [{"sources": [{"model": str(tiny_llava), "layer_range": [0, 4]}]}]})
    run_merge(recipe, tmp_path / "out", device="cpu", progress=False)
    assert (tmp_path / "out" / "processor_config.json").exists()
    ev = JaVgVqa(JaVgVqaOptions(data=str(vqa_data / "vg.jsonl"), prompt=PROMPT, max_new_tokens=5, num_beams=1))
    original = ev.generate(*load(tiny_llava))
    assert ev.generate(*load(tmp_path / "out")) == original


def test_eval_loader_returns_the_processor_for_vlms(tiny_llava):
    from evomerge.scoring import load_for_eval

    model, processor = load_for_eval(str(tiny_llava), "cpu")
    assert type(model).__name__ == "LlavaForConditionalGeneration" and hasattr(processor, "image_processor")
