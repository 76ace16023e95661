"""A GGUF model as a Hugging Face folder, converted once and cached.

Transformers reads a GGUF through gguf-py, whose metadata parsing is most of every load (SmolLM2-135M's 49k-token
vocabulary and merges, a name map built per tensor): every command that named the offline model paid it, often
several times; the converted folder loads 45x faster on this project's CPU (bench/gguf_load.py). The weights
as transformers dequantises them (float32), the config and the tokenizer it builds are written once as
safetensors and JSON under $EVOMERGE_CACHE/gguf, keyed by the file (path, size, time) and transformers' version,
and every later load reads those: the same tensors bit for bit, the same tokenizer. The GGUF stays the model's
identity (its reference and fingerprint)."""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
from pathlib import Path

from evomerge.core.assets import cache_root

VERSION = "v1"  # of the folder's layout
DONE = "evomerge-gguf.json"  # written last: a folder without it is an interrupted conversion
# GGUF files larger than this are read directly each time: dequantised to float32 they would fill a disk (a 4-bit
# 7B model: 28 GB), and quantised models that large are rarely merge sources
CACHE_LIMIT = 1 << 30


def load_args(folder: Path, gguf_file: str | None) -> tuple[str, dict]:
    """(path, keyword arguments) for transformers' `from_pretrained` to load a model or tokenizer: the folder
    itself (no GGUF), the GGUF's converted folder, or the GGUF file when it is too large to cache or the cache
    cannot be written."""
    if gguf_file is None:
        return str(folder), {}
    src = Path(folder) / gguf_file
    if src.stat().st_size <= CACHE_LIMIT:
        try:
            return str(converted(folder, gguf_file)), {}
        except OSError:  # a read-only or full cache: loading still works, as slowly as before
            pass
    return str(folder), {"gguf_file": gguf_file}


def converted(folder: Path, gguf_file: str) -> Path:
    """The folder holding `folder/gguf_file` as a Hugging Face model (converted now if not cached yet).
    Reading errors are transformers' own (callers say which model)."""
    import transformers

    src = (Path(folder) / gguf_file).resolve()
    st = src.stat()
    key = hashlib.sha256(f"{src}:{st.st_size}:{st.st_mtime_ns}:{transformers.__version__}:{VERSION}".encode())
    out = cache_root() / "gguf" / f"{src.stem}-{key.hexdigest()[:16]}"
    if (out / DONE).exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(src, tmp)
        try:
            os.replace(tmp, out)  # atomic; another process may have finished the same conversion first
        except OSError:
            if not (out / DONE).exists():
                shutil.rmtree(out, ignore_errors=True)  # an interrupted conversion: replaced by this one
                os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write(src: Path, out: Path) -> None:
    import json

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its loading bars; the dequantising bar (plain tqdm) shows the work
    try:
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    out.mkdir(parents=True)
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are stored dequantised
    state = model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # the same tensor as the embeddings: stored once, tied on load
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    config.save_pretrained(str(out))
    model.generation_config.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / DONE).write_text(json.dumps({"gguf": str(src), "version": VERSION}) + "\n")
