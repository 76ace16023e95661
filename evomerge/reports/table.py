"""`evomerge table TABLE.yaml`: evaluate models on tasks and print the paper's layout, with a result cache.

Each cell is one (model, task) evaluation; its result is cached under a key made of the model reference and the
task's full evaluator settings, so re-running a table only computes the cells that are missing (add a model, a
task, or change a setting, and only those cells run). `run:DIR` models are a search's result (exported once).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evomerge.core.errors import UserError
from evomerge.core.config_files import first_pydantic_error, read_yaml_file
from evomerge.search.config import EvaluatorConfig


class TableModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    model: str | None = None  # folder, .gguf, builtin:NAME, hub id, run:DIR (a search's result), run:DIR@ID (one
    # of its trials) or recipe:PATH (merged once)
    front: str | None = None  # a multi-objective run folder: one row per member of its Pareto front

    @model_validator(mode="after")
    def _one(self) -> "TableModel":
        if (self.model is None) == (self.front is None):
            raise ValueError("a table model needs `model` (with `name`) or `front` (a run folder)")
        if self.model is not None and self.name is None:
            raise ValueError("a table model needs a `name`")
        return self


def expand_fronts(models: list[TableModel]) -> list[TableModel]:
    """`front: RUN` rows become one `run:RUN@ID` row per Pareto-front member, named after the trial."""
    from evomerge.search.records.results import run_status

    out = []
    for m in models:
        if m.front is None:
            out.append(m)
            continue
        front = run_status(m.front).get("front")
        if front is None:
            raise UserError("not a multi-objective run: it has no Pareto front", m.front)
        prefix = m.name or Path(m.front).name
        out += [TableModel(name=f"{prefix} trial {x['trial']}", model=f"run:{m.front}@{x['trial']}")
                for x in front["members"]]
    return out


class TableTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    evaluator: EvaluatorConfig
    metrics: list[str] | None = None  # average these metrics of the evaluator (e.g. several lm-eval tasks)
    scale: float = 1.0  # e.g. 100 for percentages
    digits: int = 1


class TableConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = "Results"
    models: list[TableModel]
    tasks: list[TableTask]
    reference: dict[str, dict[str, float]] = Field(default_factory=dict)  # published numbers, printed alongside
    device: str = "auto"
    trust_remote_code: bool = False
    self_check: bool = True  # the generation engine against `generate` on a few prompts, before the first cell


def load_table_config(path: str | Path) -> TableConfig:
    data = read_yaml_file(path, "table config")
    try:
        config = TableConfig.model_validate(data)
    except ValidationError as e:
        raise UserError(first_pydantic_error(e), str(path)) from None
    from evomerge.evaluators import check_evaluator_config

    for i, task in enumerate(config.tasks):
        check_evaluator_config(task.evaluator, f"{path}: tasks[{i}].evaluator")
    return config


def cell_key(model: str, task: TableTask) -> str:
    """Same model (name and files) and same evaluation settings = same cell; which metric a column shows does
    not matter."""
    from evomerge.sources.models import fingerprint

    settings = task.evaluator.model_dump(mode="json", exclude={"metric", "weight"})
    data = {"model": model, "files": fingerprint(model), "evaluator": settings}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]


def _value(task: TableTask, metrics: dict[str, float], default_metric: str | None) -> float:
    names = task.metrics or [task.evaluator.metric or default_metric]
    missing = [n for n in names if n not in metrics]
    if missing:
        raise UserError(f"task {task.name}: the evaluator gives no metric {missing[0]!r} (it gives {', '.join(metrics)})")
    return task.scale * sum(metrics[n] for n in names) / len(names)


def resolve_ref(ref: str, cache_dir: Path, log=print) -> str:
    from evomerge.search.records.results import resolve_run_ref

    if not ref.startswith("recipe:"):
        return resolve_run_ref(ref, log)
    from evomerge.merging.merge import run_merge
    from evomerge.merging.recipe import load_recipe

    recipe_path = Path(ref[len("recipe:"):])
    recipe = load_recipe(recipe_path)
    from evomerge.sources.models import fingerprint

    # the recipe and the files of its sources: a rebuilt source is a new merge
    sources = [fingerprint(resolve_run_ref(m, log)) for m in recipe.referenced_models()]
    digest = hashlib.sha256((recipe.to_yaml() + json.dumps(sources)).encode()).hexdigest()[:16]
    out = cache_dir / "models" / f"{recipe_path.stem}-{digest}"
    if not (out / "config.json").exists():
        log(f"merging {recipe_path} into {out}")
        out.parent.mkdir(parents=True, exist_ok=True)
        run_merge(recipe, out, force=True, where=str(recipe_path))
    return str(out)


def build_table(config: TableConfig, cache_dir: Path, log=print) -> dict[str, Any]:
    from evomerge.evaluators import Fitness, evaluator_class
    from evomerge.sources.loading import load_for_eval

    cache_dir.mkdir(parents=True, exist_ok=True)
    fitnesses: dict[int, Fitness] = {}
    rows: dict[str, dict[str, float]] = {}
    computed = 0
    for m in expand_fronts(config.models):
        ref = resolve_ref(m.model, cache_dir, log)
        rows[m.name] = {}
        loaded = None
        for i, task in enumerate(config.tasks):
            path = cache_dir / f"{cell_key(ref, task)}.json"
            if path.exists():
                metrics = json.loads(path.read_text())["metrics"]
            else:
                if loaded is None:
                    log(f"loading {m.name} ({ref})")
                    loaded = load_for_eval(ref, config.device, trust_remote_code=config.trust_remote_code)
                if i not in fitnesses:
                    fitnesses[i] = Fitness([task.evaluator], f"tasks[{i}]")
                    if config.self_check:  # once per task: a fallback holds for the rest of the table
                        for note in fitnesses[i].check_generation(*loaded):
                            log(f"warning: {task.name}: {note}")
                log(f"evaluating {m.name} on {task.name}")
                _, scores = fitnesses[i].score(*loaded)
                metrics = next(iter(scores.values()))
                fitnesses[i].write_samples(path.with_suffix(".samples.jsonl"))  # the answers behind the cell
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"model": ref, "task": task.name, "metrics": metrics}))
                tmp.replace(path)
                computed += 1
            default = evaluator_class(task.evaluator.name, task.name).default_metric or None
            rows[m.name][task.name] = _value(task, metrics, default)
    return {"title": config.title, "rows": rows, "computed": computed,
            "tasks": [t.name for t in config.tasks], "reference": config.reference}


def to_markdown(table: dict[str, Any], config: TableConfig) -> str:
    digits = {t.name: t.digits for t in config.tasks}
    head = ["model", *table["tasks"]]
    lines = [f"### {table['title']}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cells in table["rows"].items():
        ref = table["reference"].get(name, {})
        out = []
        for task in table["tasks"]:
            text = f"{cells[task]:.{digits[task]}f}"
            if task in ref:
                text += f" (paper {ref[task]:.{digits[task]}f})"
            out.append(text)
        lines.append("| " + " | ".join([name, *out]) + " |")
    return "\n".join(lines) + "\n"
