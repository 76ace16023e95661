"""`evomerge merge` end to end: the output loads in transformers, and every kind of bad input fails cleanly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import build_model, load_state
from helpers import cli, write





@pytest.fixture
def dare_recipe(family, tmp_path):
    return write(tmp_path / "dare.yaml", f"""
merge_method: dare_ties
base_model: {family['base']}
models:
  - model: {family['ja']}
    parameters: {{density: 0.5, weight: 0.6}}
  - model: {family['math']}
    parameters: {{density: 0.6, weight: 0.6}}
seed: 1234
""")


def test_output_is_a_loadable_model_with_recipe_and_card(dare_recipe, family, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    assert cli("merge", dare_recipe, out, "--device", "cpu", "--quiet") == 0
    assert "wrote" in capsys.readouterr().out
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "README.md",
            "evomerge_recipe.yaml"} <= files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]  # no leftovers
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = tok("w1 w2 w3", return_tensors="pt").input_ids
    assert model(ids).logits.shape == (1, 3, 64)
    card = (out / "README.md").read_text()
    assert "dare_ties" in card and str(family["ja"]) in card and "base_model:" in card
    saved = yaml.safe_load((out / "evomerge_recipe.yaml").read_text())
    assert saved["seed"] == 1234


def test_dare_is_reproducible_from_the_seed(dare_recipe, tmp_path):
    assert cli("merge", dare_recipe, tmp_path / "a", "--quiet") == 0
    assert cli("merge", dare_recipe, tmp_path / "b", "--quiet") == 0
    assert cli("merge", dare_recipe, tmp_path / "c", "--quiet", "--seed", "99") == 0
    a, b, c = (load_state(tmp_path / x) for x in "abc")
    name = "model.layers.1.mlp.down_proj.weight"
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[name], c[name])


def test_exported_recipe_rebuilds_the_same_model(dare_recipe, tmp_path):
    """A recipe without a seed gets one drawn and recorded; merging the saved recipe gives identical tensors."""
    text = dare_recipe.read_text().replace("seed: 1234\n", "")
    unseeded = write(tmp_path / "unseeded.yaml", text)
    assert cli("merge", unseeded, tmp_path / "first", "--quiet") == 0
    assert cli("merge", tmp_path / "first" / "evomerge_recipe.yaml", tmp_path / "again", "--quiet") == 0
    first, again = load_state(tmp_path / "first"), load_state(tmp_path / "again")
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_sharded_output_with_index(family, tmp_path):
    from transformers import AutoModelForCausalLM

    recipe = write(tmp_path / "r.yaml", f"""
merge_method: linear
models:
  - model: {family['ja']}
    parameters: {{weight: 1}}
  - model: {family['math']}
    parameters: {{weight: 1}}
""")
    out = tmp_path / "sharded"
    assert cli("merge", recipe, out, "--max-shard-size", "30K", "--quiet") == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((out / s).exists() for s in shards)
    a, b = load_state(family["ja"]), load_state(family["math"])
    merged = load_state(out)
    k = "model.layers.2.self_attn.v_proj.weight"
    torch.testing.assert_close(merged[k], (a[k] + b[k]) / 2)
    AutoModelForCausalLM.from_pretrained(str(out))


def test_force_replaces_existing_output(family, tmp_path):
    recipe = write(tmp_path / "r.yaml", f"""
merge_method: passthrough
slices:
  - sources: [{{model: {family['ja']}, layer_range: [0, 2]}}]
""")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    assert cli("merge", recipe, out, "--quiet") == 2
    assert (out / "old.txt").exists()
    assert cli("merge", recipe, out, "--quiet", "--force") == 0
    assert not (out / "old.txt").exists()
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2


def test_tied_embeddings_source(tmp_path):
    base = build_model(tmp_path / "tb", seed=3, tie=True)
    build_model(tmp_path / "tf", seed=4, tie=True, base_state=base)
    recipe = write(tmp_path / "r.yaml", f"""
merge_method: task_arithmetic
base_model: {tmp_path / 'tb'}
models:
  - model: {tmp_path / 'tf'}
    parameters: {{weight: 0.5}}
""")
    assert cli("merge", recipe, tmp_path / "out", "--quiet") == 0
    assert "lm_head.weight" not in load_state(tmp_path / "out")


# ---- bad input: exit 2, a short message naming the culprit, nothing written ------------------------------------

BAD = {
    "yaml_syntax": ("merge_method: linear\nmodels: [\n", "YAML syntax error"),
    "empty": ("   \n", "empty"),
    "not_a_mapping": ("- just\n- a list\n", "mapping"),
    "unknown_method": ("merge_method: frankenmerge\nmodels:\n  - model: {ja}\n", "unknown merge method"),
    "unknown_field": ("merge_method: linear\nmodelz: []\nmodels:\n  - model: {ja}\n", "modelz"),
    "missing_model": ("merge_method: linear\nmodels:\n  - model: /nope/model\n    parameters: {{weight: 1}}\n", "/nope/model"),
    "density_range": ("merge_method: ties\nbase_model: {base}\nmodels:\n  - model: {ja}\n    parameters: {{weight: 1, density: 1.5}}\n", "density"),
    "density_in_gradient": ("merge_method: ties\nbase_model: {base}\nmodels:\n  - model: {ja}\n    parameters: {{weight: 1, density: [0.5, -0.1]}}\n", "density"),
    "wrong_type": ("merge_method: linear\nmodels:\n  - model: {ja}\n    parameters: {{weight: heavy}}\n", "weight"),
    "bool_type": ("merge_method: ties\nbase_model: {base}\nparameters: {{normalize: maybe}}\nmodels:\n  - model: {ja}\n    parameters: {{weight: 1}}\n", "normalize"),
    "layer_range_past_depth": ("merge_method: passthrough\nslices:\n  - sources:\n      - model: {ja}\n        layer_range: [2, 9]\n", "layer_range"),
    "layer_range_reversed": ("merge_method: passthrough\nslices:\n  - sources:\n      - model: {ja}\n        layer_range: [3, 1]\n", "layer_range"),
    "slerp_three_models": ("merge_method: slerp\nbase_model: {ja}\nparameters: {{t: 0.5}}\nslices:\n  - sources:\n      - {{model: {ja}, layer_range: [0, 4]}}\n      - {{model: {math}, layer_range: [0, 4]}}\n      - {{model: {code}, layer_range: [0, 4]}}\n", "exactly 2"),
    "missing_base": ("merge_method: ties\nmodels:\n  - model: {ja}\n    parameters: {{weight: 1}}\n", "base_model"),
    "missing_weight": ("merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n  - model: {ja}\n", "weight"),
    "shapes_differ": ("merge_method: linear\nmodels:\n  - model: {ja}\n    parameters: {{weight: 1}}\n  - model: {wide}\n    parameters: {{weight: 1}}\n", "shapes differ"),
    "slice_lengths_differ": ("merge_method: linear\nslices:\n  - sources:\n      - {{model: {ja}, layer_range: [0, 2]}}\n      - {{model: {math}, layer_range: [0, 3]}}\n", "same number of layers"),
    "no_models": ("merge_method: linear\n", "models"),
    "bad_dtype": ("merge_method: linear\ndtype: float8\nmodels:\n  - model: {ja}\n", "dtype"),
    "della_epsilon": ("merge_method: della\nbase_model: {base}\nmodels:\n  - model: {ja}\n    parameters: {{weight: 1, density: [0.5, 0.1]}}\n", "epsilon"),
    "model_stock_two_models": ("merge_method: model_stock\nbase_model: {base}\nmodels:\n  - model: {base}\n  - model: {ja}\n", "at least 3"),
    "gamma_range": ("merge_method: breadcrumbs\nbase_model: {base}\nmodels:\n  - model: {ja}\n    parameters: {{weight: 1, density: 0.5, gamma: 2}}\n", "gamma"),
    "nuslerp_three_models": ("merge_method: nuslerp\nmodels:\n  - model: {ja}\n    parameters: {{weight: 1}}\n  - model: {math}\n    parameters: {{weight: 1}}\n  - model: {code}\n    parameters: {{weight: 1}}\n", "exactly 2 models besides"),
    "nearswap_no_t": ("merge_method: nearswap\nbase_model: {ja}\nmodels:\n  - model: {ja}\n  - model: {math}\n", "'t'"),
    "karcher_max_iter": ("merge_method: karcher\nparameters: {{max_iter: 2.5}}\nmodels:\n  - model: {ja}\n  - model: {math}\n", "max_iter: expected a whole number"),
    "union_tokenizer": ("merge_method: linear\ntokenizer_source: union\nmodels:\n  - model: {ja}\n", "union"),
}


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    path = tmp_path_factory.mktemp("wide") / "wide"
    build_model(path, seed=5, hidden=48)
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipe(case, family, wide, tmp_path, capsys):
    text, expected = BAD[case]
    recipe = write(tmp_path / "bad.yaml", text.format(wide=wide, **family))
    out = tmp_path / "out"
    assert cli("merge", recipe, out, "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:"), err
    assert expected in err, err
    assert len(err.splitlines()) <= 3, err
    assert "Traceback" not in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.yaml"]


def test_missing_recipe_file(tmp_path, capsys):
    assert cli("merge", tmp_path / "none.yaml", tmp_path / "out") == 2
    assert "none.yaml" in capsys.readouterr().err


def test_output_path_is_a_file(family, tmp_path, capsys):
    recipe = write(tmp_path / "r.yaml", f"merge_method: linear\nmodels:\n  - model: {family['ja']}\n    parameters: {{weight: 1}}\n")
    target = write(tmp_path / "taken", "data")
    assert cli("merge", recipe, target) == 2
    assert "existing file" in capsys.readouterr().err
    assert target.read_text() == "data"


def test_failure_mid_merge_leaves_nothing(family, tmp_path, monkeypatch):
    """A crash while tensors are being written removes the partial folder."""
    import evomerge.merging.export as export

    recipe = write(tmp_path / "r.yaml", f"merge_method: linear\nmodels:\n  - model: {family['ja']}\n    parameters: {{weight: 1}}\n")
    calls = {"n": 0}
    real = export.ShardWriter.add

    def flaky(self, name, tensor):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, name, tensor)

    monkeypatch.setattr(export.ShardWriter, "add", flaky)
    assert cli("merge", recipe, tmp_path / "out", "--quiet") == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    recipe = write(tmp_path / "r.yaml", "merge_method: linear\nmodels: [\n")
    proc = subprocess.run([sys.executable, "-m", "evomerge", "merge", str(recipe), str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "YAML syntax error" in proc.stderr
