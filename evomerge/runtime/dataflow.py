"""The data-flow runtime: hop models that run a path over two loaded models, sharing their layers by reference.

Model A may be a VLM (LLaVA, Qwen2-VL): the hop model is then the same VLM class with its language model's layers
replaced by the path, and everything else (vision tower, projector) stays A's. Each hop gets its own KV-cache slot
(the wrapped attention's `layer_idx` is set to the hop index during the call) and multiplies the hidden state it
receives by its scale. Paths themselves (what a candidate is, and its export) are in evomerge/merging/dataflow.py.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from evomerge.merging.dataflow import DataflowPath
from evomerge.core.errors import UserError


class _HopLayer(torch.nn.Module):
    """One hop: a shared layer, called with its own cache slot and an input scale."""

    def __init__(self, layer: torch.nn.Module, hop_index: int, scale: float):
        super().__init__()
        self.layer, self.hop_index, self.input_scale = layer, hop_index, scale  # an architecture.ScaledLayer
        self.attn = [m for m in layer.modules() if hasattr(m, "layer_idx")]

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        if self.input_scale != 1.0:
            hidden_states = hidden_states * self.input_scale
        saved = [m.layer_idx for m in self.attn]
        for m in self.attn:
            m.layer_idx = self.hop_index
        try:
            return self.layer(hidden_states, *args, **kwargs)
        finally:
            for m, idx in zip(self.attn, saved):
                m.layer_idx = idx


def path_config(config: Any, path: DataflowPath, layer_types_b: list | None = None) -> Any:
    """A's config with one layer per hop (and per-hop layer types where the config has them); for a VLM, the
    config of its language model changes."""
    from evomerge.core.architecture import text_config

    cfg = copy.deepcopy(config)
    tc = text_config(cfg)
    types_a = getattr(text_config(config), "layer_types", None)
    tc.num_hidden_layers = len(path.hops)
    if isinstance(types_a, list):
        types_b = layer_types_b or types_a
        tc.layer_types = [(types_a if h.model == "a" else types_b)[h.layer] for h in path.hops]
    return cfg


def check_layer_shapes(a: Any, b: Any) -> None:
    """Refuse two sources (ModelSource) whose decoder layers differ in tensors or shapes, from their file headers
    alone: a path can only run B's layers on A's hidden states if the layers are alike."""
    from evomerge.core.architecture import detect_layout

    la, lb = detect_layout(a.names(), a.plan_config, a.ref), detect_layout(b.names(), b.plan_config, b.ref)
    shapes_b = {k: b.infos[lb.layer_tensor(0, k)].shape for k in lb.layer_keys}
    for key in la.layer_keys:
        shape = a.infos[la.layer_tensor(0, key)].shape
        if shapes_b.get(key) != shape:
            got = "no such tensor" if key not in shapes_b else f"{list(shapes_b[key])}"
            raise UserError(f"models A and B have different layer shapes (layers.0.{key}: {list(shape)} in A, "
                            f"{got} in B)", "dataflow.model_b")


class HopModel:
    """Builds models that run a path over two loaded models, sharing their layers. A may be a VLM: the hop
    model is then the same VLM class with its language model's layers replaced by the path."""

    def __init__(self, model_a: torch.nn.Module, model_b: torch.nn.Module):
        from evomerge.core.architecture import decoder_and_layers, decoder_layers, is_vlm

        self.a, self.b = model_a, model_b
        self.path_a, self.attr = decoder_and_layers(model_a)
        self.vlm = is_vlm(model_a.config)
        self.layers_a, self.layers_b = decoder_layers(model_a), decoder_layers(model_b)
        pb = dict(self.layers_b[0].named_parameters())
        for name, pa in self.layers_a[0].named_parameters():
            if name not in pb or pb[name].shape != pa.shape:
                raise UserError(f"models A and B have different layer shapes (layers.0.{name})")

    def build(self, path: DataflowPath) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        from evomerge.core.architecture import text_config

        self.check(path)
        cfg = path_config(self.a.config, path, getattr(text_config(self.b.config), "layer_types", None))
        auto = AutoModelForImageTextToText if self.vlm else AutoModelForCausalLM
        with torch.device("meta"):
            model = auto.from_config(cfg, dtype=self.a.dtype)
        # graft every module of A except the layer list, level by level down to the decoder, with each level's own
        # parameters and buffers (GPTBigCode keeps its causal mask on the decoder itself)
        src, dst = self.a, model
        for attr in [*self.path_a, None]:
            for name, child in src.named_children():
                if name != (attr or self.attr):
                    setattr(dst, name, child)
            for name, p in src.named_parameters(recurse=False):
                setattr(dst, name, p)
            for name, b in src.named_buffers(recurse=False):
                dst.register_buffer(name, b, persistent=name not in src._non_persistent_buffers_set)
            if attr is not None:
                src, dst = getattr(src, attr), getattr(dst, attr)
        setattr(dst, self.attr, torch.nn.ModuleList(
            _HopLayer((self.layers_a if h.model == "a" else self.layers_b)[h.layer], i, h.scale)
            for i, h in enumerate(path.hops)
        ))
        left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
        if left:
            raise RuntimeError(f"hop model left tensors on the meta device: {left[:3]}")
        model.generation_config = self.a.generation_config
        return model.eval()

    def check(self, path: DataflowPath) -> None:
        if not path.hops:
            raise UserError("a data-flow path needs at least one layer")
        for h in path.hops:
            layers = self.layers_a if h.model == "a" else self.layers_b
            if h.layer >= len(layers):
                raise UserError(f"model {h.model} has {len(layers)} layers; the path asks for layer {h.layer}")


class DataflowLive:
    """The live side of a data-flow search: A and B loaded once; each candidate is a new hop model over them."""

    def __init__(self, example: DataflowPath, dtype: str | None = None, device: str = "auto"):
        from evomerge.sources.loading import load_for_eval

        self.a, self.tokenizer = load_for_eval(example.model_a, device, dtype, native_class=True, quiet=True)
        self.b, _ = load_for_eval(example.model_b, device, dtype, native_class=True, quiet=True)
        self.hops = HopModel(self.a, self.b)
        self.model = self.hops.build(example)

    def apply(self, path: DataflowPath) -> None:
        self.model = self.hops.build(path)
