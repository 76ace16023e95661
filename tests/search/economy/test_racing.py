"""Racing: candidates see the problems in one seeded order, a chunk at a time, and stop once their upper
confidence bound cannot reach the generation's selection cut. Off, a run is what it always was."""

from __future__ import annotations

import json

import pytest

from evomerge.search.records.store import RunStore
from helpers import cli, make_config, search, trials


def racing_config(family, target, budget=30, **racing):
    cfg = make_config(family, target, budget=budget)
    cfg["optimizer"] = {"name": "cma", "seed": 3, "popsize": 6, "sigma0": 0.3}
    cfg["fitness"] = [{"name": "fitness_fixtures:ItemTarget", "target": str(target)}]
    cfg["racing"] = {"chunk": 4, "min_items": 8, "confidence": 0.9, **racing}
    return cfg


def test_racing_stops_losers_early_and_scores_every_winner_on_the_full_set(family, target, tmp_path):
    search(racing_config(family, target), tmp_path / "run")
    with RunStore(tmp_path / "run") as store:
        done = store.trials()
        raced = [t for t in done if t.status == "raced"]
        full = [t for t in done if t.status == "complete"]
        assert raced and full, "the test needs both"
        total = full[0].items_total
        assert all(t.items_used == total and next(iter(t.scores.values()))["items"] == total for t in full)
        for t in raced:
            assert 8 <= t.items_used < total and t.bound is not None
            cut = sorted((u.fitness for u in full if u.generation == t.generation and u.id < t.id), reverse=True)[2]
            assert t.bound < cut  # could not reach the generation's 3rd best (mu = 6 // 2)
            assert t.fitness < cut
        for g in {t.generation for t in done}:  # each generation's best is a full-set score
            gen = [t for t in done if t.generation == g and t.status in ("complete", "raced")]
            assert max(gen, key=lambda t: t.fitness).status == "complete"
        assert store.best().status == "complete"
        used = sum(t.items_used for t in done)
    assert used < len(done) * total  # problems saved
    assert cli("status", tmp_path / "run") == 0


def test_the_exported_best_rescores_exactly(family, target, tmp_path, capsys):
    import yaml

    cfg = racing_config(family, target, budget=18)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli("search", path, "--run-dir", tmp_path / "run", "--quiet") == 0
    assert cli("status", tmp_path / "run", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert cli("export", tmp_path / "run", tmp_path / "best", "--quiet") == 0
    capsys.readouterr()
    assert cli("eval", tmp_path / "best", "--config", path, "--json") == 0
    assert json.loads(capsys.readouterr().out)["fitness"] == status["best"]["fitness"]


def test_a_raced_run_resumes_exactly(family, target, tmp_path):
    search(racing_config(family, target, budget=12), tmp_path / "a")
    search(racing_config(family, target, budget=30), tmp_path / "a", resume=True)
    search(racing_config(family, target, budget=30), tmp_path / "b")
    assert trials(tmp_path / "a") == trials(tmp_path / "b")


def test_racing_off_is_todays_run_and_racing_needs_an_item_evaluator(family, target, tmp_path):
    from evomerge.core.errors import UserError

    cfg = racing_config(family, target, budget=12)
    cfg.pop("racing")
    search(cfg, tmp_path / "off")
    with RunStore(tmp_path / "off") as store:
        assert all(t.status == "complete" and t.items_used == t.items_total and t.bound is None
                   for t in store.trials())  # every problem, every trial
    bad = make_config(family, target, budget=6)
    bad["racing"] = {}
    with pytest.raises(UserError, match="racing needs one fitness evaluator"):
        search(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("n,k", [(20, 5), (20, 12), (40, 8)])
def test_the_binary_bound_covers_every_true_count_at_its_confidence(n, k):
    """The exact bound's miss probability, computed exactly over every outcome, is at most delta for every true
    number of right answers K, and the bound is the tightest that is: one count lower would miss more often."""
    from scipy.stats import hypergeom

    from evomerge.evaluators.racing import binary_upper_count

    delta = 0.05
    bound = [binary_upper_count(x, k, n, delta) for x in range(k + 1)]
    assert bound == sorted(bound) and all(x <= b <= x + n - k for x, b in enumerate(bound))
    for true in range(n + 1):
        miss = sum(hypergeom.pmf(x, n, true, k) for x in range(k + 1) if bound[x] < true)
        assert miss <= delta + 1e-12
    for x, b in enumerate(bound):  # tight: K = b + 1 is rejected by the test behind the bound
        if b < x + n - k:
            assert hypergeom.cdf(x, n, b + 1, k) <= delta


def test_the_binary_bound_is_tighter_than_hoeffding_serfling_where_it_matters():
    from evomerge.evaluators.racing import log_term, upper_bound

    log_t = log_term(256, 16, 32, 0.95)
    exact, hs = upper_bound(0.0, 64, 256, 0, 1, log_t, binary=True), upper_bound(0.0, 64, 256, 0, 1, log_t)
    assert exact == pytest.approx(19 / 256) and hs > 2 * exact  # all wrong after 64 of 256 problems
    assert upper_bound(0.5, 64, 256, 0, 1, log_t, binary=True) < upper_bound(0.5, 64, 256, 0, 1, log_t)
    assert upper_bound(10 / 256, 256, 256, 0, 1, log_t, binary=True) == pytest.approx(10 / 256)  # every item in


def test_right_or_wrong_items_race_with_the_exact_bound(family, target, tmp_path):
    """An evaluator that declares binary items gets the exact bound in a real run, and a replay of the same
    generation with it decides the same; the range-based bound stops fewer candidates on the same results."""
    from evomerge.search.economy.replay import replay_racing

    cfg = racing_config(family, target, budget=6)
    cfg["fitness"] = [{"name": "fitness_fixtures:ItemHit", "target": str(target), "hit": 0.6}]
    search(cfg, tmp_path / "raced")
    full = dict(cfg)
    full.pop("racing")
    search(full, tmp_path / "full")
    with RunStore(tmp_path / "raced") as store:
        real = store.generation_trials(0)
        assert all(v in (0.0, 1.0) for t in real if t.item_values for v in t.item_values)
    setting = {k: cfg["racing"][k] for k in ("chunk", "min_items", "confidence")}
    exact = replay_racing(tmp_path / "full", **setting)
    assert exact["setting"]["bound"] == "exact binary"
    assert exact["generations"][0]["raced_ids"] == [t.id for t in real if t.status == "raced"]
    assert exact["generations"][0]["problems"] == sum(t.items_used for t in real)
    ranged = replay_racing(tmp_path / "full", **setting, binary=0)
    assert exact["generations"][0]["raced_ids"], "the test needs a raced candidate"
    assert ranged["problems_used"] > exact["problems_used"]
