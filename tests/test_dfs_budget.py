"""bench/dfs_budget.py (issue 42, item 3's follow-up): a data-flow best's path is described as it is (dropped layers
of A, hops from B, scale range)."""

from __future__ import annotations

import yaml

from bench.dfs_budget import path_of


def test_a_path_is_described_against_a_own():
    hops = [{"model": "a", "layer": i, "scale": 1.0} for i in range(30) if i not in (7, 12)]
    hops.insert(10, {"model": "b", "layer": 11, "scale": 0.8})
    hops[3]["scale"] = 1.3
    recipe = yaml.safe_dump({"dataflow": {"model_a": "a", "model_b": "b", "hops": hops}})
    got = path_of(recipe)
    assert got == {"hops": 29, "from_b": 1, "b_layers": [11], "a_layers": 28, "scale_min": 0.8, "scale_max": 1.3}
