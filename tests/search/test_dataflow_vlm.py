"""Data-flow merging on a VLM: the path runs through the language model of a LLaVA (model A), taking layers from
a text LLM of the same shape (model B); the vision tower and projector stay A's."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from evomerge.merging.dataflow import DataflowPath, Hop, export_dataflow
from evomerge.runtime.dataflow import HopModel

TARGET = [("a", 0, 1.0), ("a", 2, 1.0), ("b", 1, 1.0), ("a", 3, 1.0)]  # a1 off, b1 on
MIXED = [("a", 0, 1.0), ("a", 1, 1.0), ("b", 1, 0.8), ("b", 2, 1.3), ("a", 1, 0.9), ("a", 3, 1.0)]


@pytest.fixture(scope="module")
def text_b(tmp_path_factory):
    from conftest import build_model

    path = tmp_path_factory.mktemp("dfs_vlm") / "text_b"
    build_model(path, arch="mistral", seed=91)
    return path


@pytest.fixture(scope="module")
def loaded(tiny_llava, text_b):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    a = AutoModelForImageTextToText.from_pretrained(str(tiny_llava), dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(str(text_b), dtype=torch.float32).eval()
    return a, b


@pytest.fixture(scope="module")
def inputs(tiny_llava, vqa_data):
    """Image + question batches as the processor makes them (the image token expands to the patch count)."""
    from PIL import Image
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(str(tiny_llava))
    images = [Image.open(vqa_data / f"img{i}.png").convert("RGB") for i in range(3)]
    return proc(images=images, text=["<image> w3 w4"] * 3, return_tensors="pt")


def path_of(tiny_llava, text_b, hops):
    return DataflowPath(model_a=str(tiny_llava), model_b=str(text_b),
                        hops=[Hop(model=m, layer=i, scale=s) for m, i, s in hops])


def test_identity_path_reproduces_the_vlm_exactly(tiny_llava, text_b, loaded, inputs):
    a, b = loaded
    hop = HopModel(a, b).build(path_of(tiny_llava, text_b, [("a", i, 1.0) for i in range(4)]))
    assert type(hop) is type(a)
    assert hop.model.vision_tower is a.model.vision_tower  # shared, not copied
    assert hop.model.multi_modal_projector is a.model.multi_modal_projector
    with torch.no_grad():
        assert torch.equal(hop(**inputs).logits, a(**inputs).logits)
        kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert torch.equal(hop.generate(**inputs, **kw), a.generate(**inputs, **kw))


def test_path_changes_the_function_and_cache_matches_no_cache(tiny_llava, text_b, loaded, inputs):
    a, b = loaded
    hop = HopModel(a, b).build(path_of(tiny_llava, text_b, MIXED))
    assert hop.config.text_config.num_hidden_layers == len(MIXED)
    with torch.no_grad():
        logits = hop(**inputs).logits
        assert not torch.allclose(logits, a(**inputs).logits, atol=1e-3)
        kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
        cached = hop.generate(**inputs, **kw)
        uncached = hop.generate(**inputs, **kw, use_cache=False)
    assert torch.equal(cached, uncached)  # each hop has its own KV-cache slot


def test_text_model_b_with_other_layer_shape_is_refused(tiny_llava, loaded, tmp_path):
    from transformers import AutoModelForCausalLM

    from conftest import build_model
    from evomerge.core.errors import UserError

    build_model(tmp_path / "wide", arch="mistral", seed=5, hidden=48)
    wide = AutoModelForCausalLM.from_pretrained(str(tmp_path / "wide"))
    with pytest.raises(UserError, match="different layer shapes"):
        HopModel(loaded[0], wide)


@pytest.mark.parametrize("scaled", [False, True])
def test_export_reloads_as_the_vlm_with_processor(tiny_llava, text_b, loaded, inputs, tmp_path, scaled):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    hops = MIXED if scaled else [(m, i, 1.0) for m, i, _ in MIXED]
    path = path_of(tiny_llava, text_b, hops)
    with torch.no_grad():
        expect = HopModel(*loaded).build(path)(**inputs).logits
    export_dataflow(path, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert (out / "processor_config.json").exists()
    assert (out / "modeling_evomerge_dataflow.py").exists() == scaled
    model = AutoModelForImageTextToText.from_pretrained(str(out), trust_remote_code=scaled).eval()
    assert model.config.text_config.num_hidden_layers == len(MIXED)
    reloaded = AutoProcessor.from_pretrained(str(out))(
        images=[__import__("PIL.Image").Image.new("RGB", (4, 4))], text=["<image> w3"], return_tensors="pt")
    assert reloaded["input_ids"].shape[1] > 2  # the exported processor expands the image token
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, expect, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def vlm_target(tiny_llava, text_b, loaded, inputs, tmp_path_factory):
    with torch.no_grad():
        logits = HopModel(*loaded).build(path_of(tiny_llava, text_b, TARGET))(**inputs).logits
    out = tmp_path_factory.mktemp("dfs_vlm_target") / "target.safetensors"
    save_file({"ids": inputs["input_ids"], "pixel_values": inputs["pixel_values"],
               "logits": logits.contiguous()}, str(out))
    return out


def test_dfs_search_on_a_vlm_finds_the_target_path(tiny_llava, text_b, vlm_target, tmp_path):
    from helpers import search

    cfg = {
        "dataflow": {"model_a": str(tiny_llava), "model_b": str(text_b), "repeats": 1, "scales": False},
        "optimizer": {"name": "cma", "seed": 3, "popsize": 8, "sigma0": 0.25},
        "budget": {"max_trials": 80},
        "fitness": [{"name": "fitness_fixtures:LogitsTarget", "target": str(vlm_target)}],
        "device": "cpu",
    }
    best = search(cfg, tmp_path / "run")
    path = DataflowPath.from_yaml(best.recipe)
    assert [(h.model, h.layer) for h in path.hops] == [(m, i) for m, i, _ in TARGET]
    assert best.fitness == pytest.approx(0.0, abs=1e-10)


def test_dfs_on_a_vlm_with_vqa_fitness_exports_and_rescores(tiny_llava, text_b, vqa_data, tmp_path, capsys):
    pytest.importorskip("fugashi")
    import yaml

    from helpers import cli

    cfg = {
        "dataflow": {"model_a": str(tiny_llava), "model_b": str(text_b), "repeats": 1, "scales": True},
        "optimizer": {"name": "cma", "seed": 1, "popsize": 4},
        "budget": {"max_trials": 8},
        "fitness": [{"name": "ja_vg_vqa", "data": str(vqa_data / "vg.jsonl"), "prompt": "<image> {question}",
                     "max_new_tokens": 4, "num_beams": 1, "metric": "rougeL"}],
        "device": "cpu",
    }
    cfg_file = tmp_path / "dfs.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    assert cli("search", cfg_file, "--run-dir", tmp_path / "run", "--quiet") == 0
    assert cli("export", tmp_path / "run", tmp_path / "best", "--quiet") == 0
    capsys.readouterr()
    assert cli("eval", tmp_path / "best", "--config", cfg_file, "--json", "--trust-remote-code") == 0
    scored = json.loads(capsys.readouterr().out)
    from evomerge.search.records.results import run_status

    assert scored["fitness"] == pytest.approx(run_status(tmp_path / "run")["best"]["fitness"], abs=1e-9)
