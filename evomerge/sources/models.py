"""Opening source models lazily: tensors are read one at a time, never whole models.

A model reference is a local Hugging Face folder (single or sharded safetensors), a `.gguf` file (or a folder
holding one; dequantised through transformers, so read whole: GGUF sources are small quantised models), or a
hub id `org/name[@revision]`, downloaded (safetensors and config files only) through huggingface_hub; any of
them followed by `+ADAPTER` adds a PEFT LoRA adapter (evomerge/sources/lora.py).
Pickled checkpoints (`.bin`, `.pt`) are refused: loading them runs arbitrary code. (Over 400 lines: one source
kind per opener, read through one `ModelSource`; GGUF, experts, LoRA and processors have modules of their own.)
"""

from __future__ import annotations

import json
import math
import os
import struct
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from evomerge.core.dtypes import SAFETENSORS, torch_dtype
from evomerge.core.errors import UserError, reason
from evomerge.core.references import HUB_ID, download, resolve_scheme, scheme_of, split_reference
from evomerge.sources.experts import ExpertFusion, expert_fusion
from evomerge.sources.gguf import load_args

TOKENIZER_FILES = (
    "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "added_tokens.json",
    "merges.txt", "vocab.json", "vocab.txt", "chat_template.jinja", "chat_template.json",
    "preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
)



@dataclass
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass
class ModelSource:
    """One opened source model. `get` reads a tensor from disk (or from the dequantised GGUF in memory)."""

    ref: str
    folder: Path
    config_json: dict | None  # config.json as written (None for GGUF): planning reads it without transformers
    infos: dict[str, TensorInfo]
    gguf_file: str | None = None
    lora: Any = None  # an evomerge.sources.lora.Adapter folded in as tensors are read (`model+adapter` references)
    _files: dict[str, Path] = field(default_factory=dict, repr=False)
    _spans: dict[str, tuple[Path, int, int]] = field(default_factory=dict, repr=False)  # name -> (file, offset, bytes)
    _fds: dict[Path, int] = field(default_factory=dict, repr=False)
    _handles: dict[Path, Any] = field(default_factory=dict, repr=False)
    _memory: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)
    _config: Any = field(default=None, repr=False)
    _fusion: Any = field(default=None, repr=False)  # an evomerge.sources.experts.ExpertFusion: experts read fused
    _stored: dict[str, TensorInfo] = field(default_factory=dict, repr=False)  # with _fusion: the names as stored

    @property
    def config(self) -> Any:
        """The transformers config, read on first use: importing transformers costs about 2 s, which a plain
        `evomerge merge` does not need to pay (it plans from `plan_config` and copies config.json)."""
        if self._config is None:
            self._config = _load_config(self.folder, self.ref, self.gguf_file)
        return self._config

    @property
    def plan_config(self) -> Any:
        """What planning reads (layer count, VLM or not): config.json as a dict where it states the layer count
        itself, else the transformers config (whose class defaults fill what the file leaves out)."""
        from evomerge.core.architecture import num_layers

        cj = self.config_json
        if cj is not None and ("text_config" in cj) == ("vision_config" in cj):  # a plain LM, or a VLM in full
            try:
                num_layers(cj)
                return cj
            except UserError:
                pass
        return self.config

    @cached_property
    def vlm(self) -> bool:
        """A vision-language model: its config says so (transformers' VLMs), or it holds a vision side beside its
        language model (LLaVA-style projects such as llava-jp, whose config is a text model's). Cached: planning
        asks for every non-layer tensor of every candidate, and the answer is a scan of all tensor names."""
        from evomerge.core.architecture import has_vision_tensors, is_vlm

        return is_vlm(self.plan_config) or has_vision_tensors(list(self.infos))

    @property
    def transformers_vlm(self) -> bool:
        """A VLM that transformers' own classes load (its config has a text and a vision part)."""
        from evomerge.core.architecture import is_vlm

        return is_vlm(self.plan_config)

    def check_loadable(self, trust_remote_code: bool = False) -> None:
        """Refuse a model that transformers cannot build, before anything loads it: a VLM whose vision side is
        its project's own code without `auto_map` (llava-jp's `model_type: llava` with GPT-2 fields and
        `model.vision_tower` / `model.mm_projector` tensors is not transformers' LLaVA)."""
        cj = self.config_json or {}
        if self.vlm and not self.transformers_vlm and not (cj.get("auto_map") and trust_remote_code):
            raise UserError(
                f"a vision-language model transformers cannot build (model_type {cj.get('model_type')!r}, no text and "
                f"vision config, no auto_map): `evomerge merge` merges its language model, but scoring it needs "
                f"it in transformers' LLaVA layout or its modeling code as auto_map (with trust_remote_code)", self.ref)

    def names(self) -> list[str]:
        return list(self.infos)

    def has(self, name: str) -> bool:
        return name in self.infos

    def get(self, name: str, buffer: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor `name`. `buffer` (uint8, large enough) is memory the caller lends for it: a file read lands
        there instead of in fresh memory (no page faults, no zeroing); the result may or may not live in it."""
        t = self._read(name, buffer)
        return t if self.lora is None else self.lora.apply(name, t)

    def _read(self, name: str, buffer: torch.Tensor | None = None) -> torch.Tensor:
        if self._fusion is not None:
            if name in self._fusion.fused:  # a layer's experts, stacked (and their projections concatenated)
                return torch.stack([torch.cat([self._read(n) for n in expert]) for expert in self._fusion.fused[name]])
            name = self._fusion.renamed.get(name, name)
        if self._memory is not None:
            return self._memory[name]
        span = self._spans.get(name)
        if span is not None:
            return self._pread(name, *span, buffer)
        path = self._files[name]
        handle = self._handles.get(path)
        if handle is None:
            handle = self._stack.enter_context(safe_open(str(path), framework="pt", device="cpu"))
            self._handles[path] = handle
        return handle.get_tensor(name)

    def mapped(self, name: str) -> tuple[torch.Tensor, Any] | None:
        """The tensor as a read-only view of its file's pages (mmap, populated up front), and the mapping to
        close once the tensor is no longer used; None where that does not apply (GGUF, LoRA, other dtypes).

        Zero-copy: the page cache is read in place, so merging needs no copy of its sources. The mapping covers
        this one tensor, so closing it takes its pages out of this process's RSS again."""
        span = self._spans.get(name)
        if span is None or self.lora is not None or self._memory is not None:
            return None
        import mmap
        import warnings

        path, offset, nbytes = span
        info = self.infos[name]
        if nbytes == 0:
            return None
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        m = mmap.mmap(fd, offset - start + nbytes, flags=flags, prot=mmap.PROT_READ, offset=start)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns that the buffer is read-only: nothing writes to it
            t = torch.frombuffer(m, dtype=torch.uint8, count=nbytes, offset=offset - start)
        return t.view(info.dtype).view(info.shape), m

    def _pread(self, name: str, path: Path, offset: int, nbytes: int, buffer: torch.Tensor | None = None
               ) -> torch.Tensor:
        """The tensor read with pread(2) into memory of its own: the file stays in the page cache, shared and
        not counted in this process's RSS as an mmap would be, and threads may read side by side."""
        info = self._stored.get(name) or self.infos[name]
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        if buffer is not None and buffer.numel() >= nbytes and nbytes % info.dtype.itemsize == 0:
            t = buffer[:nbytes].view(info.dtype).view(info.shape)
        else:
            t = torch.empty(info.shape, dtype=info.dtype)
        buf = memoryview(t.reshape(-1).view(torch.uint8).numpy()) if nbytes else memoryview(b"")
        done = 0
        while done < nbytes:
            got = os.preadv(fd, [buf[done:]], offset + done)
            if got <= 0:
                raise UserError(f"{path.name} ends inside tensor {name}", self.ref)
            done += got
        return t

    def close(self) -> None:
        self._stack.close()
        self._handles.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def resolve_reference(ref: str) -> tuple[Path, str | None]:
    """(local folder, gguf file name or None) for a model reference, downloading hub ids. For `model+adapter`, the
    model's (the adapter is applied by `open_model` and `evomerge.sources.lora.fold_into_module`)."""
    ref = split_reference(ref)[0]
    if scheme_of(ref):
        path = resolve_scheme(ref)
        return (path, None) if path.is_dir() else (path.parent, path.name)
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            return path.parent, path.name
        raise UserError("a model must be a folder, a .gguf file or a hub id", ref)
    if path.is_dir():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if ggufs and not any(path.glob("*.safetensors")):
            if len(ggufs) > 1:
                raise UserError(f"folder holds several .gguf files ({', '.join(ggufs)}); name one", ref)
            return path, ggufs[0]
        return path, None
    if ref.startswith((".", "/", "~")) or not HUB_ID.match(ref):
        raise UserError("model not found (no such folder or file)", ref)
    return download(ref), None


def fingerprint(ref: str) -> str:
    """A short key that changes when the model behind `ref` changes (names, sizes and times of its files), so that
    cached results and resumed runs never reuse the scores of an older model under the same name (a rebuilt
    builtin, a re-exported run). Hub ids are keyed by their name and revision; they are not fetched."""
    import hashlib

    model, adapter = split_reference(ref)
    if adapter is not None:
        return hashlib.sha256(f"{fingerprint(model)}+{fingerprint(adapter)}".encode()).hexdigest()[:16]
    if scheme_of(ref):
        path = resolve_scheme(ref)
    else:
        path = Path(ref).expanduser()
        if not path.exists():
            return ref
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and p.name[0] != ".")
    h = hashlib.sha256(str(path.resolve()).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _load_config(folder: Path, ref: str, gguf_file: str | None = None) -> Any:
    from transformers import AutoConfig

    if gguf_file is None and not (folder / "config.json").exists():
        raise UserError("no config.json in the model folder", ref)
    try:
        path, extra = load_args(folder, gguf_file)  # a GGUF: converted once
        return AutoConfig.from_pretrained(path, **extra)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read the model config: {reason(e)}", ref) from None


def _read_config_json(folder: Path, ref: str) -> dict:
    """config.json as a dict, checked as far as planning needs it (transformers reads it when a model is built)."""
    path = folder / "config.json"
    if not path.exists():
        raise UserError("no config.json in the model folder", ref)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the model config: config.json is not valid JSON ({e})", ref) from None
    if not isinstance(data, dict):
        raise UserError("cannot read the model config: config.json is not a JSON object", ref)
    return data


def open_model(ref: str) -> ModelSource:
    from evomerge.sources.lora import open_adapter

    model_ref, adapter_ref = split_reference(ref)
    if adapter_ref is None:
        return _open_plain(ref)
    src = _open_plain(model_ref)
    src.ref = ref
    src.lora = open_adapter(adapter_ref)
    missing = sorted(n for n in src.lora.targets() if n not in src.infos)
    if missing:
        raise UserError(f"the adapter changes {missing[0]}, which {model_ref} does not have", ref)
    return src


def _open_plain(ref: str) -> ModelSource:
    folder, gguf_file = resolve_reference(ref)
    if gguf_file is not None:
        return _open_gguf(ref, folder, gguf_file)
    config = _read_config_json(folder, ref)
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError):
            raise UserError("model.safetensors.index.json is not a valid index", ref) from None
        files = sorted({folder / f for f in weight_map.values()})
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
        if any("minigpt" in name.lower() for name in pickled):
            raise UserError("a MiniGPT-4 checkpoint holds only its vision projection (pickled), not a model: merge "
                            "its language model instead (a Vicuna / Llama-2 folder, which merges and searches as "
                            "any Llama); a search over MiniGPT-4 as a VLM would need its vision side (ViT + "
                            "Q-Former + projection) as a Hugging Face model in safetensors", ref)
        hint = " (found pickled weights; convert them to safetensors)" if pickled else ""
        raise UserError(f"no safetensors weights in the model folder{hint}", ref)
    infos: dict[str, TensorInfo] = {}
    owner: dict[str, Path] = {}
    spans: dict[str, tuple[Path, int, int]] = {}
    for f in files:
        if not f.exists():
            raise UserError(f"the index names a missing shard {f.name}", ref)
        try:
            with safe_open(str(f), framework="pt", device="cpu") as h:  # validates the file
                for name in h.keys():
                    sl = h.get_slice(name)
                    infos[name] = TensorInfo(tuple(sl.get_shape()), torch_dtype(SAFETENSORS.get(sl.get_dtype(), "float32")))
                    owner[name] = f
            spans.update(_spans(f, infos))
        except Exception as e:
            raise UserError(f"cannot read {f.name}: {reason(e)}", ref) from None
    fusion = expert_fusion(config.get("model_type"), list(infos))
    stored = infos if fusion is not None else {}
    if fusion is not None:
        infos = _fused_infos(infos, fusion, ref)  # the stored names stay readable through their spans
    return ModelSource(ref=ref, folder=folder, config_json=config, infos=infos, _files=owner, _spans=spans,
                       _fusion=fusion, _stored=stored)


def _fused_infos(infos: dict[str, TensorInfo], fusion: ExpertFusion, ref: str) -> dict[str, TensorInfo]:
    """The tensors as transformers 5 holds them: experts fused, stored names renamed (sources/experts.py). A layer's
    experts are stacked, so each must be shaped as its first: one that is not is refused naming the tensor."""
    members = {n for experts in fusion.fused.values() for e in experts for n in e}
    old_names = set(fusion.renamed.values())
    out = {n: i for n, i in infos.items() if n not in members and n not in old_names}
    out.update({new: infos[old] for new, old in fusion.renamed.items()})
    for name, experts in fusion.fused.items():
        for expert in experts:
            for stored, like in zip(expert, experts[0]):
                if infos[stored].shape != infos[like].shape:
                    raise UserError(f"{stored} has shape {list(infos[stored].shape)}, but {like} has "
                                    f"{list(infos[like].shape)}: a layer's experts must be alike", ref)
            for stored in expert[1:]:  # projections concatenated along their rows
                if infos[stored].shape[1:] != infos[expert[0]].shape[1:]:
                    raise UserError(f"{stored} has shape {list(infos[stored].shape)}, which cannot be joined to "
                                    f"{expert[0]} ({list(infos[expert[0]].shape)})", ref)
        first = infos[experts[0][0]]
        rows = sum(infos[n].shape[0] for n in experts[0])
        out[name] = TensorInfo((len(experts), rows, *first.shape[1:]), first.dtype)
    return out


def _spans(path: Path, infos: dict[str, TensorInfo]) -> dict[str, tuple[Path, int, int]]:
    """Where each float tensor's bytes lie in a safetensors file (its JSON header), for `ModelSource._pread`;
    tensors of other dtypes are read through safetensors."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    spans = {}
    for name, entry in header.items():
        if name == "__metadata__" or entry.get("dtype") not in SAFETENSORS:
            continue
        begin, end = entry["data_offsets"]
        info = infos[name]
        if end - begin == math.prod(info.shape) * info.dtype.itemsize:
            spans[name] = (path, 8 + n + begin, end - begin)
    return spans


def _open_gguf(ref: str, folder: Path, gguf_file: str) -> ModelSource:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from evomerge.sources.gguf import load_gguf_model

    config = _load_config(folder, ref, gguf_file)  # converts the GGUF (once, cached) or says why it cannot
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' own bars would interleave with ours
    try:
        path, extra = load_args(folder, gguf_file)
        if extra:  # read directly (too large to cache, or no cache): its coverage is checked here
            model = load_gguf_model(folder, gguf_file, torch.float32)
        else:  # the converted folder, whose conversion checked it
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot load the GGUF model: {reason(e)}", ref) from None
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    infos = {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in state.items()}
    return ModelSource(ref=ref, folder=folder, config_json=None, infos=infos, gguf_file=gguf_file, _memory=state,
                       _config=config)


class ModelPool:
    """Opens each referenced model once; a context manager so file handles are always closed."""

    def __init__(self) -> None:
        self._models: dict[str, ModelSource] = {}

    def get(self, ref: str) -> ModelSource:
        if ref not in self._models:
            self._models[ref] = open_model(ref)
        return self._models[ref]

    def close(self) -> None:
        for m in self._models.values():
            m.close()

    def __enter__(self) -> "ModelPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_tokenizer(folder, gguf_file: str | None = None) -> Any:
    from transformers import AutoTokenizer

    path, extra = load_args(folder, gguf_file)
    tok = AutoTokenizer.from_pretrained(path, **extra)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
