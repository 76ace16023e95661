"""The miniature's instruction-tuned specialists: answer-only loss, the data they see, and a real (short) build."""

from __future__ import annotations

import re

import torch

from evomerge.miniature import data, specialists


def test_instruction_data_never_asks_for_arithmetic():
    """The Japanese specialist must not learn to compute: every number in an answer is given in its question."""
    pairs = data.ja_instruct(400, 0)
    assert len({q for q, _ in pairs}) > 300
    for question, answer in pairs:
        assert answer.endswith("です。") and "答えは" in answer
        assert set(re.findall(r"\d+", answer)) <= set(re.findall(r"\d+", question)), (question, answer)
    assert any("=" in q for q, _ in pairs) and any("何色" in q for q, _ in pairs) and any("どこ" in q for q, _ in pairs)


def test_english_math_answers_are_correct_and_open_with_the_equation():
    for p in data.en_math_instruct(300, 0):
        left, right = p.solution.split(" = ")[0], p.solution.split(" = ")[1].split(".")[0]
        a, op, b = left.split(" ")
        assert eval(f"{a}{'*' if op == '×' else op}{b}") == int(right) == p.answer
        assert p.solution.endswith(f"The answer is {p.answer}.")
        assert re.match(r"\d", p.solution)  # no English word before the equation
    # the specialist's English families are not the Japanese fitness or test wordings
    assert len({t for ts in data.EN_TRAIN_TEMPLATES.values() for t in ts}) == 15


def test_batch_scores_only_the_answer(smollm2):
    _, tok = smollm2
    x, mask, labels = specialists._batch(tok, [("Q: 1?", "A 1."), ("Question two, longer?", "B.")])
    assert x.shape == mask.shape == labels.shape
    for row in range(2):
        scored = labels[row][labels[row] != -100]
        assert tok.decode(scored).strip() == ["A 1.", "B."][row] + tok.eos_token
        assert mask[row].sum() == len(tok(["Q: 1?", "Question two, longer?"][row]).input_ids) + len(
            tok(" " + ["A 1.", "B."][row] + tok.eos_token).input_ids)


def test_short_instruction_build_learns_its_answers(smollm2, tmp_path, monkeypatch):
    """Three steps of the real build: the model is saved, reloads, keeps the embeddings, and the training answers
    became more likely (loss on them falls)."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("EVOMERGE_CACHE", str(tmp_path))
    base, tok = smollm2
    spec = {"pairs": "en_math_instruct", "steps": 3, "lr": 2e-4, "batch": 4, "seed": 9}
    path = specialists.specialist_path("math-instruct", log=lambda *a: None, spec=spec)
    assert path.parent == tmp_path / "specialists"
    tuned = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    assert torch.equal(tuned.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert not torch.equal(tuned.model.layers[3].mlp.up_proj.weight, base.model.layers[3].mlp.up_proj.weight)
    x, mask, labels = specialists._batch(tok, specialists._pairs("en_math_instruct", 12, 9))
    with torch.no_grad():
        before = base(input_ids=x, attention_mask=mask, labels=labels).loss.item()
        after = tuned(input_ids=x, attention_mask=mask, labels=labels).loss.item()
    assert after < 0.8 * before
    # cached: a second call does not train again
    assert specialists.specialist_path("math-instruct", log=lambda *a: 1 / 0, spec=spec) == path
