"""Evaluators for tests: a fitness with a known optimum that can also fail, or kill its process, on cue."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch

from evomerge.evaluators import Evaluator, Options


class TargetOptions(Options):
    target: str  # a safetensors file holding the state dict of the target model
    calls_file: str | None = None  # counts evaluate() calls across processes
    kill_at_call: int | None = None  # SIGKILL the process at this call (once)
    fail_calls: list[int] = []
    nan_calls: list[int] = []
    oom_calls: list[int] = []


class TargetDistance(Evaluator):
    """Fitness = -mean squared distance to a target model: the optimum is the recipe that made the target."""

    name = "target_distance"
    Options = TargetOptions
    default_metric = "neg_mse"

    def __init__(self, options, where=""):
        super().__init__(options, where)
        from safetensors.torch import load_file

        self.target = load_file(options.target)
        self.calls = 0

    def _count(self) -> int:
        o = self.options
        if not o.calls_file:
            self.calls += 1
            return self.calls
        path = Path(o.calls_file)
        n = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(n))
        marker = Path(o.calls_file + ".killed")
        if o.kill_at_call == n and not marker.exists():
            marker.write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)
        return n

    def evaluate(self, model, tokenizer):
        n = self._count()
        if n in self.options.fail_calls:
            raise RuntimeError("injected failure")
        if n in self.options.oom_calls:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        state = model.state_dict()
        total, count = 0.0, 0
        for name, t in self.target.items():
            total += float(((state[name].float() - t.float()) ** 2).sum())
            count += t.numel()
        value = float("nan") if n in self.options.nan_calls else -total / count
        return {"neg_mse": value}


class LogitsOptions(Options):
    target: str  # a .pt-free target: safetensors file with tensors "ids" and "logits"
    offset: int = 0  # score only rows [offset, offset + limit) of ids: a train / validation split
    limit: int | None = None


class LogitsTarget(Evaluator):
    """Fitness = -mean squared distance between the model's logits and a target's on fixed inputs."""

    name = "logits_target"
    Options = LogitsOptions
    default_metric = "neg_mse"

    def __init__(self, options, where=""):
        super().__init__(options, where)
        from safetensors.torch import load_file

        data = load_file(options.target)
        end = None if options.limit is None else options.offset + options.limit
        self.ids, self.logits = data["ids"][options.offset:end], data["logits"][options.offset:end]

    def evaluate(self, model, tokenizer):
        with torch.no_grad():
            out = model(self.ids).logits.float()
        return {"neg_mse": -float(((out - self.logits) ** 2).mean())}
