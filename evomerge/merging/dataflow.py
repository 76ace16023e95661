"""Data-flow merging: the path a token takes through the layers of two models (the paper's DFS).

A path is a list of hops (model a|b, layer, scale). Model A gives the tokenizer, the embeddings, the final norm and
head, and the first and last layer of every path. A may be a VLM (LLaVA, Qwen2-VL): the path then runs through
its language model and everything else (vision tower, projector) stays A's. This module holds what a path is and
how it is exported; running one (hop models sharing A's and B's layers) is evomerge/runtime/dataflow.py.

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

from pathlib import Path
from typing import Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evomerge.core.dtypes import DtypeName

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
    # the dtype the candidate was scored in (the search's `dataflow.dtype`); the export writes this dtype, so the
    # exported model is the scored one. None: the models' own dtype.
    dtype: DtypeName | None = None

    @model_validator(mode="after")
    def _ends_in_a(self) -> "DataflowPath":
        if not self.hops:
            raise ValueError("a data-flow path needs at least one layer")
        if self.hops[0].model != "a" or self.hops[-1].model != "a":
            raise ValueError("the first and last layer of a path come from model A")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump({"dataflow": self.model_dump(mode="json", exclude_none=True)}, sort_keys=False)

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
        from evomerge.merging.recipe import recipe_from_dict

        slices = [{"sources": [{"model": self.ref(h), "layer_range": [h.layer, h.layer + 1]}]} for h in self.hops]
        data = {"merge_method": "passthrough", "slices": slices, "base_model": self.model_a,
                "output_model": self.model_a}
        if self.dtype is not None:
            data["dtype"] = self.dtype
        return recipe_from_dict(data, "data-flow path")


MODELING_FILE = "modeling_evomerge_dataflow.py"
_MODELING = '''"""Written by evomerge: {base} with a scale on the hidden state entering each layer (a data-flow merge)."""

from transformers import {base}


def _scale_hook(scale):
    def hook(module, args, kwargs):
        return (args[0] * scale, *args[1:]), kwargs

    return hook


class {cls}({base}):
    def __init__(self, config):
        super().__init__(config)
        for layer, scale in zip(self.{layers}, config.{key}):
            if scale != 1.0:
                layer.register_forward_pre_hook(_scale_hook(scale), with_kwargs=True)
'''


def export_dataflow(path: DataflowPath, out: Path, *, force: bool = False, progress: bool = True,
                    card_extra: str = "") -> None:
    """Write a path as a Hugging Face model folder (custom code only when some scale is not 1)."""
    import json

    from evomerge.merging.export import staged_output
    from evomerge.merging.merge import run_merge

    recipe = path.as_recipe()
    extra = card_extra
    if path.has_scales():
        extra += ("\n\nThis model scales the hidden state entering each layer (data-flow merge); load it with "
                  "`trust_remote_code=True`.")
    with staged_output(Path(out), force) as staged:
        run_merge(recipe, staged, device="cpu", progress=progress, card_extra=extra, staged=False)
        (staged / "evomerge_dataflow.yaml").write_text(path.to_yaml(), encoding="utf-8")
        if path.has_scales():
            cfg = json.loads((staged / "config.json").read_text())
            base = cfg["architectures"][0]
            vlm = "text_config" in cfg and "vision_config" in cfg
            cls = "EvoDataflowForImageTextToText" if vlm else "EvoDataflowForCausalLM"
            layers = "model.language_model.layers" if vlm else _layer_list(staged)  # model.layers, transformer.h
            (staged / MODELING_FILE).write_text(
                _MODELING.format(base=base, cls=cls, layers=layers, key=SCALES_KEY), encoding="utf-8")
            cfg[SCALES_KEY] = [h.scale for h in path.hops]
            cfg["architectures"] = [cls]
            auto = "AutoModelForImageTextToText" if vlm else "AutoModelForCausalLM"
            cfg["auto_map"] = {auto: f"{MODELING_FILE[:-3]}.{cls}"}
            for code in staged.glob("*.py"):  # a donor's own code (Asagi's): not what builds this model
                if code.name != MODELING_FILE:
                    code.unlink()
            _rename_to_runtime(staged, vlm)
            (staged / "config.json").write_text(json.dumps(cfg, indent=2))


def _layer_list(folder: Path) -> str:
    """The attribute path of a written text model's layer list, from its tensor names (`model.layers`,
    `transformer.h`, `gpt_neox.layers`): in a causal LM the checkpoint names are the module paths."""
    from evomerge.core.architecture import detect_layout
    from evomerge.sources.models import open_model

    src = open_model(str(folder))
    try:
        return detect_layout(src.names(), src.plan_config, str(folder)).prefix.rstrip(".")
    finally:
        src.close()


def _rename_to_runtime(folder: Path, vlm: bool) -> None:
    """Store the tensors under the module names of the loaded model. Checkpoints keep older names
    (`language_model.lm_head.weight`, GPT-NeoX's `embed_out.weight`) that transformers renames when loading its own
    classes, but it applies no renaming to custom code, which the scaled export needs: without this, such a head
    would load as random weights. Buffers that loading drops anyway (Pythia's attention masks) are left out."""
    import json

    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    from evomerge.core.architecture import checkpoint_to_runtime, ignored_on_load

    auto = AutoModelForImageTextToText if vlm else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(AutoConfig.from_pretrained(str(folder)))
    state = model.state_dict()
    shards = sorted(folder.glob("*.safetensors"))
    renamed: dict[str, str] = {}
    for f in shards:
        tensors = load_file(str(f))
        mapping = checkpoint_to_runtime(model, list(tensors), state)
        dropped = {n for n in tensors if mapping[n] not in state and ignored_on_load(model, mapping[n])}
        missing = [n for n in tensors if mapping[n] not in state and n not in dropped]
        if missing:
            raise RuntimeError(f"no module of the model holds {missing[0]}")
        save_file({mapping[n]: t for n, t in tensors.items() if n not in dropped}, str(f), metadata={"format": "pt"})
        renamed.update({n: m for n, m in mapping.items() if n not in dropped})
    index = folder / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data["weight_map"] = {renamed[k]: v for k, v in data["weight_map"].items() if k in renamed}
        index.write_text(json.dumps(data, indent=2))
