"""Data-flow merging: the path a token takes through the layers of two models (the paper's DFS).

A path is a list of hops (model a|b, layer, scale). Model A gives the tokenizer, the embeddings, the final norm and
head, and the first and last layer of every path. In memory, a hop model shares the layers of A and B by
reference (no weights copied); each hop gets its own KV-cache slot (the wrapped attention's `layer_idx` is set to
the hop index during the call) and multiplies the hidden state it receives by its scale.

Scales: one scalar per hop, on the hidden state entering the hop's layer. The paper's W matrix scales the state
passed from slot i to slot j; the released EvoLLM-JP-v1-10B stores one scalar per hop (`input_scales`), which is
what a path needs to run. We evolve the per-slot scale (2T genes instead of T + T^2), which yields that same
per-hop form; a hop's scale here belongs to its target slot.

Export: with every scale 1 the path is a mergekit passthrough recipe (plain architecture, layers duplicated).
Otherwise the layers are written the same way and a small modeling file (loaded with trust_remote_code)
registers a pre-hook per layer that applies its scale; RMSNorm's epsilon makes an exact folding of the scales
into the weights impossible, so we do not pretend to one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evomerge.errors import UserError

SCALES_KEY = "evomerge_hop_scales"


class Hop(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: Literal["a", "b"]
    layer: int = Field(ge=0)
    scale: float = 1.0


class DataflowPath(BaseModel):
    """A complete data-flow candidate: which layers, in which order, with which input scales."""

    model_config = ConfigDict(extra="forbid")
    model_a: str
    model_b: str
    hops: list[Hop]

    @model_validator(mode="after")
    def _ends_in_a(self) -> "DataflowPath":
        if not self.hops:
            raise ValueError("a data-flow path needs at least one layer")
        if self.hops[0].model != "a" or self.hops[-1].model != "a":
            raise ValueError("the first and last layer of a path come from model A")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump({"dataflow": self.model_dump(mode="json")}, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "DataflowPath":
        data = yaml.safe_load(text)
        return cls.model_validate(data["dataflow"] if isinstance(data, dict) and "dataflow" in data else data)

    def ref(self, hop: Hop) -> str:
        return self.model_a if hop.model == "a" else self.model_b

    def has_scales(self) -> bool:
        return any(h.scale != 1.0 for h in self.hops)

    def as_recipe(self):
        """The passthrough recipe that stacks the path's layers (scales are not part of it)."""
        from evomerge.recipe import recipe_from_dict

        slices = [{"sources": [{"model": self.ref(h), "layer_range": [h.layer, h.layer + 1]}]} for h in self.hops]
        return recipe_from_dict({"merge_method": "passthrough", "slices": slices, "base_model": self.model_a},
                                "data-flow path")


class _HopLayer(torch.nn.Module):
    """One hop: a shared layer, called with its own cache slot and an input scale."""

    def __init__(self, layer: torch.nn.Module, hop_index: int, scale: float):
        super().__init__()
        self.layer, self.hop_index, self.scale = layer, hop_index, scale
        self.attn = [m for m in layer.modules() if hasattr(m, "layer_idx")]

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        if self.scale != 1.0:
            hidden_states = hidden_states * self.scale
        saved = [m.layer_idx for m in self.attn]
        for m in self.attn:
            m.layer_idx = self.hop_index
        try:
            return self.layer(hidden_states, *args, **kwargs)
        finally:
            for m, idx in zip(self.attn, saved):
                m.layer_idx = idx


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers"):
        raise UserError(f"data-flow merging needs a decoder with .model.layers (got {type(model).__name__})")
    return inner


def path_config(config: Any, path: DataflowPath, layer_types_b: list | None = None) -> Any:
    """A's config with one layer per hop (and per-hop layer types where the config has them)."""
    cfg = copy.deepcopy(config)
    cfg.num_hidden_layers = len(path.hops)
    types_a = getattr(config, "layer_types", None)
    if isinstance(types_a, list):
        types_b = layer_types_b or types_a
        cfg.layer_types = [(types_a if h.model == "a" else types_b)[h.layer] for h in path.hops]
    return cfg


class HopModel:
    """Builds causal LMs that run a path over two loaded models, sharing their layers."""

    def __init__(self, model_a: torch.nn.Module, model_b: torch.nn.Module):
        self.a, self.b = model_a, model_b
        self.layers_a, self.layers_b = _decoder(model_a).layers, _decoder(model_b).layers
        for name, pa in model_a.named_parameters():
            if name.startswith("model.layers.0."):
                pb = dict(model_b.named_parameters()).get(name)
                if pb is None or pb.shape != pa.shape:
                    raise UserError(f"models A and B have different layer shapes ({name})")

    def build(self, path: DataflowPath) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        self.check(path)
        cfg = path_config(self.a.config, path, getattr(self.b.config, "layer_types", None))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg, dtype=self.a.dtype)
        inner, inner_a = _decoder(model), _decoder(self.a)
        for name, child in inner_a.named_children():
            if name != "layers":
                setattr(inner, name, child)
        for name, child in self.a.named_children():
            if name != "model":
                setattr(model, name, child)
        inner.layers = torch.nn.ModuleList(
            _HopLayer((self.layers_a if h.model == "a" else self.layers_b)[h.layer], i, h.scale)
            for i, h in enumerate(path.hops)
        )
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


MODELING_FILE = "modeling_evomerge_dataflow.py"
_MODELING = '''"""Written by evomerge: {base} with a scale on the hidden state entering each layer (a data-flow merge)."""

from transformers import {base}


def _scale_hook(scale):
    def hook(module, args, kwargs):
        return (args[0] * scale, *args[1:]), kwargs

    return hook


class EvoDataflowForCausalLM({base}):
    def __init__(self, config):
        super().__init__(config)
        for layer, scale in zip(self.model.layers, config.{key}):
            if scale != 1.0:
                layer.register_forward_pre_hook(_scale_hook(scale), with_kwargs=True)
'''


def export_dataflow(path: DataflowPath, out: Path, *, force: bool = False, progress: bool = True,
                    card_extra: str = "") -> None:
    """Write a path as a Hugging Face model folder (custom code only when some scale is not 1)."""
    import json
    import tempfile

    from evomerge.merge import run_merge

    recipe = path.as_recipe()
    extra = card_extra
    if path.has_scales():
        extra += ("\n\nThis model scales the hidden state entering each layer (data-flow merge); load it with "
                  "`trust_remote_code=True`.")
    with tempfile.TemporaryDirectory(dir=Path(out).parent, prefix=f".{Path(out).name}.dfs-") as tmp:
        staged = Path(tmp) / "model"
        run_merge(recipe, staged, device="cpu", progress=progress, card_extra=extra)
        (staged / "evomerge_dataflow.yaml").write_text(path.to_yaml(), encoding="utf-8")
        if path.has_scales():
            cfg = json.loads((staged / "config.json").read_text())
            base = cfg["architectures"][0]
            (staged / MODELING_FILE).write_text(_MODELING.format(base=base, key=SCALES_KEY), encoding="utf-8")
            cfg[SCALES_KEY] = [h.scale for h in path.hops]
            cfg["architectures"] = ["EvoDataflowForCausalLM"]
            cfg["auto_map"] = {"AutoModelForCausalLM": f"{MODELING_FILE[:-3]}.EvoDataflowForCausalLM"}
            (staged / "config.json").write_text(json.dumps(cfg, indent=2))
        from evomerge.export import staged_output

        with staged_output(Path(out), force) as final:
            for f in staged.iterdir():
                f.rename(final / f.name)


class DataflowLive:
    """The live side of a data-flow search: A and B loaded once; each candidate is a new hop model over them."""

    def __init__(self, example: DataflowPath, dtype: str | None = None, device: str = "auto"):
        from evomerge.scoring import load_for_eval

        self.a, self.tokenizer = load_for_eval(example.model_a, device, dtype)
        self.b, _ = load_for_eval(example.model_b, device, dtype)
        self.hops = HopModel(self.a, self.b)
        self.model = self.hops.build(example)

    def apply(self, path: DataflowPath) -> None:
        self.model = self.hops.build(path)
