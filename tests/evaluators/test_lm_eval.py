"""The lm_eval evaluator runs a real lm-evaluation-harness task (a local multiple-choice task) on a live model,
and its accuracy equals a hand computation of the same log-likelihood comparison."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("lm_eval")

from evomerge.evaluators.lm_eval_task import LmEval, LmEvalOptions  # noqa: E402

QUESTIONS = [
    {"question": "w1 w2", "choices": ["w3", "w9"], "answer": 0},
    {"question": "w4 w5", "choices": ["w6", "w7", "w8"], "answer": 2},
    {"question": "w10", "choices": ["w11", "w12"], "answer": 1},
    {"question": "w20 w21 w22", "choices": ["w23", "w30"], "answer": 0},
    {"question": "w40", "choices": ["w41", "w42", "w43"], "answer": 1},
    {"question": "w50 w51", "choices": ["w52", "w5"], "answer": 0},
]


@pytest.fixture
def task_dir(tmp_path):
    data = tmp_path / "tiny.jsonl"
    data.write_text("\n".join(json.dumps(q) for q in QUESTIONS))
    (tmp_path / "tiny_choice.yaml").write_text(f"""
task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
""")
    return tmp_path


def hand_accuracy(model, tok) -> float:
    correct = 0
    for q in QUESTIONS:
        ctx = tok(q["question"]).input_ids
        scores = []
        for choice in q["choices"]:
            full = tok(q["question"] + " " + choice).input_ids
            with torch.no_grad():
                logp = model(torch.tensor([full])).logits[0].log_softmax(-1)
            scores.append(sum(logp[i - 1, full[i]].item() for i in range(len(ctx), len(full))))
        correct += int(max(range(len(scores)), key=scores.__getitem__) == q["answer"])
    return correct / len(QUESTIONS)


def test_lm_eval_task_on_live_model_and_its_documents_as_items(family, task_dir):
    """The task's accuracy equals a hand computation. With one task and an accuracy metric, each document's result
    comes from lm-eval's logged samples, a chosen few documents are scored through lm-eval's own `samples=`
    selection and agree with the full run, and their mean is the task's accuracy (racing and subset fitness)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(family["math"]), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(family["math"]))
    tok.pad_token = "<unk>"
    ev = LmEval(LmEvalOptions(tasks=["tiny_choice"], include_path=str(task_dir), batch_size=2))
    key = "tiny_choice/acc,none"
    assert ev.scores_items(key) and ev.binary_items and ev.num_items() == len(QUESTIONS)
    assert not ev.scores_items("tiny_choice/sample_len,none") and not ev.scores_items("other/acc,none")
    metrics = ev.evaluate(model, tok)
    assert metrics[key] == pytest.approx(hand_accuracy(model, tok))
    values = ev.last_item_values(key)
    assert len(values) == len(QUESTIONS) and set(values) <= {0.0, 1.0}
    assert sum(values) / len(values) == metrics[key]
    assert [v[key] for v in ev.score_items(model, tok, [4, 1, 2])] == [values[4], values[1], values[2]]
    assert ev.aggregate_items([{key: v} for v in values])[key] == metrics[key]
    limited = LmEval(LmEvalOptions(tasks=["tiny_choice"], include_path=str(task_dir), limit=4))
    assert limited.num_items() == 4
    two = LmEval(LmEvalOptions(tasks=["tiny_choice", "other"], include_path=str(task_dir)))
    assert not two.scores_items(key)
