"""The MGSM-JA scorer on responses that look like real model output, in Japanese and in English."""

from __future__ import annotations

import json

import pytest

from evomerge.evaluators.mgsm_ja import JA_ALPACA_COT, MgsmJa, MgsmJaOptions, extract_answer, score

CASES = [
    # (response, answer, correct, japanese)
    ("ジャネットのアヒルは1日に16個の卵を産みます。朝食に3個、マフィンに4個使うので、16 - 3 - 4 = 9個残ります。"
     "9個を1個2ドルで売るので、9 × 2 = 18ドルです。答えは18です。", 18, True, True),
    ("まず、ローブには青い繊維が2巻き必要です。白い繊維はその半分なので1巻きです。合計で2 + 1 = 3巻きです。\n答え: 3", 3, True, True),
    ("家の購入価格は80,000ドルで、修理に50,000ドルかかりました。価値は150%増えたので、80,000 × 2.5 = 200,000ドル。"
     "利益は200,000 - 130,000 = 70,000ドルです。", 70000, True, True),
    ("合計は１２個です。", 12, True, True),  # full-width digits
    ("答えは１，０００円です。", 1000, True, True),  # full-width comma
    ("気温は朝から8度下がったので、-5度になりました。答えは-5です。", -5, True, True),
    ("気温は−3度です。", -3, True, True),  # U+2212 minus sign
    ("1時間あたり12ドルで、50分働いたので、12 / 60 × 50 = 10ドルを稼ぎました。", 10, True, True),
    ("彼女は合計で3.5時間走りました。", 3.5, True, True),
    ("ベティは財布の半分の50ドルを持っています。両親から15ドル、祖父母から30ドルもらいました。"
     "100 - 50 - 15 - 30 = 5ドルがまだ必要です。", 5, True, True),
    ("The answer is 18.", 18, True, False),
    ("Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * $2 = $18 every day at the farmer's market.\n"
     "The answer is 18", 18, True, False),
    ("So the total cost is $1,250.", 1250, True, False),
    ("She has 7 apples left. 答え", 6, False, False),
    ("答えは17です。", 18, False, True),
    ("よくわかりません。", 5, False, True),  # no number at all
    ("", 0, False, False),
    ("これは簡単な計算です。42個のりんごがあり、2つ食べたので40個です。", 40, True, True),
    ("ステップ1: 5 × 3 = 15\nステップ2: 15 + 7 = 22\n答えは22個です。", 22, True, True),
    ("合計は 1,2 と 3 です", 3, True, True),  # "1,2" is a list, not one thousand-separated number
    ("答えは 12.0 です。", 12, True, True),
    ("彼は週に3回、1回あたり60メートルを3本走るので、3 × 3 × 60 = 540メートル走ります。", 540, True, True),
]


@pytest.mark.parametrize("response, answer, correct, japanese", CASES)
def test_score(response, answer, correct, japanese):
    assert score(response, answer) == {"correct": correct, "japanese": japanese}


def test_extract_answer_details():
    assert extract_answer("1,000") == 1000
    assert extract_answer("-5") == -5
    assert extract_answer("3-5") == 5  # a hyphen between numbers is not a sign of the second
    assert extract_answer("1,234,567.5 yen") == 1234567.5
    assert extract_answer("version 2. ok") == 2
    assert extract_answer("no digits") is None


def test_answer_given_as_string_with_separator():
    assert score("答えは1,000です", "1,000")["correct"]


def test_evaluator_on_local_jsonl(family, tmp_path):
    """The evaluator runs a real (tiny) model over local data and reports the three metrics in [0, 1]."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = tmp_path / "mgsm.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"w{i} w{i+1}", "answer_number": i}) for i in range(5)))
    ev = MgsmJa(MgsmJaOptions(data=str(data), max_new_tokens=4, batch_size=2, prompt="{question}"))
    model = AutoModelForCausalLM.from_pretrained(str(family["ja"]))
    tok = AutoTokenizer.from_pretrained(str(family["ja"]))
    tok.pad_token = tok.eos_token
    metrics = ev.evaluate(model, tok)
    assert set(metrics) == {"acc", "acc_ja", "ja_rate"}
    assert all(0 <= v <= 1 for v in metrics.values())
    assert len(ev.last_responses) == 5


def test_default_prompt_is_the_papers():
    assert JA_ALPACA_COT.startswith("以下に、あるタスクを説明する指示があります。")
    assert JA_ALPACA_COT.endswith("### 指示:\n{question}\n\n### 応答:")


def test_eval_writes_the_answers_behind_the_score(family, tmp_path, capsys):
    """`evomerge eval --samples` keeps every response with its score: the metrics are their means."""
    import yaml
    from helpers import cli

    data = tmp_path / "mgsm.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"w{i} w{i+1}", "answer_number": i}) for i in range(6)))
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({
        "merge": {"merge_method": "linear", "models": [{"model": str(family["ja"])}]},
        "fitness": [{"name": "mgsm_ja", "data": str(data), "prompt": "{question}", "max_new_tokens": 4}],
        "device": "cpu"}))
    out = tmp_path / "samples.jsonl"
    assert cli("eval", family["ja"], "--config", cfg, "--json", "--samples", out) == 0
    scores = json.loads(capsys.readouterr().out)["scores"]["mgsm_ja"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["answer"] for r in rows] == list(range(6)) and all(r["evaluator"] == "mgsm_ja" for r in rows)
    assert sum(r["correct"] for r in rows) / 6 == scores["acc"]
    assert sum(r["japanese"] for r in rows) / 6 == scores["ja_rate"]
    assert all(r == {**r, **score(r["response"], r["answer"])} for r in rows)

    assert cli("eval", family["ja"], "--config", cfg, "--samples", tmp_path / "no" / "s.jsonl") == 2
    assert "--samples" in capsys.readouterr().err


def test_items_one_by_one_equal_the_whole_and_race(tmp_path, monkeypatch):
    """score_items (racing, subset) gives per problem what evaluate averages; racing stops a weak candidate."""
    from types import SimpleNamespace

    from evomerge.evaluators import Fitness
    from evomerge.evaluators import mgsm_ja as module
    from evomerge.search.config import EvaluatorConfig, RacingConfig

    rows = [{"question": f"q{i}", "answer_number": i} for i in range(40)]
    data = tmp_path / "m.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))

    def answers(model, tokenizer, prompts, *args, **kwargs):  # right on a third, in Japanese on half
        out = []
        for p in prompts:
            i = int(p[1:])
            n = i if i % 3 == 0 else i + 1
            out.append(f"答えは{n}です。" if i % 2 == 0 else f"The answer is {n}.")
        return out

    monkeypatch.setattr(module, "greedy_generate", answers)
    tok = SimpleNamespace(chat_template=None)
    fitness = Fitness([EvaluatorConfig(name="mgsm_ja", data=str(data), prompt="{question}", metric="acc")])
    ev = fitness.terms[0].evaluator
    whole = ev.evaluate(None, tok)
    items = ev.score_items(None, tok, list(range(40)))
    for metric in ("acc", "acc_ja", "ja_rate"):
        assert sum(v[metric] for v in items) / 40 == whole[metric]
    assert ev.last_item_values("acc") == [v["acc"] for v in items]  # what a plain run keeps per trial
    full_value, _, race = fitness.score_raced(None, tok, None, RacingConfig(chunk=8, min_items=8))
    assert full_value == whole["acc"] and race["items"] == 40 and not race["raced"]
    value, scores, race = fitness.score_raced(None, tok, 0.9, RacingConfig(chunk=8, min_items=8))
    assert race["raced"] and race["items"] < 40 and race["bound"] < 0.9
    assert scores["mgsm_ja"]["items"] == race["items"]
