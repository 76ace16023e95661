"""Mixture-of-experts checkpoints stored one tensor per expert, read as transformers 5 and mergekit hold them.

The hub stores Mixtral as `block_sparse_moe.experts.N.w1/w3/w2.weight` and Qwen-MoE (and OLMoE, DeepSeek, ...) as
`mlp.experts.N.gate_proj/up_proj/down_proj.weight`; transformers 5 loads a layer's experts as two fused tensors
(`mlp.experts.gate_up_proj` [experts, 2 x inner, hidden], `mlp.experts.down_proj`), and mergekit 0.1.5 merges
those fused tensors, so TIES' top-k and slerp's norms run over all of a layer's experts together. A source opened
here presents the same fused tensors, by transformers' own conversion rules for the model type (so a merge equals
mergekit's, the live model maps one to one, and the output is the layout transformers 5 writes)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PER_EXPERT = re.compile(r"\.experts\.\d+\.")


@dataclass(frozen=True)
class ExpertFusion:
    """How a per-expert checkpoint reads as fused tensors: renamed[new name] = stored name, and
    fused[fused name] = [[stored names of expert 0, in concatenation order], [expert 1], ...]."""

    renamed: dict[str, str]
    fused: dict[str, list[list[str]]]


def expert_fusion(model_type: str | None, names: list[str]) -> ExpertFusion | None:
    """None for a checkpoint without per-expert tensors (transformers is then not even imported)."""
    if model_type is None or not any(_PER_EXPERT.search(n) for n in names):
        return None
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    rules = get_checkpoint_conversion_mapping(model_type) or []
    renames = [(s, t) for r in rules if type(r).__name__ == "WeightRenaming"
               for s, t in zip(r.source_patterns, r.target_patterns)]
    converters = [r for r in rules if type(r).__name__ == "WeightConverter"]
    if not converters:
        return None
    renamed, fused = {}, {}
    for name in names:
        new = name
        for source, target in renames:
            new = re.sub(source if source.startswith("^") else re.escape(source), target, new)
        for conv in converters:
            ops = [type(op).__name__ for op in conv.operations]
            if ops not in (["MergeModulelist"], ["MergeModulelist", "Concatenate"]):
                continue
            for p, pattern in enumerate(conv.source_patterns):
                m = re.search(re.escape(pattern).replace(r"\*", r"(\d+)"), new)
                if m is None:
                    continue
                target = new[: m.start()] + conv.target_patterns[0] + new[m.end():]
                experts = fused.setdefault(target, [])
                e = int(m.group(1))
                while len(experts) <= e:
                    experts.append([None] * len(conv.source_patterns))
                experts[e][p] = name
                break
            else:
                continue
            break
        else:
            if new != name:
                renamed[new] = name
    if any(None in e for experts in fused.values() for e in experts):
        return None  # an expert lacks one of its projections: not a layout we know; left as stored
    return ExpertFusion(renamed, fused)
