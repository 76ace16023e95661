"""Batched greedy generation for generative fitness.

Three paths with the same output: vLLM (generation/vllm_engine.py: the default wherever it is installed and runs
the model), the fast engine (generation/engine.py: continuous batching over its own KV cache; the default on a
GPU for the families it runs when vLLM is not there) and plain `generate` in length-sorted batches (everything
else, and CPU by default). Sequences stop at EOS or at a stop string, and the text after the first stop string
is cut. Output equals plain `generate` greedy decoding of each prompt.
"""

from __future__ import annotations

import sys

from dataclasses import dataclass
from typing import Any

import torch

from evomerge.generation.stops import truncate_at_stop


@dataclass
class TokenCount:
    """What generation spent: prompt tokens read and new tokens computed (each row until it stopped)."""

    prompt: int = 0
    generated: int = 0

    def add(self, prompt: int, generated: int) -> None:
        self.prompt += prompt
        self.generated += generated


class StopOnStrings:
    """Per-row stop: True once a row's generated text contains a stop string (decodes only a short tail)."""

    def __init__(self, tokenizer: Any, prompt_len: int, stop: list[str], tail_tokens: int = 24):
        self.tokenizer, self.prompt_len, self.stop, self.tail = tokenizer, prompt_len, stop, tail_tokens

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        new = input_ids[:, self.prompt_len:][:, -self.tail:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)


def _on_gpu(model: Any) -> bool:
    return next(model.parameters()).device.type == "cuda"


def use_engine(model: Any, choice: str, max_len: int | None = None) -> bool:
    """'fast' forces the engine (an error if it cannot run the model), 'hf' forces `generate`, 'auto' takes the
    engine on a GPU whenever it supports the model."""
    from evomerge.generation.engine import supports

    if choice == "hf":
        return False
    why = supports(model, max_len)
    if choice == "fast":
        if why is not None:
            from evomerge.core.errors import UserError

            raise UserError(f"engine: fast cannot run this model ({why}); use engine: auto or hf")
        return True
    on_gpu = _on_gpu(model)
    if why is not None and on_gpu and not model.__dict__.get("_evomerge_engine_said"):
        model.__dict__["_evomerge_engine_said"] = True  # once per model object, not once per batch
        print(f"note: the fast generation engine cannot run this model ({why}); generating with transformers' "
              "generate", file=sys.stderr)
    return why is None and on_gpu


def engine_for(model: Any, batch_size: int) -> Any:
    """One engine per model object, kept on the model so its cache is reused across candidates."""
    from evomerge.generation.engine import Engine

    engine = model.__dict__.get("_evomerge_engine")
    if engine is None or engine.max_batch != batch_size:
        engine = Engine(model, max_batch=batch_size)
        model.__dict__["_evomerge_engine"] = engine
    return engine


def _eos_ids(model: Any) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def _new_tokens(new: torch.Tensor, pad: int | None, eos: list[int]) -> int:
    """New tokens of a batch from `generate`, counted as the engine counts them: each row up to (not including)
    its EOS; the padding after a finished row is not work the row asked for."""
    total = 0
    for row in new.tolist():
        while row and row[-1] == pad:
            row.pop()
        if row and row[-1] in eos:
            row.pop()
        total += len(row)
    return total


def fast_generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, stop: list[str],
                  batch_size: int, progress: Any = None, count: TokenCount | None = None) -> list[str]:
    ids = [tokenizer(p).input_ids for p in prompts]
    tail = 32

    def should_stop(tokens: list[int]) -> bool:
        text = tokenizer.decode(tokens[-tail:], skip_special_tokens=True)
        return any(s in text for s in stop)

    out = engine_for(model, batch_size).generate(ids, max_new_tokens, _eos_ids(model),
                                                 should_stop if stop else None, progress)
    if count is not None:
        count.add(sum(map(len, ids)), sum(map(len, out)))
    return [truncate_at_stop(tokenizer.decode(t, skip_special_tokens=True), stop) for t in out]


def use_vllm(model: Any, choice: str) -> bool:
    """'vllm' takes vLLM wherever it can run the model (a model it cannot run, such as a data-flow path, is said
    once and generated as 'auto' would); 'auto' takes it wherever it is installed and runs the model: on a GPU on
    the field's evidence, on the CPU because bench/vllm_generate.py measured it 3.3x faster than `generate` per
    miniature candidate here (bench/RESULTS.md). vLLM missing with 'vllm' is refused up front (the evaluator)."""
    if choice not in ("vllm", "auto") or model.__dict__.get("_evomerge_vllm_failed"):
        return False
    from evomerge.generation import vllm_engine

    if choice == "auto" and not vllm_engine.available():
        return False
    why = vllm_engine.supports(model)
    if why is not None and choice == "vllm" and not model.__dict__.get("_evomerge_vllm_said"):
        model.__dict__["_evomerge_vllm_said"] = True
        print(f"note: engine: vllm: {why}; generating as engine: auto would", file=sys.stderr)
    return why is None


def vllm_engine_or_none(model: Any, tokenizer: Any, longest: int, options: dict | None, choice: str) -> Any:
    """The model's vLLM engine, synced to its weights; None when `auto` could not start vLLM for this model (said
    once: then everything runs without it)."""
    from evomerge.generation.vllm_engine import engine_for

    try:
        return engine_for(model, tokenizer, longest, **(options or {}))
    except Exception as e:  # a model vLLM has a class for but cannot run here (a head size its kernels lack...)
        if choice == "vllm":
            raise
        model.__dict__["_evomerge_vllm_failed"] = True
        print(f"note: vLLM could not start for this model ({type(e).__name__}: {str(e)[:160]}); running "
              "without it", file=sys.stderr)
        return None


def _vllm_generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, stop: list[str],
                   progress: Any, count: TokenCount | None, options: dict | None, choice: str) -> list[str] | None:
    """vLLM's answers; None when `auto` could not start vLLM for this model."""
    longest = max(len(tokenizer(p).input_ids) for p in prompts) + max_new_tokens
    engine = vllm_engine_or_none(model, tokenizer, longest, options, choice)
    return None if engine is None else engine.generate(prompts, max_new_tokens, stop, _eos_ids(model), count, progress)


def greedy_generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int,
                    stop: list[str] | None = None, batch_size: int = 16, progress: Any = None,
                    engine: str = "auto", count: TokenCount | None = None, vllm: dict | None = None) -> list[str]:
    """Greedy continuations of `prompts`, cut at the first stop string; `count` adds up the tokens spent.
    `engine`: vllm, fast (evomerge's engine), hf (`generate`) or auto; `vllm`: the vLLM engine's options
    (tensor_parallel_size, ...)."""
    stop = stop or []
    if prompts and use_vllm(model, engine):
        texts = _vllm_generate(model, tokenizer, prompts, max_new_tokens, stop, progress, count, vllm, engine)
        if texts is not None:
            return texts
    if engine == "vllm":
        engine = "auto"
    if prompts and use_engine(model, engine, max(len(tokenizer(p).input_ids) for p in prompts) + max_new_tokens):
        return fast_generate(model, tokenizer, prompts, max_new_tokens, stop, batch_size, progress, count)
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
            if count is not None:
                count.add(int(enc.attention_mask.sum()), _new_tokens(new, tokenizer.pad_token_id, _eos_ids(model)))
            for row, i in enumerate(idx):
                text = tokenizer.decode(new[row], skip_special_tokens=True)
                outputs[i] = truncate_at_stop(text, stop)
            if progress is not None:
                progress(len(idx))
    finally:
        tokenizer.padding_side = old_side
    return outputs


def check_engine(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, stop: list[str] | None,
                 engine: str = "auto", n: int = 2) -> str | None:
    """The engine's greedy answers against plain `generate`'s (one prompt at a time) on the first `n` prompts.

    None when they agree or the engine would not run here; otherwise why not (the caller then falls back to
    `generate` for the rest of the run). A few prompts and at most 32 new tokens: seconds on a GPU."""
    if use_vllm(model, engine):  # vLLM's answers are checked against `generate`'s by its tests (float32); at bf16
        return None  # two engines may part where logits tie, which would turn vLLM off on every GPU
    if engine == "vllm":
        engine = "auto"
    prompts = prompts[:n]
    new = min(max_new_tokens, 32)
    if not prompts or not use_engine(model, engine, max(len(tokenizer(p).input_ids) for p in prompts) + new):
        return None
    try:
        fast = fast_generate(model, tokenizer, prompts, new, stop or [], len(prompts), None)
    except Exception as e:  # a kernel that fails to compile, an out-of-memory...: the engine is not usable
        return f"the generation engine failed ({type(e).__name__}: {str(e)[:160]})"
    reference = greedy_generate(model, tokenizer, prompts, new, stop, batch_size=1, engine="hf")
    for i, (a, b) in enumerate(zip(fast, reference)):
        if a != b:
            return f"the generation engine's answer to prompt {i} differs from generate's ({a[:40]!r} vs {b[:40]!r})"
    return None
