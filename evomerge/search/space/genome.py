"""From a vector of genes to a concrete recipe, and back to names people can read.

The optimiser works in [0, 1]^n (x0 = 0.5 and sigma0 = 1/6 mean the same thing for every gene); each gene is
then mapped linearly onto its parameter's bounds. Granularity `model` gives one value per (source, parameter),
as in EvoLLM-JP-v1-7B; `layer_group` / `layer` turn the template into slices of N layers with their own values.
`split` filters (e.g. self_attn, mlp) give every such value one gene per filter plus one for the other tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.core.errors import UserError
from evomerge.merging.methods import ParamSpec, get_method
from evomerge.merging.recipe import Recipe, recipe_from_dict
from evomerge.search.config import GenomeConfig


@dataclass(frozen=True)
class Gene:
    name: str
    model: str
    param: str
    group: int  # layer group index (0 with model granularity)
    filter: str | None  # None: the tensors no split filter matches (or all, without split)
    low: float
    high: float

    def value(self, u: float) -> float:
        return self.low + float(u) * (self.high - self.low)

    def unit(self, value: float) -> float:
        return (value - self.low) / (self.high - self.low)


def _alias(model: str, taken: set[str]) -> str:
    base = Path(model.split("@")[0].removeprefix("builtin:")).name or model
    alias, k = base, 2
    while alias in taken:
        alias, k = f"{base}_{k}", k + 1
    taken.add(alias)
    return alias


def _check_epsilon_bounds(config: GenomeConfig, template: Recipe, eps_spec: ParamSpec, where: str) -> None:
    """DELLA refuses a density within epsilon of 0 or 1; say so once, before the search, not per candidate."""
    if "epsilon" in config.parameters:
        eps = config.bound("epsilon", eps_spec.low, eps_spec.high)[1]
    else:
        fixed = [template.parameters.get("epsilon", eps_spec.default)]
        fixed += [m.parameters.get("epsilon", eps_spec.default) for m in template.models]
        if not all(isinstance(e, (int, float)) for e in fixed):
            return  # gradients or filters: the per-tensor check while planning decides
        eps = max(fixed)
    lo, hi = config.bound("density", 0.0, 1.0)
    if lo - eps <= 0 or hi + eps >= 1:
        raise UserError(f"{template.merge_method} needs density +- epsilon inside (0, 1), which density bounds "
                        f"[{lo:g}, {hi:g}] with epsilon up to {eps:g} can leave; set bounds.density inside "
                        f"({eps:g}, {1 - eps:g})", f"{where}.bounds")


class Genome:
    def __init__(self, config: GenomeConfig, template: Recipe, num_layers: int, where: str = "genome"):
        self.config, self.template, self.num_layers = config, template, num_layers
        method = get_method(template.merge_method)
        specs = {}
        for p in config.parameters:
            spec = specs[p] = method.param(p)
            if spec is None or spec.kind is not float:
                raise UserError(f"{p!r} is not a real-valued parameter of {method.name}", f"{where}.parameters")
            lo, hi = config.bound(p, spec.low, spec.high)
            if (spec.low is not None and lo < spec.low) or (spec.high is not None and hi > spec.high):
                raise UserError(f"bounds for {p} leave the allowed range [{spec.low}, {spec.high}]", f"{where}.bounds")
        eps_spec = method.param("epsilon")
        if eps_spec is not None and "density" in config.parameters:
            _check_epsilon_bounds(config, template, eps_spec, where)
        models = [m.model for m in template.models]
        evolving = config.models or [m for m in models if m != template.base_model]
        for m in evolving:
            if m not in models:
                raise UserError(f"{m} is not one of merge.models", f"{where}.models")
        if not evolving:
            raise UserError("no source model to evolve (all are the base model)", where)
        self.evolving = evolving
        if config.granularity == "model":
            self.groups = [(0, num_layers)]
        else:
            size = 1 if config.granularity == "layer" else config.group_size
            self.groups = [(s, min(s + size, num_layers)) for s in range(0, num_layers, size)]
        filters: list[str | None] = [*config.split, None] if config.split else [None]
        taken: set[str] = set()
        aliases = {m: _alias(m, taken) for m in evolving}
        genes = []
        for m in evolving:
            for p in config.parameters:
                for g in range(len(self.groups)):
                    for f in filters:
                        name = f"{aliases[m]}.{p}"
                        if len(self.groups) > 1:
                            name += f".g{g}"
                        if config.split:
                            name += f".{f or 'rest'}"
                        genes.append(Gene(name, m, p, g, f, *config.bound(p, specs[p].low, specs[p].high)))
        self.genes: list[Gene] = genes

    def __len__(self) -> int:
        return len(self.genes)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.genes]

    def values(self, x: np.ndarray) -> dict[str, float]:
        """Gene name -> parameter value (not normalised)."""
        return {g.name: g.value(u) for g, u in zip(self.genes, np.clip(np.asarray(x, float), 0.0, 1.0))}

    def recipe(self, x: np.ndarray, seed: int) -> Recipe:
        """The concrete recipe for genes x (in [0, 1]); DARE uses `seed`."""
        values = self.values(x)
        data = self.template.model_dump(mode="json", exclude_none=True)
        data["seed"] = seed

        def param_value(model: str, param: str, group: int) -> Any:
            genes = [g for g in self.genes if g.model == model and g.param == param and g.group == group]
            if not self.config.split:
                return values[genes[0].name]
            return [{"filter": g.filter, "value": values[g.name]} for g in genes if g.filter] + [
                {"value": values[g.name]} for g in genes if g.filter is None
            ]

        if len(self.groups) == 1:
            for entry in data["models"]:
                if entry["model"] in self.evolving:
                    params = dict(entry.get("parameters") or {})
                    for p in self.config.parameters:
                        params[p] = param_value(entry["model"], p, 0)
                    entry["parameters"] = params
            return recipe_from_dict(data, "candidate recipe")

        entries = data.pop("models")
        if self.template.base_model and all(e["model"] != self.template.base_model for e in entries):
            entries.append({"model": self.template.base_model})
        slices = []
        for g, (start, end) in enumerate(self.groups):
            sources = []
            for entry in entries:
                params = dict(entry.get("parameters") or {})
                if entry["model"] in self.evolving:
                    for p in self.config.parameters:
                        params[p] = param_value(entry["model"], p, g)
                source = {"model": entry["model"], "layer_range": [start, end]}
                if params:
                    source["parameters"] = params
                sources.append(source)
            slices.append({"sources": sources})
        data["slices"] = slices
        return recipe_from_dict(data, "candidate recipe")

    def x0(self, x0: float | dict[str, float]) -> np.ndarray:
        if isinstance(x0, dict):
            unknown = set(x0) - set(self.names)
            if unknown:
                raise UserError(f"x0 names unknown genes: {', '.join(sorted(unknown))}; genes are {', '.join(self.names)}",
                                "optimizer.x0")
            return np.array([x0.get(n, 0.5) for n in self.names], float)
        return np.full(len(self), float(x0))
