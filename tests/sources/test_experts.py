"""Mixture-of-experts sources stored one tensor per expert: a malformed expert is refused naming it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from families import build_family
from helpers import cli


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory):
    return build_family(tmp_path_factory.mktemp("mixtral-hub"), "mixtral", n_tunes=1, hub_experts=True)


@pytest.mark.parametrize("name, shape", [
    ("model.layers.1.block_sparse_moe.experts.1.w2.weight", lambda s: (s[0], s[1] + 2)),
    ("model.layers.0.block_sparse_moe.experts.0.w3.weight", lambda s: (s[0] + 1, s[1])),
    ("model.layers.0.block_sparse_moe.experts.1.w1.weight", lambda s: (s[0], s[1] - 1)),
], ids=["down-wider", "up-taller", "gate-narrower"])
def test_a_wrong_shaped_expert_is_refused_naming_it(mixtral, tmp_path, capsys, name, shape):
    """It used to end in a traceback from torch.stack / torch.cat ("stack expects each tensor to be equal size")."""
    import shutil

    ft = tmp_path / "ft"
    shutil.copytree(mixtral["ft0"], ft)
    state = load_file(str(ft / "model.safetensors"))
    state[name] = torch.zeros(shape(state[name].shape))
    save_file(state, str(ft / "model.safetensors"), metadata={"format": "pt"})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"merge_method: task_arithmetic\nbase_model: {mixtral['base']}\nmodels:\n"
                      f"  - model: {ft}\n    parameters: {{weight: 0.5}}\n")
    assert cli("merge", recipe, tmp_path / "out") == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and name in lines[0] and str(ft) in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_alike_experts_merge(mixtral, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"merge_method: task_arithmetic\nbase_model: {mixtral['base']}\nmodels:\n"
                      f"  - model: {mixtral['ft0']}\n    parameters: {{weight: 0.5}}\n")
    assert cli("merge", recipe, tmp_path / "out") == 0
