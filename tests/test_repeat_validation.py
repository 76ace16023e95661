"""bench/repeat_validation.py (issue 42, item 4, the sixth test): the snapshots are each generation's best by
fitness; the choice is the best on the validation set with the stated ties; the verdict is the five chosen models'
spread against 4 points, none with a seed missing; chosen minus best is paired per seed."""

from __future__ import annotations

from helpers import SCORED_FACTS, scored_rows, write_rows

from bench.repeat_validation import DRAW, VALIDATION, analyse, pick, snapshots
from evomerge.core.resources import resolve_path


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
    write_rows(scores / "math.jsonl", scored_rows(SCORED_FACTS, set(range(40)), ja=False))
    for s, right in enumerate((50, 52, 54, 51, 55)):  # 5 / 140 = 3.6 points
        write_rows(scores / f"valid-s{s}.jsonl", scored_rows(SCORED_FACTS, set(range(right))))
    for s, right in enumerate((40, 60, 54, 51, 45)):
        write_rows(scores / f"ps-s{s}.jsonl", scored_rows(SCORED_FACTS, set(range(right))))
    report = analyse(runs, tmp_path / "claims", tmp_path / "seeds")
    assert report["judged"] == {"spread_points": round(100 * 5 / 140, 2), "limit_points": 4.0, "holds": True}
    assert report["arms"]["shipped best by fitness, seeds 0-4"]["spread"] == 20 / 140
    diff = report["chosen_minus_best"]
    assert [round(140 * t["difference"]) for t in diff["seeds"].values()] == [10, -8, 0, 0, 10]
    assert diff["search_unit"]["searches"] == 5 and not report["restarts_chosen_minus_best"]["seeds"]
    write_rows(scores / "valid-s4.jsonl", scored_rows(SCORED_FACTS, set(range(56))))  # 6 / 140 = 4.3 points: fails
    assert analyse(runs, tmp_path / "claims", tmp_path / "seeds")["judged"]["holds"] is False
    (scores / "valid-s4.jsonl").unlink()
    report = analyse(runs, tmp_path / "claims", tmp_path / "seeds")
    assert report["judged"]["holds"] is None and "validation-chosen, seeds 0-4 (judged)" not in report["arms"]


def test_the_validation_set_and_the_draw_are_new_to_the_earlier_tests():
    from bench.paper_claims import VALIDATION as EARLIER_VALIDATION
    from bench.repeat_search import ARMS

    assert resolve_path(VALIDATION).is_file() and resolve_path(DRAW).is_file()
    assert DRAW not in {a.draw for a in ARMS.values()} and VALIDATION != EARLIER_VALIDATION
