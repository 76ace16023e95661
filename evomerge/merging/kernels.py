"""Choosing how each tensor of a merge is computed: one chooser, one entry point, for `evomerge merge` and for a
search's live model alike.

Every method's math exists in up to three implementations: the reference (`MergeMethod.merge`, plain torch: the
definition, equal to mergekit), the CPU kernels (merging/fused_cpu.py, numba) and the GPU kernels
(merging/fused_gpu.py, Triton). A method declares its one-pass form once (`MergeMethod.fused`, a FusedForm);
both kernel sets compute that form. `choose` sends a tensor

- to the GPU kernels when the caller holds a `FusedMerger` (a live model on a GPU, or Triton's interpreter in the
  tests), the form has a GPU version and every tensor is in a dtype they load and store;
- else to the CPU kernels when the output is in CPU memory and fused_cpu can take its dtypes and form;
- else to the reference, whose result is copied into the output.

All three give the same function (tests/merging/test_fused_cpu.py, test_fused_gpu.py), so an export equals the
scored candidate whichever ran."""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch

from evomerge.core import rng
from evomerge.merging import fused_cpu
from evomerge.merging.methods import TensorContext
from evomerge.merging.plan import MergePlan, TensorTask

GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what the GPU kernels load and store

Path = Literal["gpu", "cpu", "reference"]


def uniform_source(seed: int, task: TensorTask) -> Callable[[int, torch.Size, torch.device], torch.Tensor]:
    """Uniform numbers for DARE/DELLA masks keyed by (seed, output tensor, source position; `rng.mask_keys`):
    independent of order, device and where the model files live."""

    def uniform(i: int, shape: torch.Size, device: torch.device) -> torch.Tensor:
        return rng.uniform_like(rng.mask_keys(seed, task.out_name, i), shape, device)

    return uniform


def merge_task(
    plan: MergePlan,
    task: TensorTask,
    fetch: Callable[[str, str], torch.Tensor],
    seed: int,
    device: torch.device,
    in_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One output tensor, computed in float32 (inputs first rounded to the recipe's `dtype`, as mergekit does)."""
    if task.copy:
        return fetch(*task.inputs[0]).to(device)
    tensors = []
    for model, name in task.inputs:
        t = fetch(model, name).to(device)
        if in_dtype is not None:
            t = t.to(in_dtype)
        tensors.append(t.to(torch.float32))
    if not tensors[0].is_floating_point():
        return tensors[0]
    ctx = TensorContext(task.out_name, uniform_source(seed, task))
    return plan.method.merge(tensors, task.base, task.shared, task.per_input, ctx)


def choose(method: Any, task: Any, tensors: list[torch.Tensor], out: torch.Tensor, in_dtype: torch.dtype | None,
           gpu: Any = None) -> Path:
    """Which implementation merges `task` into `out` (see the module's docstring). `gpu`: a fused_gpu.FusedMerger,
    or None where the GPU kernels are not to run."""
    if task.copy or not out.is_floating_point():
        return "reference"
    if (gpu is not None and in_dtype in (None, *GPU_DTYPES) and out.dtype in GPU_DTYPES
            and all(t.dtype in GPU_DTYPES for t in tensors) and gpu.supports(method, task)):
        return "gpu"
    if out.device.type == "cpu" and fused_cpu.supports(method, tensors, out, in_dtype):
        return "cpu"
    return "reference"


def merge_into(plan: Any, task: Any, fetch: Callable[[str, str], torch.Tensor], seed: int, out: torch.Tensor,
               in_dtype: torch.dtype | None = None, tables: Any = None, gpu: Any = None,
               flag: torch.Tensor | None = None) -> bool | None:
    """Merge one output tensor into `out` (its dtype, its device) by the chosen implementation. Returns whether
    every element is finite; on the GPU path None: the kernels set `flag` (an int32 device tensor) instead, so a
    candidate's merge waits for no host sync per tensor. `tables`: a live CPU merge's fused_cpu.DareTables."""
    tensors = [fetch(model, name) for model, name in task.inputs]
    path = choose(plan.method, task, tensors, out, in_dtype, gpu)
    if path == "gpu":
        if flag is None:
            flag = torch.zeros(1, dtype=torch.int32, device=out.device)
            gpu.merge_into(plan.method, task, tensors, out, seed, flag)
            return not bool(flag.item())
        gpu.merge_into(plan.method, task, tensors, out, seed, flag)
        return None
    if path == "cpu":
        return fused_cpu.merge_into(plan.method, tensors, task.base, task.shared, task.per_input, out, seed,
                                    task.out_name, in_dtype, tables) == 0
    on_hand = dict(zip(task.inputs, tensors))
    result = merge_task(plan, task, lambda m, n: on_hand[(m, n)], seed, out.device, in_dtype)
    out.copy_(result)
    return bool(torch.isfinite(result).all())
