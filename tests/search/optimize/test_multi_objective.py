"""Multi-objective searches on tiny models whose objectives conflict by construction: closeness to the `ja`
fine-tune and closeness to the `math` fine-tune. A task-arithmetic merge base + w1 d_ja + w2 d_math is closest
to `ja` at (1, 0) and to `math` at (0, 1); both distances are quadratics with the same Hessian, so the Pareto
set is exactly the segment between the two optima: w1 + w2 = 1, w1 in [0, 1]."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evomerge.search.optimize import pareto
from evomerge.search.records.results import run_status
from evomerge.search.records.store import RunStore
from helpers import cli, search, write


def mo_config(family, optimizer="nsga2", budget=48, constraints=None, seed=0):
    targets = [family[m] / "model.safetensors" for m in ("ja", "math")]
    cfg = {
        "merge": {"merge_method": "task_arithmetic", "base_model": str(family["base"]),
                  "models": [{"model": str(family["ja"])}, {"model": str(family["math"])}]},
        "genome": {"parameters": ["weight"]},
        "optimizer": {"name": optimizer, "seed": seed, "popsize": 8},
        "budget": {"max_trials": budget},
        "fitness": [{"name": "fitness_fixtures:TargetDistance", "target": str(t)} for t in targets],
        "device": "cpu",
    }
    if constraints:
        cfg["constraints"] = constraints
    return cfg


def genes_by_trial(run_dir):
    with RunStore(run_dir) as store:
        return {t.id: (t.generation, t.params, t.scores, t.status) for t in store.trials()}


def off_segment(params) -> float:
    w = list(params.values())
    return abs(w[0] + w[1] - 1)


def test_nsga2_finds_the_known_front(family, tmp_path):
    run = tmp_path / "run"
    search(mo_config(family), run)
    info = run_status(run)
    front = info["front"]
    trials = genes_by_trial(run)
    assert front is not None and len(front["members"]) >= 5
    assert [o["key"] for o in front["objectives"]] == ["fitness_fixtures:TargetDistance#0",
                                                         "fitness_fixtures:TargetDistance#1"]
    # the front is exactly the non-dominated set of the scored candidates (a repeated candidate counts once)
    with RunStore(run) as store:
        done, seen = [], set()
        for t in store.trials("complete"):
            if t.duplicate_of is None and t.recipe not in seen:
                seen.add(t.recipe)
                done.append(t)
        objs, _ = pareto.for_run(store)
    vectors = np.array([pareto.vector(t.scores, objs) for t in done])
    expected = {done[i].id for i in pareto.non_dominated(vectors)}
    assert {m["trial"] for m in front["members"]} == expected
    # NSGA-II moves onto the Pareto set and spreads along it
    first = [off_segment(p) for g, p, _, s in trials.values() if g == 0 and s == "complete"]
    members = [trials[m["trial"]][1] for m in front["members"]]
    assert np.mean([off_segment(p) for p in members]) < 0.5 * np.mean(first)
    w_ja = [list(p.values())[0] for p in members]
    assert max(w_ja) - min(w_ja) > 0.4
    assert info["front"]["hypervolume"] > 0


def test_the_hypervolume_grows_and_status_prints_the_front(family, tmp_path, capsys):
    run = tmp_path / "run"
    search(mo_config(family, budget=40), run)
    with RunStore(run) as store:
        history = pareto.hypervolume_history(store.trials("complete"), *pareto.for_run(store))
    volumes = [v for _, v in history]
    assert len(volumes) == 5 and all(b >= a for a, b in zip(volumes, volumes[1:])) and volumes[-1] > volumes[0]
    assert cli("status", run) == 0
    out = capsys.readouterr().out
    assert "Pareto front:" in out and "neg_mse (higher is better)" in out
    member = run_status(run)["front"]["members"][-1]["trial"]
    assert cli("export", run, tmp_path / "out", "--trial", member, "--quiet") == 0
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_constraints_keep_the_front_feasible(family, tmp_path):
    """A floor on closeness to `ja`: the front holds only trials that meet it."""
    run = tmp_path / "run"
    free = tmp_path / "free"
    search(mo_config(family, budget=32), free)
    values = [m["values"][0] for m in run_status(free)["front"]["members"]]
    floor = float(np.median(values))
    search(mo_config(family, budget=32, constraints=[
        {"evaluator": "fitness_fixtures:TargetDistance#0", "metric": "neg_mse", "min": floor}]), run)
    front = run_status(run)["front"]
    assert front["members"] and all(m["values"][0] >= floor for m in front["members"])
    assert front["feasible"] < front["scored"]  # some candidates did break it, and were left out


@pytest.mark.parametrize("optimizer", ["nsga3", "motpe"])
def test_other_backends_run(family, tmp_path, optimizer):
    run = tmp_path / "run"
    search(mo_config(family, optimizer=optimizer, budget=16), run)
    assert run_status(run)["completed"] == 16 and run_status(run)["front"]["members"]


def test_resume_replays_exactly(family, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    search(mo_config(family, budget=32), whole)
    search(mo_config(family, budget=16), split)
    search(mo_config(family, budget=32), split, resume=True)
    a, b = genes_by_trial(whole), genes_by_trial(split)
    assert [v[1] for v in a.values()] == [v[1] for v in b.values()]


def test_bad_multi_objective_configs_are_refused(family, tmp_path):
    one = mo_config(family)
    one["fitness"] = one["fitness"][:1]
    cma = mo_config(family, optimizer="cma", constraints=[
        {"evaluator": "fitness_fixtures:TargetDistance#0", "metric": "neg_mse", "min": 0}])
    unknown = mo_config(family, constraints=[{"evaluator": "perplexity", "metric": "perplexity", "max": 3}])
    no_bound = mo_config(family, constraints=[{"evaluator": "fitness_fixtures:TargetDistance#0", "metric": "neg_mse"}])
    for cfg, words in [(one, "two or more fitness entries"), (cma, "need a multi-objective optimizer"),
                       (unknown, "no such fitness entry"), (no_bound, "needs `min` or `max`")]:
        path = write(tmp_path / "c.yaml", json.dumps(cfg))
        assert cli("search", path, "--run-dir", tmp_path / "never") == 2
        assert not (tmp_path / "never").exists()


def test_the_report_draws_the_front(family, tmp_path):
    run = tmp_path / "run"
    search(mo_config(family, budget=24), run)
    assert cli("report", run) == 0
    assert (run / "report" / "pareto.png").exists()
    text = (run / "report" / "README.md").read_text()
    assert "Pareto front (neg_mse (higher is better), neg_mse (higher is better)): trial" in text


@pytest.mark.parametrize("optimizer", ["nsga2", "map_elites"])
def test_data_flow_searches_take_several_objectives_too(family, target_logits, other, tmp_path, optimizer):
    from helpers import dfs_config

    cfg = dfs_config(family, target_logits, other, budget=16)
    cfg["optimizer"] = {"name": optimizer, "seed": 0, "popsize": 8}
    cfg["fitness"] = [dict(cfg["fitness"][0], limit=3), dict(cfg["fitness"][0], limit=6)]
    run = tmp_path / "run"
    search(cfg, run)
    info = run_status(run)
    assert info["completed"] == 16 and info["front"]["members"]
    assert (info["archive"] is not None) == (optimizer == "map_elites")


def test_a_table_lists_the_front_members(family, tmp_path):
    """`front: RUN` in a table: one row per front member, each its exported trial (`run:RUN@ID`)."""
    from evomerge.reports.table import build_table, load_table_config

    run = tmp_path / "run"
    search(mo_config(family, budget=16), run)
    target = family["ja"] / "model.safetensors"
    table = write(tmp_path / "t.yaml", json.dumps({
        "models": [{"front": str(run), "name": "mo"}],
        "tasks": [{"name": "ja", "evaluator": {"name": "fitness_fixtures:TargetDistance", "target": str(target)}}],
        "device": "cpu", "self_check": False}))
    result = build_table(load_table_config(table), tmp_path / "cache", log=lambda m: None)
    members = run_status(run)["front"]["members"]
    assert list(result["rows"]) == [f"mo trial {m['trial']}" for m in members]
    for m in members:  # each row scored the exported trial: the search's own score for it
        assert result["rows"][f"mo trial {m['trial']}"]["ja"] == pytest.approx(m["values"][0], rel=1e-4)


def test_a_candidate_and_its_duplicate_are_one_front_member():
    """The driver records a repeated candidate as a trial of its own (`duplicate_of`, the first's result): the
    front (and `{front: RUN}` table rows) lists that candidate once, as its first trial."""
    from evomerge.search.optimize import pareto
    from evomerge.search.records.store import Trial

    def trial(i, a, b, recipe, dup=None):
        return Trial(id=i, generation=0, genes=[0.0], params={}, recipe=recipe, status="complete",
                     scores={"x": {"m": a}, "y": {"m": b}}, duplicate_of=dup)

    objs = [pareto.Objective("x", "m"), pareto.Objective("y", "m")]
    trials = [trial(1, 1.0, 0.0, "A"), trial(2, 0.0, 1.0, "B"), trial(3, 1.0, 0.0, "A", dup=1),
              trial(4, 0.0, 1.0, "B"), trial(5, 0.5, 0.0, "C")]  # 4: B again, not flagged (another gene vector)
    info = pareto.front(trials, objs, [])
    assert sorted(m["trial"] for m in info["members"]) == [1, 2]
    assert info["scored"] == 3
