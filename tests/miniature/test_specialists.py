"""The miniature's instruction-tuned specialists: answer-only loss, the data they see, and a real (short) build."""

from __future__ import annotations

import re

import torch

from conftest import private_cache
from evomerge.miniature import data, specialists


def test_instruction_data_never_scores_arithmetic():
    """The Japanese specialist must not learn to compute: every number it is scored on is given in its question;
    the results of its word problems are there, correct, but unscored."""
    pairs = data.ja_instruct(400, 0)
    assert len({q for q, _ in pairs}) > 300
    problems = 0
    for question, answer in pairs:
        assert answer.endswith("です。") and "答えは" in answer
        scored = re.sub(r"⟦[^⟧]*⟧", "", answer)
        assert set(re.findall(r"\d+", scored)) <= set(re.findall(r"\d+", question)), (question, answer)
        if "⟦" in answer:
            problems += 1
            a, op, b, _, result = answer.split(" ")[:5]
            assert result == f"⟦{eval(a + {'×': '*'}.get(op, op) + b)}⟧" and answer.count(result) == 2
    assert 100 < problems < 180
    assert any("=" in q for q, _ in pairs) and any("何色" in q for q, _ in pairs) and any("どこ" in q for q, _ in pairs)
    # its word problems have their own wordings: none is a fitness or test wording
    assert not {t for ts in data.JA_TRAIN_TEMPLATES.values() for t in ts} & {
        t for ts in data.JA_TEMPLATES.values() for t in ts}


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


def test_batch_leaves_unscored_spans_out(smollm2):
    _, tok = smollm2
    answer = f"8 × 5 = {data.unscored('40')} です。答えは{data.unscored('40')}です。"
    x, mask, labels = specialists._batch(tok, [("Q: 8 x 5?", answer)])
    prompt = len(tok("Q: 8 x 5?").input_ids)
    assert tok.decode(x[0][prompt:]) == " " + data.plain(answer) + tok.eos_token  # the model sees the result
    unscored = [tok.decode(int(t)) for t, y in zip(x[0][prompt:], labels[0][prompt:]) if y == -100]
    assert "".join(unscored) == "4040"  # ... but is scored on everything else
    assert tok.decode(labels[0][labels[0] != -100]).replace(" ", "") == "8×5=です。答えはです。" + tok.eos_token


def test_short_instruction_build_learns_its_answers(smollm2, tmp_path, monkeypatch):
    """Three steps of the real build: the model is saved, reloads, keeps the embeddings, and the training answers
    became more likely (loss on them falls)."""
    from transformers import AutoModelForCausalLM

    private_cache(monkeypatch, tmp_path)
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
