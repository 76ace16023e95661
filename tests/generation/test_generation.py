"""Batched greedy generation equals plain `generate` on each prompt alone."""

from __future__ import annotations

import torch

from evomerge.generation.greedy import greedy_generate, truncate_at_stop


def test_truncate_at_stop():
    assert truncate_at_stop("abc Response: more", ["Response:", "Response"]) == "abc "
    assert truncate_at_stop("no stop here", ["X"]) == "no stop here"


def test_batched_equals_one_by_one_tiny(family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(family["math"]), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(family["math"]))
    tok.pad_token = "<unk>"
    prompts = ["w1 w2 w3", "w5", "w7 w8 w9 w10 w11 w12", "w3 w3"]
    batched = greedy_generate(model, tok, prompts, max_new_tokens=8, batch_size=4)
    single = [greedy_generate(model, tok, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert all(batched)


def test_smollm2_batched_equals_plain_generate(smollm2):
    model, tok = smollm2
    prompts = ["The capital of France is", "2 + 2 =", "Write a haiku about the sea:\n"]
    ours = greedy_generate(model, tok, prompts, max_new_tokens=12, batch_size=3)
    for p, text in zip(prompts, ours):
        ids = tok(p, return_tensors="pt").input_ids
        ref = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.eos_token_id)
        assert text == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)


def test_stop_strings_end_generation_early(smollm2):
    model, tok = smollm2
    prompt = "Count: 1, 2, 3, 4,"
    full = greedy_generate(model, tok, [prompt], max_new_tokens=20)[0]
    assert " 7" in full  # the model keeps counting...
    stopped = greedy_generate(model, tok, [prompt], max_new_tokens=20, stop=[" 7"])[0]
    assert stopped == full[: full.index(" 7")]
