"""Our merged tensors equal what mergekit 0.1.5 writes for the same recipe, to 1e-5, on fp32 models.

DARE and DELLA draw random masks; mergekit takes them from torch's global RNG, we from a counter-based hash keyed
by seed, tensor and source. To compare the arithmetic (rescale, sign election, weights, normalisation) exactly,
those tests hand mergekit our masks: each task vector is recognised by its content, which both sides compute
bit-identically as model - base in fp32.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import load_state

mergekit = pytest.importorskip("mergekit")

from mergekit_reference import assert_same, run_mergekit, run_ours  # noqa: E402


def compare(recipe_text: str, tmp_path: Path, monkeypatch=None) -> dict[str, torch.Tensor]:
    ours = run_ours(recipe_text, tmp_path / "ours", monkeypatch)
    ref = run_mergekit(recipe_text, tmp_path / "mk", monkeypatch, run_ours.masks if monkeypatch else None)
    assert_same(ours, ref)
    return ours


def test_every_mergekit_method_is_known():
    from mergekit.merge_methods.registry import registered_methods

    from evomerge.merging.methods import method_names

    assert sorted(method_names()) == sorted(m.spec.name for m in registered_methods())


def test_linear(family, tmp_path):
    compare(f"""
merge_method: linear
models:
  - model: {family['ja']}
    parameters: {{weight: 0.7}}
  - model: {family['math']}
    parameters: {{weight: 0.5}}
  - model: {family['code']}
    parameters: {{weight: [0.1, 0.9]}}
dtype: float32
""", tmp_path)


def test_linear_unnormalized_with_filters(family, tmp_path):
    compare(f"""
merge_method: linear
models:
  - model: {family['ja']}
    parameters:
      weight:
        - filter: self_attn
          value: 0.9
        - filter: mlp
          value: [0.2, 0.6]
        - value: 0.5
  - model: {family['math']}
    parameters: {{weight: 0.4}}
parameters:
  normalize: false
""", tmp_path)


def test_task_arithmetic(family, tmp_path):
    compare(f"""
merge_method: task_arithmetic
base_model: {family['base']}
models:
  - model: {family['ja']}
    parameters: {{weight: 0.8}}
  - model: {family['math']}
    parameters: {{weight: [0.3, 1.2, 0.5]}}
parameters:
  lambda: 0.9
""", tmp_path)


def test_ties_with_gradients_and_filters(family, tmp_path):
    ours = compare(f"""
merge_method: ties
base_model: {family['base']}
models:
  - model: {family['ja']}
    parameters:
      density: [0.9, 0.4]
      weight: 0.6
  - model: {family['math']}
    parameters:
      density:
        - filter: mlp
          value: 0.3
        - value: 0.7
      weight: [0.2, 0.8]
  - model: {family['code']}
    parameters: {{density: 0.5, weight: 0.4}}
parameters:
  normalize: true
""", tmp_path)
    base = load_state(family["base"])
    assert not torch.equal(ours["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear"])
def test_dare_with_shared_masks(family, tmp_path, monkeypatch, method):
    compare(f"""
merge_method: {method}
base_model: {family['base']}
models:
  - model: {family['ja']}
    parameters: {{density: 0.53, weight: 0.4}}
  - model: {family['math']}
    parameters: {{density: [0.3, 0.8], weight: 0.9}}
  - model: {family['code']}
    parameters: {{density: 0.7, weight: 0.6}}
parameters:
  int8_mask: true
""", tmp_path, monkeypatch)
    assert len(run_ours.masks) > 10  # the masks really were drawn and handed over


def test_dare_ties_normalized_no_rescale(family, tmp_path, monkeypatch):
    compare(f"""
merge_method: dare_ties
base_model: {family['base']}
models:
  - model: {family['ja']}
    parameters: {{density: 0.6, weight: 0.5}}
  - model: {family['math']}
    parameters: {{density: 0.4, weight: 0.7}}
parameters:
  normalize: true
  rescale: false
""", tmp_path, monkeypatch)


@pytest.mark.parametrize("method", ["breadcrumbs", "breadcrumbs_ties"])
def test_breadcrumbs(family, tmp_path, method):
    ours = compare(f"""
merge_method: {method}
base_model: {family['base']}
models:
  - model: {family['ja']}
    parameters: {{density: 0.6, weight: 0.5, gamma: 0.05}}
  - model: {family['math']}
    parameters: {{density: [0.2, 0.9], weight: 0.8}}
  - model: {family['code']}
    parameters: {{density: 0.97, weight: 0.3, gamma: 0.1}}
parameters:
  rescale: true
""", tmp_path)
    base = load_state(family["base"])
    assert not torch.equal(ours["model.layers.1.mlp.up_proj.weight"], base["model.layers.1.mlp.up_proj.weight"])


@pytest.mark.parametrize("method", ["della", "della_linear"])
def test_della_with_shared_masks(family, tmp_path, monkeypatch, method):
    compare(f"""
merge_method: {method}
base_model: {family['base']}
models:
  - model: {family['ja']}
    parameters: {{density: 0.5, weight: 0.6, epsilon: 0.3}}
  - model: {family['math']}
    parameters: {{density: [0.3, 0.7], weight: 0.9, epsilon: 0.1}}
  - model: {family['code']}
    parameters: {{density: 0.6, weight: 0.4}}
""", tmp_path, monkeypatch)
    assert len(run_ours.masks) > 10


@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock(family, tmp_path, filter_wise):
    ours = compare(f"""
merge_method: model_stock
base_model: {family['base']}
models:
  - model: {family['base']}
  - model: {family['ja']}
  - model: {family['math']}
  - model: {family['code']}
parameters:
  filter_wise: {str(filter_wise).lower()}
dtype: float32
""", tmp_path)
    base = load_state(family["base"])
    assert not torch.equal(ours["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.parametrize("topk", [1.0, 0.4])
def test_sce(family, tmp_path, topk):
    compare(f"""
merge_method: sce
base_model: {family['base']}
models:
  - model: {family['ja']}
  - model: {family['math']}
  - model: {family['code']}
parameters:
  select_topk: {topk}
""", tmp_path)


@pytest.mark.parametrize("options", ["{}", "{nuslerp_flatten: false}", "{nuslerp_flatten: false, nuslerp_row_wise: true}"])
@pytest.mark.parametrize("with_base", [True, False])
def test_nuslerp(family, tmp_path, options, with_base):
    base = f"base_model: {family['base']}\n" if with_base else ""
    compare(f"""
merge_method: nuslerp
{base}models:
  - model: {family['ja']}
    parameters: {{weight: 0.3}}
  - model: {family['math']}
    parameters: {{weight: [0.9, 0.2]}}
parameters: {options}
""", tmp_path)


@pytest.mark.parametrize("with_base", [True, False])
def test_multislerp(family, tmp_path, with_base):
    base = f"base_model: {family['base']}\n" if with_base else ""
    compare(f"""
merge_method: multislerp
{base}models:
  - model: {family['ja']}
    parameters: {{weight: 0.5}}
  - model: {family['math']}
    parameters: {{weight: [0.2, 0.9]}}
  - model: {family['code']}
    parameters: {{weight: 0.3}}
""", tmp_path)


@pytest.mark.parametrize("options", ["{}", "{max_iter: 2, tol: 0.001}"])
def test_karcher(family, tmp_path, options):
    compare(f"""
merge_method: karcher
models:
  - model: {family['ja']}
  - model: {family['math']}
  - model: {family['code']}
parameters: {options}
""", tmp_path)


def test_arcee_fusion(family, tmp_path):
    ours = compare(f"""
merge_method: arcee_fusion
base_model: {family['base']}
models:
  - model: {family['base']}
  - model: {family['ja']}
""", tmp_path)
    base, ja = load_state(family["base"]), load_state(family["ja"])
    name = "model.layers.0.mlp.down_proj.weight"
    took = ours[name] == ja[name]
    assert 0 < took.float().mean() < 0.5  # some, not most, of the fine-tune's values
    assert torch.equal(ours[name][~took], base[name][~took])


def test_arcee_fusion_samples_large_tensors_reproducibly():
    from evomerge.core import rng
    from evomerge.merging.methods.arcee_fusion import SAMPLE, outlier_fence

    values = torch.randn(3 * SAMPLE, generator=torch.Generator().manual_seed(0)).abs()
    u = rng.uniform_like(rng.stream_keys(0, "t", "m"), torch.Size([SAMPLE]))
    fence = outlier_fence(values, u)
    assert torch.equal(fence, outlier_fence(values, u.clone()))
    exact = torch.quantile(values[:SAMPLE], torch.tensor([0.25, 0.5, 0.75]))  # |N(0,1)|: same distribution
    assert fence.item() == pytest.approx((exact[1] + 1.5 * (exact[2] - exact[0])).item(), rel=0.01)


@pytest.mark.parametrize("method, options", [
    ("ram", "{epsilon: 0.02}"), ("ramplus_tl", "{epsilon: 0.02}"), ("ramplus_tl", "{epsilon: 0.03, r: 0.5, alpha: 2}"),
])
def test_ram(family, tmp_path, method, options):
    compare(f"""
merge_method: {method}
base_model: {family['base']}
models:
  - model: {family['ja']}
  - model: {family['math']}
  - model: {family['code']}
parameters: {options}
""", tmp_path)


def test_nearswap(family, tmp_path):
    ours = compare(f"""
merge_method: nearswap
base_model: {family['ja']}
models:
  - model: {family['ja']}
  - model: {family['math']}
parameters:
  t: [0.001, 0.05]
""", tmp_path)
    ja = load_state(family["ja"])
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(ours[name], ja[name])


def test_slerp_mergekit_docs_recipe(family, tmp_path):
    compare(f"""
slices:
  - sources:
      - model: {family['ja']}
        layer_range: [0, 4]
      - model: {family['math']}
        layer_range: [0, 4]
merge_method: slerp
base_model: {family['ja']}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: float32
""", tmp_path)


def test_passthrough_stacking_repeats_layers(family, tmp_path):
    ours = compare(f"""
slices:
  - sources:
      - model: {family['ja']}
        layer_range: [0, 3]
  - sources:
      - model: {family['math']}
        layer_range: [1, 4]
  - sources:
      - model: {family['ja']}
        layer_range: [2, 3]
        parameters:
          scale:
            - filter: o_proj
              value: 0.5
            - value: 1.0
merge_method: passthrough
dtype: float32
""", tmp_path)
    assert sum(1 for k in ours if k.endswith("self_attn.q_proj.weight")) == 7
    import json

    assert json.loads((tmp_path / "ours" / "config.json").read_text())["num_hidden_layers"] == 7


def test_slices_with_per_slice_parameters(family, tmp_path):
    compare(f"""
slices:
  - sources:
      - model: {family['base']}
        layer_range: [0, 2]
      - model: {family['ja']}
        layer_range: [0, 2]
        parameters: {{weight: 0.7}}
    parameters:
      density: 0.5
  - sources:
      - model: {family['base']}
        layer_range: [2, 4]
      - model: {family['math']}
        layer_range: [1, 3]
        parameters: {{weight: [0.2, 1.0]}}
    parameters:
      density: [0.3, 0.9]
merge_method: ties
base_model: {family['base']}
""", tmp_path)


def test_mistral_task_arithmetic_sharded_source(mistral_family, tmp_path):
    compare(f"""
merge_method: task_arithmetic
base_model: {mistral_family['base']}
models:
  - model: {mistral_family['a']}
    parameters: {{weight: 0.6}}
  - model: {mistral_family['b']}
    parameters: {{weight: 0.5}}
dtype: float32
""", tmp_path)


def test_mistral_ties(mistral_family, tmp_path):
    compare(f"""
merge_method: ties
base_model: {mistral_family['base']}
models:
  - model: {mistral_family['a']}
    parameters: {{weight: 1.0, density: 0.4}}
  - model: {mistral_family['b']}
    parameters: {{weight: 0.8, density: 0.6}}
""", tmp_path)


def test_bf16_output(family, tmp_path):
    ours = compare(f"""
merge_method: linear
models:
  - model: {family['ja']}
    parameters: {{weight: 1.0}}
  - model: {family['math']}
    parameters: {{weight: 1.0}}
out_dtype: bfloat16
""", tmp_path)
    assert all(t.dtype == torch.bfloat16 for t in ours.values())
