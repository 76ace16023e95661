"""bench/composition_seeds.py (issue 42, item 2 on the sixth draw): the verdict is the shipped rule over all five
searches; the first three alone and the validation choices are reported beside it, and a missing seed is no
verdict."""

from __future__ import annotations

import json

from bench.composition_seeds import analyse, to_markdown
from evomerge.miniature import data


def _write(path, problems, right, ja=True):
    rows = []
    for i, (a, b) in enumerate(problems):
        q = data.JA_TEMPLATES["*"][data.FAMILY["fresh2"]].format(n="蓮", a=a, b=b, item="花", c="本")
        rows.append({"question": q, "answer": a * b, "correct": i in right, "acc_ja": ja and i in right})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_five_searches_give_the_verdict_and_a_missing_one_gives_none(tmp_path):
    problems = [(a, b) for a in range(2, 12) for b in range(2, 9)]  # 70 facts, once each
    runs, claims = tmp_path / "runs", tmp_path / "claims"
    scores = runs / "scores"
    scores.mkdir(parents=True)
    _write(scores / "math.jsonl", problems, set(range(20)), ja=False)
    _write(scores / "ja.jsonl", problems, set())
    for s, extra in enumerate((12, -3, 11, 10, 12)):  # one of the first three falls short; five searches do not
        _write(scores / f"ps-s{s}.jsonl", problems, set(range(20 + extra)))
    for s in range(4):  # the validation choices: seed 4's is missing
        _write(scores / f"ps-s{s}.validation.jsonl", problems, set(range(30)))
    report = analyse(runs, claims, "draw")
    rules = report["rules"]
    assert report["judged"] == {"composition": True}
    assert rules["best by fitness"]["seeds"] == [0, 1, 2, 3, 4]
    assert rules["best by fitness"]["composition"]["search_unit"]["searches"] == 5
    assert rules["best by fitness, seeds 0-2"]["composition"]["holds"] is False  # t with 2 degrees of freedom
    assert rules["validation"]["composition"]["holds"] is None  # four of five: no verdict
    assert rules["validation, seeds 0-2"]["composition"]["holds"] is True
    assert rules["best by fitness"]["spread"] == 15 / 70
    merge_alone = rules["best by fitness"]["solved_by_the_merge_alone"][0]
    assert merge_alone["* within the training range (2-12 x 2-9)"]["merge_ja_only"] == 12
    assert "| best by fitness | 45.7, 24.3, 44.3, 42.9, 45.7 (21.4) | +17.1 / -4.3 / +15.7 / +14.3 / +17.1 |" in \
        to_markdown(report)
