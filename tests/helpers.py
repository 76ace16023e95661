"""Helpers the tests share (not tests themselves): the command line in-process, and small search configs."""

from __future__ import annotations

import os
from pathlib import Path

from evomerge.commands.cli import main
from evomerge.search.config import search_config_from_dict
from evomerge.search.loop.run import run_search
from evomerge.search.records.store import RunStore

LOG = print if os.environ.get("EVOMERGE_TEST_LOG") else (lambda m: None)


def cli(*args: str) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def make_config(family, target, optimizer=None, budget=40, **fitness_opts):
    return {
        "merge": {"merge_method": "task_arithmetic", "base_model": str(family["base"]),
                  "models": [{"model": str(family["ja"])}, {"model": str(family["math"])}]},
        "genome": {"parameters": ["weight"]},
        "optimizer": optimizer or {"name": "cma", "seed": 3, "popsize": 6},
        "budget": {"max_trials": budget},
        "fitness": [{"name": "fitness_fixtures:TargetDistance", "target": str(target), **fitness_opts}],
        "device": "cpu",
    }


def search(cfg: dict, run_dir: Path, resume=False):
    config = search_config_from_dict(cfg, "test config")
    return run_search(config, run_dir, resume=resume, progress=False, log=LOG)


def trials(run_dir: Path):
    store = RunStore(run_dir)
    try:
        return [(t.id, t.status, t.genes, t.fitness) for t in store.trials()]
    finally:
        store.close()


def dfs_config(family, target, other, budget=80, scales=False, **extra):
    cfg = {
        "dataflow": {"model_a": str(family["ja"]), "model_b": str(other), "repeats": 1, "scales": scales},
        "optimizer": {"name": "cma", "seed": 2, "popsize": 8, "sigma0": 0.25},
        "budget": {"max_trials": budget},
        "fitness": [{"name": "fitness_fixtures:LogitsTarget", "target": str(target), "limit": 6}],
        "device": "cpu",
    }
    cfg.update(extra)
    return cfg


SCORED_FACTS = [(a, b) for a in range(2, 12) for b in range(2, 9)] * 2  # 70 products, each asked twice


def scored_rows(problems: list[tuple[int, int]], right: set[int], ja: bool = True) -> list[dict]:
    """Sample rows as `evomerge eval --samples` writes them, for a bench script's analysis: product questions in a
    held-out wording, problem i right (and in Japanese when `ja`) when i is in `right`."""
    from evomerge.miniature import data

    rows = []
    for i, (a, b) in enumerate(problems):
        q = data.JA_TEMPLATES["*"][data.FAMILY["fresh3"]].format(n="蓮", a=a, b=b, item="花", c="本")
        rows.append({"question": q, "answer": a * b, "correct": i in right, "acc_ja": ja and i in right})
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    import json

    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

