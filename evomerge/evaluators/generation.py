"""Batched greedy generation for generative fitness (the simple, correct path; runs on CPU and GPU).

Prompts are sorted by length so each batch pads little; sequences stop at EOS or at a stop string, and the text
after the first stop string is cut. Output equals plain `generate` greedy decoding of each prompt.
"""

from __future__ import annotations

from typing import Any

import torch


def truncate_at_stop(text: str, stop: list[str]) -> str:
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


class StopOnStrings:
    """Per-row stop: True once a row's generated text contains a stop string (decodes only a short tail)."""

    def __init__(self, tokenizer: Any, prompt_len: int, stop: list[str], tail_tokens: int = 24):
        self.tokenizer, self.prompt_len, self.stop, self.tail = tokenizer, prompt_len, stop, tail_tokens

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        new = input_ids[:, self.prompt_len:][:, -self.tail:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)


def greedy_generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int,
                    stop: list[str] | None = None, batch_size: int = 16, progress: Any = None) -> list[str]:
    stop = stop or []
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(tokenizer(prompts[i]).input_ids), reverse=True)
    outputs: list[str] = [""] * len(prompts)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
            kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                          pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
            if stop:
                from transformers import StoppingCriteriaList

                kwargs["stopping_criteria"] = StoppingCriteriaList([StopOnStrings(tokenizer, enc.input_ids.shape[1], stop)])
            with torch.no_grad():
                out = model.generate(**enc, **kwargs)
            new = out[:, enc.input_ids.shape[1]:]
            for row, i in enumerate(idx):
                text = tokenizer.decode(new[row], skip_special_tokens=True)
                outputs[i] = truncate_at_stop(text, stop)
            if progress is not None:
                progress(len(idx))
    finally:
        tokenizer.padding_side = old_side
    return outputs
