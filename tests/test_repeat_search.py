"""bench/repeat_search.py (issue 42, item 4 on the seventh draw): the verdict is the pool arm's three-seed spread
against 4 points; a missing judged seed gives no verdict; the arm's config is a valid search config that differs
from the shipped one in the fitness data and the subset block only."""

from __future__ import annotations

import yaml
from helpers import SCORED_FACTS, scored_rows, write_rows

from bench.repeat_search import ARMS, analyse, arm_config, spread_interval
from evomerge.core.resources import resolve_path
from evomerge.search.config import SearchConfig


def test_the_pool_arms_spread_is_judged_and_a_missing_seed_gives_no_verdict(tmp_path):
    runs = tmp_path / "runs"
    scores = runs / "scores"
    scores.mkdir(parents=True)
    write_rows(scores / "math.jsonl", scored_rows(SCORED_FACTS, set(range(40)), ja=False))
    for s, right in enumerate((50, 52, 54)):  # 140 problems: a spread of 4 / 140 = 2.9 points
        write_rows(scores / f"pool-s{s}.jsonl", scored_rows(SCORED_FACTS, set(range(right))))
    for s, right in enumerate((40, 60, 50, 45, 55)):  # 20 / 140 = 14.3 points
        write_rows(scores / f"ps-s{s}.jsonl", scored_rows(SCORED_FACTS, set(range(right))))
    report = analyse(runs, tmp_path / "claims", tmp_path / "seeds", "draw")
    assert report["judged"] == {"spread_points": round(100 * 4 / 140, 2), "limit_points": 4.0, "holds": True}
    assert "pool, seeds 0-4" not in report["arms"]  # seeds 3 and 4 not scored: no five-seed row
    shipped = report["arms"]["shipped, seeds 0-4"]
    assert shipped["spread"] == 20 / 140 and shipped["composition"]["search_unit"]["searches"] == 5
    (scores / "pool-s2.jsonl").unlink()
    report = analyse(runs, tmp_path / "claims", tmp_path / "seeds", "draw")
    assert report["judged"]["holds"] is None and "pool, seeds 0-2 (judged)" not in report["arms"]


def test_the_spread_interval_resamples_facts_and_contains_the_spread():
    rows = {0: scored_rows(SCORED_FACTS, set(range(30))), 1: scored_rows(SCORED_FACTS, set(range(70, 110)))}  # 30 vs 40 of 140
    lo, hi = spread_interval(rows, resamples=2000)
    assert lo <= 10 / 140 <= hi < 0.25
    same = {0: scored_rows(SCORED_FACTS, set(range(30))), 1: scored_rows(SCORED_FACTS, set(range(30)))}
    assert spread_interval(same, resamples=200) == [0.0, 0.0]


def test_the_pool_arm_changes_the_fitness_data_and_the_subset_block_only():
    shipped = yaml.safe_load(resolve_path("evomerge:configs/search/miniature-ps.yaml").read_text())
    arm = arm_config(2)
    SearchConfig.model_validate(arm)
    assert arm["optimizer"]["seed"] == 2 and arm["subset"]["seed"] == 2
    assert arm["subset"] == {"items": 64, "seed": 2, "first_generation": "random", "check": "final", "finalists": 6,
                             "finalists_from": "run"}
    assert arm["fitness"][0].pop("data") == "evomerge:data/ja_math_fitness_256.jsonl"
    for key in ("subset", "name"):
        arm.pop(key)
    shipped.pop("name")
    shipped["fitness"][0].pop("data")
    shipped["optimizer"]["seed"] = 2
    assert arm == shipped


def test_the_wordings_arm_changes_the_fitness_data_only_and_is_judged_on_its_own_runs(tmp_path):
    shipped = yaml.safe_load(resolve_path("evomerge:configs/search/miniature-ps.yaml").read_text())
    arm = arm_config(1, "wordings")
    SearchConfig.model_validate(arm)
    assert arm.pop("name") != shipped.pop("name")
    assert arm["fitness"][0].pop("data") == "evomerge:data/ja_math_fitness_wordings_64.jsonl"
    shipped["fitness"][0].pop("data")
    shipped["optimizer"]["seed"] = 1
    assert arm == shipped  # no subset block: every candidate on all 64 problems, the best by fitness the result
    assert ARMS["wordings"].draw == "evomerge:data/ja_math_heldout_h_1000.jsonl" != ARMS["pool"].draw

    scores = tmp_path / "runs" / "scores"
    scores.mkdir(parents=True)
    write_rows(scores / "math.jsonl", scored_rows(SCORED_FACTS, set(range(40)), ja=False))
    for s, right in enumerate((40, 50, 47)):  # the pool arm's rows: not this arm's
        write_rows(scores / f"pool-s{s}.jsonl", scored_rows(SCORED_FACTS, set(range(right))))
    for s, right in enumerate((50, 58, 55)):  # 8 / 140 = 5.7 points
        write_rows(scores / f"wordings-s{s}.jsonl", scored_rows(SCORED_FACTS, set(range(right))))
    report = analyse(tmp_path / "runs", tmp_path / "claims", tmp_path / "seeds", "draw", "wordings")
    assert report["judged"] == {"spread_points": round(100 * 8 / 140, 2), "limit_points": 4.0, "holds": False}
    assert set(report["runs"]) >= {"wordings-s0", "wordings-s4"} and "pool-s0" not in report["runs"]
    assert not any(label.startswith("pool") for label in report["arms"])


def test_the_wordings_trained_test_judges_the_wordings_searches_on_the_ninth_draw(tmp_path):
    """Same searches (read from --searches), another draw: the rows are its own, the runs the wordings arm's."""
    assert ARMS["wordings-trained"].name == "wordings"
    assert ARMS["wordings-trained"].draw == "evomerge:data/ja_math_heldout_i_1000.jsonl"
    assert arm_config(0, "wordings-trained") == arm_config(0, "wordings")
    scores = tmp_path / "runs" / "scores"
    scores.mkdir(parents=True)
    for s, right in enumerate((50, 51, 52)):
        write_rows(scores / f"wordings-s{s}.jsonl", scored_rows(SCORED_FACTS, set(range(right))))
    report = analyse(tmp_path / "runs", tmp_path / "claims", tmp_path / "seeds", "draw", "wordings-trained",
                     searches=tmp_path / "searches")
    assert report["judged"]["holds"] is True and report["judged"]["spread_points"] == round(100 * 2 / 140, 2)
    assert {k for k in report["runs"] if not k.startswith("ps-")} == {f"wordings-s{s}" for s in range(5)}


def test_the_budget_arm_continues_the_shipped_runs_with_twice_the_trials_and_judges_five_seeds(tmp_path):
    shipped = yaml.safe_load(resolve_path("evomerge:configs/search/miniature-ps.yaml").read_text())
    arm = arm_config(3, "budget")
    SearchConfig.model_validate(arm)
    assert arm["budget"].pop("max_trials") == 2 * shipped["budget"].pop("max_trials") == 176
    shipped["optimizer"]["seed"] = 3
    assert arm == shipped  # its name too: a resume of the shipped run must match its config
    assert SearchConfig.model_validate(arm_config(3, "budget")).fingerprint() == \
        SearchConfig.model_validate({**shipped, "budget": {"max_trials": 88}}).fingerprint()
    assert ARMS["budget"].draw == "evomerge:data/ja_math_heldout_j_1000.jsonl"
    assert ARMS["budget"].judged == (0, 1, 2, 3, 4) and ARMS["budget"].more == ()

    scores = tmp_path / "runs" / "scores"
    scores.mkdir(parents=True)
    write_rows(scores / "math.jsonl", scored_rows(SCORED_FACTS, set(range(40)), ja=False))
    for s, right in enumerate((50, 52, 54, 51, 53)):  # 4 / 140 = 2.9 points
        write_rows(scores / f"budget-s{s}.jsonl", scored_rows(SCORED_FACTS, set(range(right))))
    for s, right in enumerate((40, 60, 54, 51, 45)):
        write_rows(scores / f"ps-s{s}.jsonl", scored_rows(SCORED_FACTS, set(range(right))))
    report = analyse(tmp_path / "runs", tmp_path / "claims", tmp_path / "seeds", "draw", "budget")
    assert report["judged"] == {"spread_points": round(100 * 4 / 140, 2), "limit_points": 4.0, "holds": True}
    assert "budget, seeds 0-4 (judged)" in report["arms"] and "budget, seeds 0-2 (judged)" not in report["arms"]
    diff = report["continued_minus_shipped"]
    assert [round(140 * t["difference"]) for t in diff["seeds"].values()] == [10, -8, 0, 0, 8]
    assert diff["search_unit"]["searches"] == 5
    (scores / "budget-s4.jsonl").unlink()  # a judged seed missing: no verdict
    assert analyse(tmp_path / "runs", tmp_path / "claims", tmp_path / "seeds", "draw", "budget")["judged"][
        "holds"] is None


def test_a_continued_run_keeps_the_shipped_trials_and_adds_the_rest(family, target, tmp_path):
    """copy_run + resume with a larger budget: the copy's first trials are the source's, the source is untouched."""
    from helpers import make_config, search, trials

    from bench.repeat_search import copy_run

    cfg = make_config(family, target, budget=6)
    search(cfg, tmp_path / "shipped")
    (tmp_path / "shipped" / "config.yaml").write_text(yaml.safe_dump(cfg))  # as `evomerge search` keeps it
    before = trials(tmp_path / "shipped")
    copy_run(tmp_path / "shipped", tmp_path / "runs" / "budget-s0")
    assert not (tmp_path / "runs" / "budget-s0.copying").exists()
    search({**cfg, "budget": {"max_trials": 12}}, tmp_path / "runs" / "budget-s0", resume=True)
    after = trials(tmp_path / "runs" / "budget-s0")
    assert after[:6] == before and len(after) == 12 and trials(tmp_path / "shipped") == before
    uninterrupted = tmp_path / "twelve"
    search({**cfg, "budget": {"max_trials": 12}}, uninterrupted)
    assert trials(uninterrupted) == after  # continuing is the same search as running 12 at once


def test_the_restarts_arm_adds_ipop_restarts_only_and_judges_five_seeds_on_its_own_draw():
    shipped = yaml.safe_load(resolve_path("evomerge:configs/search/miniature-ps.yaml").read_text())
    arm = arm_config(4, "restarts")
    config = SearchConfig.model_validate(arm)
    assert config.optimizer.restarts.strategy == "ipop" and config.optimizer.restarts.patience == 2
    assert config.optimizer.restarts.start == "x0"
    assert arm["optimizer"].pop("restarts") == {"strategy": "ipop", "patience": 2, "start": "x0"}
    assert arm.pop("name") != shipped.pop("name")
    shipped["optimizer"]["seed"] = 4
    assert arm == shipped  # the budget (88) and fitness unchanged
    assert ARMS["restarts"].judged == (0, 1, 2, 3, 4) and ARMS["restarts"].more == ()
    assert ARMS["restarts"].draw == "evomerge:data/ja_math_heldout_k_1000.jsonl" not in {
        a.draw for name, a in ARMS.items() if name != "restarts"}


def test_the_fitness256_arm_scores_every_candidate_on_the_256_problems_only_and_judges_five_seeds():
    shipped = yaml.safe_load(resolve_path("evomerge:configs/search/miniature-ps.yaml").read_text())
    arm = arm_config(3, "fitness256")
    SearchConfig.model_validate(arm)
    assert arm["fitness"][0].pop("data") == "evomerge:data/ja_math_fitness_256.jsonl"
    assert "subset" not in arm and "racing" not in arm and "limit" not in arm["fitness"][0]  # all 256, every trial
    assert arm.pop("name") != shipped.pop("name")
    shipped["fitness"][0].pop("data")
    shipped["optimizer"]["seed"] = 3
    assert arm == shipped  # 88 trials, CMA-ES as shipped
    assert ARMS["fitness256"].judged == (0, 1, 2, 3, 4) and ARMS["fitness256"].more == ()
    assert ARMS["fitness256"].draw == "evomerge:data/ja_math_heldout_m_1000.jsonl" not in {
        a.draw for name, a in ARMS.items() if name != "fitness256"}


def test_the_shipped_config_is_the_shipped_file_with_the_seed_set():
    shipped = yaml.safe_load(resolve_path("evomerge:configs/search/miniature-ps.yaml").read_text())
    shipped["optimizer"]["seed"] = 4
    assert arm_config(4, "shipped") == shipped


def test_the_fitness256_report_judges_its_five_seeds_and_pairs_each_with_the_shipped_search(tmp_path):
    runs = tmp_path / "runs"
    scores = runs / "scores"
    scores.mkdir(parents=True)
    write_rows(scores / "math.jsonl", scored_rows(SCORED_FACTS, set(range(40)), ja=False))
    for s, right in enumerate((50, 52, 54, 51, 53)):  # a spread of 4 / 140
        write_rows(scores / f"fitness256-s{s}.jsonl", scored_rows(SCORED_FACTS, set(range(right))))
    for s, right in enumerate((40, 60, 50)):  # the shipped searches of seeds 0-2 only, so far
        write_rows(scores / f"ps-s{s}.jsonl", scored_rows(SCORED_FACTS, set(range(right))))
    report = analyse(runs, tmp_path / "shipped", tmp_path / "shipped", "draw", "fitness256")
    assert report["judged"]["holds"] is True and report["judged"]["spread_points"] == round(100 * 4 / 140, 2)
    minus = report["arm_minus_shipped"]
    assert list(minus["seeds"]) == [0, 1, 2] and minus["search_unit"]["searches"] == 3
    assert [round(t["difference"] * 140) for t in minus["seeds"].values()] == [10, -8, 4]
    assert "continued_minus_shipped" not in report
    (scores / "fitness256-s4.jsonl").unlink()
    assert analyse(runs, tmp_path / "shipped", tmp_path / "shipped", "draw", "fitness256")["judged"]["holds"] is None
