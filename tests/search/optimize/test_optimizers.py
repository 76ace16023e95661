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
