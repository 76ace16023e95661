"""Parameter-space search end to end on tiny models: convergence, resume, failures, export, status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import load_state
from evomerge.merging.merge import run_merge
from evomerge.search.config import search_config_from_dict
from evomerge.search.records.results import run_status, trial_candidate
from evomerge.search.records.store import RunStore
from helpers import cli, make_config, search, trials

TESTS = Path(__file__).resolve().parents[1]  # tests/, where fitness_fixtures lives


@pytest.mark.parametrize("optimizer", [
    {"name": "cma", "seed": 3, "popsize": 6},
    {"name": "optuna", "sampler": "cmaes", "seed": 3, "popsize": 6},
], ids=["cma", "optuna-cmaes"])
def test_search_finds_the_known_optimum(family, target, tmp_path, optimizer):
    best = search(make_config(family, target, optimizer, budget=72), tmp_path / "run")
    assert best.params["ja.weight"] == pytest.approx(0.3, abs=0.06)
    assert best.params["math.weight"] == pytest.approx(0.7, abs=0.06)
    history = run_status(tmp_path / "run")["history"]
    assert history[-1]["best"] > history[0]["best"]  # it improved, generation over generation
    assert history[-1]["mean"] > history[0]["mean"]


@pytest.mark.parametrize("optimizer", [
    {"name": "cma", "seed": 5, "popsize": 5},
    {"name": "optuna", "sampler": "cmaes", "seed": 5, "popsize": 5},
], ids=["cma", "optuna-cmaes"])
def test_resume_with_larger_budget_equals_uninterrupted_run(family, target, tmp_path, optimizer):
    search(make_config(family, target, optimizer, budget=10), tmp_path / "a")
    search(make_config(family, target, optimizer, budget=20), tmp_path / "a", resume=True)
    search(make_config(family, target, optimizer, budget=20), tmp_path / "b")
    assert trials(tmp_path / "a") == trials(tmp_path / "b")
    assert len(trials(tmp_path / "a")) == 20


def test_a_restarted_search_resumes_exactly_and_records_its_restarts(family, target, tmp_path):
    """IPOP restarts change the population mid-run; resume replays them (the restarts derive from the seed)."""
    optimizer = {"name": "cma", "seed": 5, "popsize": 4, "restarts": {"strategy": "ipop", "patience": 1}}
    search(make_config(family, target, optimizer, budget=8), tmp_path / "a")
    search(make_config(family, target, optimizer, budget=40), tmp_path / "a", resume=True)
    search(make_config(family, target, optimizer, budget=40), tmp_path / "b")
    assert trials(tmp_path / "a") == trials(tmp_path / "b") and len(trials(tmp_path / "a")) == 40
    with RunStore(tmp_path / "a") as store:
        states = [g["state"] for g in store.generations()]
        sizes = [len(store.generation_trials(g)) for g in range(len(states))]
    assert max(s["restart"] for s in states) >= 1
    assert sizes[0] == 4 and 8 in sizes  # the restart doubled the population


def test_resume_after_sigkill_loses_nothing_and_repeats_nothing(family, target, tmp_path):
    calls = tmp_path / "calls"
    cfg = make_config(family, target, budget=24, calls_file=str(calls), kill_at_call=9)
    cfg_file = tmp_path / "search.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-m", "evomerge", "search", str(cfg_file), "--run-dir",
                           str(tmp_path / "run"), "--quiet"], env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert int(calls.read_text()) == 9
    status = run_status(tmp_path / "run")
    assert status["completed"] == 8 and status["running"] == 1  # the killed trial never finished

    assert cli("search", cfg_file, "--run-dir", tmp_path / "run", "--resume", "--quiet") == 0
    assert int(calls.read_text()) == 25  # 24 trials, plus the one the kill interrupted; none evaluated twice

    clean = make_config(family, target, budget=24)
    search(clean, tmp_path / "clean")
    assert trials(tmp_path / "run") == trials(tmp_path / "clean")


def test_failed_candidates_are_recorded_and_the_search_goes_on(family, target, tmp_path, capsys):
    cfg = make_config(family, target, budget=18, fail_calls=[2], nan_calls=[5], oom_calls=[7, 8])
    best = search(cfg, tmp_path / "run")
    status = run_status(tmp_path / "run")
    assert status["failed"] == 4 and status["completed"] == 14
    store = RunStore(tmp_path / "run")
    failed = {t.id: t.error for t in store.trials("failed")}
    store.close()
    assert "injected failure" in failed[1] and "fitness is nan" in failed[4]
    assert "OutOfMemoryError" in failed[6] and "OutOfMemoryError" in failed[7]
    assert best.status == "complete" and np.isfinite(best.fitness)


def test_cli_status_export_and_eval_reproduce_the_fitness(family, tmp_path, capsys):
    """The exported best model, scored by `evomerge eval`, gets exactly the fitness the search recorded."""
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"w{(i * 7) % 61}" for i in range(400)))
    cfg = {
        "merge": {"merge_method": "dare_ties", "base_model": str(family["base"]),
                  "models": [{"model": str(family["ja"])}, {"model": str(family["math"])},
                             {"model": str(family["code"])}]},
        "genome": {"parameters": ["weight", "density"]},
        "optimizer": {"name": "optuna", "seed": 1},
        "budget": {"max_trials": 8},
        "fitness": [{"name": "perplexity", "data": str(text), "max_length": 64}],
        "device": "cpu",
    }
    cfg_file = tmp_path / "search.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    assert cli("search", cfg_file, "--run-dir", tmp_path / "run", "--quiet") == 0
    capsys.readouterr()
    assert cli("status", tmp_path / "run", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert {"completed", "failed", "budget", "best"} <= set(status)
    assert status["completed"] == 8 and status["budget"] == 8
    assert len(status["best"]["params"]) == 6  # 3 sources x (weight, density): the EvoLLM-JP genome shape

    assert cli("export", tmp_path / "run", tmp_path / "best", "--quiet") == 0
    capsys.readouterr()
    assert cli("eval", tmp_path / "best", "--config", cfg_file, "--json") == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["fitness"] == status["best"]["fitness"]
    card = (tmp_path / "best" / "README.md").read_text()
    assert f"trial {status['best']['trial']}" in card

    # any trial can be exported; its recipe carries the DARE seed
    recipe, t = trial_candidate(tmp_path / "run", "3")
    assert recipe.seed is not None and t.id == 3


def test_layer_group_genome_with_split_filters(family, target, tmp_path):
    from evomerge.sources.models import ModelPool
    from evomerge.search.space.spaces import make_space

    cfg = make_config(family, target)
    cfg["genome"] = {"parameters": ["weight"], "granularity": "layer_group", "group_size": 2,
                     "split": ["self_attn", "mlp"]}
    config = search_config_from_dict(cfg, "test")
    with ModelPool() as pool:
        s = make_space(config, pool)
    assert len(s.genome) == 2 * 2 * 3  # 2 sources x 2 layer groups x (self_attn, mlp, rest)
    x = np.linspace(0.05, 0.95, len(s.genome))
    values = s.genome.values(x)
    recipe = s.candidate(x)
    out = tmp_path / "m"
    run_merge(recipe, out, device="cpu", progress=False)
    merged, base = load_state(out), load_state(family["base"])
    ja, math_ = load_state(family["ja"]), load_state(family["math"])
    name = "model.layers.3.mlp.up_proj.weight"  # layer 3 is in group 1
    expect = base[name] + values["ja.weight.g1.mlp"] * (ja[name] - base[name]) \
        + values["math.weight.g1.mlp"] * (math_[name] - base[name])
    np.testing.assert_allclose(merged[name].numpy(), expect.numpy(), atol=1e-6)
    name = "model.layers.0.input_layernorm.weight"
    expect = base[name] + values["ja.weight.g0.rest"] * (ja[name] - base[name]) \
        + values["math.weight.g0.rest"] * (math_[name] - base[name])
    np.testing.assert_allclose(merged[name].numpy(), expect.numpy(), atol=1e-6)


def test_della_genome_defaults_and_density_epsilon_check(family, target, tmp_path):
    """Evolving DELLA's epsilon: its genes default to [0, 0.5] (its own range), and density bounds that would let
    density +- epsilon leave (0, 1) are refused before the search, naming genome.bounds."""
    from evomerge.core.errors import UserError
    from evomerge.sources.models import ModelPool
    from evomerge.search.space.spaces import make_space

    cfg = make_config(family, target)
    cfg["merge"]["merge_method"] = "della"
    cfg["genome"] = {"parameters": ["weight", "density"]}
    with ModelPool() as pool, pytest.raises(UserError, match=r"bounds.density inside \(0.15, 0.85\)") as err:
        make_space(search_config_from_dict(cfg, "test"), pool)
    assert "genome.bounds" in str(err.value)
    cfg["genome"] = {"parameters": ["weight", "density", "epsilon"],
                     "bounds": {"density": [0.3, 0.7], "epsilon": [0, 0.25]}}
    with ModelPool() as pool:
        s = make_space(search_config_from_dict(cfg, "test"), pool)
        assert [(g.param, g.low, g.high) for g in s.genome.genes if g.model == str(family["ja"])] == [
            ("weight", 0.0, 1.0), ("density", 0.3, 0.7), ("epsilon", 0.0, 0.25)]
        cfg["genome"]["bounds"] = {"density": [0.3, 0.7]}  # epsilon's default bounds [0, 0.5] leave (0, 1)
        with pytest.raises(UserError, match="epsilon up to 0.5"):
            make_space(search_config_from_dict(cfg, "test"), pool)
    rng_ = np.random.default_rng(0)
    for _ in range(5):  # every candidate in the box merges
        recipe = s.candidate(rng_.uniform(size=len(s.genome)))
        run_merge(recipe, tmp_path / "m", device="cpu", progress=False, force=True)


def test_run_dir_guards(family, target, tmp_path, capsys):
    cfg = make_config(family, target, budget=6)
    search(cfg, tmp_path / "run")
    with pytest.raises(Exception, match="--resume"):
        search(cfg, tmp_path / "run")
    changed = make_config(family, target, {"name": "cma", "seed": 4, "popsize": 6}, budget=6)
    with pytest.raises(Exception, match="differs"):
        search(changed, tmp_path / "run", resume=True)
    assert cli("status", tmp_path / "elsewhere") == 2
    assert cli("export", tmp_path / "run", tmp_path / "x", "--trial", "999") == 2


def test_resume_refuses_a_source_that_changed(family, target, tmp_path):
    """A resumed run must not mix trials scored on two versions of a model (a rebuilt builtin, a new export)."""
    import os
    import shutil

    from evomerge.core.errors import UserError

    ja = tmp_path / "ja"
    shutil.copytree(family["ja"], ja)
    cfg = make_config(family, target, budget=6)
    cfg["merge"]["models"][0]["model"] = str(ja)
    search(cfg, tmp_path / "run")
    search(dict(cfg, budget={"max_trials": 12}), tmp_path / "run", resume=True)  # same files: resumes
    assert len(trials(tmp_path / "run")) == 12
    weights = ja / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file was written again
    with pytest.raises(UserError, match="changed since this run started"):
        search(dict(cfg, budget={"max_trials": 18}), tmp_path / "run", resume=True)
    assert len(trials(tmp_path / "run")) == 12


@pytest.mark.parametrize("fault", ["renamed", "absent"])
def test_a_parameter_no_source_tensor_reaches_is_refused_before_the_run(family, tmp_path, capsys, fault):
    """A checkpoint whose final norm is stored under another name, or not at all: the live model would keep that
    parameter's random initialisation and score every candidate wrongly. Refused up front, nothing written."""
    import shutil

    from safetensors.torch import load_file, save_file

    from helpers import cli

    odd = [tmp_path / "ja", tmp_path / "math"]
    for name, folder in zip(["ja", "math"], odd):  # both sources stored the same way, so they line up
        shutil.copytree(family[name], folder)
        state = load_file(str(folder / "model.safetensors"))
        norm = state.pop("model.norm.weight")
        if fault == "renamed":
            state["model.final_norm.weight"] = norm
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"w{(i * 7) % 61}" for i in range(200)))
    cfg = {"merge": {"merge_method": "linear", "models": [{"model": str(odd[0])}, {"model": str(odd[1])}]},
           "genome": {"parameters": ["weight"]}, "budget": {"max_trials": 2}, "device": "cpu",
           "fitness": [{"name": "perplexity", "data": str(text), "max_length": 32}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli("search", path, "--run-dir", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
    assert "model.norm.weight" in err and ("gets no tensor" in err or "no parameter" in err), err
