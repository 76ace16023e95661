"""Search spaces: what the genes mean. The driver knows nothing of either space; it asks the space.

A space owns its genes (names, start point, readable values, structured metadata for reports), turns genes into
a candidate (a Recipe in parameter space, a DataflowPath in data-flow space), builds the live model candidates
are applied to, and exports a recorded candidate as a Hugging Face folder. A new space is one class here plus a
line in `make_space`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from evomerge.core.architecture import num_layers
from evomerge.core.errors import UserError
from evomerge.sources.models import ModelPool
from evomerge.search.config import SearchConfig


class SearchSpace(ABC):
    """Genes in [0, 1]^n -> candidates, and the live model that scores them."""

    def __init__(self, config: SearchConfig):
        self.config = config

    @property
    @abstractmethod
    def names(self) -> list[str]:
        """One name per gene, in the optimiser's order."""

    def __len__(self) -> int:
        return len(self.names)

    @abstractmethod
    def x0(self) -> np.ndarray:
        """The optimiser's start, in [0, 1]^n."""

    @abstractmethod
    def values(self, x: np.ndarray) -> dict[str, float]:
        """Gene name -> the value it stands for (a weight, a scale...), as people read it."""

    @abstractmethod
    def genes_info(self) -> list[dict[str, Any]]:
        """Structured metadata per gene (what the report draws from), recorded in the run store."""

    @abstractmethod
    def candidate(self, x: np.ndarray) -> Any:
        """The candidate for genes x: anything with `to_yaml()` that `candidate_from_yaml` reads back."""

    @abstractmethod
    def sources(self) -> list[str]:
        """The models candidates are made of (run: references resolved), fingerprinted with the run."""

    @abstractmethod
    def live(self, pool: ModelPool) -> Any:
        """The model candidates are applied to: `.apply(candidate)`, `.model`, `.tokenizer`."""

    def check(self, pool: ModelPool) -> None:
        """What building the live model would refuse, without building it (for executors that build it
        elsewhere)."""


class ParameterSpace(SearchSpace):
    """Weights and densities of a merge recipe (the paper's PS): `merge:` plus `genome:`."""

    def __init__(self, config: SearchConfig, pool: ModelPool, where: str = "search config"):
        from evomerge.search.space.genome import Genome

        super().__init__(config)
        template = config.template(where)
        for ref in template.referenced_models():
            pool.get(ref)  # every source opens (exists, has weights and a config) before anything is written
        donor = template.base_model or template.models[0].model
        self.genome = Genome(config.genome, template, num_layers(pool.get(donor).config), f"{where}: genome")
        if len(self.genome) == 0:
            raise UserError("the genome has no genes: no source model has a parameter to evolve",
                            f"{where}: genome")
        self.template = template
        self.seed = template.seed if template.seed is not None else config.optimizer.seed  # common DARE masks

    @property
    def names(self) -> list[str]:
        return self.genome.names

    def x0(self) -> np.ndarray:
        return self.genome.x0(self.config.optimizer.x0)

    def values(self, x: np.ndarray) -> dict[str, float]:
        return self.genome.values(x)

    def genes_info(self) -> list[dict[str, Any]]:
        groups = self.genome.groups
        return [{"name": g.name, "kind": "parameter", "model": g.model, "param": g.param, "group": g.group,
                 "layers": list(groups[g.group]), "whole_model": len(groups) == 1, "filter": g.filter,
                 "low": g.low, "high": g.high} for g in self.genome.genes]

    def candidate(self, x: np.ndarray):
        return self.genome.recipe(x, self.seed)

    def sources(self) -> list[str]:
        return self.template.referenced_models()

    def live(self, pool: ModelPool):
        from evomerge.runtime.live import LiveMerge

        devices = None
        if self.config.gpus > 1:
            from evomerge.runtime.placement import parse_devices

            devices = parse_devices(self.config.gpus)
        return LiveMerge(self.candidate(self.x0()), pool, self.config.device, sources_on=self.config.sources,
                         devices=devices, tables_bytes=int(self.config.dare_tables_gib * 2**30))

    def check(self, pool: ModelPool) -> None:
        from evomerge.merging.plan import plan_merge

        plan_merge(self.candidate(self.x0()), pool.get, "search config: merge")


class DataflowSpace(SearchSpace):
    """Which layers of two models, in what order, with what input scales (the paper's DFS): `dataflow:`."""

    def __init__(self, config: SearchConfig, pool: ModelPool):
        from evomerge.runtime.dataflow import check_layer_shapes
        from evomerge.core.references import resolve_scheme
        from evomerge.search.space.dataflow_genome import DataflowGenome

        super().__init__(config)
        d = config.dataflow
        # `run:DIR` (PS+DFS) becomes that run's exported best model: candidates record the folder they ran on
        a, b = (str(resolve_scheme(r)) if r.startswith("run:") else r for r in (d.model_a, d.model_b))
        for ref in (a, b):  # what transformers cannot build is refused as a PS search refuses it, with its remedy
            pool.get(ref).check_loadable()
        check_layer_shapes(pool.get(a), pool.get(b))
        layers_a, layers_b = (num_layers(pool.get(r).plan_config) for r in (a, b))
        self.genome = DataflowGenome(d, a, b, layers_a, layers_b, config.optimizer.sigma0)

    @property
    def names(self) -> list[str]:
        return self.genome.names

    def x0(self) -> np.ndarray:
        return self.genome.x0()

    def values(self, x: np.ndarray) -> dict[str, float]:
        return self.genome.values(x)

    def genes_info(self) -> list[dict[str, Any]]:
        slots = self.genome.slots
        info = [{"name": n, "kind": "on", "repetition": r, "model": m, "layer": i}
                for n, (r, m, i) in zip(self.names, slots)]
        if self.genome.config.scales:
            info += [{"name": n, "kind": "scale", "repetition": r, "model": m, "layer": i}
                     for n, (r, m, i) in zip(self.names[len(slots):], slots)]
        return info

    def candidate(self, x: np.ndarray):
        return self.genome.path(x)

    def sources(self) -> list[str]:
        return [self.genome.model_a, self.genome.model_b]

    def live(self, pool: ModelPool):
        from evomerge.runtime.dataflow import DataflowLive

        return DataflowLive(self.candidate(self.x0()), self.config.dataflow.dtype, self.config.device)


def make_space(config: SearchConfig, pool: ModelPool) -> SearchSpace:
    """The space a config describes (checked against the models in `pool`)."""
    if config.dataflow is not None:
        return DataflowSpace(config, pool)
    return ParameterSpace(config, pool)


def candidate_from_yaml(text: str, where: str, run_config: dict | None = None):
    """A recorded candidate (a trial's YAML) as the object its space made: a DataflowPath or a Recipe."""
    from evomerge.merging.dataflow import DataflowPath
    from evomerge.merging.recipe import recipe_from_dict

    data = yaml.safe_load(text)
    if isinstance(data, dict) and "dataflow" in data:
        path = DataflowPath.model_validate(data["dataflow"])
        if path.dtype is None and run_config:  # recorded before paths carried their dtype: the config has it
            path.dtype = (run_config.get("dataflow") or {}).get("dtype")
        return path
    return recipe_from_dict(data, where)


def export_candidate(candidate: Any, out: Path, *, device: str = "auto", force: bool = False,
                     progress: bool = True, card_extra: str = "") -> None:
    """Write a candidate as a Hugging Face model folder, in the dtype it was scored in."""
    from evomerge.merging.dataflow import DataflowPath, export_dataflow
    from evomerge.merging.merge import run_merge

    if isinstance(candidate, DataflowPath):
        export_dataflow(candidate, Path(out), force=force, progress=progress, card_extra=card_extra)
    else:
        run_merge(candidate, out, device=device, force=force, progress=progress, card_extra=card_extra)
