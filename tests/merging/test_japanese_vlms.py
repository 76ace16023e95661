"""The seeds' Japanese VLMs: their language model merges with text LLMs of the same shape, the vision parts are
copied unchanged, and the output is laid out (and so loads) as the original. llava-jp: a GPT-2 llm-jp LM beside
`model.vision_tower` / `model.mm_projector`, under a config transformers does not build (`model_type: llava` with
GPT-2 fields); a search over it is refused up front, saying what would make it searchable. Asagi: an llm-jp-3
(Llama) LM and a SigLIP tower in transformers' older LLaVA layout, with its own modeling code (auto_map), its
files as transformers 4.45.1 (the version its card pins) writes them: merged, searched with a VQA fitness,
exported with its code. MiniGPT-4's LM is an ordinary Llama checkpoint (merged as any Llama,
tests/merging/test_families.py); its vision side is not in the Hugging Face format."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import load_state
from families import ASAGI_CODE, build_asagi, build_family, build_llava_jp, ties_recipe as recipe
from helpers import cli
from mergekit_reference import run_ours


@pytest.fixture(scope="module")
def llava_jp(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava-jp")
    text = build_family(root / "gpt2", "gpt2")  # base, ft0, ft1: llm-jp-like GPT-2 LMs
    return {**text, "vlm": build_llava_jp(root / "llava-jp", text["ft0"])}


def test_llava_jp_language_model_merges_and_vision_is_copied(llava_jp, tmp_path):
    merged = run_ours(recipe(llava_jp, "vlm"), tmp_path / "vlm-merge")
    text_only = run_ours(recipe(llava_jp, "ft0"), tmp_path / "text-merge")  # the same LM, without a vision side
    vlm = load_state(llava_jp["vlm"])
    vision = {n for n in vlm if n.startswith("model.")}
    assert len(vision) > 10 and set(merged) == set(vlm)  # every tensor, under llava-jp's own names
    for name in vision:
        assert (merged[name] == vlm[name]).all(), name  # copied unchanged
    for name, t in text_only.items():  # the LM merges exactly as its text twin does (mergekit-equal for GPT-2)
        assert (merged[name] == t).all(), name
    assert not (merged["transformer.h.0.attn.c_attn.weight"] == vlm["transformer.h.0.attn.c_attn.weight"]).all()
    config = json.loads((tmp_path / "vlm-merge" / "config.json").read_text())
    original = json.loads((llava_jp["vlm"] / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaGpt2ForCausalLM"]
    assert {k: v for k, v in config.items() if k not in ("dtype", "torch_dtype", "transformers_version")} == \
        {k: v for k, v in original.items() if k not in ("dtype", "torch_dtype", "transformers_version")}


def _search_config(tmp_path, space: dict):
    """A perplexity search config over `space` (merge + genome, or dataflow), written to tmp_path/s.yaml."""
    text = tmp_path / "t.txt"
    text.write_text(" ".join(f"w{i % 61}" for i in range(100)))
    cfg = {**space, "optimizer": {"name": "cma", "seed": 0, "popsize": 3}, "budget": {"max_trials": 3},
           "fitness": [{"name": "perplexity", "data": str(text), "max_length": 16}], "device": "cpu"}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_search_over_llava_jp_is_refused_saying_what_it_needs(llava_jp, tmp_path, capsys):
    path = _search_config(tmp_path, {"merge": yaml.safe_load(recipe(llava_jp, "vlm")),
                                     "genome": {"parameters": ["weight"]}})
    assert cli("search", path, "--run-dir", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "transformers cannot build" in err and "auto_map" in err
    assert not (tmp_path / "run").exists()
    assert cli("eval", llava_jp["vlm"], "--config", path) == 2  # scoring it alone: the same refusal
    assert "transformers cannot build" in capsys.readouterr().err


def test_a_data_flow_search_over_llava_jp_gives_the_same_refusal(llava_jp, tmp_path, capsys):
    """It used to say "cannot find the 32 decoder layers the config announces" (LlavaConfig's default text config,
    reached through llava-jp's `model_type: llava`) on a model whose config says 3."""
    for a, b in ((llava_jp["vlm"], llava_jp["ft0"]), (llava_jp["ft0"], llava_jp["vlm"])):
        path = _search_config(tmp_path, {"dataflow": {"model_a": str(a), "model_b": str(b), "repeats": 1}})
        assert cli("search", path, "--run-dir", tmp_path / "run") == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "transformers cannot build" in err and "auto_map" in err, err
        assert "32 decoder layers" not in err and str(llava_jp["vlm"]) in err
        assert not (tmp_path / "run").exists()


def test_a_minigpt4_checkpoint_is_refused_saying_to_merge_its_language_model(tmp_path, capsys):
    """MiniGPT-4 ships its projection as a pickled .pth beside an ordinary Llama LM (never unpickled here)."""
    folder = tmp_path / "minigpt4"
    folder.mkdir()
    (folder / "pretrained_minigpt4_llama2_7b.pth").write_bytes(b"not read")
    (folder / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 2}')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"merge_method: linear\nmodels:\n  - {{model: {folder}, parameters: {{weight: 1.0}}}}\n")
    assert cli("merge", recipe, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "MiniGPT-4" in err and "merge its language model" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def asagi(tmp_path_factory):
    root = tmp_path_factory.mktemp("asagi")
    text = build_family(root / "llama", "llama")  # base, ft0, ft1: llm-jp-3-like Llama LMs
    return {**text, "vlm": build_asagi(root / "asagi", text["ft0"])}


def test_asagi_language_model_merges_vision_is_copied_and_it_loads_with_its_own_code(asagi, tmp_path):
    from transformers import AutoModel

    merged = run_ours(recipe(asagi, "vlm"), tmp_path / "vlm-merge")
    text_only = run_ours(recipe(asagi, "ft0"), tmp_path / "text-merge")  # the same LM, without a vision side
    vlm = load_state(asagi["vlm"])
    assert set(merged) == set(vlm)  # every tensor, under Asagi's own (older LLaVA) names
    vision = [n for n in vlm if not n.startswith("language_model.")]
    assert any(n.startswith("vision_tower.vision_model.") for n in vision)
    assert any(n.startswith("multi_modal_projector.") for n in vision)
    for name in vision:
        assert (merged[name] == vlm[name]).all(), name  # copied unchanged
    for name, t in text_only.items():  # the LM merges exactly as its text twin does (mergekit-equal for Llama)
        assert (merged["language_model." + name] == t).all(), name
    out = tmp_path / "vlm-merge"
    config = json.loads((out / "config.json").read_text())
    original = json.loads((asagi["vlm"] / "config.json").read_text())
    assert config["auto_map"] == original["auto_map"]
    for name, code in ASAGI_CODE.items():  # its own code travels with it
        assert (out / name).read_text() == code
    model = AutoModel.from_pretrained(str(out), trust_remote_code=True, dtype="float32")  # as Asagi is loaded
    assert type(model).__module__.startswith("transformers_modules.")
    state = model.state_dict()
    assert (state["model.language_model.layers.1.mlp.up_proj.weight"]
            == merged["language_model.model.layers.1.mlp.up_proj.weight"]).all()


def test_a_merged_asagi_scores_in_evomerge_as_transformers_4_45_runs_it(asagi, tmp_path, capsys):
    """What a search scores (transformers 5's LLaVA class, `<image>` expanded by the processor whose count comes
    from config.json) equals what Asagi's users run: transformers 4.45.1 with the export's own code, `<image>`
    expanded by the model (logits recorded by tests/data/llava_4_45/cross_version.py from the same merge)."""
    import torch
    from PIL import Image

    from evomerge.sources.loading import load_for_eval
    from families import LLAVA_4_45

    reference = json.loads((LLAVA_4_45 / "asagi_merge_logits.json").read_text())
    assert reference["transformers"] == "4.45.1" and reference["class"].startswith("transformers_modules.")
    run_ours(recipe(asagi, "vlm"), tmp_path / "merged")
    model, processor = load_for_eval(str(tmp_path / "merged"), "cpu", "float32", native_class=True)
    assert "has no patch_size" in capsys.readouterr().err
    inputs = processor(text=reference["prompt"], images=Image.new("RGB", (40, 36), tuple(reference["color"])),
                       return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(reference["input_ids"][0]) == 9 and ids[9:] == reference["input_ids"][1:]  # 3x3 patches
    with torch.no_grad():
        logits = model(**inputs).logits[0, -len(reference["logits"]):]
    torch.testing.assert_close(logits, torch.tensor(reference["logits"]), atol=1e-5, rtol=0)


def vqa_fitness(vqa_data, tmp_path) -> list[dict]:
    """The fixture's images, with answers in the tiny tokenizer's words (so candidates can differ on them)."""
    data = tmp_path / "vg.jsonl"
    rows = [json.loads(line) for line in (vqa_data / "vg.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["image"] = str(vqa_data / row["image"])
        for j, qa in enumerate(row["qas"]):
            qa["answer"] = " ".join(f"w{(7 * i + 3 * j + k) % 61}" for k in range(4))
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return [{"name": "ja_vg_vqa", "data": str(data), "prompt": "<image> {question}", "max_new_tokens": 4,
             "num_beams": 1, "metric": "rougeL"}]


def test_a_search_over_asagi_scores_it_on_images_and_its_export_rescores_exactly(asagi, vqa_data, tmp_path,
                                                                                capsys):
    pytest.importorskip("fugashi")
    from evomerge.search.records.results import run_status

    cfg = {"merge": yaml.safe_load(recipe(asagi, "vlm")), "genome": {"parameters": ["weight", "density"]},
           "optimizer": {"name": "cma", "seed": 0, "popsize": 3, "sigma0": 0.5}, "budget": {"max_trials": 6},
           "fitness": vqa_fitness(vqa_data, tmp_path), "device": "cpu"}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli("search", path, "--run-dir", tmp_path / "run", "--quiet") == 0
    err = capsys.readouterr().err
    assert err.count("ships its own modeling code") == 1 and "'llava'" in err  # what scores it, said once
    assert err.count("has no patch_size (saved before transformers 4.47)") == 1  # its 4.45.1 processor, filled
    from evomerge.search.records.store import RunStore

    with RunStore(tmp_path / "run") as store:
        fitness = [t.fitness for t in store.trials("complete")]
    assert len(fitness) == 6 and len(set(fitness)) > 1  # candidates answer differently
    assert cli("export", tmp_path / "run", tmp_path / "best", "--quiet") == 0
    assert (tmp_path / "best" / "modeling_llava.py").exists()
    capsys.readouterr()
    assert cli("eval", tmp_path / "best", "--config", path, "--json") == 2  # its own code: only when asked
    assert "--trust-remote-code" in capsys.readouterr().err
    assert cli("eval", tmp_path / "best", "--config", path, "--json", "--trust-remote-code") == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["fitness"] == pytest.approx(run_status(tmp_path / "run")["best"]["fitness"], abs=1e-9)


def test_a_data_flow_search_through_asagi_exports_it_with_its_code_and_rescores_exactly(asagi, vqa_data, tmp_path,
                                                                                       capsys):
    """DFS with Asagi as model A (its LM's layers interleaved with a text Llama's of the same shape, the vision
    side Asagi's), scored with transformers' LLaVA class as a PS search is (never Asagi's own code). A data-flow
    export is evomerge's data-flow model (its own code via auto_map, on the same transformers class), with
    Asagi's vision tower and projector; it re-scores as the search scored."""
    pytest.importorskip("fugashi")
    from evomerge.search.records.results import run_status

    cfg = {"dataflow": {"model_a": str(asagi["vlm"]), "model_b": str(asagi["ft1"]), "repeats": 1, "scales": True},
           "optimizer": {"name": "cma", "seed": 1, "popsize": 4}, "budget": {"max_trials": 8},
           "fitness": vqa_fitness(vqa_data, tmp_path), "device": "cpu"}
    path = tmp_path / "dfs.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli("search", path, "--run-dir", tmp_path / "run", "--quiet") == 0
    assert cli("export", tmp_path / "run", tmp_path / "best", "--quiet") == 0
    out = tmp_path / "best"
    config = json.loads((out / "config.json").read_text())
    assert "modeling_evomerge_dataflow" in json.dumps(config["auto_map"])
    assert not any((out / name).exists() for name in ASAGI_CODE)  # Asagi's code is not what builds it
    state, vlm = load_state(out), load_state(asagi["vlm"])
    vision = [n for n in state if "vision_model." in n or "multi_modal_projector." in n]
    assert vision and all((state[n] == vlm[n.replace("model.vision_tower.", "vision_tower.").replace(
        "model.multi_modal_projector.", "multi_modal_projector.")]).all() for n in vision)  # copied unchanged
    capsys.readouterr()
    assert cli("eval", out, "--config", path, "--json", "--trust-remote-code") == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["fitness"] == pytest.approx(run_status(tmp_path / "run")["best"]["fitness"], abs=1e-9)


def test_a_llava_with_a_tensor_its_class_lacks_is_searched_without_it_and_exported_with_it(vqa_data, tmp_path,
                                                                                           capsys):
    """EvoVLM-JP-v1-7B's kind: a LLaVA-1.6 converted to the LLaVA class by transformers 4.38.2, whose config keeps
    `use_image_newline_parameter` (its checkpoint may hold `image_newline`, which the class has no place for and
    transformers drops on load). The search scores candidates as transformers loads them, says so once, and the
    export keeps the tensor; the export re-scores exactly."""
    pytest.importorskip("fugashi")
    import shutil
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    from evomerge.search.records.results import run_status

    folder = tmp_path / "evovlm-like"
    shutil.copytree(Path(__file__).parent.parent / "data" / "llava_4_38", folder)
    state = load_file(str(folder / "model.safetensors"))
    state["image_newline"] = torch.randn(16)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config.update(use_image_newline_parameter=True, image_grid_pinpoints=[[30, 60], [60, 30]])
    (folder / "config.json").write_text(json.dumps(config))
    merge = {"merge_method": "linear", "dtype": "float32", "parameters": {"normalize": False},
             "models": [{"model": str(folder), "parameters": {"weight": 0.5}}]}  # candidates scale the model
    cfg = {"merge": merge, "genome": {"parameters": ["weight"]}, "budget": {"max_trials": 4}, "device": "cpu",
           "optimizer": {"name": "cma", "seed": 0, "popsize": 2, "sigma0": 0.5},
           "fitness": vqa_fitness(vqa_data, tmp_path)}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli("search", path, "--run-dir", tmp_path / "run", "--quiet") == 0
    err = capsys.readouterr().err
    assert err.count("image_newline has no place in LlavaForConditionalGeneration") == 1
    assert cli("export", tmp_path / "run", tmp_path / "best", "--quiet") == 0
    kept = load_state(tmp_path / "best")["image_newline"] / state["image_newline"]  # kept, merged as the rest:
    torch.testing.assert_close(kept, torch.full_like(kept, kept[0].item()))  # the best weight times the source
    capsys.readouterr()
    assert cli("eval", tmp_path / "best", "--config", path, "--json") == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["fitness"] == pytest.approx(run_status(tmp_path / "run")["best"]["fitness"], abs=1e-9)
