"""LoRA adapters as merge sources: a model reference `MODEL+ADAPTER` is MODEL with the PEFT LoRA adapter folded
in, as mergekit reads it. Where mergekit loads the whole model through peft and saves a merged copy, the adapter
is applied here tensor by tensor as the model is read: W + scale * B @ A for each adapted weight, with
scale = alpha / r (alpha / sqrt(r) with rsLoRA) and PEFT's rank_pattern / alpha_pattern; embedding LoRA; and
modules_to_save, whose saved tensors replace the model's whole. Adapters that are not plain LoRA (DoRA, LoRA
biases, trainable tokens, layer replication ...) are refused by name rather than merged wrongly.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from evomerge.core.errors import UserError, reason

_PREFIX = "base_model.model."
_REFUSED = {  # adapter_config.json options that change what merging means; anything but the default is refused
    "use_dora": "DoRA", "lora_bias": "LoRA biases", "layer_replication": "layer replication",
    "trainable_token_indices": "trainable tokens", "target_parameters": "LoRA on parameters",
    "use_qalora": "QA-LoRA", "use_bdlora": "BD-LoRA",
}
_HUB_PATTERNS = ["adapter_config.json", "adapter_model.safetensors"]


@dataclass
class Adapter:
    ref: str
    deltas: dict[str, tuple[torch.Tensor, torch.Tensor, float, bool]] = field(default_factory=dict)
    replaced: dict[str, torch.Tensor] = field(default_factory=dict)  # modules_to_save, saved embedding layers

    def targets(self) -> set[str]:
        return set(self.deltas) | set(self.replaced)

    def delta(self, name: str) -> torch.Tensor | None:
        """scale * B @ A for the weight `name` (float32), or None if the adapter does not touch it."""
        if name not in self.deltas:
            return None
        a, b, scale, transpose = self.deltas[name]
        d = (b.float() @ a.float()) * scale
        return d.T if transpose else d

    def apply(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        if name in self.replaced:
            tensor = self.replaced[name]
        d = self.delta(name)
        return tensor if d is None else (tensor.float() + d).to(tensor.dtype)


def _folder(ref: str) -> Path:
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    from evomerge.core.references import HUB_ID, download

    if ref.startswith((".", "/", "~")) or not HUB_ID.match(ref):
        raise UserError("LoRA adapter not found (no such folder)", ref)
    return download(ref, _HUB_PATTERNS)


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rule: the first pattern key that matches the module name or its dotted tail."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def open_adapter(ref: str) -> Adapter:
    folder = _folder(ref)
    config_file, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not config_file.exists():
        raise UserError("no adapter_config.json: not a PEFT adapter folder", ref)
    if not weights.exists():
        pickled = (folder / "adapter_model.bin").exists()
        raise UserError("no adapter_model.safetensors" + (" (only a pickled .bin; convert it)" if pickled else ""), ref)
    try:
        cfg = json.loads(config_file.read_text())
    except ValueError as e:
        raise UserError(f"adapter_config.json is not valid JSON: {reason(e)}", ref) from None
    if cfg.get("peft_type") != "LORA":
        raise UserError(f"only LoRA adapters can be merged (peft_type is {cfg.get('peft_type')!r})", ref)
    for key, what in _REFUSED.items():
        if cfg.get(key):
            raise UserError(f"{what} adapters ({key} in adapter_config.json) are not supported", ref)
    alpha, rslora, transpose = cfg.get("lora_alpha", 8), bool(cfg.get("use_rslora")), bool(cfg.get("fan_in_fan_out"))
    alpha_pattern = cfg.get("alpha_pattern") or {}
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise UserError(f"cannot read adapter_model.safetensors: {reason(e)}", ref) from None

    adapter = Adapter(ref)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        name = key.removeprefix(_PREFIX)
        m = re.match(r"(.+)\.(lora_A|lora_B)\.weight$", name) or re.match(r"(.+)\.(lora_embedding_A|lora_embedding_B)$", name)
        if m:
            pairs.setdefault(m.group(1), {})[m.group(2)] = t
        elif name.endswith(".base_layer.weight"):  # PEFT saves a LoRA'd embedding's own weights with it
            adapter.replaced[name.removesuffix(".base_layer.weight") + ".weight"] = t
        elif ".lora_" in name:
            raise UserError(f"unexpected adapter tensor {key}", ref)
        else:  # modules_to_save
            adapter.replaced[name] = t
    for module, p in pairs.items():
        embedding = "lora_embedding_A" in p or "lora_embedding_B" in p
        a, b = (p.get("lora_embedding_A"), p.get("lora_embedding_B")) if embedding else (p.get("lora_A"), p.get("lora_B"))
        if a is None or b is None:
            raise UserError(f"adapter has only one of the two LoRA matrices for {module}", ref)
        r = a.shape[0]
        module_alpha = _pattern_value(alpha_pattern, module, alpha)
        scale = module_alpha / math.sqrt(r) if rslora else module_alpha / r
        # an embedding's delta is (B @ A)^T: A is (r, vocab), B is (dim, r); fan_in_fan_out is for Conv1D layers
        adapter.deltas[module + ".weight"] = (a, b, scale, embedding or transpose)
    if not adapter.deltas:
        raise UserError("the adapter holds no LoRA matrices", ref)
    return adapter


def fold_into_module(model: torch.nn.Module, adapter: Adapter, where: str) -> None:
    """Apply the adapter to a loaded transformers model in place (for `evomerge eval MODEL+ADAPTER`)."""
    params = dict(model.named_parameters())
    missing = sorted(n for n in adapter.targets() if n not in params)
    if missing:
        raise UserError(f"the adapter changes {missing[0]}, which the model does not have", where)
    with torch.no_grad():
        for name in adapter.targets():
            params[name].copy_(adapter.apply(name, params[name].detach()))
