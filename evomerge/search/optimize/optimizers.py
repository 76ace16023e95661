"""Optimiser backends behind one generation-wise ask/tell interface.

Both backends work on genes normalised to [0, 1] and maximise fitness. Resuming never unpickles anything: a
backend is rebuilt from the config and seed, and the finished generations are replayed into it (ask, then tell
the recorded fitness). Both backends are deterministic given the seed, so the replayed optimiser is in exactly the
state the interrupted one was, and goes on to propose the same candidates.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class RestartConfig(BaseModel):
    """`optimizer.restarts` (cma only): start CMA-ES again when a run has converged or stalled, from a new point.

    `ipop` (Auger & Hansen 2005) multiplies the population by `popsize_factor` at each restart: larger populations
    average out noise and see more of a rugged landscape. `bipop` (Hansen 2009) alternates that regime with short
    runs of small populations and small step sizes, each time taking the regime that has spent fewer evaluations.
    A restart happens when pycma's own stopping rules fire (flat fitness, step size collapsed, ...) or, with
    `patience`, after that many generations without a better fitness in the current restart: with a few hundred
    noisy evaluations the stopping rules rarely fire, and patience is what restarts a short search."""

    model_config = ConfigDict(extra="forbid")
    strategy: Literal["ipop", "bipop"] = "ipop"
    max_restarts: int = Field(9, ge=1)
    popsize_factor: float = Field(2.0, ge=1.0)
    patience: int | None = Field(None, ge=1)
    start: Literal["random", "x0"] = "random"  # where a restart starts: a seeded uniform point, or x0 again


class OptimizerConfig(BaseModel):
    """`optimizer:` in a search config. `name` is a key of OPTIMIZERS (below)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "cma"
    sampler: Literal["cmaes", "tpe", "random"] = "cmaes"  # optuna only
    popsize: int | None = Field(None, ge=2)  # default 4 + floor(3 ln n)
    sigma0: float = Field(1 / 6, gt=0)  # in units of the [0, 1]-normalised genes
    x0: float | dict[str, float] = 0.5  # normalised start, per gene or for all
    seed: int = Field(0, ge=0)
    separable: bool = False  # diagonal CMA, for large genomes
    restarts: RestartConfig | None = None  # IPOP / BIPOP restarts (cma only)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {v!r}; known: {', '.join(OPTIMIZERS)}")
        return v

    @model_validator(mode="after")
    def _restarts_are_pycma(self) -> "OptimizerConfig":
        if self.restarts is not None and self.name != "cma":
            raise ValueError(f"`restarts` applies to `name: cma` only (not {self.name!r})")
        return self

    @field_validator("x0")
    @classmethod
    def _x0_in_box(cls, v: float | dict[str, float]) -> float | dict[str, float]:
        for name, x in (v.items() if isinstance(v, dict) else [("x0", v)]):
            if not (math.isfinite(x) and 0.0 <= x <= 1.0):
                where = "" if name == "x0" else f" for {name}"
                raise ValueError(f"x0{where} is {x}; genes are normalised to [0, 1], so x0 must lie in [0, 1]")
        return v

    def population(self, n_genes: int) -> int:
        return self.popsize or 4 + int(math.floor(3 * math.log(n_genes)))


class Optimizer(ABC):
    def __init__(self, config: OptimizerConfig, x0: np.ndarray, names: list[str]):
        self.config, self.names = config, names
        self.n = len(x0)
        self.popsize = config.population(self.n)

    @abstractmethod
    def ask(self) -> list[np.ndarray]:
        """One generation of candidates, each in [0, 1]^n."""

    def ask_extra(self) -> np.ndarray:
        """One more sample from the current distribution (steady-state scheduling keeps idle workers busy)."""
        raise NotImplementedError(f"{type(self).__name__} does not support steady-state extra samples")

    @abstractmethod
    def tell(self, xs: list[np.ndarray], fitness: list[float]) -> None:
        """Report the fitness (higher is better) of the last generation asked."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """A JSON-able summary of the state (mean, step size), recorded after every generation."""


class PyCMA(Optimizer):
    """The `cma` package (Hansen's pycma): bounded CMA-ES, optionally diagonal (separable), optionally restarted
    (IPOP / BIPOP, `RestartConfig`). Every restart's seed, start and step size derive from the config's seed, so a
    restarted run replays exactly on resume."""

    def __init__(self, config: OptimizerConfig, x0: np.ndarray, names: list[str]):
        super().__init__(config, x0, names)
        self.x0 = np.asarray(x0, float)
        self.base_popsize = self.popsize
        self.restart, self.regime = 0, "large"
        self.large_restarts = 0  # IPOP's doublings so far
        self.spent = {"large": 0, "small": 0}  # BIPOP: evaluations told to each regime
        self.evaluations = 0  # told in the current restart
        self.best, self.stale = -math.inf, 0  # the current restart's best fitness, generations since it improved
        self.es = self._start(self.x0, config.sigma0, self.popsize, config.seed + 1)  # cma treats seed 0 as random

    def _start(self, x0: np.ndarray, sigma0: float, popsize: int, seed: int):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cma warns when matplotlib is missing; plotting is not used
            import cma

            opts = {"bounds": [0.0, 1.0], "popsize": popsize, "seed": seed, "verbose": -9, "verb_log": 0,
                    "verb_disp": 0, "CMA_diagonal": self.config.separable}
            if len(x0) == 1:  # pycma caps each step size at a third of the bounds' range, but its cap cannot run in
                sigma0 = min(sigma0, 1 / 3)  # one dimension ("not yet initialized"): the start is capped here as
                opts["maxstd"] = np.inf  # it would be, later steps are left to the bounds (candidates stay inside)
            self.popsize = popsize
            return cma.CMAEvolutionStrategy(x0, sigma0, opts)

    def ask(self) -> list[np.ndarray]:
        return [np.asarray(x, float) for x in self.es.ask()]

    def ask_extra(self) -> np.ndarray:
        return np.asarray(self.es.ask(1)[0], float)

    def tell(self, xs, fitness) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.es.tell(xs, [-f for f in fitness])  # cma minimises
        self.evaluations += len(xs)
        if max(fitness) > self.best:
            self.best, self.stale = max(fitness), 0
        else:
            self.stale += 1
        rules = self.config.restarts
        if rules is None or self.restart >= rules.max_restarts:
            return
        if self.es.stop() or (rules.patience is not None and self.stale >= rules.patience):
            self._restart(rules)

    def _restart(self, rules: RestartConfig) -> None:
        """The next restart: IPOP's larger population, or (BIPOP) whichever regime has spent less."""
        self.spent[self.regime] += self.evaluations
        self.restart += 1
        rng = np.random.default_rng([self.config.seed, self.restart])
        x0 = rng.uniform(0.0, 1.0, self.n) if rules.start == "random" else self.x0
        large_next = rules.strategy == "ipop" or self.spent["large"] <= self.spent["small"]
        sigma0 = self.config.sigma0
        if large_next:
            self.large_restarts += 1
            popsize = round(self.base_popsize * rules.popsize_factor ** self.large_restarts)
        else:  # Hansen 2009: a population between the default and half the last large one, a smaller step size
            u = rng.uniform()
            largest = self.base_popsize * rules.popsize_factor ** self.large_restarts
            popsize = max(2, int(self.base_popsize * (0.5 * largest / self.base_popsize) ** (u * u)))
            sigma0 *= 10 ** (-2 * rng.uniform())
        self.regime = "large" if large_next else "small"
        self.evaluations, self.best, self.stale = 0, -math.inf, 0
        self.es = self._start(x0, sigma0, popsize, self.config.seed + 1 + 100_003 * self.restart)

    def snapshot(self) -> dict[str, Any]:
        state = {"mean": [float(v) for v in self.es.mean], "sigma": float(self.es.sigma)}
        if self.config.restarts is not None:
            state.update(restart=self.restart, regime=self.regime, popsize=self.popsize)
        return state


class OptunaBackend(Optimizer):
    """Optuna's samplers through its ask/tell API; CmaEsSampler with the paper's defaults by default."""

    def __init__(self, config: OptimizerConfig, x0: np.ndarray, names: list[str]):
        super().__init__(config, x0, names)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.dists = {n: optuna.distributions.FloatDistribution(0.0, 1.0) for n in names}
        if config.sampler == "cmaes":
            # Optuna's own defaults are the paper's (x0 = centre of the box, sigma0 = range / 6); they are passed
            # only when different, since Optuna deprecated both arguments in 4.9.
            start = {}
            if not np.allclose(x0, 0.5):
                start["x0"] = dict(zip(names, map(float, x0)))
            if abs(config.sigma0 - 1 / 6) > 1e-12:
                start["sigma0"] = config.sigma0
            sampler = optuna.samplers.CmaEsSampler(
                seed=config.seed, popsize=self.popsize, n_startup_trials=0, use_separable_cma=config.separable,
                warn_independent_sampling=False, **start,
            )
        elif config.sampler == "tpe":
            sampler = optuna.samplers.TPESampler(seed=config.seed)
        else:
            sampler = optuna.samplers.RandomSampler(seed=config.seed)
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self._pending: list[Any] = []

    def ask(self) -> list[np.ndarray]:
        # Optuna's CMA-ES proposes one trial at a time but updates only after a full population is told; asking a
        # whole generation first and telling it afterwards is the batched use its docs describe.
        self._pending = [self.study.ask(self.dists) for _ in range(self.popsize)]
        return [np.array([t.params[n] for n in self.names], float) for t in self._pending]

    def tell(self, xs, fitness) -> None:
        for trial, f in zip(self._pending, fitness):
            self.study.tell(trial, float(f))
        self._pending = []

    def snapshot(self) -> dict[str, Any]:
        best = self.study.best_trial if self.study.trials else None
        return {"best_params": best.params if best else None, "trials": len(self.study.trials)}


class OptunaMultiObjective(Optimizer):
    """Several objectives at once, all maximised, through Optuna's multi-objective samplers: `nsga2` (NSGA-II, the
    default choice: it needs no model of the fitness landscape and its populations match the driver's
    generations), `nsga3` (NSGA-III: reference directions keep the front spread with three or more objectives),
    `motpe` (multi-objective TPE: fewer evaluations when candidates are dear, at the price of a model fitted
    to every trial). Constraints go through Optuna's `constraints_func`: a trial carries its violation (0 =
    feasible) and the samplers prefer feasible trials (constrained domination)."""

    multi_objective = True

    def __init__(self, config: OptimizerConfig, x0: np.ndarray, names: list[str], objectives: int = 2):
        super().__init__(config, x0, names)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.objectives = objectives
        self.dists = {n: optuna.distributions.FloatDistribution(0.0, 1.0) for n in names}

        def constraints(trial) -> list[float]:
            return [trial.user_attrs.get("violation", 0.0)]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks constraints_func experimental
            if config.name == "nsga2":
                sampler = optuna.samplers.NSGAIISampler(population_size=self.popsize, seed=config.seed,
                                                        constraints_func=constraints)
            elif config.name == "nsga3":
                sampler = optuna.samplers.NSGAIIISampler(population_size=self.popsize, seed=config.seed,
                                                         constraints_func=constraints)
            else:
                sampler = optuna.samplers.TPESampler(seed=config.seed, multivariate=True,
                                                     constraints_func=constraints)
        self.study = optuna.create_study(directions=["maximize"] * objectives, sampler=sampler)
        self._pending: list[Any] = []

    def ask(self) -> list[np.ndarray]:
        self._pending = [self.study.ask(self.dists) for _ in range(self.popsize)]
        return [np.array([t.params[n] for n in self.names], float) for t in self._pending]

    def tell(self, xs, fitness, violations: list[float] | None = None) -> None:
        """`fitness`: one vector of objective values per candidate (higher is better)."""
        for i, (trial, values) in enumerate(zip(self._pending, fitness)):
            trial.set_user_attr("violation", float(violations[i]) if violations else 0.0)
            self.study.tell(trial, [float(v) for v in values])
        self._pending = []

    def snapshot(self) -> dict[str, Any]:
        return {"trials": len(self.study.trials), "front": [t.number for t in self.study.best_trials]}


class MapElites(Optimizer):
    """Quality diversity (search/optimize/quality_diversity.py): each generation improves one objective's archive by
    merging and varying its elites; the archives are what the run is for, read back by `status` and `report`."""

    multi_objective = True

    def __init__(self, config: OptimizerConfig, x0: np.ndarray, names: list[str], objectives: int = 2,
                 archive: dict | None = None, keys: list[str] | None = None):
        super().__init__(config, x0, names)
        from evomerge.search.optimize.quality_diversity import Archive

        archive = archive or {}
        given = archive.get("ranges") or {}
        keys = keys or [str(i) for i in range(objectives)]
        self.archive = Archive(objectives, archive.get("bins", 8),
                               [tuple(given[k]) if k in given else None for k in keys])
        self.mutation = archive.get("mutation", 0.1)
        self.rng = np.random.default_rng(config.seed)
        self.generation = 0
        self._told = 0

    def ask(self) -> list[np.ndarray]:
        k = self.generation % self.archive.k
        parents = self.archive.parents(k)
        if not parents:  # nothing scored yet: spread the first generation over the whole box
            return [self.rng.uniform(0.0, 1.0, self.n) for _ in range(self.popsize)]
        out = []
        for _ in range(self.popsize):
            a, b = (parents[i] for i in self.rng.integers(0, len(parents), 2))
            child = a + self.rng.uniform() * (b - a) + self.rng.normal(0.0, self.mutation, self.n)
            out.append(np.clip(child, 0.0, 1.0))
        return out

    def tell(self, xs, fitness, violations: list[float] | None = None) -> None:
        from evomerge.search.optimize.quality_diversity import offer

        violations = violations or [0.0] * len(xs)
        offer(self.archive, [(self._told + i, x, v, c) for i, (x, v, c) in enumerate(zip(xs, fitness, violations))])
        self._told += len(xs)
        self.generation += 1

    def snapshot(self) -> dict[str, Any]:
        return {"filled": [len(e) for e in self.archive.elites], "improving": self.generation % self.archive.k}


# The backends a config can name: a new backend is a class above and a line here.
OPTIMIZERS: dict[str, type[Optimizer]] = {"cma": PyCMA, "optuna": OptunaBackend, "nsga2": OptunaMultiObjective,
                                          "nsga3": OptunaMultiObjective, "motpe": OptunaMultiObjective,
                                          "map_elites": MapElites}


def make_optimizer(config: OptimizerConfig, x0: np.ndarray, names: list[str], objectives: int = 1,
                   archive: dict | None = None, keys: list[str] | None = None) -> Optimizer:
    cls = OPTIMIZERS[config.name]
    if cls is MapElites:
        return cls(config, x0, names, objectives, archive, keys)
    if getattr(cls, "multi_objective", False):
        return cls(config, x0, names, objectives)
    return cls(config, x0, names)
