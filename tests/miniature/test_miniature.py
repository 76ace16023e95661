"""The one-command miniature pipeline, run on tiny models with the same code path; and its data splits."""

from __future__ import annotations

import json

import yaml

from evomerge.miniature import data


def skeleton(question: str) -> str:
    """A question with its numbers, names, items and counters blanked: what is left is the template's wording."""
    import re

    for name in data.NAMES_JA:
        question = question.replace(name, "N")
    for item, _, counter in data.ITEMS:
        question = question.replace(item, "I")
    return re.sub("[個本冊枚]", "C", re.sub(r"\d+", "#", question))


def test_fitness_and_test_splits_use_different_wordings():
    fit = data.ja_math(300, 1, "fitness")
    test = data.ja_math(300, 1, "test")
    assert not {p.question for p in fit} & {p.question for p in test}
    assert not {skeleton(p.question) for p in fit} & {skeleton(p.question) for p in test}
    assert len({skeleton(p.question) for p in fit}) == 3  # one template per operation in each split
    assert all(isinstance(p.answer, int) and str(p.answer) in p.solution for p in fit + test)


def test_pipeline_end_to_end_on_tiny_models(family, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"w{(i * 3) % 61}" for i in range(300)))
    fitness = [{"name": "perplexity", "data": str(text), "max_length": 32}]
    ps = {"merge": {"merge_method": "task_arithmetic", "base_model": str(family["base"]),
                    "models": [{"model": str(family["ja"])}, {"model": str(family["math"])}]},
          "genome": {"parameters": ["weight"]}, "optimizer": {"name": "cma", "seed": 1, "popsize": 4},
          "budget": {"max_trials": 8}, "fitness": fitness, "device": "cpu"}
    dfs = {"dataflow": {"model_a": "run:runs/miniature/ps", "model_b": str(family["math"]), "repeats": 1},
           "optimizer": {"name": "cma", "seed": 1, "popsize": 4}, "budget": {"max_trials": 8},
           "fitness": fitness, "device": "cpu"}
    recipe = tmp_path / "unopt.yaml"
    recipe.write_text(yaml.safe_dump({"merge_method": "task_arithmetic", "base_model": str(family["base"]),
                                      "models": [{"model": str(family["ja"]), "parameters": {"weight": 0.5}},
                                                 {"model": str(family["math"]), "parameters": {"weight": 0.5}}]}))
    table = {"title": "tiny", "device": "cpu", "trust_remote_code": True,
             "models": [{"name": "base", "model": str(family["base"])},
                        {"name": "unoptimised", "model": f"recipe:{recipe}"},
                        {"name": "PS", "model": "run:runs/miniature/ps"},
                        {"name": "PS+DFS", "model": "run:runs/miniature/ps-dfs"}],
             "tasks": [{"name": "nll", "evaluator": fitness[0] | {"metric": "neg_log_perplexity"}, "scale": -1}]}
    paths = {}
    for name, cfg in (("ps", ps), ("dfs", dfs), ("table", table)):
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(cfg))

    from evomerge.miniature.run import run_miniature

    out = tmp_path / "mini"
    text_out = run_miniature(out, ps_config=paths["ps"], dfs_config=paths["dfs"], table_config=paths["table"],
                             progress=False, log=lambda m: None, results=tmp_path / "RESULTS.md")
    assert "| PS+DFS |" in text_out and "timings:" in text_out and "device:" in text_out
    assert (tmp_path / "RESULTS.md").read_text() == text_out
    first = json.loads((out / "result.json").read_text())["table"]
    assert first["computed"] == 4 and (out / "ps" / "best_model" / "config.json").exists()
    # a second run resumes finished searches and reuses every cached cell
    run_miniature(out, ps_config=paths["ps"], dfs_config=paths["dfs"], table_config=paths["table"],
                  progress=False, log=lambda m: None, results=tmp_path / "RESULTS.md")
    assert json.loads((out / "result.json").read_text())["table"]["computed"] == 0


def test_shipped_miniature_configs_are_valid():
    from pathlib import Path

    from evomerge.merging.recipe import load_recipe
    from evomerge.search.config import load_search_config
    from evomerge.reports.table import load_table_config

    root = Path(__file__).resolve().parents[2]
    load_search_config(root / "search" / "miniature-ps.yaml")
    load_search_config(root / "search" / "miniature-ps-dfs.yaml")
    load_table_config(root / "tables" / "miniature.yaml")
    load_recipe(root / "recipes" / "miniature-dare-ties.yaml")
