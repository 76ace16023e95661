"""The GPU path checks itself on first use: fused merge kernels against the reference merge, the generation
engine against `generate`. A kernel that raises, a kernel that computes something else, an unwritten output and
an engine that diverges are each caught, and the run falls back and goes on (on the CPU the kernels run in
Triton's interpreter and the engine in float32, so the same code paths are exercised)."""

from __future__ import annotations

import json

import pytest
import torch

from evomerge.sources.models import ModelPool
from evomerge.merging.recipe import recipe_from_dict
from evomerge.merging.fused_gpu import FusedMerger
from evomerge.runtime.live import LiveMerge
from helpers import cli, write

pytest.importorskip("triton")


def recipe(family, method="dare_ties", weight=0.6):
    return recipe_from_dict({"merge_method": method, "base_model": str(family["base"]), "seed": 3,
                             "models": [{"model": str(family["ja"]), "parameters": {"weight": weight, "density": 0.5}},
                                        {"model": str(family["math"]), "parameters": {"weight": 0.4, "density": 0.7}}]})


def reference_state(family, r):
    with ModelPool() as pool:
        live = LiveMerge(r, pool, "cpu", fused=False)
        live.apply(r)
        return {k: v.clone() for k, v in live.params.items()}


@pytest.mark.parametrize("method", ["dare_ties", "ties", "task_arithmetic"])
def test_correct_kernels_pass_and_stay_on(family, method):
    r = recipe(family, method)
    with ModelPool() as pool:
        live = LiveMerge(r, pool, "cpu", fused=True)
        assert live.check_fused(r) is None and live.fused is not None


def _raising(self, *args, **kwargs):
    raise RuntimeError("PTX compilation failed (injected)")


def _wrong(self, method, task, tensors, out, seed, flag):
    REAL(self, method, task, tensors, out, seed, flag)
    out.view(-1)[7] += 1e-3  # one element off: what a wrong mask or a race would do


def _unwritten(self, method, task, tensors, out, seed, flag):
    REAL(self, method, task, tensors, out, seed, flag)
    out.view(-1)[-1] = float("nan")  # the last block never written


REAL = FusedMerger.merge_into


@pytest.mark.parametrize("fault, expected", [(_raising, "RuntimeError: PTX compilation failed"),
                                             (_wrong, "differs from the reference merge"),
                                             (_unwritten, "NaN, inf or unwritten")],
                         ids=["raises", "wrong-values", "unwritten"])
def test_a_faulty_kernel_is_caught_and_the_reference_path_takes_over(family, monkeypatch, fault, expected):
    r = recipe(family)
    monkeypatch.setattr(FusedMerger, "merge_into", fault)
    with ModelPool() as pool:
        live = LiveMerge(r, pool, "cpu", fused=True)
        why = live.check_fused(r)
        assert why is not None and expected in why and "reference path" in why
        assert live.fused is None
        live.apply(r)  # the run goes on, on the reference path
        got = {k: v.clone() for k, v in live.params.items()}
    want = reference_state(family, r)
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.fixture()
def problems(tmp_path):
    rows = [{"question": f"w{i} w{i + 1}", "answer_number": i} for i in range(3, 6)]
    return write(tmp_path / "p.jsonl", "\n".join(json.dumps(r) for r in rows))


def test_a_diverging_engine_falls_back_to_generate(family, problems, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.evaluators import Fitness
    from evomerge.generation import greedy
    from evomerge.search.config import EvaluatorConfig

    model = AutoModelForCausalLM.from_pretrained(str(family["ja"]), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(family["ja"]))
    fitness = Fitness([EvaluatorConfig(name="mgsm_ja", data=str(problems), engine="fast", max_new_tokens=8,
                                       prompt="{question}")])
    assert fitness.check_generation(model, tok) == []  # the real engine agrees with generate
    assert fitness.terms[0].evaluator.options.engine == "fast"
    real = greedy.fast_generate
    monkeypatch.setattr(greedy, "fast_generate", lambda *a, **k: [t + " w9" for t in real(*a, **k)])
    notes = fitness.check_generation(model, tok)
    assert len(notes) == 1 and "differs from generate's" in notes[0]
    assert fitness.terms[0].evaluator.options.engine == "hf"  # the rest of the run uses generate
    fitness.score(model, tok)  # and scoring goes on


def test_a_search_records_the_fallback_and_loses_nothing(family, target, tmp_path, monkeypatch, capsys):
    """A PS search whose kernels raise: one warning, recorded in the store, shown by status; every trial is
    scored, and the scores equal a run on the reference path."""
    from evomerge.search.space import spaces
    from helpers import make_config, search, trials

    cfg = make_config(family, target, budget=6)
    cfg["merge"]["merge_method"] = "dare_ties"
    cfg["genome"] = {"parameters": ["weight", "density"]}
    search(cfg, tmp_path / "reference")
    real_live = spaces.ParameterSpace.live
    monkeypatch.setattr(spaces.ParameterSpace, "live",
                        lambda self, pool: LiveMerge(self.candidate(self.x0()), pool, "cpu", fused=True))
    monkeypatch.setattr(FusedMerger, "merge_into", _raising)
    search(cfg, tmp_path / "run")
    assert trials(tmp_path / "run") == trials(tmp_path / "reference")
    assert cli("status", tmp_path / "run", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert len(status["self_check"]) == 1 and "failed their self-check" in status["self_check"][0]
    monkeypatch.setattr(spaces.ParameterSpace, "live", real_live)
    cfg["self_check"] = False  # the switch: no check (and resuming with it changed is allowed)
    search(dict(cfg, budget={"max_trials": 9}), tmp_path / "run", resume=True)


def test_eval_and_table_check_the_engine_first_and_fall_back(family, problems, tmp_path, monkeypatch, capsys):
    """`evomerge eval` and `evomerge table` run the engine's self-check before generating: one warning, then
    `generate`; the scores equal what `generate` alone gives."""
    import yaml

    from evomerge.generation import greedy

    fitness = [{"name": "mgsm_ja", "data": str(problems), "prompt": "{question}", "max_new_tokens": 6,
                "metric": "acc", "engine": "hf"}]
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"merge": {"merge_method": "linear", "models": [{"model": str(family["ja"])}]},
                                   "fitness": fitness, "device": "cpu"}))
    assert cli("eval", family["ja"], "--config", cfg, "--json") == 0
    reference = json.loads(capsys.readouterr().out)["scores"]["mgsm_ja"]
    real = greedy.fast_generate
    monkeypatch.setattr(greedy, "fast_generate", lambda *a, **k: [t + " w9" for t in real(*a, **k)])
    fitness[0]["engine"] = "fast"
    cfg.write_text(yaml.safe_dump({"merge": {"merge_method": "linear", "models": [{"model": str(family["ja"])}]},
                                   "fitness": fitness, "device": "cpu"}))
    assert cli("eval", family["ja"], "--config", cfg, "--json") == 0
    out = capsys.readouterr()
    assert out.err.count("warning: mgsm_ja: the generation engine's answer") == 1
    scores = json.loads(out.out)["scores"]["mgsm_ja"]
    assert {k: scores[k] for k in ("acc", "acc_ja", "ja_rate")} == {k: reference[k] for k in ("acc", "acc_ja", "ja_rate")}

    table = tmp_path / "table.yaml"
    table.write_text(yaml.safe_dump({"models": [{"name": "ja", "model": str(family["ja"])}],
                                     "tasks": [{"name": "MGSM", "evaluator": fitness[0]}], "device": "cpu"}))
    assert cli("table", table, "--json", "--cache", tmp_path / "cache") == 0
    out = capsys.readouterr()
    assert "warning: MGSM: mgsm_ja: the generation engine's answer" in out.err
