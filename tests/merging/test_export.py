"""Writing a model folder: shards and their index, the output config, and staging that never leaves a half-model."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import load_state
from evomerge.core.errors import UserError
from evomerge.merging.export import ShardWriter, check_out_dir, staged_output


def _write(folder, tensors, max_bytes):
    writer = ShardWriter(folder, [(n, tuple(t.shape), t.dtype) for n, t in tensors.items()], max_bytes)
    for name, t in tensors.items():
        writer.add(name, t)
    writer.close()


def test_shards_split_at_the_size_limit_and_the_index_names_every_tensor(tmp_path):
    tensors = {f"t{i}": torch.full((256,), float(i)) for i in range(5)}  # 1 KiB each
    _write(tmp_path, tensors, 2048)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert index["metadata"]["total_size"] == 5 * 1024
    state = load_state(tmp_path)
    assert state.keys() == tensors.keys() and all(torch.equal(state[k], tensors[k]) for k in tensors)


def test_one_shard_is_plain_model_safetensors_and_every_dtype_round_trips(tmp_path):
    big = torch.arange(8.0)
    tensors = {"a": big, "b": big, "bf": torch.randn(3, 5).bfloat16(), "half": torch.randn(7).half(),
               "ids": torch.arange(6), "flags": torch.tensor([True, False]), "scalar": torch.tensor(2.5),
               "empty": torch.zeros(0, 4)}  # `b` shares `a`'s storage (a repeated layer)
    _write(tmp_path, tensors, 1 << 20)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    state = load_state(tmp_path)
    for k, t in tensors.items():
        assert state[k].dtype == t.dtype and torch.equal(state[k], t), k


def test_a_tensor_out_of_plan_is_refused(tmp_path):
    writer = ShardWriter(tmp_path, [("a", (2,), torch.float32), ("b", (2,), torch.float32)], 1 << 20)
    with pytest.raises(RuntimeError, match="b .* arrived where a"):
        writer.add("b", torch.zeros(2))
    writer.add("a", torch.zeros(2))
    with pytest.raises(RuntimeError, match="planned"):
        writer.add("b", torch.zeros(3))
    writer.abort()
    with pytest.raises(RuntimeError, match="never written"):
        writer.close()


def test_staging_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output(out, False) as tmp:
            (tmp / "x").write_text("half")
            raise RuntimeError("killed halfway")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with staged_output(out, False) as tmp:
        (tmp / "x").write_text("whole")
    with staged_output(out, True) as tmp:  # --force replaces it whole
        (tmp / "y").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["y"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(UserError, match="not empty"):
        check_out_dir(out, False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="existing file"):
        check_out_dir(tmp_path / "file", True)
    with pytest.raises(UserError, match="parent folder"):
        check_out_dir(tmp_path / "no" / "out", False)


def test_output_config_follows_the_merged_stack(family):
    from evomerge.merging.export import output_config
    from evomerge.sources.models import ModelPool
    from evomerge.merging.plan import plan_merge
    from evomerge.merging.recipe import recipe_from_dict

    ja = str(family["ja"])
    with ModelPool() as pool:
        plan = plan_merge(recipe_from_dict({"merge_method": "passthrough", "slices": [
            {"sources": [{"model": ja, "layer_range": [0, 4]}]},
            {"sources": [{"model": ja, "layer_range": [2, 4]}]}]}), pool.get)
        cfg = output_config(pool.get(ja).config, plan, torch.bfloat16)
        assert pool.get(ja).config.num_hidden_layers == 4  # the source's config is not touched
    assert cfg.num_hidden_layers == 6 and cfg.dtype == torch.bfloat16
    assert cfg.architectures == ["LlamaForCausalLM"]


def test_a_parameter_space_merge_copies_the_donor_config_and_never_imports_transformers(family, tmp_path):
    """The same stack as the donor: config.json is the donor's with the output dtype, generation_config.json is
    copied, and transformers (about 2 s of every `evomerge merge`) is not imported; the output still loads."""
    import subprocess
    import sys

    import yaml

    recipe = {"merge_method": "task_arithmetic", "base_model": str(family["base"]), "dtype": "bfloat16",
              "models": [{"model": str(family[k]), "parameters": {"weight": 0.5}} for k in ("ja", "math")]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    code = ("import sys; from evomerge.merging.merge import run_merge; from evomerge.merging.recipe import load_recipe; "
            f"run_merge(load_recipe({str(tmp_path / 'r.yaml')!r}), {str(out)!r}, device='cpu', progress=False); "
            "assert 'transformers' not in sys.modules, 'transformers was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    donor = json.loads((family["base"] / "config.json").read_text())
    got = json.loads((out / "config.json").read_text())
    assert got.pop("dtype") == "bfloat16" and {k: v for k, v in donor.items() if k != "dtype"} == got
    assert (out / "generation_config.json").read_bytes() == (family["base"] / "generation_config.json").read_bytes()
    from transformers import AutoConfig, AutoModelForCausalLM

    assert AutoConfig.from_pretrained(str(out)).dtype == torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.num_hidden_layers == donor["num_hidden_layers"]


def test_a_new_stack_rebuilds_the_config_through_transformers(family, tmp_path):
    from evomerge.merging.merge import run_merge
    from evomerge.merging.recipe import recipe_from_dict

    ja = str(family["ja"])
    run_merge(recipe_from_dict({"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": ja, "layer_range": [0, 4]}]}, {"sources": [{"model": ja, "layer_range": [2, 4]}]}]}),
        tmp_path / "out", device="cpu", progress=False)
    got = json.loads((tmp_path / "out" / "config.json").read_text())
    assert got["num_hidden_layers"] == 6 and got["dtype"] == "float32"
    assert len(load_state(tmp_path / "out")) == len(load_state(family["ja"])) + 2 * 9  # two more layers of 9


def test_a_donor_config_that_is_not_json_is_refused_before_anything_is_written(family, tmp_path):
    import shutil

    from evomerge.merging.merge import run_merge
    from evomerge.merging.recipe import recipe_from_dict

    bad = tmp_path / "bad"
    shutil.copytree(family["ja"], bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json is not valid JSON") as e:
        run_merge(recipe_from_dict({"merge_method": "linear", "models": [
            {"model": str(bad), "parameters": {"weight": 1.0}}]}), tmp_path / "out", device="cpu", progress=False)
    assert str(bad) in str(e.value)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["bad"]
