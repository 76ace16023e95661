"""bench/repeat_validation.py (issue 42, item 4, the sixth test): the snapshots are each generation's best by
fitness; the choice is the best on the validation set with the stated ties; the verdict is the five chosen models'
spread against 4 points, none with a seed missing; chosen minus best is paired per seed."""

from __future__ import annotations

import json

from bench.repeat_validation import DRAW, VALIDATION, analyse, pick, snapshots
from evomerge.core.resources import resolve_path
from evomerge.miniature import data


def _rows(problems, right, ja=True):
    rows = []
    for i, (a, b) in enumerate(problems):
        q = data.JA_TEMPLATES["*"][data.FAMILY["fresh3"]].format(n="蓮", a=a, b=b, item="花", c="本")
        rows.append({"question": q, "answer": a * b, "correct": i in right, "acc_ja": ja and i in right})
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


PROBLEMS = [(a, b) for a in range(2, 12) for b in range(2, 9)] * 2  # 70 facts, each asked twice


def test_the_snapshots_are_each_generations_best_by_fitness(family, target, tmp_path):
    from helpers import make_config, search

    from evomerge.search.records.store import RunStore

    search(make_config(family, target, budget=18), tmp_path / "run")  # popsize 6: three generations
    with RunStore(tmp_path / "run") as store:
        trials = [t for t in store.trials() if t.status == "complete" and t.duplicate_of is None]
    picked = snapshots(tmp_path / "run")
    assert [t.generation for t in picked] == [0, 1, 2]
    for t in picked:
        same = [u for u in trials if u.generation == t.generation]
        assert t.fitness == max(u.fitness for u in same)
        assert t.id == min(u.id for u in same if u.fitness == t.fitness)  # ties: the earlier trial


def test_the_choice_is_the_best_on_validation_then_fitness_then_the_earlier_trial():
    scored = [{"trial": 3, "validation": 0.30, "fitness": 0.40}, {"trial": 9, "validation": 0.32, "fitness": 0.30},
              {"trial": 12, "validation": 0.32, "fitness": 0.35}, {"trial": 15, "validation": 0.32, "fitness": 0.35}]
    assert pick(scored)["trial"] == 12
    assert pick(scored[:2])["trial"] == 9  # a worse fitness, a better validation: validation decides


def test_the_five_chosen_models_spread_is_judged_and_a_missing_seed_gives_no_verdict(tmp_path):
    runs = tmp_path / "runs"
    scores = runs / "scores"
    scores.mkdir(parents=True)
    _write(scores / "math.jsonl", _rows(PROBLEMS, set(range(40)), ja=False))
    for s, right in enumerate((50, 52, 54, 51, 55)):  # 5 / 140 = 3.6 points
        _write(scores / f"valid-s{s}.jsonl", _rows(PROBLEMS, set(range(right))))
    for s, right in enumerate((40, 60, 54, 51, 45)):
        _write(scores / f"ps-s{s}.jsonl", _rows(PROBLEMS, set(range(right))))
    report = analyse(runs, tmp_path / "claims", tmp_path / "seeds")
    assert report["judged"] == {"spread_points": round(100 * 5 / 140, 2), "limit_points": 4.0, "holds": True}
    assert report["arms"]["shipped best by fitness, seeds 0-4"]["spread"] == 20 / 140
    diff = report["chosen_minus_best"]
    assert [round(140 * t["difference"]) for t in diff["seeds"].values()] == [10, -8, 0, 0, 10]
    assert diff["search_unit"]["searches"] == 5 and not report["restarts_chosen_minus_best"]["seeds"]
    _write(scores / "valid-s4.jsonl", _rows(PROBLEMS, set(range(56))))  # 6 / 140 = 4.3 points: fails
    assert analyse(runs, tmp_path / "claims", tmp_path / "seeds")["judged"]["holds"] is False
    (scores / "valid-s4.jsonl").unlink()
    report = analyse(runs, tmp_path / "claims", tmp_path / "seeds")
    assert report["judged"]["holds"] is None and "validation-chosen, seeds 0-4 (judged)" not in report["arms"]


def test_the_validation_set_and_the_draw_are_new_to_the_earlier_tests():
    from bench.paper_claims import VALIDATION as EARLIER_VALIDATION
    from bench.repeat_search import ARMS

    assert resolve_path(VALIDATION).is_file() and resolve_path(DRAW).is_file()
    assert DRAW not in {a.draw for a in ARMS.values()} and VALIDATION != EARLIER_VALIDATION
