"""`MODEL+ADAPTER` sources: a PEFT LoRA adapter folded in tensor by tensor equals peft's own merge_and_unload,
merges like mergekit's LoRA references, scores like the merged model, and bad adapters fail by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import build_model, load_state
from evomerge.core.errors import UserError
from evomerge.sources.models import fingerprint, open_model
from helpers import cli, write

peft = pytest.importorskip("peft")


def make_adapter(base: Path, out: Path, seed: int = 0, **options) -> dict[str, torch.Tensor]:
    """Save a LoRA adapter with random A and B (peft zeroes B by default); returns peft's merged state."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = peft.LoraConfig(init_lora_weights=False, **options)
    pm = peft.get_peft_model(model, config)
    with torch.no_grad():  # peft's random init is small; make every delta clearly visible
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.mul_(3.0)
            elif "modules_to_save" in name:  # a fine-tuned copy of a whole module
                p.add_(0.05 * torch.randn_like(p))
    pm.save_pretrained(str(out))
    merged = pm.merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


@pytest.fixture(scope="module")
def adapter(family, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "adapter"
    merged = make_adapter(family["ja"], out, r=4, lora_alpha=8,
                          target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"],
                          rank_pattern={"v_proj": 2}, alpha_pattern={"down_proj": 3}, modules_to_save=["lm_head"])
    return out, merged


def test_folding_equals_peft_merge_and_unload(family, adapter):
    path, merged = adapter
    src = open_model(f"{family['ja']}+{path}")
    plain = load_state(family["ja"])
    changed = 0
    for name in src.names():
        got = src.get(name)
        torch.testing.assert_close(got, merged[name], atol=1e-6, rtol=1e-5, msg=name)
        changed += not torch.equal(got, plain[name])
    # q, v, down in 4 layers, the embedding (LoRA) and lm_head (modules_to_save)
    assert changed == 4 * 3 + 2


@pytest.mark.parametrize("options", [
    {"use_rslora": True, "r": 8, "lora_alpha": 4},
    {"target_modules": ["o_proj"], "layers_to_transform": [1, 2], "r": 2, "lora_alpha": 5},
], ids=["rslora", "some-layers"])
def test_folding_variants(family, tmp_path, options):
    options = {"target_modules": ["q_proj", "gate_proj"], **options}
    merged = make_adapter(family["math"], tmp_path / "a", seed=3, **options)
    src = open_model(f"{family['math']}+{tmp_path / 'a'}")
    for name in src.names():
        torch.testing.assert_close(src.get(name), merged[name], atol=1e-6, rtol=1e-5, msg=name)


def test_recipe_with_adapter_matches_mergekit(family, adapter, tmp_path):
    pytest.importorskip("mergekit")
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge as mk_run
    from mergekit.options import MergeOptions

    from mergekit_reference import assert_same, run_ours

    text = f"""
merge_method: ties
base_model: {family['base']}
models:
  - model: {family['ja']}+{adapter[0]}
    parameters: {{weight: 0.7, density: 0.6}}
  - model: {family['math']}
    parameters: {{weight: 0.5, density: 0.5}}
dtype: float32
"""
    ours = run_ours(text, tmp_path / "ours")
    config = MergeConfiguration.model_validate(yaml.safe_load(text))
    mk_run(config, str(tmp_path / "mk"), options=MergeOptions(device="cpu", quiet=True, write_model_card=False,
                                                              lora_merge_cache=str(tmp_path / "cache")))
    assert_same(ours, load_state(tmp_path / "mk"))
    without = run_ours(text.replace(f"+{adapter[0]}", ""), tmp_path / "without")
    name = "model.layers.1.self_attn.q_proj.weight"
    assert not torch.equal(ours[name], without[name])  # the adapter mattered


def test_eval_scores_the_folded_model(family, adapter, tmp_path):
    from evomerge.sources.loading import load_for_eval

    path, merged = adapter
    model, _ = load_for_eval(f"{family['ja']}+{path}", device="cpu")
    state = model.state_dict()
    for name in ("model.layers.2.self_attn.q_proj.weight", "model.embed_tokens.weight", "lm_head.weight"):
        torch.testing.assert_close(state[name], merged[name], atol=1e-6, rtol=1e-5)


def test_fingerprint_follows_the_adapter(family, adapter, tmp_path):
    ref = f"{family['ja']}+{adapter[0]}"
    assert fingerprint(ref) != fingerprint(str(family["ja"]))
    assert fingerprint(ref) == fingerprint(ref)


def _broken(adapter_dir: Path, tmp_path: Path, change) -> Path:
    out = tmp_path / "broken"
    out.mkdir()
    for f in adapter_dir.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    change(out)
    return out


def _config_edit(**kv):
    def change(folder: Path):
        cfg = json.loads((folder / "adapter_config.json").read_text())
        cfg.update(kv)
        (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return change


@pytest.mark.parametrize("change, expected", [
    (_config_edit(use_dora=True), "DoRA"),
    (_config_edit(peft_type="IA3"), "only LoRA"),
    (lambda f: (f / "adapter_model.safetensors").unlink(), "adapter_model.safetensors"),
    (lambda f: (f / "adapter_config.json").write_text("{nope"), "not valid JSON"),
], ids=["dora", "ia3", "no-weights", "bad-json"])
def test_bad_adapters_fail_by_name(family, adapter, tmp_path, change, expected):
    broken = _broken(adapter[0], tmp_path, change)
    with pytest.raises(UserError, match=expected) as err:
        open_model(f"{family['ja']}+{broken}")
    assert str(broken) in str(err.value)


def test_adapter_for_another_architecture(family, adapter, tmp_path, capsys):
    wide = tmp_path / "wide"
    build_model(wide, seed=5, layers=2)
    recipe = write(tmp_path / "r.yaml", f"merge_method: linear\nmodels:\n  - model: {wide}+{adapter[0]}\n"
                                        "    parameters: {weight: 1}\n")
    assert cli("merge", recipe, tmp_path / "out", "--quiet") == 2
    err = capsys.readouterr().err
    assert "model.layers.2" in err and "does not have" in err
    assert not (tmp_path / "out").exists()
    assert cli("merge", write(tmp_path / "r2.yaml", f"merge_method: linear\nmodels:\n  - model: {family['ja']}+/no/adapter\n"
                                                    "    parameters: {weight: 1}\n"), tmp_path / "out", "--quiet") == 2
    assert "/no/adapter" in capsys.readouterr().err
