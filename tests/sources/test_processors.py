"""A VLM processor saved before transformers 4.47 (`patch_size: null`) counts image tokens from config.json, the
same number the model's vision side yields; what config.json cannot tell is refused naming the file."""

from __future__ import annotations

import json
import shutil

import pytest

from evomerge.core.errors import UserError
from evomerge.sources.processors import image_count, image_count_note, load_processor
from helpers import cli

LEGACY = {"image_token": "<image>", "patch_size": None, "processor_class": "LlavaProcessor",
          "vision_feature_select_strategy": None}  # as transformers 4.45.1 saves a processor left at its defaults


def as_legacy(src, dst):
    """`src` with its processor as 4.45.1 saved one: the image processor in preprocessor_config.json."""
    shutil.copytree(src, dst)
    saved = json.loads((dst / "processor_config.json").read_text())
    image = dict(saved.get("image_processor", {}), processor_class="LlavaProcessor")
    (dst / "preprocessor_config.json").write_text(json.dumps(image))
    (dst / "processor_config.json").write_text(json.dumps(LEGACY))
    return dst


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


def test_a_legacy_clip_processor_counts_what_the_model_makes(tiny_llava, tmp_path, capsys):
    """CLIP (a class token) with the `default` strategy (which drops it): 3x3 patches + 1 - 1 = 9 tokens."""
    folder = as_legacy(tiny_llava, tmp_path / "llava")
    assert image_count(folder) == {"patch_size": 10, "vision_feature_select_strategy": "default",
                                   "num_additional_image_tokens": 1}
    lines = []
    processor = load_processor(folder, log=lines.append)
    assert len(lines) == 1 and "processor_config.json has no patch_size" in lines[0] and "patch 10" in lines[0]
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


@pytest.mark.parametrize("vision", [{"model_type": "pixtral", "patch_size": 16}, {"model_type": "clip_vision_model"}])
def test_what_config_json_cannot_tell_is_refused_naming_the_file(tmp_path, vision):
    (tmp_path / "processor_config.json").write_text(json.dumps(LEGACY))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava", "vision_config": vision}))
    with pytest.raises(UserError) as e:
        image_count(tmp_path)
    assert "processor_config.json" in str(e.value) and "set patch_size" in str(e.value)


def test_a_search_and_eval_refuse_such_a_vlm_before_anything_is_written(tiny_llava, tmp_path, vqa_data, capsys):
    import yaml

    folder = as_legacy(tiny_llava, tmp_path / "llava")
    config = json.loads((folder / "config.json").read_text())
    del config["vision_config"]["patch_size"]
    (folder / "config.json").write_text(json.dumps(config))
    cfg = {"merge": {"merge_method": "linear", "models": [{"model": str(folder), "parameters": {"weight": 1.0}}]},
           "genome": {"parameters": ["weight"]}, "budget": {"max_trials": 2}, "device": "cpu",
           "fitness": [{"name": "ja_vg_vqa", "data": str(vqa_data / "vg.jsonl")}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for args in (("search", path, "--run-dir", tmp_path / "run"), ("eval", folder, "--config", path)):
        assert cli(*args) == 2
        err = capsys.readouterr().err
        assert "processor_config.json" in err and "set patch_size" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
