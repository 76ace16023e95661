"""Architecture facts, in one place: where the decoder layers are (in tensor names and in a loaded model),
whether a model is a VLM, and how checkpoint names map to a loaded model's names.

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
from typing import Any, Protocol, runtime_checkable

from evomerge.core.errors import UserError

_LAYER = re.compile(r"^(?P<prefix>(?:.*\.)?(?:layers|h|blocks|block|layer)\.)(?P<idx>\d+)\.(?P<rest>.+)$")
# input embeddings by name in the families transformers and mergekit define (Llama-likes' embed_tokens, GPT-NeoX's
# embed_in, GPT-2's wte/wpe, BLOOM's word_embeddings(_layernorm), Mamba's embeddings); an output head such as
# GPT-NeoX's `embed_out` is not one of them: it is merged with the last slice, as mergekit does
_PRE_HINTS = ("embed_tokens", "embed_in.", "wte.", "wpe.", "word_embeddings", "embed_positions", ".embeddings.",
              "embeddings.weight")


def text_config(config: Any) -> Any:
    """The config that describes the decoder stack (the text config of a VLM); configs may be dicts
    (config.json as read)."""
    if isinstance(config, dict):
        return config.get("text_config") or config
    return getattr(config, "text_config", None) or config


def is_vlm(config: Any) -> bool:
    """A vision-language model: a config (object, or config.json as a dict) with a text and a vision part."""
    if isinstance(config, dict):
        return "text_config" in config and "vision_config" in config
    return getattr(config, "text_config", None) is not None and getattr(config, "vision_config", None) is not None


# tensors of a vision side, in the layouts VLM checkpoints use (transformers' LLaVA and Qwen2-VL, and LLaVA-style
# projects such as llava-jp that store `model.vision_tower.*` and `model.mm_projector.*` beside a text LM)
_VISION_HINTS = ("vision_tower.", "mm_projector.", "multi_modal_projector.", "visual.", "vision_model.")


def has_vision_tensors(names: list[str]) -> bool:
    return any(h in n for n in names for h in _VISION_HINTS)


def num_layers(config: Any) -> int:
    cfg = text_config(config)
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        n = cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)
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


# -- the loaded model ---------------------------------------------------------------------------------------------

# (attributes from the top model to the decoder, the decoder's attribute holding its layer list)
DECODERS = ((("model",), "layers"), (("model", "language_model"), "layers"), (("language_model", "model"), "layers"),
            (("gpt_neox",), "layers"), (("transformer",), "h"))


def decoder_and_layers(model: Any) -> tuple[tuple[str, ...], str]:
    """Where a loaded model keeps its decoder layers: (attributes to the decoder, the layer list's name), e.g.
    (('model',), 'layers') for Llama-likes, (('model', 'language_model'), 'layers') for LLaVA-style VLMs (whose
    language model is what a path runs through), (('transformer',), 'h') for GPT-2, (('gpt_neox',), 'layers')."""
    import torch

    for path, attr in DECODERS:
        m = model
        for step in path:
            m = getattr(m, step, None)
        if isinstance(getattr(m, attr, None), torch.nn.ModuleList):
            return path, attr
    raise UserError(f"data-flow merging needs a decoder with a list of layers (got {type(model).__name__})")


def decoder_path(model: Any) -> tuple[str, ...]:
    return decoder_and_layers(model)[0]


def decoder(model: Any) -> Any:
    for attr in decoder_path(model):
        model = getattr(model, attr)
    return model


def decoder_layers(model: Any) -> Any:
    """The loaded model's list of decoder layers."""
    return getattr(decoder(model), decoder_and_layers(model)[1])


@runtime_checkable
class ScaledLayer(Protocol):
    """A decoder layer that runs another (shared) layer on its input times `input_scale`: a data-flow hop. Code
    that runs decoder layers itself (the generation engine) runs `layer` and applies the scale."""

    layer: Any
    input_scale: float


def layers_and_scales(model: Any) -> tuple[Any, list[tuple[Any, float]]] | None:
    """(decoder, [(layer, input scale)]) of a causal LM whose decoder is `model.model`, with hops unwrapped; None
    if the model is not laid out that way."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if inner is None or layers is None or not hasattr(model, "lm_head"):
        return None
    return inner, [(l.layer, l.input_scale) if isinstance(l, ScaledLayer) else (l, 1.0) for l in layers]


def ignored_on_load(model: Any, name: str) -> bool:
    """A checkpoint tensor that transformers drops when it loads this class: buffers older checkpoints stored
    (Pythia's `attention.bias` / `masked_bias`, GPT-2's `attn.bias` masks; rotary `inv_freq`). The live model
    skips them as loading does; an export keeps them, as the sources had them."""
    patterns = [*(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []), r"rotary_emb\.inv_freq$"]
    return any(re.search(p, name) for p in patterns)


def checkpoint_to_runtime(model: Any, names: list[str], state: dict) -> dict[str, str]:
    """Map checkpoint tensor names to the model's parameter names.

    They differ for some classes (LLaVA checkpoints keep `language_model.model.layers...`, the transformers 5
    module tree has `model.language_model.layers...`); transformers' own loading renames apply.
    """
    mapping = {n: n for n in names}
    if all(n in state for n in names):
        return mapping
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

        transforms = get_model_conversion_mapping(model)
        renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
        converters = [t for t in transforms if isinstance(t, WeightConverter)]
        prefix = getattr(model, "base_model_prefix", None)
        for n in names:
            if n not in state:
                mapping[n] = rename_source_key(n, renamings, converters, prefix, state)[0]
    except (ImportError, AttributeError, TypeError):
        pass  # an older or newer transformers: the missing-name check below reports it
    return mapping

