"""Spreading one live model over several devices (a pipeline split of its decoder layers).

A candidate whose model, sources and KV cache do not fit on one GPU runs on a group of GPUs: the decoder layers
are cut into contiguous, equal blocks, one per device; what comes before the layers (embeddings) goes with the
first block and what comes after (final norm, head) with the last, unless the head is tied to the embeddings.
Each output tensor's sources live on that tensor's device, so every merge kernel reads and writes one device's
memory; accelerate's hooks move the hidden state between devices in the forward pass.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from evomerge.core.errors import UserError

_INDEX = re.compile(r"\.(\d+)(?:\.|$)")


def parse_devices(spec: str | int, available: int | None = None) -> list[torch.device]:
    """`gpus: N` -> cuda:0..N-1 (what an actor owning N GPUs sees); checked against what is there."""
    n = int(spec)
    if n < 1:
        raise UserError("gpus must be at least 1")
    have = torch.cuda.device_count() if available is None else available
    if n > have:
        raise UserError(f"gpus: {n} asks for more GPUs than this process sees ({have})")
    return [torch.device("cuda", i) for i in range(n)]


def layer_blocks(num_layers: int, n_devices: int) -> list[int]:
    """For each layer, the index of its device: contiguous blocks whose sizes differ by at most one."""
    if n_devices < 1:
        raise ValueError("need at least one device")
    return [min(n_devices - 1, i * n_devices // max(num_layers, 1)) for i in range(num_layers)]


def module_device_map(model: Any, devices: list[torch.device]) -> dict[str, torch.device]:
    """Top-level module names of the model (as accelerate's dispatch_model takes them) -> device."""
    from evomerge.core.architecture import decoder_and_layers

    path, layers = decoder_and_layers(model)
    decoder = model
    for attr in path:
        decoder = getattr(decoder, attr)
    prefix = ".".join(path)
    blocks = layer_blocks(len(getattr(decoder, layers)), len(devices))
    first, last = devices[0], devices[-1]
    out: dict[str, torch.device] = {}
    # everything above the decoder on the first device except the head; the decoder's own children likewise
    parent, names = model, []
    for depth, attr in enumerate(path):
        for name, _ in parent.named_children():
            if name != attr:
                names.append(".".join(path[:depth] + (name,)))
        parent = getattr(parent, attr)
    for name, _ in decoder.named_children():
        if name != layers:
            names.append(f"{prefix}.{name}")
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    for name in names:
        late = name.endswith("lm_head") or name.endswith(".norm") or name == "lm_head"
        out[name] = last if late and not (tied and name.endswith("lm_head")) else first
    for i, block in enumerate(blocks):
        out[f"{prefix}.{layers}.{i}"] = devices[block]
    if tied:  # a tied head shares the embedding matrix: both on the embedding's device
        for name in names:
            if name.endswith("lm_head"):
                out[name] = first
    return out


def spread(model: Any, devices: list[torch.device]) -> Any:
    """Move the model's modules to their devices, with hooks that move activations between them."""
    from accelerate import dispatch_model

    device_map = {k: (v.index if v.type == "cuda" else v.type) for k, v in module_device_map(model, devices).items()}
    return dispatch_model(model, device_map=device_map)
