"""bench/fitness_steering.py's judging: the fixed criteria cannot drop out, the arms must pair item by item, and
the search-unit interval stands beside the problem-unit one."""

from __future__ import annotations

import json

import pytest

from bench.fitness_steering import judge
from evomerge.evaluators.compare import search_unit_interval

SEEDS = (0, 1, 2)


def _samples(path, right: list[int], questions=None):
    questions = questions or [f"q{i}" for i in range(len(right))]
    path.write_text("".join(json.dumps({"evaluator": "mgsm_ja", "question": q, "answer": 1, "acc_ja": bool(r)}) + "\n"
                            for q, r in zip(questions, right)))
    return path


def _described(tokens: int) -> dict:
    return {"generated_tokens": tokens, "problems_scored": tokens, "prompt_tokens": tokens, "eval_s": 1.0}


def _arms(tmp_path, folder: str, cheap_gain: dict[int, int], n: int = 200):
    """Per seed: the full arm right on the first 50% of items, the cheap arm on `cheap_gain[seed]` more or fewer."""
    root = tmp_path / folder
    root.mkdir()
    out = {}
    for seed in SEEDS:
        full = [int(i < n // 2) for i in range(n)]
        cheap = [int(i < n // 2 + cheap_gain[seed]) for i in range(n)]
        out["full", seed] = _samples(root / f"full-{seed}.jsonl", full)
        out["agreement-run", seed] = _samples(root / f"cheap-{seed}.jsonl", cheap)
    return out


def _run(tmp_path, samples_a=None, also=True):
    described = {(arm, s): _described(120 if arm == "full" else 10) for arm in ("full", "agreement-run")
                 for s in SEEDS}
    samples = _arms(tmp_path, "third", {0: 2, 1: -2, 2: 4})
    return judge(described, samples, samples_a, SEEDS, "agreement-run", "first-split" if also else None)


def test_the_criteria_are_judged_with_both_intervals(tmp_path):
    report = _run(tmp_path, _arms(tmp_path, "first", {0: 0, 1: 2, 2: 0}))
    assert report["criteria"] == {"tokens_10x_every_seed": True, "held_out_not_worse": True,
                                  "first_split_not_worse": True, "met": True}
    assert report["not_judged"] == []
    diffs = [report["seeds"][s]["vs_full"]["difference"] for s in SEEDS]
    assert diffs == pytest.approx([0.01, -0.01, 0.02])
    assert report["pooled_search_unit"] == search_unit_interval(diffs)
    low, high = report["pooled_search_unit"]["interval_95"]
    assert low < report["pooled"]["interval_95"][0] and high > report["pooled"]["interval_95"][1]  # wider
    assert report["first_split"]["pooled_search_unit"]["searches"] == 3


def test_a_missing_first_split_sample_fails_the_proof_instead_of_dropping_its_criterion(tmp_path):
    first = _arms(tmp_path, "first", {0: 0, 1: 2, 2: 0})
    del first["agreement-run", 1]  # as a samples file that was never written
    report = _run(tmp_path, first)
    assert report["criteria"]["first_split_not_worse"] is None and report["criteria"]["met"] is False
    assert report["not_judged"] == ["first_split_not_worse"]
    (tmp_path / "alone").mkdir()
    alone = _run(tmp_path / "alone", None, also=False)  # a proof judged on one draw only has no such criterion
    assert "first_split_not_worse" not in alone["criteria"] and alone["criteria"]["met"]


def test_arms_scored_on_other_problems_are_refused(tmp_path):
    first = _arms(tmp_path, "first", {0: 0, 1: 2, 2: 0})
    path = first["agreement-run", 2]
    rows = path.read_text().splitlines()
    path.write_text("\n".join(rows[1:] + rows[:1]) + "\n")  # the same problems in another order
    with pytest.raises(SystemExit, match="item 1 is not item 1.*not scored on the same problems"):
        _run(tmp_path, first)


def test_search_unit_interval_is_a_t_interval_over_searches():
    r = search_unit_interval([-0.0016666666666666668, -0.09666666666666666, 0.06333333333333334])
    assert r["interval_95"] == pytest.approx([-0.2116, 0.1882], abs=1e-4)  # the fifth proof's third draw: +-0.2
    assert search_unit_interval([0.1])["interval_95"] == [None, None]
