"""A VLM processor saved before transformers 4.47 (`patch_size: null`) counts image tokens from config.json, the
same number the model's vision side yields; what config.json cannot tell is refused naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evomerge.core.errors import UserError
from evomerge.sources.processors import image_count, image_count_note, load_processor
from helpers import cli

LEGACY = {"image_token": "<image>", "patch_size": None, "processor_class": "LlavaProcessor",
          "vision_feature_select_strategy": None}  # as transformers 4.45.1 saves a processor left at its defaults


def as_legacy(src, dst, before_4_44: bool = False):
    """`src` with its processor as 4.45.1 saved one: the image processor in preprocessor_config.json (and, before
    4.44, no processor_config.json at all)."""
    shutil.copytree(src, dst)
    saved = json.loads((dst / "processor_config.json").read_text())
    image = dict(saved.get("image_processor", {}), processor_class="LlavaProcessor")
    (dst / "preprocessor_config.json").write_text(json.dumps(image))
    (dst / "processor_config.json").write_text(json.dumps(LEGACY))
    if before_4_44:
        (dst / "processor_config.json").unlink()
    return dst


def vqa_search_config(folder, vqa_data, tmp_path):
    """A search config (written to tmp_path/s.yaml) that scores the VLM at `folder` on the tiny VQA data."""
    import yaml

    cfg = {"merge": {"merge_method": "linear", "models": [{"model": str(folder), "parameters": {"weight": 1.0}}]},
           "genome": {"parameters": ["weight"]}, "budget": {"max_trials": 2}, "device": "cpu",
           "fitness": [{"name": "ja_vg_vqa", "data": str(vqa_data / "vg.jsonl")}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def image_tokens_vs_features(folder, processor):
    """(image tokens the processor puts in the prompt, image features the model makes of that image)."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(folder), dtype="float32").eval()
    inputs = processor(images=Image.new("RGB", (40, 36), (200, 30, 30)), text="<image> w1 w2", return_tensors="pt")
    with torch.no_grad():
        features = model.get_image_features(pixel_values=inputs["pixel_values"])
    features = features.pooler_output if hasattr(features, "pooler_output") else features
    n_features = sum(f.shape[0] for f in features) if isinstance(features, (list, tuple)) else features.shape[-2]
    return int((inputs["input_ids"] == model.config.image_token_id).sum()), int(n_features)


@pytest.mark.parametrize("before_4_44", [False, True])
def test_a_legacy_clip_processor_counts_what_the_model_makes(tiny_llava, tmp_path, before_4_44):
    """CLIP (a class token) with the `default` strategy (which drops it): 3x3 patches + 1 - 1 = 9 tokens."""
    folder = as_legacy(tiny_llava, tmp_path / "llava", before_4_44)
    assert image_count(folder) == {"patch_size": 10, "vision_feature_select_strategy": "default",
                                   "num_additional_image_tokens": 1}
    lines = []
    processor = load_processor(folder, log=lines.append)
    assert len(lines) == 1 and "the processor has no patch_size" in lines[0] and "patch 10" in lines[0]
    tokens, features = image_tokens_vs_features(folder, processor)
    assert tokens == features == 9


def test_a_legacy_siglip_processor_counts_what_the_model_makes(tmp_path):
    """Asagi's kind (SigLIP: no class token; `full`), its files as transformers 4.45.1 wrote them."""
    from families import build_asagi, build_family

    text = build_family(tmp_path / "llama", "llama", n_tunes=0)
    folder = build_asagi(tmp_path / "asagi", text["base"])
    assert json.loads((folder / "processor_config.json").read_text())["patch_size"] is None
    assert image_count(folder)["num_additional_image_tokens"] == 0
    tokens, features = image_tokens_vs_features(folder, load_processor(folder))
    assert tokens == features == 9


def test_a_processor_that_counts_by_itself_is_left_alone(tiny_llava):
    assert image_count(tiny_llava) is None and image_count_note(tiny_llava) is None
    processor = load_processor(tiny_llava, log=pytest.fail)  # nothing to say
    assert processor.patch_size == 10 and processor.num_additional_image_tokens == 1


@pytest.mark.parametrize("vision", [{"model_type": "pixtral", "patch_size": 16}, {"patch_size": 14}, None])
def test_what_config_json_cannot_tell_is_refused_naming_the_file(tmp_path, vision):
    (tmp_path / "processor_config.json").write_text(json.dumps(LEGACY))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava", "vision_config": vision}))
    with pytest.raises(UserError) as e:
        image_count(tmp_path)
    assert "processor_config.json" in str(e.value) and "set patch_size" in str(e.value)


def test_a_patch_size_left_out_as_the_default_is_the_default(tmp_path):
    """Configs written before transformers 4.41 keep only what differs from the class defaults."""
    (tmp_path / "processor_config.json").write_text(json.dumps(LEGACY))
    for kind, patch in (("clip_vision_model", 32), ("siglip_vision_model", 16)):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava", "vision_config": {
            "model_type": kind}}))
        assert image_count(tmp_path)["patch_size"] == patch


def test_a_search_and_eval_refuse_such_a_vlm_before_anything_is_written(tiny_llava, tmp_path, vqa_data, capsys):
    folder = as_legacy(tiny_llava, tmp_path / "llava")
    config = json.loads((folder / "config.json").read_text())
    del config["vision_config"]["model_type"]  # transformers reads it as CLIP; evomerge cannot know the tower
    (folder / "config.json").write_text(json.dumps(config))
    path = vqa_search_config(folder, vqa_data, tmp_path)
    for args in (("search", path, "--run-dir", tmp_path / "run"), ("eval", folder, "--config", path)):
        assert cli(*args) == 2
        err = capsys.readouterr().err
        assert "processor_config.json" in err and "set patch_size" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_legacy_llava_next_processor_counts_what_the_model_makes(tmp_path):
    """LLaVA-NeXT (EvoVLM-JP's kind): its count also depends on the image's shape (tiles + newline tokens); the
    model accepts the prompt only when the processor's count equals its features, for each shape."""
    import torch
    from PIL import Image
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import (AutoModelForImageTextToText, CLIPVisionConfig, LlavaNextConfig,
                              LlavaNextForConditionalGeneration, LlavaNextImageProcessor, LlavaNextProcessor,
                              PreTrainedTokenizerFast)

    from conftest import VOCAB, tiny_config

    words = VOCAB + ["<image>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>")
    fast.add_tokens([AddedToken("<image>", special=True, normalized=False)])
    text = tiny_config("mistral")
    text.vocab_size = len(words)
    grid = [[30, 30], [30, 60]]
    config = LlavaNextConfig(vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32,
                                                            num_hidden_layers=2, num_attention_heads=2,
                                                            image_size=30, patch_size=10, projection_dim=16),
                             text_config=text, image_token_index=len(words) - 1, image_grid_pinpoints=grid,
                             vision_feature_select_strategy="default")
    src = tmp_path / "next"
    LlavaNextForConditionalGeneration(config).save_pretrained(str(src))
    LlavaNextProcessor(image_processor=LlavaNextImageProcessor(
        size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}, image_grid_pinpoints=grid),
        tokenizer=fast).save_pretrained(str(src))
    folder = as_legacy(src, tmp_path / "legacy")
    for name in ("processor_config.json", "preprocessor_config.json"):
        saved = json.loads((folder / name).read_text())
        saved["processor_class"] = "LlavaNextProcessor"
        (folder / name).write_text(json.dumps(saved))
    assert image_count(folder)["num_additional_image_tokens"] == 1
    processor = load_processor(folder)
    model = AutoModelForImageTextToText.from_pretrained(str(folder)).eval()
    counts = []
    for size in [(40, 36), (30, 70)]:
        inputs = processor(images=Image.new("RGB", size, (200, 30, 30)), text="<image> w1 w2", return_tensors="pt")
        counts.append(int((inputs["input_ids"] == model.config.image_token_id).sum()))
        with torch.no_grad():
            assert torch.isfinite(model(**inputs).logits).all()  # transformers refuses a count that is off
    assert counts[0] != counts[1]  # the shape matters, and each was right


def test_a_llava_saved_by_transformers_4_38_scores_as_4_38_runs_it(tmp_path, capsys):
    """EvoVLM-JP-v1-7B's kind: saved by 4.38.2, no processor_config.json, the model expanding `<image>` itself.
    Scored by evomerge (transformers 5, the processor's count filled from config.json), it gives the logits 4.38.2
    gave (tests/data/llava_4_38/make.py wrote the model and them)."""
    import torch
    from PIL import Image

    from evomerge.sources.loading import load_for_eval

    folder = tmp_path / "evovlm-like"
    shutil.copytree(Path(__file__).parent.parent / "data" / "llava_4_38", folder)
    assert not (folder / "processor_config.json").exists()
    reference = json.loads((folder / "reference.json").read_text())
    assert reference["transformers"] == "4.38.2" and reference["input_ids"].count(32) == 1  # one <image>, then
    model, processor = load_for_eval(str(folder), "cpu", "float32")
    assert "the processor has no patch_size" in capsys.readouterr().err
    inputs = processor(text=reference["prompt"], images=Image.new("RGB", (40, 36), tuple(reference["color"])),
                       return_tensors="pt")
    assert inputs["input_ids"][0].tolist().count(32) == 9  # 3x3 patches (+ CLIP's class token, dropped)
    with torch.no_grad():
        logits = model(**inputs).logits[0, -len(reference["logits"]):]
    torch.testing.assert_close(logits, torch.tensor(reference["logits"]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("content, expected", [
    ('{"patch_size": 10,', "not valid JSON"),
    ('[{"patch_size": 10}]', "must hold a JSON object, not a list"),
    ('{"patch_size": 0}', "patch_size must be a positive integer or null, got 0"),
    ('{"patch_size": -5}', "patch_size must be a positive integer or null, got -5"),
    ('{"patch_size": "10"}', "patch_size must be a positive integer or null, got '10'"),
    ('{"patch_size": 10, "num_additional_image_tokens": -1}', "num_additional_image_tokens must be an integer >= 0"),
    ('{"patch_size": 10, "vision_feature_select_strategy": "cls"}', "vision_feature_select_strategy must be one of"),
], ids=["invalid-json", "a-list", "patch-0", "patch-negative", "patch-string", "extra-negative", "strategy"])
def test_a_broken_processor_file_is_refused_naming_it_before_anything_is_written(tiny_llava, tmp_path, vqa_data,
                                                                                 capsys, content, expected):
    """Each of these used to print a wrong note, crash with a traceback, or fail every trial of a search (and
    leave the run folder): refused up front by search and eval, one line naming processor_config.json."""

    folder = tmp_path / "llava"
    shutil.copytree(tiny_llava, folder)
    saved = json.loads((folder / "processor_config.json").read_text())
    (folder / "processor_config.json").write_text(content)
    assert saved.get("patch_size") == 10  # the tiny LLaVA's own, which these break
    path = vqa_search_config(folder, vqa_data, tmp_path)
    for args in (("search", path, "--run-dir", tmp_path / "run"), ("eval", folder, "--config", path)):
        assert cli(*args) == 2
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and "processor_config.json" in lines[0] and expected in lines[0], err
        assert "Traceback" not in err and "saved before" not in err
    assert not (tmp_path / "run").exists()


def test_a_processor_transformers_cannot_load_is_refused_by_a_search_naming_it(tiny_llava, tmp_path, vqa_data,
                                                                               capsys):
    """The live model used to fall back to the tokenizer silently, and every VQA trial then failed."""

    folder = tmp_path / "llava"
    shutil.copytree(tiny_llava, folder)
    saved = json.loads((folder / "processor_config.json").read_text())
    saved["image_processor"]["image_processor_type"] = "NoSuchImageProcessor"
    (folder / "processor_config.json").write_text(json.dumps(saved))
    path = vqa_search_config(folder, vqa_data, tmp_path)
    assert cli("search", path, "--run-dir", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "cannot load the processor" in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()
