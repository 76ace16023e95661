"""Perplexity on a local text file: a cheap fitness that works on CPU. Reported as higher-is-better too."""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field

from evomerge.errors import UserError
from evomerge.evaluators.base import Evaluator, Options
from evomerge.resources import resolve_path


class PerplexityOptions(Options):
    data: str
    max_length: int = Field(256, ge=2)  # tokens per window
    batch_size: int = Field(8, ge=1)
    max_tokens: int | None = Field(None, ge=2)  # evaluate only the first N tokens


class Perplexity(Evaluator):
    name = "perplexity"
    Options = PerplexityOptions
    default_metric = "neg_log_perplexity"
    metrics = ("perplexity", "neg_log_perplexity")

    def __init__(self, options: PerplexityOptions, where: str = "perplexity"):
        super().__init__(options)
        path = resolve_path(options.data)
        if not path.is_file():
            raise UserError(f"no such text file {options.data}", where)
        self.text = path.read_text(encoding="utf-8")
        if not self.text.strip():
            raise UserError(f"{options.data} is empty", where)

    def data_fingerprint(self) -> str:
        from evomerge.evaluators.data import digest

        return digest(self.text)

    def evaluate(self, model: Any, tokenizer: Any) -> dict[str, float]:
        o = self.options
        ids = tokenizer(self.text, return_tensors="pt").input_ids[0]
        if o.max_tokens:
            ids = ids[: o.max_tokens]
        windows = [ids[i : i + o.max_length] for i in range(0, len(ids) - 1, o.max_length)]
        windows = [w for w in windows if len(w) > 1]
        device = next(model.parameters()).device
        nll, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(windows), o.batch_size):
                batch = windows[start : start + o.batch_size]
                width = max(len(w) for w in batch)
                x = torch.zeros(len(batch), width, dtype=torch.long)
                mask = torch.zeros(len(batch), width, dtype=torch.long)
                for r, w in enumerate(batch):
                    x[r, : len(w)] = w
                    mask[r, : len(w)] = 1
                x, mask = x.to(device), mask.to(device)
                logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
                target = x[:, 1:]
                keep = mask[:, 1:].bool()
                loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
                nll += loss[keep].sum().item()
                count += int(keep.sum())
        mean = nll / max(count, 1)
        return {"perplexity": math.exp(mean), "neg_log_perplexity": -mean}
