"""Where the decoder layers are in a model's tensor names.

Instead of one table per architecture (mergekit's approach), the layout is read off the tensor names: the
repeated blocks are the `<prefix><i>.<rest>` family whose index count equals the config's layer count. That
covers Llama, Mistral, Qwen, Gemma, Phi, GPT-2 style `h.<i>` and the language model inside VLMs alike.
Everything else is a "pre" tensor (embeddings, merged with the first slice's settings) or a "post" tensor
(final norm, lm_head: merged with the last slice's settings), as in mergekit.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from evomerge.errors import UserError

_LAYER = re.compile(r"^(?P<prefix>(?:.*\.)?(?:layers|h|blocks|block|layer)\.)(?P<idx>\d+)\.(?P<rest>.+)$")
_PRE_HINTS = ("embed", "wte", "wpe", "word_embeddings")


def text_config(config: Any) -> Any:
    """The config that describes the decoder stack (the text config of a VLM)."""
    return getattr(config, "text_config", None) or config


def num_layers(config: Any) -> int:
    cfg = text_config(config)
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        n = getattr(cfg, key, None)
        if isinstance(n, int):
            return n
    raise UserError("the model config gives no layer count (num_hidden_layers)")


@dataclass(frozen=True)
class Layout:
    prefix: str  # e.g. "model.layers."
    num_layers: int
    layer_keys: tuple[str, ...]  # tensor names inside one layer, e.g. "self_attn.q_proj.weight"
    pre: tuple[str, ...]
    post: tuple[str, ...]

    def layer_tensor(self, index: int, key: str) -> str:
        return f"{self.prefix}{index}.{key}"


def detect_layout(names: list[str], config: Any, ref: str = "model") -> Layout:
    n = num_layers(config)
    families: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name in names:
        m = _LAYER.match(name)
        if m:
            families[m["prefix"]][int(m["idx"])].append(m["rest"])
    candidates = [p for p, layers in families.items() if len(layers) == n and set(layers) == set(range(n))]
    if not candidates:
        raise UserError(f"cannot find the {n} decoder layers the config announces among the tensor names", ref)
    # A VLM has vision layers too; the language model's stack is the one named like a language model.
    prefix = sorted(candidates, key=lambda p: ("vision" in p or "visual" in p, len(p)))[0]
    keys = tuple(families[prefix][0])
    for i in range(n):
        if set(families[prefix][i]) != set(keys):
            raise UserError(f"layer {i} has different tensors than layer 0", ref)
    in_layers = {f"{prefix}{i}.{k}" for i in range(n) for k in keys}
    rest = [x for x in names if x not in in_layers]
    pre = tuple(x for x in rest if any(h in x for h in _PRE_HINTS))
    post = tuple(x for x in rest if x not in pre)
    return Layout(prefix=prefix, num_layers=n, layer_keys=keys, pre=pre, post=post)
