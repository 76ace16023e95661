"""Optimiser backends: deterministic given the seed (what exact resume relies on), in the unit box, improving."""

from __future__ import annotations

import numpy as np
import pytest

from evomerge.search.optimize.optimizers import OPTIMIZERS, OptimizerConfig, make_optimizer

BACKENDS = [{"name": "cma"}, {"name": "optuna", "sampler": "cmaes"}, {"name": "optuna", "sampler": "random"}]


def sphere(x: np.ndarray) -> float:
    return -float(((x - 0.3) ** 2).sum())  # maximised at 0.3 in every gene


def run(cfg: dict, generations: int, seed: int = 4) -> list[list[np.ndarray]]:
    opt = make_optimizer(OptimizerConfig(seed=seed, popsize=6, **cfg), np.full(3, 0.5), ["a", "b", "c"])
    asked = []
    for _ in range(generations):
        xs = opt.ask()
        asked.append(xs)
        opt.tell(xs, [sphere(x) for x in xs])
    return asked


@pytest.mark.parametrize("cfg", BACKENDS, ids=lambda c: "-".join(c.values()))
def test_same_seed_same_candidates_and_all_in_the_box(cfg):
    a, b = run(cfg, 4), run(cfg, 4)
    for ga, gb in zip(a, b):
        assert len(ga) == 6
        np.testing.assert_array_equal(np.array(ga), np.array(gb))
        assert all(((x >= 0) & (x <= 1)).all() for x in ga)
    other = run(cfg, 1, seed=5)
    assert not np.array_equal(np.array(other[0]), np.array(a[0]))


@pytest.mark.parametrize("cfg", BACKENDS[:2], ids=["cma", "optuna-cmaes"])
def test_cma_backends_move_towards_the_optimum(cfg):
    gens = run(cfg, 15)
    first, last = np.mean([sphere(x) for x in gens[0]]), np.mean([sphere(x) for x in gens[-1]])
    assert last > first and last > -0.01


def test_steady_state_extras_come_from_the_current_distribution():
    opt = make_optimizer(OptimizerConfig(seed=1, popsize=6), np.full(2, 0.5), ["a", "b"])
    opt.ask()
    extra = opt.ask_extra()
    assert extra.shape == (2,) and ((extra >= 0) & (extra <= 1)).all()
    with pytest.raises(NotImplementedError):
        make_optimizer(OptimizerConfig(name="optuna", seed=1), np.full(2, 0.5), ["a", "b"]).ask_extra()


def test_the_registry_is_what_configs_accept():
    assert set(OPTIMIZERS) == {"cma", "optuna", "nsga2", "nsga3", "motpe", "map_elites"}
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; known: cma, optuna, nsga2, nsga3, motpe, map_elites"):
        OptimizerConfig(name="sgd")
    assert OptimizerConfig().population(4) == 4 + int(np.floor(3 * np.log(4)))  # the paper's default


@pytest.mark.parametrize("cfg", BACKENDS, ids=lambda c: "-".join(c.values()))
def test_one_gene_is_searched_too(cfg):
    """One weight evolved alone: pycma fails to cap a one-dimensional step size of 0.5 in [0, 1] on its own
    ("not yet initialized"), so it is capped at a third of the range, as pycma caps it in more dimensions."""
    opt = make_optimizer(OptimizerConfig(seed=3, popsize=6, sigma0=0.5, **cfg), np.full(1, 0.5), ["w"])
    means = []
    for _ in range(12):
        xs = opt.ask()
        assert len(xs) == 6 and all(x.shape == (1,) and 0 <= x[0] <= 1 for x in xs)
        opt.tell(xs, [sphere(x) for x in xs])
        means.append(np.mean([sphere(x) for x in xs]))
    assert means[-1] > means[0]
    flat = make_optimizer(OptimizerConfig(seed=3, popsize=6, sigma0=0.5, **cfg), np.full(1, 0.5), ["w"])
    for _ in range(30):  # no signal: the step size grows, and must stay harmless
        xs = flat.ask()
        assert all(0 <= x[0] <= 1 for x in xs)
        flat.tell(xs, [0.0] * len(xs))


def _drive(opt, f, generations: int) -> tuple[list[dict], float]:
    """Ask and tell `generations` times; the snapshots after each, and the best value seen."""
    snaps, best = [], -np.inf
    for _ in range(generations):
        xs = opt.ask()
        assert all(((x >= 0) & (x <= 1)).all() for x in xs)
        values = [f(x) for x in xs]
        best = max(best, *values)
        opt.tell(xs, values)
        snaps.append(opt.snapshot())
    return snaps, best


def test_ipop_restarts_a_stalled_run_with_twice_the_population_and_replays_exactly():
    """`patience`: no better fitness for two generations (each generation a little worse than the first, never flat)
    restarts the run with twice the population, until `max_restarts`."""
    cfg = OptimizerConfig(seed=2, popsize=4, restarts={"strategy": "ipop", "patience": 2, "max_restarts": 2})
    clock = iter(range(10_000))
    def worsening(x):
        return -next(clock) / 100 + 1e-4 * float(x[0])

    snaps, _ = _drive(make_optimizer(cfg, np.full(3, 0.5), ["a", "b", "c"]), worsening, 9)
    assert [(s["restart"], s["popsize"]) for s in snaps] == [(0, 4), (0, 4), (1, 8), (1, 8), (1, 8), (2, 16),
                                                             (2, 16), (2, 16), (2, 16)]
    clock = iter(range(10_000))
    again, _ = _drive(make_optimizer(cfg, np.full(3, 0.5), ["a", "b", "c"]), worsening, 9)
    assert again == snaps  # restarts derive from the seed: what resume's replay relies on
    assert snaps[2]["mean"] != snaps[1]["mean"]  # a restart starts from a new, seeded point
    assert "restart" not in make_optimizer(OptimizerConfig(seed=2), np.full(3, 0.5), ["a", "b", "c"]).snapshot()


def test_pycmas_own_stopping_rules_restart_a_flat_run():
    cfg = OptimizerConfig(seed=2, popsize=4, restarts={"max_restarts": 3})
    snaps, _ = _drive(make_optimizer(cfg, np.full(3, 0.5), ["a", "b", "c"]), lambda x: 0.0, 12)
    sizes = [s["popsize"] for s in snaps]
    assert sorted(set(sizes) - {4}) == [8, 16, 32] and sizes == sorted(sizes)  # no patience: pycma's flat-fitness rule
    assert sizes[-1] == 32 and snaps[-1]["restart"] == 3  # and no more than max_restarts


def test_a_restart_starts_elsewhere_and_escapes_a_local_optimum():
    """A narrow local optimum at the start (0.3, height -0.05) and a broad global one far away (0.9, height 0):
    plain CMA-ES with a small step size stays in the first; restarts from random points find the second."""
    def two_basins(x):
        return max(-0.05 - 5 * float(((x - 0.3) ** 2).sum()), -float(((x - 0.9) ** 2).sum()))

    def best_of(restarts):
        cfg = OptimizerConfig(seed=1, popsize=8, sigma0=0.05, restarts=restarts)
        return _drive(make_optimizer(cfg, np.full(2, 0.3), ["a", "b"]), two_basins, 40)[1]

    assert best_of(None) == pytest.approx(-0.05, abs=0.01)
    assert best_of({"strategy": "ipop", "patience": 3}) > -0.01


def test_bipop_alternates_small_and_large_regimes_by_what_each_has_spent():
    cfg = OptimizerConfig(seed=7, popsize=6, restarts={"strategy": "bipop", "patience": 1, "max_restarts": 6})
    opt = make_optimizer(cfg, np.full(4, 0.5), ["a", "b", "c", "d"])
    snaps, _ = _drive(opt, lambda x: 0.0, 12)
    large = [s["popsize"] for s in snaps if s["regime"] == "large"]
    small = [s["popsize"] for s in snaps if s["regime"] == "small"]
    assert small and large and all(2 <= p <= max(large) // 2 for p in small)  # small: at most half the largest
    assert set(large) <= {12, 24, 48, 96}  # large: IPOP's doublings of the default 6
    assert opt.spent["small"] <= opt.spent["large"] + max(large)  # each restart took the regime that spent less


def test_restarts_belong_to_cma():
    with pytest.raises(ValueError, match="`restarts` applies to `name: cma` only"):
        OptimizerConfig(name="optuna", restarts={})
    with pytest.raises(ValueError, match="strategy"):
        OptimizerConfig(restarts={"strategy": "lbfgs"})
