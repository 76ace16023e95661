"""Replaying a run scored in full under racing or subset settings: the decisions a real run would make."""

from __future__ import annotations


import pytest

from evomerge.core.errors import UserError
from evomerge.search.economy.replay import replay_racing, replay_subset
from evomerge.search.records.store import RunStore
from helpers import cli, make_config, search


def item_config(family, target, budget=24, **extra):
    cfg = make_config(family, target, budget=budget)
    cfg["optimizer"] = {"name": "cma", "seed": 3, "popsize": 6, "sigma0": 0.3}
    cfg["fitness"] = [{"name": "fitness_fixtures:ItemTarget", "target": str(target)}]
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def full_run(family, target, tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    search(item_config(family, target), root / "full")
    return root


def test_a_full_run_keeps_item_results(full_run):
    with RunStore(full_run / "full") as store:
        done = store.trials("complete")
        assert all(len(t.item_values) == t.items_total for t in done)
        assert all(sum(t.item_values) / len(t.item_values) == pytest.approx(t.fitness) for t in done)


def test_racing_replay_decides_generation_zero_as_a_real_racing_run(family, target, full_run, tmp_path):
    setting = {"chunk": 4, "min_items": 8, "confidence": 0.9}
    search(item_config(family, target, budget=6, racing=setting), tmp_path / "raced")
    with RunStore(tmp_path / "raced") as store:
        real = store.generation_trials(0)
    report = replay_racing(full_run / "full", **setting)
    gen0 = report["generations"][0]
    assert gen0["raced_ids"] == [t.id for t in real if t.status == "raced"]
    assert gen0["problems"] == sum(t.items_used for t in real)
    assert report["saving"] > 1 and 0 <= report["mean_top_half_agreement"] <= 1


def test_subset_replay_reports_agreement_and_error(full_run, capsys):
    report = replay_subset(full_run / "full", items=6)
    assert [r["generation"] for r in report["generations"]] == [1, 2, 3]
    assert all(r["anchors"] == 6 and 0 <= r["top_half_agreement"] <= 1 for r in report["generations"])
    assert report["saving"] > 1 and report["mean_abs_best_error"] >= 0
    assert cli("replay", full_run / "full", "--subset", "items=6") == 0
    assert "mean top-half agreement" in capsys.readouterr().out
    assert cli("replay", full_run / "full", "--racing", "chunk=4,nope=1") == 2


def test_a_subset_replay_of_one_generation_has_nothing_to_compare(family, target, tmp_path, capsys):
    search(item_config(family, target, budget=6), tmp_path / "one")
    assert cli("replay", tmp_path / "one", "--subset", "items=6") == 0
    assert "no generation to compare" in capsys.readouterr().out


def test_replay_needs_item_results(family, target, tmp_path, capsys):
    search(make_config(family, target, budget=6), tmp_path / "plain")  # TargetDistance keeps no item results
    assert cli("replay", tmp_path / "plain", "--racing", "chunk=4", "--json") == 2
    assert "item results" in capsys.readouterr().err


def test_subset_replay_with_an_estimated_first_generation(full_run):
    report = replay_subset(full_run / "full", items=6, first_random=1)
    assert [r["generation"] for r in report["generations"]] == [0, 1, 2, 3]
    assert report["saving"] > replay_subset(full_run / "full", items=6)["saving"]


def test_a_check_final_replay_decides_generation_zero_as_a_real_run(family, target, full_run, tmp_path, capsys):
    """`final=1`: fresh random anchors each generation, no checks during the run, the finalists at the end; its
    generation 0 (the same candidates as the full run's) is estimated exactly as a real `check: final` run's."""
    subset = {"items": 6, "first_generation": "random", "check": "final", "finalists": 2}
    search(item_config(family, target, budget=6, subset=subset), tmp_path / "real")
    with RunStore(tmp_path / "real") as store:
        import json

        real_anchors = json.loads(store.get_meta("anchors.0"))[0]
        real = sorted(store.generation_trials(0), key=lambda t: t.ask_index)
        real_est = [t.estimate if t.estimate is not None else t.fitness for t in real]
    report = replay_subset(full_run / "full", items=6, first_random=1, final=1)
    gen0 = report["generations"][0]
    assert gen0["anchor_ids"] == real_anchors and gen0["estimates"] == pytest.approx(real_est)
    with RunStore(full_run / "full") as store:
        n = store.trials()[0].items_total
    assert report["problems_used"] == 6 * 24 + 2 * n  # anchors only, then two finalists in full
    choice = report["final_choice"]
    assert choice["generation"] in (2, 3) and choice["full"] <= choice["run_best_full"]
    assert cli("replay", full_run / "full", "--subset", "items=6,first_random=1,final=1") == 0
    assert "final choice: trial" in capsys.readouterr().out
    assert cli("replay", full_run / "full", "--subset", "items=6,final=2") == 2
    # `from_run=1` (`finalists_from: run`): the best estimates of the whole run, whatever their generation
    wide = replay_subset(full_run / "full", items=6, first_random=1, final=1, finalists=3, from_run=1)
    pool = sorted((e, i) for r in wide["generations"]
                  for e, i in zip(r["estimates"], _ids(full_run / "full", r["generation"])))
    pool.sort(key=lambda x: (-x[0], x[1]))
    assert wide["final_choice"]["finalists"] == [i for _, i in pool[:3]]
    assert wide["problems_used"] == 6 * 24 + 3 * n
    assert cli("replay", full_run / "full", "--subset", "items=6,final=1,finalists=3,from_run=1") == 0
    assert "final choice: trial" in capsys.readouterr().out
    assert cli("replay", full_run / "full", "--subset", "items=6,from_run=1") == 2  # needs final=1
    assert "from_run needs final=1" in capsys.readouterr().err


def _ids(run, generation):
    with RunStore(run) as store:
        trials = [t for t in store.generation_trials(generation) if t.duplicate_of is None]
        return [t.id for t in sorted(trials, key=lambda t: t.ask_index)]


@pytest.mark.parametrize("min_total", [20.0, 1e6], ids=["until-enough", "until-budget"])
def test_a_grow_replay_decides_generation_zero_as_a_real_run(family, target, full_run, tmp_path, min_total):
    """`grow_step=...` (with `final=1`): generation 0 grows on the same draws, totals and budget as a real run
    with `grow`, so its problems and estimates equal the real run's."""
    grow = {"step": 2, "min_total": min_total, "max_items": 9, "mean_items": 5}
    subset = {"items": 3, "first_generation": "random", "check": "final", "finalists": 2, "grow": grow}
    search(item_config(family, target, subset=subset), tmp_path / "real")
    with RunStore(tmp_path / "real") as store:
        import json

        real_anchors = json.loads(store.get_meta("anchors.0"))[0] + json.loads(store.get_meta("grown.0") or "[]")
        real = sorted(store.generation_trials(0), key=lambda t: t.ask_index)
        real_est = [t.estimate if t.estimate is not None else t.fitness for t in real]
    report = replay_subset(full_run / "full", items=3, first_random=1, final=1, grow_step=2, grow_min=min_total,
                           grow_max=9, grow_mean=5)
    gen0 = report["generations"][0]
    assert 3 < len(real_anchors) <= 9  # it grew
    assert gen0["anchor_ids"] == real_anchors and gen0["estimates"] == pytest.approx(real_est, abs=1e-12)
    assert report["setting"]["grow"]["step"] == 2
    with pytest.raises(UserError, match="final=1"):
        replay_subset(full_run / "full", items=3, grow_step=2)
    with pytest.raises(UserError, match="max_items"):
        replay_subset(full_run / "full", items=3, final=1, grow_step=2, grow_max=2)


def test_replay_says_when_finalists_exceed_what_the_run_has(full_run, capsys):
    report = replay_subset(full_run / "full", items=6, first_random=1, final=1, finalists=9)
    assert report["final_choice"]["note"].startswith("note: subset.finalists is 9, but the run has 4 generation(s)")
    assert replay_subset(full_run / "full", items=6, first_random=1, final=1)["final_choice"]["note"] is None
    assert cli("replay", full_run / "full", "--subset", "items=6,first_random=1,final=1,finalists=99,from_run=1") == 0
    assert "subset.finalists is 99, but the run has 24 distinct" in capsys.readouterr().out


@pytest.mark.parametrize("source", ["run", "generations"])
def test_replay_and_a_real_run_decide_through_one_policy(family, target, tmp_path, source):
    """A `check: final` run and the replay of a full run of the same seed (whose first generation is the same
    candidates) choose the same problems, the same estimates and the same finalists: both ask SubsetPolicy
    (economy/subset.py). One generation, so that the optimiser, told other values, cannot part them."""
    import json

    subset = {"items": 6, "first_generation": "random", "check": "final", "finalists": 3,
              "finalists_from": source}
    search(item_config(family, target, budget=6, subset=subset), tmp_path / "real")
    search(item_config(family, target, budget=6), tmp_path / "full")
    report = replay_subset(tmp_path / "full", items=6, first_random=1, final=1, finalists=3,
                           from_run=int(source == "run"))
    with RunStore(tmp_path / "real") as store:
        anchors = json.loads(store.get_meta("anchors.0"))[0]
        real = sorted(store.trials(), key=lambda t: t.ask_index)
        estimates = [t.estimate if t.estimate is not None else t.fitness for t in real]
        checked = sorted(t.id for t in real if t.status == "complete")
    gen0 = report["generations"][0]
    assert gen0["anchor_ids"] == anchors and gen0["estimates"] == pytest.approx(estimates)
    assert sorted(report["final_choice"]["finalists"]) == checked
    assert len(checked) == (3 if source == "run" else 1)
    assert (report["final_choice"]["note"] is None) == (source == "run")  # one generation for three finalists


def test_a_subset_run_s_recorded_decisions_are_its_policy_s(family, target, tmp_path):
    """Every anchor set a multi-generation `check: final` run recorded, and its finalists, re-derived from its
    store by a SubsetPolicy built from its config."""
    import json

    from evomerge.search.config import SubsetConfig
    from evomerge.search.economy.subset import SubsetPolicy

    subset = {"items": 6, "first_generation": "random", "check": "final", "finalists": 2, "finalists_from": "run"}
    search(item_config(family, target, budget=24, subset=subset), tmp_path / "real")
    with RunStore(tmp_path / "real") as store:
        cfg = store.config()
        policy = SubsetPolicy(SubsetConfig(**cfg["subset"]), store.trials()[0].items_total,
                              cfg["optimizer"]["popsize"], cfg["budget"]["max_trials"])
        trials = store.trials()
        for g in sorted({t.generation for t in trials}):
            assert json.loads(store.get_meta(f"anchors.{g}")) == [list(x) for x in policy.anchors(g, [])]
        rows = [(t.estimate if t.estimate is not None else t.fitness, t.id, t.generation, t.duplicate_of is not None)
                for t in trials]
        assert sorted(policy.finalists(rows)[0]) == sorted(t.id for t in trials if t.status == "complete")
