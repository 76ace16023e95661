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
    sleep: tuple[float, float] | None = None  # sleep a duration in [lo, hi], fixed per candidate
    hang_calls: list[int] = []  # these calls hang (sleep 120 s)
    load_s: float = 0.0  # loading takes this long (a worker slow to start)


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
        if options.load_s:
            import time

            time.sleep(options.load_s)

    def _count(self) -> int:
        o = self.options
        if not o.calls_file:
            self.calls += 1
            return self.calls
        import fcntl

        with open(o.calls_file, "a+") as f:  # several worker processes count through one file: lock it
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            n = int(f.read() or 0) + 1
            f.seek(0)
            f.truncate()
            f.write(str(n))
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)
        marker = Path(o.calls_file + ".killed")
        if o.kill_at_call == n and not marker.exists():
            marker.write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)
        return n

    def evaluate(self, model, tokenizer):
        n = self._count()
        if n in self.options.hang_calls:
            import time

            time.sleep(120)
        if n in self.options.fail_calls:
            raise RuntimeError("injected failure")
        if n in self.options.oom_calls:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        state = model.state_dict()
        if self.options.sleep:
            import hashlib
            import time

            probe = state["model.layers.0.mlp.up_proj.weight"].float().sum().item()
            u = int(hashlib.sha1(repr(probe).encode()).hexdigest()[:8], 16) / 2**32
            lo, hi = self.options.sleep
            time.sleep(lo + u * (hi - lo))
        total, count = 0.0, 0
        for name, t in self.target.items():
            total += float(((state[name].float() - t.float()) ** 2).sum())
            count += t.numel()
        value = float("nan") if n in self.options.nan_calls else -total / count
        return {"neg_mse": value}


class LogitsOptions(Options):
    target: str  # safetensors file with tensors "ids" and "logits" (and "pixel_values" for VLMs)
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
        self.extra = {"pixel_values": data["pixel_values"][options.offset:end]} if "pixel_values" in data else {}

    def evaluate(self, model, tokenizer):
        with torch.no_grad():
            out = model(input_ids=self.ids, **self.extra).logits.float()
        return {"neg_mse": -float(((out - self.logits) ** 2).mean())}


class CountingOptions(LogitsOptions):
    calls_file: str | None = None


class CountingLogitsTarget(LogitsTarget):
    """LogitsTarget that counts its evaluations in a file (to see what a search really scored)."""

    Options = CountingOptions

    def evaluate(self, model, tokenizer):
        if self.options.calls_file:
            path = Path(self.options.calls_file)
            path.write_text(str(int(path.read_text() or 0) + 1) if path.exists() else "1")
        return super().evaluate(model, tokenizer)


class ItemOptions(Options):
    target: str  # a safetensors file with the target model's state dict
    scale: float = 2000.0
    hit: float = 0.5  # ItemHit: an item is right when its closeness is above this
    calls_file: str | None = None  # counts score_items() calls across processes
    kill_at_call: int | None = None  # SIGKILL the process at this call (once)


class ItemTarget(Evaluator):
    """One item per target tensor, worth exp(-scale * its mean squared error) in (0, 1]: a fitness that is a mean
    over items, for racing, whose optimum is the target model."""

    name = "item_target"
    Options = ItemOptions
    default_metric = "closeness"
    metrics = ("closeness",)
    item_range = (0.0, 1.0)

    def __init__(self, options, where=""):
        super().__init__(options, where)
        from safetensors.torch import load_file

        self.target = load_file(options.target)
        self.names = sorted(self.target)

    def num_items(self):
        return len(self.names)

    def score_items(self, model, tokenizer, indices):
        import math

        if self.options.calls_file:
            TargetDistance._count(self)
        state = model.state_dict()
        out = []
        for i in indices:
            t = self.target[self.names[i]]
            mse = float(((state[self.names[i]].float() - t.float()) ** 2).mean())
            out.append({"closeness": math.exp(-self.options.scale * mse)})
        self.tokens.add(len(indices), 2 * len(indices))  # as if each item cost 1 prompt and 2 generated tokens
        return out

    def evaluate(self, model, tokenizer):
        items = self.score_items(model, tokenizer, list(range(self.num_items())))
        self.last = [v["closeness"] for v in items]
        return {"closeness": sum(self.last) / len(items)}

    def last_item_values(self, metric):
        return getattr(self, "last", None)



class ItemHit(ItemTarget):
    """ItemTarget's items scored right or wrong, as answers to problems are (racing's exact binary bound applies):
    item i is right when its closeness is above a bar that rises from `hit` to 1 over the items, so a candidate's
    accuracy grows smoothly as it nears the target."""

    name = "item_hit"
    binary_items = True

    def score_items(self, model, tokenizer, indices):
        n, lo = self.num_items(), self.options.hit
        return [{"closeness": float(v["closeness"] > lo + (1 - lo) * i / n)}
                for i, v in zip(indices, super().score_items(model, tokenizer, indices))]
