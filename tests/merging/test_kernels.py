"""The one kernel chooser (evomerge/merging/kernels.py): which implementation merges a tensor, and that
`evomerge merge` and a search's live model both merge through it."""

from __future__ import annotations

import pytest
import torch

from evomerge.merging import kernels
from evomerge.merging.methods import get_method
from evomerge.merging.plan import TensorTask

SHAPE = (8, 64)


def _task(n=3, copy=False, rescale=False):
    per = [{}] + [{"weight": 0.5, "density": 0.5, "gamma": 0.01}] * (n - 1)
    return TensorTask("layer.w", [(f"m{i}", "w") for i in range(n)], 0,
                      {"normalize": True, "rescale": rescale, "lambda": 1.0, "int8_mask": False}, per, copy=copy)


def _tensors(dtype=torch.float32, n=3):
    return [torch.randn(SHAPE, generator=torch.Generator().manual_seed(i)).to(dtype) for i in range(n)]


def test_the_chooser_sends_each_tensor_where_it_can_run():
    task, out = _task(), torch.empty(SHAPE)
    ties, della, breadcrumbs = get_method("ties"), get_method("della"), get_method("breadcrumbs_ties")
    assert kernels.choose(ties, task, _tensors(), out, None) == "cpu"
    assert kernels.choose(della, task, _tensors(), out, None) == "reference"  # no fused form
    assert kernels.choose(ties, task, _tensors(torch.float64), out, None) == "reference"  # not a kernel dtype
    assert kernels.choose(ties, _task(copy=True), _tensors(), out, None) == "reference"
    pytest.importorskip("triton")
    from evomerge.merging.fused_gpu import FusedMerger

    gpu = FusedMerger(None)  # Triton's interpreter here (tests/conftest.py), a GPU in a search
    assert kernels.choose(ties, task, _tensors(), out, None, gpu) == "gpu"
    assert kernels.choose(breadcrumbs, task, _tensors(), out, None, gpu) == "cpu"  # its form has no GPU version
    assert kernels.choose(ties, task, _tensors(torch.float64), out, None, gpu) == "reference"
    assert kernels.choose(ties, _task(rescale=True), _tensors(), out, None, gpu) == "cpu"  # TIES + rescale: not on GPU
    # a float16 recipe dtype: the GPU kernels round to it, the CPU kernels do not
    assert kernels.choose(ties, task, _tensors(), out, torch.float16, gpu) == "gpu"
    assert kernels.choose(ties, task, _tensors(), out, torch.float16) == "reference"


def test_evomerge_merge_and_the_live_model_merge_through_one_entry_point(family, tmp_path, monkeypatch):
    from evomerge.merging.merge import run_merge
    from evomerge.merging.recipe import recipe_from_dict
    from evomerge.runtime.live import LiveMerge
    from evomerge.sources.models import ModelPool

    calls = []
    real = kernels.merge_into

    def counted(plan, task, *args, **kwargs):
        calls.append(task.out_name)
        return real(plan, task, *args, **kwargs)

    monkeypatch.setattr(kernels, "merge_into", counted)
    recipe = recipe_from_dict({"merge_method": "dare_ties", "base_model": str(family["base"]), "seed": 3,
                               "models": [{"model": str(family["ja"]), "parameters": {"weight": 0.6, "density": 0.5}},
                                          {"model": str(family["math"]), "parameters": {"weight": 0.4,
                                                                                        "density": 0.7}}]})
    run_merge(recipe, tmp_path / "out", device="cpu", progress=False)
    merged = len(calls)
    with ModelPool() as pool:
        live = LiveMerge(recipe, pool, "cpu", fused=False)
        live.apply(recipe)
    assert merged > 10 and len(calls) - merged == len(live.params)  # every tensor of both, through merge_into
