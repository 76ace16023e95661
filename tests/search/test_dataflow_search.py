"""Data-flow search end to end on tiny models: finds a known path, resumes, validates, exports, chains PS+DFS."""

from __future__ import annotations

import json

import pytest
import yaml

from evomerge.merging.dataflow import DataflowPath
from evomerge.sources.models import ModelPool
from evomerge.search.config import search_config_from_dict
from evomerge.search.records.results import run_status
from evomerge.search.space.spaces import make_space
from helpers import cli
from conftest import TARGET_HOPS
from helpers import dfs_config, search, trials


def test_genome_layout_and_identity_start(family, other, target_logits):
    config = search_config_from_dict(dfs_config(family, target_logits, other, scales=True), "test")
    with ModelPool() as pool:
        s = make_space(config, pool)
    # A's layers 1..2 (its ends are fixed) + B's 4 layers; indicator and scale per slot
    assert len(s.genome) == 2 * (2 + 4)
    start = s.candidate(s.x0())
    assert [(h.model, h.layer, h.scale) for h in start.hops] == [("a", i, 1.0) for i in range(4)]


def test_dfs_search_finds_the_target_path(family, other, target_logits, tmp_path):
    best = search(dfs_config(family, target_logits, other, budget=96), tmp_path / "run")
    path = DataflowPath.from_yaml(best.recipe)
    assert [(h.model, h.layer) for h in path.hops] == [(m, i) for m, i, _ in TARGET_HOPS]
    assert best.fitness == pytest.approx(0.0, abs=1e-10)


def test_dfs_resume_equals_uninterrupted(family, other, target_logits, tmp_path):
    search(dfs_config(family, target_logits, other, budget=16, scales=True), tmp_path / "a")
    search(dfs_config(family, target_logits, other, budget=32, scales=True), tmp_path / "a", resume=True)
    search(dfs_config(family, target_logits, other, budget=32, scales=True), tmp_path / "b")
    assert trials(tmp_path / "a") == trials(tmp_path / "b")


def test_validation_snapshot_export_and_eval(family, other, target_logits, tmp_path, capsys):
    cfg = dfs_config(family, target_logits, other, budget=24, scales=True, validation=[
        {"name": "fitness_fixtures:LogitsTarget", "target": str(target_logits), "offset": 6, "limit": 2}])
    cfg_file = tmp_path / "dfs.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    assert cli("search", cfg_file, "--run-dir", tmp_path / "run", "--quiet") == 0
    status = run_status(tmp_path / "run")
    assert status["best"]["validation"] is not None  # the result is the best-validation snapshot
    capsys.readouterr()
    assert cli("export", tmp_path / "run", tmp_path / "best", "--quiet") == 0
    assert (tmp_path / "best" / "modeling_evomerge_dataflow.py").exists()
    capsys.readouterr()
    assert cli("eval", tmp_path / "best", "--config", cfg_file, "--json") == 2  # custom code needs consent
    assert "--trust-remote-code" in capsys.readouterr().err
    assert cli("eval", tmp_path / "best", "--config", cfg_file, "--json", "--trust-remote-code") == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["fitness"] == pytest.approx(status["best"]["fitness"], rel=1e-6, abs=1e-9)


def test_ps_then_dfs_chains_the_ps_result_in_as_model_a(family, other, target_logits, tmp_path):
    from helpers import make_config, search as ps_search
    from conftest import load_state
    from evomerge.merging.merge import run_merge
    from evomerge.merging.recipe import recipe_from_dict

    target = tmp_path / "t"
    run_merge(recipe_from_dict({"merge_method": "linear", "models": [
        {"model": str(family["ja"]), "parameters": {"weight": 1}}]}), target, device="cpu", progress=False)
    ps_search(make_config(family, target / "model.safetensors", budget=6), tmp_path / "ps")
    cfg = dfs_config(family, target_logits, other, budget=8)
    cfg["dataflow"]["model_a"] = f"run:{tmp_path / 'ps'}"
    best = search(cfg, tmp_path / "dfs")
    assert (tmp_path / "ps" / "best_model" / "config.json").exists()
    assert DataflowPath.from_yaml(best.recipe).model_a == str(tmp_path / "ps" / "best_model")
    ps_best = load_state(tmp_path / "ps" / "best_model")
    assert ps_best  # the PS result really is a model folder

    # best_model remembers its trial; a run whose best has changed since is exported again
    from evomerge.search.records.results import resolve_run_ref, run_status

    marker, trial = tmp_path / "ps" / "best_model.trial", run_status(tmp_path / "ps")["best"]["trial"]
    assert marker.read_text().strip() == str(trial)
    said = []
    resolve_run_ref(f"run:{tmp_path / 'ps'}", log=said.append)
    assert said == []
    marker.write_text("999\n")
    resolve_run_ref(f"run:{tmp_path / 'ps'}", log=said.append)
    assert f"(trial {trial})" in said[0] and marker.read_text().strip() == str(trial)
    assert load_state(tmp_path / "ps" / "best_model").keys() == ps_best.keys()


def test_bad_dataflow_configs(family, other, target_logits, tmp_path, capsys):
    cfg = dfs_config(family, target_logits, other)
    cfg["merge"] = {"merge_method": "linear", "models": [{"model": str(family["ja"])}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli("search", path, "--run-dir", tmp_path / "run") == 2
    assert "exactly one of" in capsys.readouterr().err
    cfg = dfs_config(family, target_logits, other)
    cfg["dataflow"]["scale_bounds"] = [1.0, 2.0]
    path.write_text(yaml.safe_dump(cfg))
    assert cli("search", path, "--run-dir", tmp_path / "run") == 2
    assert "scale_bounds" in capsys.readouterr().err
