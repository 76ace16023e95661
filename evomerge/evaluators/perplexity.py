"""Perplexity on a local text file: a cheap fitness that works on CPU. Reported as higher-is-better too."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from evomerge.core.errors import UserError
from evomerge.evaluators.base import Evaluator, Options
from evomerge.core.resources import resolve_path


class PerplexityOptions(Options):
    data: str
    max_length: int = Field(256, ge=2)  # tokens per window
    batch_size: int = Field(8, ge=1)
    max_tokens: int | None = Field(None, ge=2)  # windows: evaluate only the first N tokens
    # windows: the whole text in max_length windows; documents: each blank-line-separated document on its own
    # (its own windows), so the set is a list of items that subset fitness can estimate from
    unit: Literal["windows", "documents"] = "windows"
    max_documents: int | None = Field(None, ge=1)  # documents: only the first N

    @model_validator(mode="after")
    def _limits(self) -> "PerplexityOptions":
        if self.unit == "documents" and self.max_tokens is not None:
            raise ValueError("max_tokens limits `unit: windows`; with `unit: documents` use max_documents")
        return self


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
        docs = [d.strip() for d in re.split(r"\n\s*\n", self.text) if d.strip()]
        self.documents = docs[: options.max_documents]
        self._last_items: list[dict[str, float]] = []

    # documents are the items: the metric is the token-weighted mean log-likelihood over them
    item_metrics = ("neg_log_perplexity",)  # perplexity itself is exp of that, not a mean of items
    # no item_range: a document's log-likelihood is unbounded, so racing has no bound; subset fitness works

    def scores_items(self, metric: str) -> bool:
        return self.options.unit == "documents" and super().scores_items(metric)

    def num_items(self) -> int:
        return len(self.documents)

    def data_fingerprint(self) -> str:
        from evomerge.evaluators.data import digest

        return digest(self.text)

    def evaluate(self, model: Any, tokenizer: Any) -> dict[str, float]:
        o = self.options
        if o.unit == "documents":
            self._last_items = self.score_items(model, tokenizer, list(range(len(self.documents))))
            return self.aggregate_items(self._last_items)
        ids = tokenizer(self.text, return_tensors="pt").input_ids[0]
        if o.max_tokens:
            ids = ids[: o.max_tokens]
        nll, count = self._windows_nll(model, self._windows(ids))
        if count == 0:  # else perplexity 1.0: the best possible fitness for scoring nothing
            raise UserError(f"{o.data} gives no token to predict: it tokenizes to {len(ids)} token(s) with this "
                            "model's tokenizer", "perplexity")
        mean = nll / count
        return {"perplexity": math.exp(mean), "neg_log_perplexity": -mean}

    def _windows(self, ids: torch.Tensor) -> list[torch.Tensor]:
        step = self.options.max_length
        return [w for w in (ids[i : i + step] for i in range(0, len(ids) - 1, step)) if len(w) > 1]

    def score_items(self, model: Any, tokenizer: Any, indices: list[int]) -> list[dict[str, float]]:
        """Each listed document's summed negative log-likelihood and token count; its windows never see another
        document, so its numbers do not depend on which others are scored with it (up to batched float rounding)."""
        windows, owner = [], []
        for j, i in enumerate(indices):
            for w in self._windows(tokenizer(self.documents[i], return_tensors="pt").input_ids[0]):
                windows.append(w)
                owner.append(j)
        nll, count = [0.0] * len(indices), [0] * len(indices)
        for j, (a, b) in zip(owner, self._per_window(model, windows)):
            nll[j] += a
            count[j] += b
        empty = [i for i, c in zip(indices, count) if c == 0]
        if empty:  # a document that scores nothing would be a perfect item (log-likelihood 0)
            raise UserError(f"document {empty[0] + 1} of {self.options.data} gives no token to predict (it "
                            "tokenizes to fewer than 2 tokens): remove it, or join it to its neighbour", "perplexity")
        return [{"nll": a, "tokens": float(b), "neg_log_perplexity": -a / max(b, 1)} for a, b in zip(nll, count)]

    def aggregate_items(self, items: list[dict[str, float]]) -> dict[str, float]:
        nll, count = sum(v["nll"] for v in items), sum(v["tokens"] for v in items)
        mean = nll / max(count, 1)
        return {"perplexity": math.exp(mean), "neg_log_perplexity": -mean}

    def last_item_values(self, metric: str) -> list[float] | None:
        ok = self._last_items and metric == "neg_log_perplexity"
        return [v[metric] for v in self._last_items] if ok else None

    def _windows_nll(self, model: Any, windows: list[torch.Tensor]) -> tuple[float, int]:
        nll, count = 0.0, 0
        for loss, keep in self._losses(model, windows):
            nll += loss[keep].sum().item()
            count += int(keep.sum())
        return nll, count

    def _per_window(self, model: Any, windows: list[torch.Tensor]) -> list[tuple[float, int]]:
        """(summed negative log-likelihood, predicted tokens) of each window."""
        return [(float(loss[r][keep[r]].sum()), int(keep[r].sum()))
                for loss, keep in self._losses(model, windows) for r in range(len(loss))]

    def _losses(self, model: Any, windows: list[torch.Tensor]):
        """Per-token losses and the mask of real tokens, a batch of `batch_size` windows at a time."""
        o = self.options
        device = next(model.parameters()).device
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
                keep = mask[:, 1:].bool()
                yield torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none"), keep
