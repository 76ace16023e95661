"""Planning: a recipe and the models' headers become one task per output tensor, with every parameter resolved."""

from __future__ import annotations

import pytest

from evomerge.core.errors import UserError
from evomerge.sources.models import ModelPool
from evomerge.merging.plan import plan_merge
from evomerge.merging.recipe import recipe_from_dict


def plan(data, pool):
    return plan_merge(recipe_from_dict(data), pool.get)


def test_models_form_gradients_and_filters_resolve_per_tensor(family):
    base, ja, math_ = (str(family[k]) for k in ("base", "ja", "math"))
    with ModelPool() as pool:
        p = plan({"merge_method": "ties", "base_model": base, "parameters": {"normalize": False},
                  "models": [{"model": ja, "parameters": {"weight": [0.0, 1.0], "density": 0.5}},
                             {"model": math_, "parameters": {"weight": [{"filter": "mlp", "value": 0.9},
                                                                        {"value": 0.1}], "density": 0.7}}]}, pool)
        n_tensors = len(pool.get(base).names())
    assert p.num_layers == 4 and p.donor == base and len(p.tasks) == n_tensors
    tasks = {t.out_name: t for t in p.tasks}
    for layer, expected in ((0, 0.0), (3, 1.0)):  # the gradient runs from the first to the last layer
        t = tasks[f"model.layers.{layer}.self_attn.q_proj.weight"]
        assert [m for m, _ in t.inputs] == [ja, math_, base] and t.base == 2
        assert t.per_input[0]["weight"] == pytest.approx(expected)
        assert t.per_input[1]["weight"] == pytest.approx(0.1) and t.shared["normalize"] is False
    assert tasks["model.layers.1.mlp.up_proj.weight"].per_input[1]["weight"] == pytest.approx(0.9)  # filter
    assert tasks["model.layers.1.mlp.up_proj.weight"].per_input[1]["density"] == pytest.approx(0.7)


def test_slices_stack_layers_and_the_output_counts_them(family):
    ja = str(family["ja"])
    with ModelPool() as pool:
        p = plan({"merge_method": "passthrough", "slices": [
            {"sources": [{"model": ja, "layer_range": [0, 3]}]},
            {"sources": [{"model": ja, "layer_range": [1, 4]}]}]}, pool)
    assert p.num_layers == 6 and p.layer_sources[3] == (ja, 1)
    assert any(t.out_name == "model.layers.5.mlp.up_proj.weight" and t.inputs == [(ja, "model.layers.3.mlp.up_proj.weight")]
               for t in p.tasks)


def test_planning_refuses_what_cannot_be_merged(family, tmp_path):
    from conftest import build_model

    ja, base = str(family["ja"]), str(family["base"])
    with ModelPool() as pool:
        with pytest.raises(UserError, match="goes past the model's 4 layers"):
            plan({"merge_method": "passthrough", "slices": [{"sources": [{"model": ja, "layer_range": [2, 6]}]}]}, pool)
        with pytest.raises(UserError, match="needs a base_model"):
            plan({"merge_method": "ties", "models": [{"model": ja, "parameters": {"weight": 1}}]}, pool)
        build_model(tmp_path / "wide", hidden=48)
        with pytest.raises(UserError, match="shape"):
            plan({"merge_method": "linear", "models": [{"model": ja, "parameters": {"weight": 1}},
                                                       {"model": str(tmp_path / "wide"),
                                                        "parameters": {"weight": 1}}]}, pool)
        with pytest.raises(UserError, match="weight"):
            plan({"merge_method": "task_arithmetic", "base_model": base, "models": [{"model": ja}]}, pool)
