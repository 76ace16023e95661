"""A parameter-space search runs on every family users evolve, and its best exports to a folder that re-scores
exactly what the search recorded (Pythia's stored attention buffers, GPT-2's tied head, fused MoE experts)."""

from __future__ import annotations

import json

import pytest
import yaml

from families import build_family
from helpers import cli

ARCHS = ["llama", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "stablelm", "starcoder2", "gpt2", "gpt_neox",
         "mixtral", "qwen2_moe", "qwen3_moe", "mixtral-hub", "qwen2_moe-hub", "qwen3_moe-hub"]
DFS_ARCHS = ["llama", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "stablelm", "starcoder2", "mixtral",
             "qwen3_moe", "gpt2", "gpt_neox"]


def search_export_rescore(space: dict, tmp_path, capsys, *eval_options: str) -> None:
    """Run a 3-trial search with perplexity fitness, export its best, and score the export: the same fitness."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"w{(i * 7) % 61}" for i in range(200)))
    cfg = {**space, "optimizer": {"name": "cma", "seed": 0, "popsize": 3}, "budget": {"max_trials": 3},
           "fitness": [{"name": "perplexity", "data": str(text), "max_length": 32}], "device": "cpu"}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli("search", path, "--run-dir", tmp_path / "run", "--quiet") == 0, capsys.readouterr().err
    assert cli("status", tmp_path / "run", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["completed"] == 3 and status["failed"] == 0
    assert cli("export", tmp_path / "run", tmp_path / "best", "--quiet") == 0
    capsys.readouterr()
    assert cli("eval", tmp_path / "best", "--config", path, "--json", *eval_options) == 0
    assert json.loads(capsys.readouterr().out)["fitness"] == status["best"]["fitness"]


@pytest.mark.parametrize("arch", ARCHS)
def test_search_and_export_rescore_exactly(arch, tmp_path, capsys):
    """`-hub`: the experts stored one tensor each, as on the hub (read fused, as transformers 5 and mergekit do)."""
    m = build_family(tmp_path / "models", arch.removesuffix("-hub"), hub_experts=arch.endswith("-hub"))
    search_export_rescore({"merge": {"merge_method": "dare_ties", "base_model": str(m["base"]),
                                     "models": [{"model": str(m["ft0"])}, {"model": str(m["ft1"])}]},
                           "genome": {"parameters": ["weight", "density"]}}, tmp_path, capsys)
    if arch.endswith("-hub"):  # written as transformers 5 holds it: a layer's experts fused
        from conftest import load_state

        names = set(load_state(tmp_path / "best"))
        assert "model.layers.0.mlp.experts.gate_up_proj" in names and not any(".experts.1." in n for n in names)


@pytest.mark.parametrize("arch", DFS_ARCHS)
def test_dataflow_search_and_export_rescore_exactly(arch, tmp_path, capsys):
    """A data-flow search over two models of the family (layers of both, in a new order, with scales); the exported
    path ships its modeling code (layers run with scales), so loading it is opt-in."""
    m = build_family(tmp_path / "models", arch)
    search_export_rescore({"dataflow": {"model_a": str(m["ft0"]), "model_b": str(m["ft1"]), "repeats": 1,
                                        "scales": True}}, tmp_path, capsys, "--trust-remote-code")


# the rest of mergekit's decoder architectures that transformers builds (they merge equal to mergekit:
# tests/merging/test_families.py): both searches on each, on one pair of models
OTHER_ARCHS = ["gemma", "olmo2", "cohere", "cohere2", "granite", "phi", "gpt_bigcode", "falcon", "glm4", "arcee",
               "apertus"]


@pytest.mark.parametrize("arch", OTHER_ARCHS)
def test_the_other_mergekit_architectures_search_both_ways_and_export_exactly(arch, tmp_path, capsys):
    m = build_family(tmp_path / "models", arch)
    search_export_rescore({"merge": {"merge_method": "ties", "base_model": str(m["base"]),
                                     "models": [{"model": str(m["ft0"])}, {"model": str(m["ft1"])}]},
                           "genome": {"parameters": ["weight", "density"]}}, tmp_path / "ps", capsys)
    search_export_rescore({"dataflow": {"model_a": str(m["ft0"]), "model_b": str(m["ft1"]), "repeats": 1,
                                        "scales": True}}, tmp_path / "dfs", capsys, "--trust-remote-code")
