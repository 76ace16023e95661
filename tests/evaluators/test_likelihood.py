"""The likelihood signal: a reference's teacher-forced log-probability, as a direct computation gives it, whatever
the batch; what it reads counted as prompt tokens; references checked before anything is scored."""

from __future__ import annotations

import json

import pytest
import torch

from evomerge.core.errors import UserError
from evomerge.evaluators.likelihood import continuation_logprobs, encode_pair
from evomerge.evaluators.mgsm_ja import MgsmJa, MgsmJaOptions
from evomerge.generation.greedy import TokenCount


@pytest.fixture(scope="module")
def tiny(family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(family["ja"])
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def direct(model, tokenizer, prompt, continuation):
    head = tokenizer(prompt).input_ids
    ids = tokenizer(prompt + continuation).input_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    span = range(len(head), len(ids))
    return (sum(float(logp[t - 1, ids[t]]) for t in span), len(ids) - len(head),
            sum(int(logp[t - 1].argmax()) == ids[t] for t in span))  # tokens that are the greedy pick


def test_log_probabilities_and_agreement_equal_a_direct_computation_in_any_batch(tiny):
    model, tok = tiny
    prompts = ["w1 w2", "w3", "w4 w5 w6 w7", "w8 w9"]
    refs = [" w3 w4", " w9 w9 w1", " w2", " w5 w6 w7 w8 w9"]
    count = TokenCount()
    batched = continuation_logprobs(model, tok, prompts, refs, batch_size=3, count=count)
    one = continuation_logprobs(model, tok, prompts, refs, batch_size=1)
    for p, r, b, o in zip(prompts, refs, batched, one):
        want, n, agree = direct(model, tok, p, r)
        assert b["logprob"] == pytest.approx(want, abs=1e-4) and o["logprob"] == pytest.approx(want, abs=1e-4)
        assert b["tokens"] == n == len(r.split()) and b["logprob"] < 0
        assert b["agree"] == o["agree"] == agree
    # a reference made of the model's own greedy continuation agrees on every token; a later token changed does not
    ids = tok("w1 w2").input_ids
    with torch.no_grad():
        for _ in range(4):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    own = " " + tok.decode(ids[len(tok("w1 w2").input_ids):])
    other = next(w for w in ("w10", "w11") if tok.convert_tokens_to_ids(w) != ids[-1])
    changed = own.rsplit(" ", 1)[0] + " " + other
    assert [r["agree"] for r in continuation_logprobs(model, tok, ["w1 w2"] * 2, [own, changed])] == [4, 3]
    assert count.generated == 0 and count.prompt == sum(len(encode_pair(tok, p, r)[0]) for p, r in zip(prompts, refs))
    with pytest.raises(UserError, match="reference 2 tokenizes to nothing"):
        continuation_logprobs(model, tok, prompts[:2], refs[:1] + [""])


def write(tmp_path, rows):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    return str(path)


def test_mgsm_ja_scores_its_reference_field_after_its_prompt(tiny, tmp_path):
    model, tok = tiny
    rows = [{"question": f"w{i} w{i + 1}", "answer_number": i, "solution": f"w{i + 2} w{i + 3}"} for i in range(5)]
    ev = MgsmJa(MgsmJaOptions(data=write(tmp_path, rows), prompt="{question}", reference_field="solution"))
    assert ev.likelihood_problem() is None
    items = ev.reference_items(model, tok, [4, 1])
    for i, item in zip([4, 1], items):
        assert item["logprob"] == pytest.approx(direct(model, tok, rows[i]["question"], " " + rows[i]["solution"])[0],
                                                abs=1e-4)
    assert ev.tokens.prompt > 0 and ev.tokens.generated == 0
    plain = MgsmJa(MgsmJaOptions(data=write(tmp_path, rows), prompt="{question}"))
    assert "reference_field" in plain.likelihood_problem()


def test_references_are_checked_when_the_data_loads(tmp_path):
    rows = [{"question": "q", "answer_number": 1, "solution": "s"}] * 2 + [{"question": "q", "answer_number": 1,
                                                                             "solution": " "}]
    with pytest.raises(UserError, match="record 3 of .* has no 'solution' text"):
        MgsmJa(MgsmJaOptions(data=write(tmp_path, rows), reference_field="solution"))
    with pytest.raises(UserError, match="no field 'worked'"):
        MgsmJa(MgsmJaOptions(data=write(tmp_path, rows), reference_field="worked"))


def test_a_field_added_for_the_likelihood_leaves_the_data_fingerprint_of_a_run_unchanged(tmp_path):
    rows = [{"question": f"q{i}", "answer_number": i} for i in range(4)]
    before = MgsmJa(MgsmJaOptions(data=write(tmp_path, rows))).data_fingerprint()
    (tmp_path / "b").mkdir()
    added = MgsmJa(MgsmJaOptions(data=write(tmp_path / "b", [dict(r, solution="s") for r in rows])))
    assert added.data_fingerprint() == before
    used = MgsmJa(MgsmJaOptions(data=write(tmp_path / "b", [dict(r, solution="s") for r in rows]),
                                reference_field="solution"))
    assert used.data_fingerprint() != before
    (tmp_path / "c").mkdir()
    changed = MgsmJa(MgsmJaOptions(data=write(tmp_path / "c", [dict(r, answer_number=9) for r in rows])))
    assert changed.data_fingerprint() != before
