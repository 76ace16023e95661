"""Search configs: `merge` (a recipe template), `genome`, `optimizer`, `budget`, `fitness`.

Validated in full before anything is loaded, so a typo fails in a second, not after an hour of model loading.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evomerge.core.dtypes import DtypeName
from evomerge.core.errors import UserError
from evomerge.search.optimize.optimizers import OptimizerConfig
from evomerge.core.config_files import first_pydantic_error, read_yaml_file
from evomerge.merging.recipe import Recipe, recipe_from_dict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenomeConfig(_Strict):
    """Which recipe parameters evolve, and at what granularity."""

    parameters: list[str] = Field(default_factory=lambda: ["weight", "density"], min_length=1)
    granularity: Literal["model", "layer_group", "layer"] = "model"
    group_size: int = Field(4, ge=1)
    split: list[str] = Field(default_factory=list)  # tensor-name filters, e.g. [self_attn, mlp]
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    models: list[str] | None = Field(None, min_length=1)  # which sources evolve; default: every non-base model

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (lo, hi) in v.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"bounds for {name} must be [low, high] with low < high")
        return v

    def bound(self, param: str, low: float | None = None, high: float | None = None) -> tuple[float, float]:
        """The user's bounds, else [0, 1] narrowed to the parameter's own range (DELLA's epsilon: [0, 0.5])."""
        default = (max(0.0, low if low is not None else 0.0), min(1.0, high if high is not None else 1.0))
        return self.bounds.get(param, default)


class DataflowConfig(_Strict):
    """A data-flow (layer path) search over two models instead of a parameter-space merge."""

    model_a: str  # gives tokenizer, embeddings, head, first and last layer; `run:DIR` = that run's best model
    model_b: str
    repeats: int = Field(3, ge=1)
    scales: bool = True  # evolve an input scale per slot
    scale_bounds: tuple[float, float] = (0.0, 2.0)
    init_on: float = 2.0  # A's first-repetition slots start this many step sizes above the threshold
    init_off: float = 0.0  # every other slot starts here (0: on the threshold)
    dtype: DtypeName | None = None  # the live models' and the export's dtype

    @field_validator("scale_bounds")
    @classmethod
    def _scale_bounds(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (v[0] < 1.0 < v[1]):
            raise ValueError("scale_bounds must contain 1 strictly inside: [low < 1 < high]")
        return v


class BudgetConfig(_Strict):
    max_trials: int = Field(100, ge=1)
    max_generations: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(None, gt=0)


class ExecutorConfig(_Strict):
    """Where candidates are scored: in this process (default), or on Ray actors (one per GPU or group of GPUs)."""

    name: Literal["local", "ray"] = "local"
    address: str | None = None  # an existing Ray cluster ("auto", "ray://host:10001"); default: start a local one
    workers: int | None = Field(None, ge=1)  # default: one per GPU, or 2 on a machine without GPUs
    gpus_per_worker: float = Field(1.0, ge=0)  # 2 = an actor owns two GPUs (device_map spreads the model)
    cpus_per_worker: float = Field(1.0, ge=0)
    timeout_s: float | None = Field(None, gt=0)  # a candidate running longer is re-queued on a fresh worker
    steady_state: bool = True  # keep idle workers busy with extra samples instead of waiting at generation ends


class EvaluatorConfig(BaseModel):
    """One fitness term; options besides name/weight/metric go to the evaluator."""

    model_config = ConfigDict(extra="allow")
    name: str
    weight: float = 1.0
    metric: str | None = None  # which of the evaluator's metrics counts; its default otherwise

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RacingConfig(_Strict):
    """Racing: every candidate sees the fitness problems in one seeded order, `chunk` at a time; after each chunk a
    candidate whose upper confidence bound on its full-set score cannot reach the generation's selection cut (the
    mu-th best full score among the generation's finished candidates, mu = popsize // 2: CMA-ES's parents) stops.
    The bound is Hoeffding-Serfling's for sampling without replacement, at `confidence` over all looks together,
    and never above what perfect answers on the remaining problems would give. The confidence is per candidate:
    with several candidates a generation, and one shared problem order (their errors correlated), the chance that
    some good candidate is stopped wrongly is larger."""

    chunk: int = Field(16, ge=1)  # problems per step
    confidence: float = Field(0.95, gt=0, lt=1)
    min_items: int = Field(16, ge=1)  # never stop a candidate before this many problems
    seed: int = 0  # the shared problem order (common random numbers: comparisons are paired)


class GrowConfig(_Strict):
    """`subset: {check: final, grow: ...}`: a generation whose candidates between them score less than
    `min_total` (the sum of their item values: with accuracy, right answers) is scored on `step` more shared
    problems, again until it does, up to `max_items` per candidate; the whole search spends at most `mean_items`
    problems per candidate (later generations' `items` reserved first). Why: a weak population on a few problems
    is all zeros, a tie that tells CMA-ES nothing, and such generations are where a search starts."""

    step: int = Field(3, ge=1)
    min_total: float = Field(4.0, gt=0)
    max_items: int = Field(12, ge=2)
    mean_items: float = Field(6.0, gt=0)


class SubsetConfig(_Strict):
    """Subset fitness: candidates (after the first generation, unless `first_generation: random`) are scored on
    `items` anchor problems and their full-set score estimated (search/economy/subset.py). Every candidate of a generation
    is scored on the same problems, so the optimiser's ranking within a generation is a paired comparison.

    `check` says when estimates meet the full set: `generation` re-scores each generation's best by estimate on
    every problem (its item results choose the next anchors); `final` checks nothing during the run (each
    generation gets a fresh seeded random subset) and at the end scores `finalists` candidates on every problem
    (`finalists_from`: the best by estimate of each of the last generations, or the best of the whole run): the
    run's best is the best of those. A full check per generation costs about what a generation on a small subset
    costs, so only `final` can save ten times."""

    items: int = Field(32, ge=2)
    seed: int = 0
    # the first generation: `full` scores it on every problem (its item results choose the first anchors);
    # `random` scores it on a seeded random subset too (a plain mean estimate), the cheaper start for short runs
    first_generation: Literal["full", "random"] = "full"
    check: Literal["generation", "final"] = "generation"
    finalists: int = Field(2, ge=1)  # `check: final`: how many finalists are scored on every problem
    # where they come from: the best by estimate of each of the last `finalists` generations, or the `finalists`
    # best by estimate of the whole run (estimates of different generations read different problems: fair
    # between generations only on average, which is what a larger pool of finalists pays for)
    finalists_from: Literal["generations", "run"] = "generations"
    grow: GrowConfig | None = None  # `check: final`: more shared problems for a generation that scores too little
    # what an estimated candidate is scored by: the metric on its subset, or (`check: final`) its subset problems'
    # reference answers teacher-forced after their prompts, nothing generated (evaluators/likelihood.py): their
    # log-probability (`likelihood`), or the share of their tokens the candidate would pick itself (`agreement`,
    # bounded per token); the finalists get the metric
    signal: Literal["metric", "likelihood", "agreement"] = "metric"

    @model_validator(mode="after")
    def _finalists_need_final(self) -> "SubsetConfig":
        for name in ("finalists", "finalists_from"):
            if name in self.model_fields_set and self.check != "final":
                raise ValueError(f"`{name}` applies to `check: final` only (with `check: generation` every "
                                 "generation's best is checked)")
        if self.signal != "metric":
            if self.check != "final":
                raise ValueError(f"`signal: {self.signal}` needs `check: final` (its estimates score references, not "
                                 "the metric: only the finalists are scored on the metric)")
            if self.grow is not None:
                raise ValueError(f"`grow` counts right answers: it does not apply to `signal: {self.signal}`")
        if self.grow is not None:
            if self.check != "final":
                raise ValueError("`grow` applies to `check: final` only (its generations are plain random subsets)")
            if self.grow.max_items < self.items:
                raise ValueError(f"grow.max_items ({self.grow.max_items}) is below items ({self.items})")
            if self.grow.mean_items < self.items:
                raise ValueError(f"grow.mean_items ({self.grow.mean_items}) is below items ({self.items}): "
                                 "the budget cannot pay for one subset per candidate")
        return self


class ConstraintConfig(_Strict):
    """A bound on one recorded metric of one fitness evaluator, in that metric's units (multi-objective
    searches): `{evaluator: perplexity, metric: perplexity, max: 12.0}`. `evaluator` is the fitness entry's name
    (`name#i` when a name repeats)."""

    evaluator: str
    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> "ConstraintConfig":
        if self.min is None and self.max is None:
            raise ValueError("a constraint needs `min` or `max`")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max}): no candidate can meet the constraint")
        return self


class ArchiveConfig(_Strict):
    """The quality-diversity archive of `optimizer: {name: map_elites}` (search/optimize/quality_diversity.py)."""

    bins: int = Field(8, ge=2, le=64)  # cells per behaviour descriptor
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)  # fitness key -> range (stored units)
    mutation: float = Field(0.1, gt=0, le=1)  # width of the Gaussian variation of merged genes

    @field_validator("ranges")
    @classmethod
    def _ordered(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for key, (lo, hi) in v.items():
            if not lo < hi:
                raise ValueError(f"archive range of {key} must go from low to high, got [{lo}, {hi}]")
        return v


class WandbConfig(_Strict):
    project: str = "evomerge"
    entity: str | None = None
    name: str | None = None
    mode: Literal["online", "offline", "disabled"] = "online"  # offline: files only, `wandb sync` later


class TrackingConfig(_Strict):
    """Where a search streams its trials and generations (search/records/tracking.py)."""

    tensorboard: bool | str = False  # true: RUN_DIR/tensorboard; or a folder
    wandb: WandbConfig | None = None


# fields added to a section after runs were recorded with it: (section, field) -> the default that fingerprints
# as if the field were absent
ADDED_FIELDS = {("subset", "first_generation"): "full", ("subset", "check"): "generation",
                ("subset", "finalists"): 2, ("subset", "grow"): None, ("subset", "signal"): "metric",
                ("subset", "finalists_from"): "generations", ("optimizer", "restarts"): None}


class SearchConfig(_Strict):
    merge: dict[str, Any] | None = None
    dataflow: DataflowConfig | None = None
    genome: GenomeConfig = Field(default_factory=GenomeConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    fitness: list[EvaluatorConfig]
    # scored on each generation's best candidate; the run's result is then the best-validation trial
    validation: list[EvaluatorConfig] = Field(default_factory=list)
    device: str = "auto"
    # where the sources live during a PS search: on the device (fastest), or in pinned host memory, streamed to
    # the device for every candidate (when base + sources do not fit next to the model and its KV cache)
    sources: Literal["device", "host"] = "device"
    # memory a CPU live merge may keep for DARE tables (fused_cpu.DareTables: no pass for the rescale sums; the
    # results are the same bits either way, so resumes may change it); 0 turns them off
    dare_tables_gib: float = Field(4.0, ge=0)
    # GPUs one candidate is spread over (its decoder layers split into blocks, evomerge/runtime/placement.py); with
    # executor ray, each actor owns this many (gpus_per_worker follows it)
    gpus: int = Field(1, ge=1)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    racing: RacingConfig | None = None  # off by default: every candidate sees every problem
    subset: SubsetConfig | None = None  # off by default
    tracking: TrackingConfig | None = None  # may change between resumes
    # multi-objective optimisers (nsga2, nsga3, motpe): each fitness entry is one objective; constraints bound any
    # recorded metric, and the Pareto front is kept among the trials that meet them all (search/optimize/pareto.py)
    constraints: list[ConstraintConfig] = Field(default_factory=list)
    archive: ArchiveConfig | None = None  # map_elites: its grid (defaults when absent)
    failed_fitness: float = -1e9  # what a failed candidate scores (CMA-ES only uses ranks)
    # before the first candidate: the fused merge kernels against the reference merge, the generation engine
    # against `generate`; a failure switches to the reference path (executors.Runner)
    self_check: bool = True
    name: str | None = None

    @field_validator("fitness")
    @classmethod
    def _some(cls, v: list[EvaluatorConfig]) -> list[EvaluatorConfig]:
        if not v:
            raise ValueError("give at least one evaluator")
        return v

    @model_validator(mode="after")
    def _template(self) -> "SearchConfig":
        if (self.merge is None) == (self.dataflow is None):
            raise ValueError("give exactly one of `merge` (parameter space) or `dataflow` (layer paths)")
        if self.racing is not None and self.subset is not None:
            raise ValueError("give `racing` or `subset`, not both")
        if self.optimizer.restarts is not None and self.subset is not None and self.subset.grow is not None:
            raise ValueError("`subset.grow` budgets problems for a fixed population: not with `optimizer.restarts`, "
                             "whose restarts change it")
        if self.multi_objective:
            if len(self.fitness) < 2:
                raise ValueError(f"optimizer {self.optimizer.name} is multi-objective: give two or more fitness "
                                 "entries (one per objective)")
            if self.racing is not None or self.subset is not None:
                raise ValueError("racing and subset fitness work on one objective; not with "
                                 f"optimizer {self.optimizer.name}")
        elif self.constraints:
            raise ValueError("constraints need a multi-objective optimizer (nsga2, nsga3, motpe or map_elites)")
        keys = self.fitness_keys()
        if self.archive is not None and self.optimizer.name != "map_elites":
            raise ValueError("`archive` belongs to optimizer map_elites")
        for key in (self.archive.ranges if self.archive else {}):
            if key not in keys:
                raise ValueError(f"archive range for {key!r}: no such fitness entry (there are: {', '.join(keys)})")
        for c in self.constraints:
            if c.evaluator not in keys:
                raise ValueError(f"constraint on {c.evaluator!r}: no such fitness entry (there are: "
                                 f"{', '.join(keys)})")
        if self.merge is not None and not self.merge.get("models"):
            raise ValueError("merge: the recipe template must use the `models:` form (the genome makes the slices)")
        return self

    @property
    def multi_objective(self) -> bool:
        from evomerge.search.optimize.optimizers import OPTIMIZERS

        return getattr(OPTIMIZERS[self.optimizer.name], "multi_objective", False)

    def fitness_keys(self) -> list[str]:
        """The names the fitness entries' scores are recorded under (`name#i` when a name repeats)."""
        names = [f.name for f in self.fitness]
        return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]

    def template(self, where: str = "search config") -> Recipe:
        return recipe_from_dict(self.merge, f"{where}: merge")

    def fingerprint(self) -> str:
        """Hash of everything that shapes the candidates (budget, executor, self_check, tracking and DARE tables'
        memory may change between resumes)."""
        data = self.model_dump(mode="json", exclude={"budget", "executor", "self_check", "tracking", "dare_tables_gib"})
        for added in ("racing", "subset", "constraints", "archive"):  # added later: absent, older runs' keys stay unchanged
            if not data.get(added):
                data.pop(added, None)
        for (section, key), default in ADDED_FIELDS.items():  # at their defaults, older runs' keys stay unchanged
            if data.get(section, {}).get(key, default) == default:
                data.get(section, {}).pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def search_config_from_dict(data: Any, where: str) -> SearchConfig:
    if not isinstance(data, dict):
        raise UserError("a search config must be a YAML mapping (merge, genome, optimizer, budget, fitness)", where)
    try:
        config = SearchConfig.model_validate(data)
    except ValidationError as e:
        raise UserError(first_pydantic_error(e), where) from None
    if config.merge is not None:
        config.template(where)
    from evomerge.core.devices import check_device
    from evomerge.evaluators import check_evaluator_config

    check_device(config.device, f"{where}: device")

    for section in ("fitness", "validation"):
        for i, ev in enumerate(getattr(config, section)):
            check_evaluator_config(ev, f"{where}: {section}[{i}]")
    from evomerge.evaluators import evaluator_class

    keys = config.fitness_keys()
    for i, c in enumerate(config.constraints):
        cls = evaluator_class(config.fitness[keys.index(c.evaluator)].name, f"{where}: constraints[{i}]")
        if cls.metrics is not None and c.metric not in cls.metrics:
            raise UserError(f"evaluator {c.evaluator} has no metric {c.metric!r} (it gives: {', '.join(cls.metrics)})",
                            f"{where}: constraints[{i}].metric")
    return config


def load_search_config(path: str | Path) -> SearchConfig:
    return search_config_from_dict(read_yaml_file(path, "search config"), str(path))
