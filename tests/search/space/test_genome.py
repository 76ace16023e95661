"""Genes to candidates: names, bounds, granularity, and the recipe or path a vector of genes stands for."""

from __future__ import annotations

import numpy as np
import pytest

from evomerge.core.errors import UserError
from evomerge.merging.recipe import recipe_from_dict
from evomerge.search.config import DataflowConfig, GenomeConfig
from evomerge.search.space.dataflow_genome import DataflowGenome
from evomerge.search.space.genome import Genome

TEMPLATE = recipe_from_dict({"merge_method": "dare_ties", "base_model": "org/base",
                             "models": [{"model": "org/ja"}, {"model": "org/math"}, {"model": "org/base"}]})


def test_model_granularity_maps_unit_genes_onto_each_parameters_bounds():
    g = Genome(GenomeConfig(parameters=["weight", "density"], bounds={"weight": [0.2, 0.6]}), TEMPLATE, 4)
    assert g.names == ["ja.weight", "ja.density", "math.weight", "math.density"]  # the base does not evolve
    values = g.values(np.array([0.0, 0.5, 1.0, 2.0]))  # outside [0, 1] is clipped
    assert values == pytest.approx({"ja.weight": 0.2, "ja.density": 0.5, "math.weight": 0.6, "math.density": 1.0})
    recipe = g.recipe(np.array([0.5, 0.25, 1.0, 0.0]), seed=9)
    assert recipe.seed == 9 and recipe.slices is None
    params = {m.model: m.parameters for m in recipe.models}
    assert params["org/ja"] == pytest.approx({"weight": 0.4, "density": 0.25})
    assert params["org/math"] == pytest.approx({"weight": 0.6, "density": 0.0})
    assert params["org/base"] == {}


def test_layer_groups_become_slices_with_their_own_values():
    g = Genome(GenomeConfig(parameters=["weight"], granularity="layer_group", group_size=3), TEMPLATE, 4)
    assert g.groups == [(0, 3), (3, 4)]
    assert g.names == ["ja.weight.g0", "ja.weight.g1", "math.weight.g0", "math.weight.g1"]
    recipe = g.recipe(np.array([0.1, 0.2, 0.3, 0.4]), seed=0)
    assert [[s.layer_range for s in sl.sources] for sl in recipe.slices] == [[(0, 3)] * 3, [(3, 4)] * 3]
    second = {s.model: s.parameters for s in recipe.slices[1].sources}
    assert second["org/ja"]["weight"] == pytest.approx(0.2) and second["org/math"]["weight"] == pytest.approx(0.4)


def test_split_filters_give_one_gene_per_filter_and_one_for_the_rest():
    g = Genome(GenomeConfig(parameters=["weight"], split=["self_attn", "mlp"]), TEMPLATE, 4)
    assert g.names == ["ja.weight.self_attn", "ja.weight.mlp", "ja.weight.rest",
                       "math.weight.self_attn", "math.weight.mlp", "math.weight.rest"]
    recipe = g.recipe(np.linspace(0, 1, 6), seed=0)
    assert recipe.models[0].parameters["weight"] == [
        {"filter": "self_attn", "value": 0.0}, {"filter": "mlp", "value": pytest.approx(0.2)},
        {"value": pytest.approx(0.4)}]


def test_x0_per_gene_and_its_errors():
    g = Genome(GenomeConfig(parameters=["weight"]), TEMPLATE, 4)
    assert g.x0({"math.weight": 0.9}).tolist() == [0.5, 0.9]
    with pytest.raises(UserError, match="x0 names unknown genes: nope"):
        g.x0({"nope": 0.1})
    with pytest.raises(UserError, match="not a real-valued parameter"):
        Genome(GenomeConfig(parameters=["normalize"]), TEMPLATE, 4)
    with pytest.raises(UserError, match="not one of merge.models"):
        Genome(GenomeConfig(parameters=["weight"], models=["org/other"]), TEMPLATE, 4)


def test_dataflow_genome_slots_and_paths():
    cfg = DataflowConfig(model_a="a", model_b="b", repeats=2, scales=True, dtype="bfloat16")
    g = DataflowGenome(cfg, "a", "b", 4, 3, sigma0=0.1)
    assert len(g.slots) == 2 * (4 + 3) - 2  # A's first and last layer are fixed ends, not genes
    assert len(g) == 2 * len(g.slots)
    x = np.zeros(len(g))
    x[g.slots.index((1, "b", 2))] = 0.9  # switch on B's layer 2 in the second repetition, scale 1.5
    x[len(g.slots) + g.slots.index((1, "b", 2))] = 0.75
    path = g.path(x)
    assert [(h.model, h.layer) for h in path.hops] == [("a", 0), ("b", 2), ("a", 3)]
    assert path.hops[1].scale == pytest.approx(1.5) and path.dtype == "bfloat16"
    start = g.path(g.x0())  # the identity path through A
    assert [(h.model, h.layer, h.scale) for h in start.hops] == [("a", i, 1.0) for i in range(4)]
