"""Subset fitness: anchors chosen from item-level results, estimates of the full-set score, each generation's best
re-checked on every problem, and the estimation error reported."""

from __future__ import annotations

import json

import pytest

from evomerge.search.records.store import RunStore
from evomerge.search.economy.subset import choose_anchors, estimate
from helpers import cli, make_config, search, trials


def test_anchors_represent_clusters_of_problems_and_the_estimate_is_exact_within_them():
    # 12 problems in three kinds: 6 that every candidate solves, 4 that only strong ones do, 2 that none does
    kinds = [0] * 6 + [1] * 4 + [2] * 2
    strengths = [0.0, 0.3, 0.6, 1.0]
    results = [{i: float(k == 0 or (k == 1 and s > 0.5)) for i, k in enumerate(kinds)} for s in strengths]
    anchors, weights = choose_anchors(results, 12, 3, seed=0)
    assert sorted(kinds[a] for a in anchors) == [0, 1, 2]
    assert sorted(weights) == pytest.approx([2 / 12, 4 / 12, 6 / 12])
    new = {i: float(k == 0 or k == 1) for i, k in enumerate(kinds)}  # a candidate as strong as the best
    assert estimate(new, anchors, weights) == pytest.approx(sum(new.values()) / 12)
    few, w = choose_anchors(results[:1], 12, 5, seed=3)  # one candidate: a seeded random subset
    assert len(few) == 5 and w == [0.2] * 5 and few == choose_anchors(results[:1], 12, 5, seed=3)[0]


def subset_config(family, target, budget=24, items=6):
    cfg = make_config(family, target, budget=budget)
    cfg["optimizer"] = {"name": "cma", "seed": 3, "popsize": 6, "sigma0": 0.3}
    cfg["fitness"] = [{"name": "fitness_fixtures:ItemTarget", "target": str(target)}]
    cfg["subset"] = {"items": items}
    return cfg


def test_a_subset_search_estimates_checks_and_reports_its_error(family, target, tmp_path, capsys):
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(subset_config(family, target)))
    assert cli("search", path, "--run-dir", tmp_path / "run", "--quiet") == 0
    with RunStore(tmp_path / "run") as store:
        done = store.trials()
        total = done[0].items_total
        first = [t for t in done if t.generation == 0]
        assert all(t.status == "complete" and t.items_used == total and len(t.item_values) == total for t in first)
        later = [t for t in done if t.generation > 0]
        assert all(t.items_used in (6, total) for t in later)  # anchors, or every problem for a checked best
        checked = [t for t in later if t.estimate is not None]
        closed = {g["generation"] for g in store.generations()} - {0}
        assert {t.generation for t in checked} == closed  # each closed generation's best was re-checked
        for t in checked:
            assert t.status == "complete" and t.items_used == total and t.fitness != t.estimate
            gen = [u for u in later if u.generation == t.generation]
            assert t.estimate == max(u.estimate if u.estimate is not None else u.fitness for u in gen)
        assert all(t.status == "estimated" for t in later if t.estimate is None)
        assert store.result().status == "complete"
        assert json.loads(store.get_meta("anchors.1"))[0]  # the anchors are kept for resume
        used = sum(t.items_used for t in done)
        # what the run spent counts every scoring: anchors, full sets, and the checks of estimated bests
        scored = used + 6 * len(checked)
        assert store.spent()["generated_tokens"] == 2 * scored and store.spent()["prompt_tokens"] == scored
    assert used < len(done) * total
    assert cli("status", tmp_path / "run", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["estimation_error"]["checked"] == len(checked) and status["estimated"] > 0
    assert cli("export", tmp_path / "run", tmp_path / "best", "--quiet") == 0
    capsys.readouterr()
    assert cli("eval", tmp_path / "best", "--config", path, "--json") == 0
    assert json.loads(capsys.readouterr().out)["fitness"] == status["best"]["fitness"]  # a full-set score


def test_a_subset_run_resumes_exactly(family, target, tmp_path):
    search(subset_config(family, target, budget=14), tmp_path / "a")
    search(subset_config(family, target, budget=24), tmp_path / "a", resume=True)
    search(subset_config(family, target, budget=24), tmp_path / "b")
    assert trials(tmp_path / "a") == trials(tmp_path / "b")


def test_subset_and_racing_exclude_each_other(family, target, tmp_path):
    from evomerge.core.errors import UserError
    from evomerge.search.config import search_config_from_dict

    cfg = subset_config(family, target)
    cfg["racing"] = {}
    with pytest.raises(UserError, match="not both"):
        search_config_from_dict(cfg, "test")


def test_the_first_generation_can_be_estimated_too(family, target, tmp_path):
    """`first_generation: random`: generation 0 is scored on a seeded random subset (nothing is known yet to
    choose anchors from), its best is checked in full like every later generation's, and the run resumes
    exactly; it spends fewer problems than starting from a generation scored in full."""
    cfg = subset_config(family, target)
    cfg["subset"]["first_generation"] = "random"
    search(cfg, tmp_path / "r")
    search(subset_config(family, target), tmp_path / "f")
    with RunStore(tmp_path / "r") as store:
        first = store.generation_trials(0)
        total = first[0].items_total
        anchors, weights = json.loads(store.get_meta("anchors.0"))
        assert len(anchors) == 6 and weights == [1 / 6] * 6
        checked = [t for t in first if t.estimate is not None]
        assert len(checked) == 1 and checked[0].items_used == total and checked[0].status == "complete"
        assert all(t.status == "estimated" and t.items_used == 6 for t in first if t.estimate is None)
        used = sum(t.items_used for t in store.trials())
    with RunStore(tmp_path / "f") as store:
        assert used < sum(t.items_used for t in store.trials())
    short = dict(cfg, budget=dict(cfg["budget"], max_trials=9))
    search(short, tmp_path / "a")
    search(cfg, tmp_path / "a", resume=True)
    assert trials(tmp_path / "a") == trials(tmp_path / "r")


def test_a_subset_setting_that_is_the_default_keeps_older_runs_resumable(family, target):
    from evomerge.search.config import search_config_from_dict

    cfg = subset_config(family, target)
    plain = search_config_from_dict(cfg, "t").fingerprint()
    cfg["subset"]["first_generation"] = "full"
    assert search_config_from_dict(cfg, "t").fingerprint() == plain
    cfg["subset"]["first_generation"] = "random"
    assert search_config_from_dict(cfg, "t").fingerprint() != plain


def test_validation_spending_counts_in_the_run(family, target, tmp_path):
    """A generation's best scored on the validation set: what that spent is part of what the run spent."""
    cfg = make_config(family, target, budget=12)
    cfg["fitness"] = [{"name": "fitness_fixtures:ItemTarget", "target": str(target)}]
    search(cfg, tmp_path / "plain")
    cfg["validation"] = [{"name": "fitness_fixtures:ItemTarget", "target": str(target)}]
    search(cfg, tmp_path / "val")
    with RunStore(tmp_path / "plain") as a, RunStore(tmp_path / "val") as b:
        validated = [t for t in b.trials() if t.val_fitness is not None]
        n = b.trials()[0].items_total
        assert len(validated) == 2  # one per generation
        assert b.spent()["generated_tokens"] == a.spent()["generated_tokens"] + 2 * n * len(validated)


def final_config(family, target, budget=24, finalists=2):
    cfg = subset_config(family, target, budget=budget)
    cfg["subset"].update(first_generation="random", check="final", finalists=finalists)
    return cfg


def test_check_final_scores_only_the_last_generations_bests_in_full(family, target, tmp_path, capsys):
    """`check: final`: no full-set scoring during the run, every generation on a fresh random subset shared by all
    its candidates, and at the end the best by estimate of each of the last two generations scored on every
    problem; the run's best is the better of those two, and what it spent counts the finalists' full scoring."""
    search(final_config(family, target), tmp_path / "run")
    with RunStore(tmp_path / "run") as store:
        done = store.trials()
        total = done[0].items_total
        gens = sorted({t.generation for t in done})
        assert gens == [0, 1, 2, 3]
        anchors = [json.loads(store.get_meta(f"anchors.{g}"))[0] for g in gens]
        assert len({tuple(a) for a in anchors}) == 4 and all(len(a) == 6 for a in anchors)  # fresh each generation
        checked = [t for t in done if t.status == "complete"]
        assert sorted(t.generation for t in checked) == [2, 3]
        for t in checked:
            gen = [u for u in done if u.generation == t.generation]
            assert t.estimate == max(u.estimate if u.estimate is not None else u.fitness for u in gen)
            assert t.items_used == total and len(t.item_values) == total
        assert all(t.status == "estimated" and t.items_used == 6 for t in done if t not in checked)
        assert store.result().id == max(checked, key=lambda t: (t.fitness, -t.id)).id
        scored = 6 * len(done) + total * len(checked)
        assert store.spent()["generated_tokens"] == 2 * scored
    assert cli("export", tmp_path / "run", tmp_path / "best", "--quiet") == 0
    capsys.readouterr()
    assert cli("eval", tmp_path / "best", "--config", _write(tmp_path, final_config(family, target)), "--json") == 0
    with RunStore(tmp_path / "run") as store:
        assert json.loads(capsys.readouterr().out)["fitness"] == store.result().fitness  # a full-set score


def test_finalists_from_the_run_are_its_best_estimates_whatever_their_generation(family, target, tmp_path):
    """`finalists_from: run`: the `finalists` best by estimate of the whole run are scored on every problem (ties by
    trial id), nothing else is; the best is the best of those in full; a run killed before its finalists were
    scored scores the same ones on resume."""
    cfg = final_config(family, target, finalists=3)
    cfg["subset"]["finalists_from"] = "run"
    search(cfg, tmp_path / "run")
    with RunStore(tmp_path / "run") as store:
        done = store.trials()

        def estimate(t):
            return t.estimate if t.estimate is not None else t.fitness

        ranked = sorted(done, key=lambda t: (-estimate(t), t.id))
        checked = [t for t in done if t.status == "complete"]
        assert {t.id for t in checked} == {t.id for t in ranked[:3]}
        last_three = {max((t for t in done if t.generation == g), key=lambda t: (estimate(t), -t.id)).id
                      for g in (1, 2, 3)}
        assert {t.id for t in checked} != last_three  # what `finalists_from: generations` would have scored
        assert all(t.items_used == t.items_total for t in checked)
        assert store.result().id == max(checked, key=lambda t: (t.fitness, -t.id)).id
        spent = store.spent()["generated_tokens"]
        store._q("UPDATE trials SET status='estimated', fitness=estimate, estimate=NULL WHERE id=?", (checked[0].id,))
    search(cfg, tmp_path / "run", resume=True)
    with RunStore(tmp_path / "run") as store:
        assert {t.id for t in store.trials("complete")} == {t.id for t in checked}
        assert store.trial(checked[0].id).fitness == checked[0].fitness
        assert store.spent()["generated_tokens"] > spent
    cfg["subset"]["check"] = "generation"
    del cfg["subset"]["finalists"]
    from evomerge.core.errors import UserError
    from evomerge.search.config import search_config_from_dict

    with pytest.raises(UserError, match="finalists_from"):
        search_config_from_dict(cfg, "test")


def _write(tmp_path, cfg):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_check_final_resumes_exactly_and_finishes_checks_a_killed_run_left(family, target, tmp_path):
    search(final_config(family, target), tmp_path / "r")
    search(final_config(family, target, budget=12), tmp_path / "a")  # stops after 2 generations: checks 0 and 1
    search(final_config(family, target), tmp_path / "a", resume=True)  # 2 more, then checks 2 and 3
    with RunStore(tmp_path / "a") as a, RunStore(tmp_path / "r") as r:
        assert [(t.genes, t.estimate if t.estimate is not None else t.fitness) for t in a.trials()] == \
            [(t.genes, t.estimate if t.estimate is not None else t.fitness) for t in r.trials()]
        # the first run's finalists stay scored (full-set facts): the longer run chooses among four
        assert sorted(t.generation for t in a.trials("complete")) == [0, 1, 2, 3]
        assert {t.id for t in r.trials("complete")} < {t.id for t in a.trials("complete")}
        assert a.result().fitness >= r.result().fitness
    # a run killed before its finalists were scored: the resume scores them and nothing else
    search(final_config(family, target), tmp_path / "k")
    with RunStore(tmp_path / "k") as store:
        last = max(store.trials("complete"), key=lambda t: t.generation)
        store._q("UPDATE trials SET status='estimated', fitness=estimate, estimate=NULL WHERE id=?", (last.id,))
        before = store.spent()["generated_tokens"]
    search(final_config(family, target), tmp_path / "k", resume=True)
    with RunStore(tmp_path / "k") as store:
        assert store.trial(last.id).status == "complete" and store.trial(last.id).fitness == last.fitness
        assert store.spent()["generated_tokens"] > before and len(store.trials()) == 24


def test_finalists_need_check_final(family, target):
    from evomerge.core.errors import UserError
    from evomerge.search.config import search_config_from_dict

    cfg = subset_config(family, target)
    cfg["subset"]["finalists"] = 3
    with pytest.raises(UserError, match="finalists"):
        search_config_from_dict(cfg, "test")
    plain = search_config_from_dict(subset_config(family, target), "t").fingerprint()
    cfg = subset_config(family, target)
    cfg["subset"]["check"] = "generation"
    assert search_config_from_dict(cfg, "t").fingerprint() == plain  # older runs stay resumable


def grow_config(family, target, min_total=1e6, **extra):
    cfg = final_config(family, target)
    cfg["subset"].update(items=3, grow={"step": 2, "min_total": min_total, "max_items": 9, "mean_items": 5})
    cfg["fitness"][0].update(extra)
    return cfg


def test_grow_scores_a_generation_that_scores_too_little_on_more_problems_within_the_budget(family, target,
                                                                                              tmp_path):
    """`grow`: a generation whose candidates score less than `min_total` between them gets `step` more shared
    problems, up to `max_items`, while the later generations' `items` stay paid for within `mean_items` per
    candidate. Each estimate is the mean over all the problems its generation was scored on."""
    search(grow_config(family, target), tmp_path / "run")
    with RunStore(tmp_path / "run") as store:
        done = store.trials()
        total = done[0].items_total
        problems = {g: json.loads(store.get_meta(f"anchors.{g}"))[0] + json.loads(store.get_meta(f"grown.{g}") or "[]")
                    for g in range(4)}
        # 6 candidates x 4 generations x 5 = 120 problem scorings: generation 0 grows to 9 (54 + 3 x 18 reserved),
        # generation 1 to 5 (54 + 30 + 2 x 18), the last two cannot grow
        assert [len(problems[g]) for g in range(4)] == [9, 5, 3, 3]
        assert all(len(set(p)) == len(p) for p in problems.values())
        finalists = [t for t in done if t.status == "complete"]
        assert sorted(t.generation for t in finalists) == [2, 3]
        for t in done:
            assert t.items_used == (total if t in finalists else len(problems[t.generation]))
        for t in finalists:  # the estimate it was told: its item values on its generation's problems, averaged
            assert t.estimate == pytest.approx(sum(t.item_values[i] for i in problems[t.generation])
                                               / len(problems[t.generation]), abs=1e-12)
        spent = sum(6 * len(p) for p in problems.values()) + total * len(finalists)
        assert store.spent()["generated_tokens"] == 2 * spent and 6 * sum(map(len, problems.values())) == 120
    search(grow_config(family, target, min_total=1e-6), tmp_path / "none")  # every generation scores enough
    with RunStore(tmp_path / "none") as store:
        assert all(store.get_meta(f"grown.{g}") is None for g in range(4))
        assert {t.items_used for t in store.trials() if t.status == "estimated"} == {3}


def test_a_run_killed_while_it_grows_resumes_exactly(family, target, tmp_path):
    import os
    import subprocess
    import sys

    from pathlib import Path

    tests = Path(__file__).resolve().parents[2]
    calls = tmp_path / "calls"
    cfg = grow_config(family, target, calls_file=str(calls), kill_at_call=9)  # generation 0's first extension
    env = dict(os.environ, PYTHONPATH=f"{tests}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-m", "evomerge", "search", str(_write(tmp_path, cfg)), "--run-dir",
                           str(tmp_path / "run"), "--quiet"], env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    with RunStore(tmp_path / "run") as store:
        assert sorted(t.items_used for t in store.trials()) == [3, 3, 3, 3, 5, 5]  # killed mid-extension
    assert cli("search", _write(tmp_path, cfg), "--run-dir", tmp_path / "run", "--resume", "--quiet") == 0
    search(grow_config(family, target), tmp_path / "clean")
    with RunStore(tmp_path / "run") as a, RunStore(tmp_path / "clean") as b:
        assert [(t.genes, t.fitness, t.estimate, t.items_used) for t in a.trials()] == \
            [(t.genes, t.fitness, t.estimate, t.items_used) for t in b.trials()]
        assert a.spent()["generated_tokens"] == b.spent()["generated_tokens"]  # the killed call recorded nothing
    # jobs: generation 0: 6 + 3 extensions x 6, generation 1: 6 + 6, then 6 + 6, 2 finalists; and the killed one
    assert int(calls.read_text()) == 24 + 12 + 12 + 2 + 1


def test_grow_needs_check_final_and_a_budget_that_pays_for_the_subsets(family, target):
    from evomerge.core.errors import UserError
    from evomerge.search.config import search_config_from_dict

    cfg = subset_config(family, target)
    cfg["subset"]["grow"] = {"step": 2}
    with pytest.raises(UserError, match="grow"):
        search_config_from_dict(cfg, "test")
    cfg = grow_config(family, target)
    cfg["subset"]["grow"]["mean_items"] = 2
    with pytest.raises(UserError, match="mean_items"):
        search_config_from_dict(cfg, "test")
    cfg = final_config(family, target)
    before = search_config_from_dict(cfg, "t").fingerprint()
    cfg["subset"]["grow"] = None
    assert search_config_from_dict(cfg, "t").fingerprint() == before  # older runs stay resumable


def likelihood_config(family, target, tmp_path, budget=12, **subset):
    """mgsm_ja on the tiny family with a worked `solution` per problem, estimated by its likelihood."""
    data = tmp_path / "m.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"w{i} w{i + 1}", "answer_number": i,
                                          "solution": f"w{i + 2} w{(3 * i) % 50} w{i + 4}"}) for i in range(10)))
    cfg = make_config(family, target, budget=budget)
    cfg["optimizer"] = {"name": "cma", "seed": 3, "popsize": 4, "sigma0": 0.3}
    cfg["fitness"] = [{"name": "mgsm_ja", "data": str(data), "prompt": "{question}", "max_new_tokens": 2,
                       "batch_size": 4, "reference_field": "solution", "engine": "hf"}]
    cfg["subset"] = {"items": 4, "first_generation": "random", "check": "final", "finalists": 2,
                     "signal": "likelihood", **subset}
    return cfg


def test_the_likelihood_signal_ranks_on_references_without_generating_and_finalists_get_the_metric(
        family, target, tmp_path, capsys):
    """`signal: likelihood`: each candidate's estimate is its mean log-probability of the references of its
    generation's shared problems (what a direct computation on the exported model gives), nothing generated; the
    best by it of each of the last two generations is scored on the metric over every problem, and the run's best
    is the better of those."""
    from evomerge.evaluators import Fitness
    from evomerge.search.config import search_config_from_dict

    cfg = likelihood_config(family, target, tmp_path)
    search(cfg, tmp_path / "run")
    with RunStore(tmp_path / "run") as store:
        done = store.trials()
        finalists = [t for t in done if t.status == "complete"]
        assert sorted(t.generation for t in finalists) == [1, 2]
        estimated = [t for t in done if t.status == "estimated"]
        assert len(estimated) == 10 and all(t.fitness < 0 and t.generated_tokens == 0 and t.prompt_tokens > 0
                                            for t in estimated)
        for t in finalists:
            gen = [u for u in done if u.generation == t.generation]
            assert t.estimate == max(u.estimate if u.estimate is not None else u.fitness for u in gen) < 0
            assert 0 <= t.fitness <= 1 and t.items_used == 10 and t.generated_tokens > 0
        assert store.result().id == max(finalists, key=lambda t: (t.fitness, -t.id)).id
        from evomerge.reports.report import fitness_series

        drawn = fitness_series(store)  # log-probabilities are not drawn as if they were accuracies
        assert sorted(g for g, _, _ in drawn["points"]) == [1, 2] and drawn["generations"] == [1, 2]
        probe = estimated[-1]
        anchors = json.loads(store.get_meta(f"anchors.{probe.generation}"))[0]
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.merging.merge import run_merge
    from evomerge.merging.recipe import recipe_from_dict

    run_merge(recipe_from_dict(yaml.safe_load(probe.recipe)), tmp_path / "probe", device="cpu", progress=False)

    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "probe"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "probe"))
    ev = Fitness(search_config_from_dict(cfg, "t").fitness).terms[0].evaluator
    items = ev.reference_items(model, tok, anchors)
    assert probe.fitness == pytest.approx(sum(v["logprob"] for v in items) / len(items), abs=1e-4)
    capsys.readouterr()
    assert cli("status", tmp_path / "run", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["estimates"] == "log-probability" and status["estimation_error"] is None
    assert cli("status", tmp_path / "run") == 0
    assert "they are not the metric" in capsys.readouterr().out


def test_the_agreement_signal_ranks_by_the_share_of_reference_tokens_a_candidate_would_pick_itself(
        family, target, tmp_path, capsys):
    """`signal: agreement`: a candidate's estimate is the mean over its generation's shared problems of the share
    of each reference's tokens that are its greedy pick (what a direct computation on the exported model gives),
    in [0, 1], nothing generated; the finalists get the metric; both reference signals are recorded."""
    from evomerge.evaluators import Fitness
    from evomerge.search.config import search_config_from_dict

    cfg = likelihood_config(family, target, tmp_path, budget=8, signal="agreement")
    search(cfg, tmp_path / "run")
    with RunStore(tmp_path / "run") as store:
        done = store.trials()
        estimated = [t for t in done if t.status == "estimated"]
        finalists = [t for t in done if t.status == "complete"]
        assert sorted(t.generation for t in finalists) == [0, 1] and len(estimated) == 6
        assert all(0 <= t.fitness <= 1 and t.generated_tokens == 0 for t in estimated)
        assert all(set(t.scores["mgsm_ja"]) >= {"ref_agreement", "ref_logprob"} for t in estimated)
        assert len({t.fitness for t in estimated}) > 1  # it ranks: the candidates differ
        probe = estimated[-1]
        anchors = json.loads(store.get_meta(f"anchors.{probe.generation}"))[0]
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.merging.merge import run_merge
    from evomerge.merging.recipe import recipe_from_dict

    run_merge(recipe_from_dict(yaml.safe_load(probe.recipe)), tmp_path / "probe", device="cpu", progress=False)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "probe"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "probe"))
    items = Fitness(search_config_from_dict(cfg, "t").fitness).terms[0].evaluator.reference_items(model, tok, anchors)
    assert probe.fitness == pytest.approx(sum(v["agree"] / v["tokens"] for v in items) / len(items), abs=1e-6)
    capsys.readouterr()
    assert cli("status", tmp_path / "run", "--json") == 0
    assert json.loads(capsys.readouterr().out)["estimates"] == "agreement"
    assert cli("status", tmp_path / "run") == 0
    assert "would pick itself" in capsys.readouterr().out


def test_a_likelihood_run_resumes_exactly(family, target, tmp_path):
    search(likelihood_config(family, target, tmp_path, budget=6), tmp_path / "a")
    search(likelihood_config(family, target, tmp_path), tmp_path / "a", resume=True)
    search(likelihood_config(family, target, tmp_path), tmp_path / "b")
    with RunStore(tmp_path / "a") as a, RunStore(tmp_path / "b") as b:
        pick = [(t.genes, t.estimate if t.estimate is not None else t.fitness) for t in b.trials()]
        assert [(t.genes, t.estimate if t.estimate is not None else t.fitness) for t in a.trials()] == pick


def test_the_likelihood_signal_is_refused_where_it_cannot_work(family, target, tmp_path, capsys):
    from evomerge.core.errors import UserError
    from evomerge.search.config import search_config_from_dict

    for change, message in [({"check": "generation", "finalists": None}, "needs `check: final`"),
                            ({"grow": {"step": 2}}, "does not apply to `signal: likelihood`"),
                            ({"signal": "agreement", "check": "generation", "finalists": None},
                             "`signal: agreement` needs `check: final`"),
                            ({"signal": "agreement", "grow": {"step": 2}}, "does not apply to `signal: agreement`")]:
        cfg = likelihood_config(family, target, tmp_path, **change)
        if cfg["subset"]["finalists"] is None:
            del cfg["subset"]["finalists"]
        with pytest.raises(UserError, match=message):
            search_config_from_dict(cfg, "test")
    cfg = likelihood_config(family, target, tmp_path)
    del cfg["fitness"][0]["reference_field"]
    assert cli("search", _write(tmp_path, cfg), "--run-dir", tmp_path / "no", "--quiet") == 2
    err = capsys.readouterr().err
    assert "subset.signal" in err and "reference_field" in err and "Traceback" not in err
    assert not (tmp_path / "no").exists()
    before = search_config_from_dict(final_config(family, target), "t").fingerprint()
    cfg = final_config(family, target)
    cfg["subset"]["signal"] = "metric"
    assert search_config_from_dict(cfg, "t").fingerprint() == before  # older runs stay resumable


@pytest.mark.parametrize("source, asked, available", [("run", 50, 24), ("generations", 9, 4)])
def test_more_finalists_than_the_run_has_are_all_scored_and_said_once(family, target, tmp_path, source, asked,
                                                                      available):
    """`finalists: 50` in a run of 24 trials, or 9 with `finalists_from: generations` over 4 generations, used to
    run with no word: every candidate there is (or each generation's best) is scored in full, said in one line."""
    from evomerge.search.config import search_config_from_dict
    from evomerge.search.loop.run import run_search

    cfg = final_config(family, target, finalists=asked)
    cfg["subset"]["finalists_from"] = source
    lines = []
    run_search(search_config_from_dict(cfg, "test"), tmp_path / "run", progress=False, log=lines.append)
    said = [x for x in lines if "subset.finalists" in x]
    assert said == [f"note: subset.finalists is {asked}, but the run has {available} "
                    + ("distinct estimated candidate(s): all of them are" if source == "run"
                       else "generation(s): the best of each is") + " scored on every problem"], lines
    with RunStore(tmp_path / "run") as store:
        checked = [t for t in store.trials() if t.status == "complete"]
        distinct = [t for t in store.trials() if t.duplicate_of is None]
        assert len(checked) == (len(distinct) if source == "run" else 4)
