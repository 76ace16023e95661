"""Teacher-forced log-likelihood of a reference continuation: a fitness signal that generates nothing.

A search's cost is candidates x problems x generated tokens. Scoring how likely a candidate finds a worked
reference solution after the task's own prompt (lm-eval's `loglikelihood`) costs one forward pass over prompt and
reference, no decoding, and gives a continuous value per problem where right/wrong gives a coin flip: on a few
shared problems it still ranks a generation's candidates (search/config.py `subset.signal: likelihood`).

The same pass gives the reference's *agreement*: the share of its tokens that are the candidate's own greedy pick
given the reference so far (`subset.signal: agreement`). Greedy decoding is what the metric scores, and each token
counts at most once, so one token the candidate finds very unlikely (a spacing or a particle the reference
happens to use) cannot outweigh the rest the way it does in a summed log-probability.
"""

from __future__ import annotations

from typing import Any

import torch

from evomerge.core.errors import UserError


def encode_pair(tokenizer: Any, prompt: str, continuation: str) -> tuple[list[int], int]:
    """(token ids of prompt + continuation, how many of them are the prompt's). The pair is tokenized as one text
    where the prompt's tokens are a prefix of it (so the continuation is read as generation would produce it);
    otherwise (a merge across the boundary) prompt and continuation are tokenized apart and joined."""
    head = tokenizer(prompt).input_ids
    whole = tokenizer(prompt + continuation).input_ids
    if whole[: len(head)] == head and len(whole) > len(head):
        return whole, len(head)
    tail = tokenizer(continuation, add_special_tokens=False).input_ids
    return head + tail, len(head)


def continuation_logprobs(model: Any, tokenizer: Any, prompts: list[str], continuations: list[str],
                          batch_size: int = 16, count: Any = None, where: str = "likelihood", engine: str = "hf",
                          vllm: dict | None = None) -> list[dict[str, float]]:
    """Each continuation's summed log-probability given its prompt (`logprob`, nats), its token count
    (`tokens`), and how many of its tokens are the model's greedy pick at their position (`agree`). Rows are
    right-padded, so a row's numbers do not depend on the rows beside it (up to batched float rounding). `count` (a
    TokenCount) gets every token read as prompt tokens: nothing is generated. `engine` as for generation: vllm and
    auto read the values from vLLM's prompt log-probabilities where it runs the model (the engine the evaluator
    generates on, weights pushed in place), else from one forward pass of the model here."""
    pairs = [encode_pair(tokenizer, p, c) for p, c in zip(prompts, continuations)]
    for i, (ids, head) in enumerate(pairs):
        if len(ids) <= head:
            raise UserError(f"reference {i + 1} tokenizes to nothing: a likelihood of nothing would be perfect",
                            where)
    if pairs:
        from evomerge.generation.greedy import use_vllm, vllm_engine_or_none

        if use_vllm(model, engine):
            found = vllm_engine_or_none(model, tokenizer, max(len(ids) for ids, _ in pairs) + 1, vllm, engine)
            if found is not None:
                return found.continuation_logprobs(pairs, count)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[dict[str, float]] = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start: start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            x = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for r, (ids, _) in enumerate(batch):
                x[r, : len(ids)] = torch.tensor(ids)
                mask[r, : len(ids)] = 1
            # token t is predicted at position t - 1: the continuations are positions head-1 .. len-2 of their rows;
            # only those positions go through the head (the prompts' ~90% of a vocabulary-wide projection is skipped)
            first = min(head for _, head in batch) - 1
            keep = torch.arange(first, width - 1, device=device)
            x, mask = x.to(device), mask.to(device)
            try:
                logits = model(input_ids=x, attention_mask=mask, logits_to_keep=keep).logits
            except TypeError:  # a model class without `logits_to_keep`
                logits = model(input_ids=x, attention_mask=mask).logits[:, first: width - 1]
            logits = logits.float()
            target = x[:, first + 1:, None]
            logp = torch.log_softmax(logits, dim=-1).gather(2, target)[..., 0].cpu()
            # the greedy pick ties as generation breaks ties (argmax: the lowest id among equal logits)
            agree = (logits.argmax(-1) == target[..., 0]).cpu()
            for r, (ids, head) in enumerate(batch):
                span = slice(head - 1 - first, len(ids) - 1 - first)
                out.append({"logprob": float(logp[r, span].sum()), "tokens": float(len(ids) - head),
                            "agree": float(agree[r, span].sum())})
            if count is not None:
                count.add(sum(len(ids) for ids, _ in batch), 0)
    return out
