"""A live merged model for searches: sources loaded once, each candidate merged into the same model in place.

Nothing is written to disk per candidate. The candidate path runs the very same `merge_task` as `evomerge merge`
(same planner, same float32 arithmetic, same DARE streams), so exporting a trial's recipe gives the model that
was scored, bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch

from evomerge.errors import UserError
from evomerge.export import output_config
from evomerge.merge import DTYPES, merge_task, pick_device
from evomerge.models import ModelPool
from evomerge.plan import MergePlan, plan_merge
from evomerge.recipe import Recipe


class CandidateError(RuntimeError):
    """A candidate that cannot be scored (NaN weights, a failed merge); the search records it and goes on."""


def load_tokenizer(folder, gguf_file: str | None = None) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


class LiveMerge:
    """Holds every source tensor a recipe family needs, and one model whose weights `apply` overwrites."""

    def __init__(self, example: Recipe, pool: ModelPool, device: str = "auto"):
        from transformers import AutoModelForCausalLM

        self.pool, self.device = pool, pick_device(device)
        plan = plan_merge(example, pool.get)
        self.names = [t.out_name for t in plan.tasks]
        self.in_dtype = DTYPES[example.dtype] if example.dtype else None
        # Sources stay in their stored dtype on the device; merge_task upcasts one tensor group at a time.
        self.sources: dict[tuple[str, str], torch.Tensor] = {}
        for task in plan.tasks:
            for key in task.inputs:
                if key not in self.sources:
                    self.sources[key] = pool.get(key[0]).get(key[1]).to(self.device)
        donor = pool.get(plan.donor)
        out_name = example.out_dtype or example.dtype
        first = plan.tasks[0].inputs[0]
        self.dtype = DTYPES[out_name] if out_name else pool.get(first[0]).infos[first[1]].dtype
        config = output_config(donor.config, plan, self.dtype)
        with torch.device(self.device):
            self.model = AutoModelForCausalLM.from_config(config, dtype=self.dtype)
        self.model.eval()
        state = self.model.state_dict()
        missing = [n for n in self.names if n not in state]
        if missing:
            raise UserError(f"the model class has no parameter {missing[0]}", plan.donor)
        self.params = {n: state[n] for n in self.names}
        self.tokenizer = load_tokenizer(donor.folder, donor.gguf_file)

    def fetch(self, model: str, name: str) -> torch.Tensor:
        return self.sources[(model, name)]

    def apply(self, recipe: Recipe) -> MergePlan:
        """Merge `recipe` into the live model's weights."""
        plan = plan_merge(recipe, self.pool.get)
        if [t.out_name for t in plan.tasks] != self.names:
            raise CandidateError("the candidate recipe does not produce the live model's tensors")
        with torch.no_grad():
            for task in plan.tasks:
                out = merge_task(plan, task, self.fetch, recipe.seed or 0, self.device, self.in_dtype)
                if not torch.isfinite(out).all():
                    raise CandidateError(f"NaN or inf in {task.out_name}")
                self.params[task.out_name].copy_(out)
        return plan
