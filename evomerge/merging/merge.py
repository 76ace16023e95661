"""Running a merge plan: one output tensor at a time, so memory holds one tensor group, not whole models."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from evomerge.core.devices import pick_device
from evomerge.core.dtypes import torch_dtype
from evomerge.core.errors import UserError
from evomerge.merging import kernels
from evomerge.sources.models import ModelPool
from evomerge.merging.plan import MergePlan, plan_merge
from evomerge.merging.recipe import Recipe


def ensure_seed(recipe: Recipe, seed: int | None = None) -> Recipe:
    """A recipe with a definite seed (the given one, the recipe's, or a fresh one), so DARE is reproducible."""
    if seed is not None:
        return recipe.model_copy(update={"seed": seed})
    if recipe.seed is None:
        return recipe.model_copy(update={"seed": random.SystemRandom().randrange(2**31)})
    return recipe


@dataclass
class MergeRun:
    """A planned merge, ready to stream its output tensors."""

    recipe: Recipe
    plan: MergePlan
    pool: ModelPool
    device: torch.device

    @property
    def out_dtype(self) -> torch.dtype | None:
        name = self.recipe.out_dtype or self.recipe.dtype
        return torch_dtype(name) if name else None

    def layout(self) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        """(name, shape, dtype) of every output tensor, in the order `tensors` yields them."""
        out = []
        for task in self.plan.tasks:
            info = self.pool.get(task.inputs[0][0]).infos[task.inputs[0][1]]
            out.append((task.out_name, tuple(info.shape), self.out_dtype or info.dtype))
        return out

    def tensors(self, reuse: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """The output tensors in plan order. The next task's sources are read on two other threads while this
        one merges (reads release the GIL, and so do the CPU kernels), so reading and computing overlap.

        `reuse=True` (export): sources are read in place from their files' pages (one mmap per tensor, closed
        once it is merged; `pread` into two alternating sets of reused buffers where that does not apply) and
        outputs go to two alternating buffers allocated once, so a 1B-parameter merge neither copies its sources
        nor faults in gigabytes of fresh memory; an output tensor is then only valid until the one after next is
        requested (the exporter writes each before that)."""
        from concurrent.futures import ThreadPoolExecutor

        in_dtype = torch_dtype(self.recipe.dtype) if self.recipe.dtype else None
        tasks = self.plan.tasks
        layout = self.layout()
        pools: list[dict[int, torch.Tensor]] = [{}, {}]  # per set: input slot -> uint8 buffer
        outs: list[torch.Tensor | None] = [None, None]

        def buffer(pool: dict[int, torch.Tensor], slot: int, nbytes: int) -> torch.Tensor:
            held = pool.get(slot)
            if held is None or held.numel() < nbytes:
                held = pool[slot] = torch.empty(max(nbytes, 1), dtype=torch.uint8)
            return held

        maps: list[list] = [[], []]  # per set: the mmaps its sources are views of

        def read_one(i: int, slot: int, model: str, name: str) -> torch.Tensor:
            src = self.pool.get(model)
            if not reuse or self.device.type != "cpu":
                return src.get(name)
            view = src.mapped(name)
            if view is not None:
                maps[i % 2].append(view[1])
                return view[0]
            info = src.infos[name]
            nbytes = math.prod(info.shape) * info.dtype.itemsize
            return src.get(name, buffer(pools[i % 2], slot, nbytes))

        with ThreadPoolExecutor(2, thread_name_prefix="evomerge-read") as reader:
            def read(i: int):
                return {(m, n): reader.submit(read_one, i, j, m, n) for j, (m, n) in enumerate(tasks[i].inputs)}

            ahead = read(0) if tasks else None
            for i, (task, (name, shape, dtype)) in enumerate(zip(tasks, layout)):
                inputs = {k: f.result() for k, f in ahead.items()}
                if i + 1 < len(tasks):
                    ahead = read(i + 1)
                nbytes = math.prod(shape) * dtype.itemsize
                if reuse and self.device.type == "cpu" and nbytes % dtype.itemsize == 0:
                    held = outs[i % 2]
                    if held is None or held.numel() < nbytes:
                        held = outs[i % 2] = torch.empty(max(nbytes, 1), dtype=torch.uint8)
                    out = held[:nbytes].view(dtype).view(shape)
                else:
                    out = torch.empty(shape, dtype=dtype, device=self.device)
                finite = kernels.merge_into(self.plan, task, lambda m, n: inputs[(m, n)], self.recipe.seed or 0, out,
                                         in_dtype)
                inputs = None  # the sources' views go before their mappings close
                if not finite:
                    raise UserError(f"the merge produced NaN or inf in {name}; check weights and lambda")
                for m in maps[i % 2]:  # this task's source pages leave the RSS again
                    try:
                        m.close()
                    except BufferError:  # a view is still alive somewhere: it unmaps when collected
                        pass
                maps[i % 2].clear()
                yield name, out.cpu()


def prepare(recipe: Recipe, pool: ModelPool, device: str = "auto", seed: int | None = None, where: str = "recipe") -> MergeRun:
    recipe = ensure_seed(recipe, seed)
    plan = plan_merge(recipe, pool.get, where)
    return MergeRun(recipe, plan, pool, pick_device(device))


def run_merge(recipe: Recipe, out_dir: str | Path, *, device: str = "auto", seed: int | None = None,
              force: bool = False, max_shard_size: int = 5 * 2**30, progress: bool = True,
              where: str = "recipe", card_extra: str = "", staged: bool = True) -> MergePlan:
    """Merge and export in one go: the library form of `evomerge merge`."""
    from evomerge.merging.export import check_out_dir, export_merge

    if staged:
        check_out_dir(Path(out_dir), force)
    with ModelPool() as pool:
        run = prepare(recipe, pool, device, seed, where)
        export_merge(run, Path(out_dir), force=force, max_shard_size=max_shard_size, progress=progress,
                     card_extra=card_extra, staged=staged)
        return run.plan
