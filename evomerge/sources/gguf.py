"""A GGUF model as a Hugging Face folder, converted once and cached, and proven on every use.

Transformers reads a GGUF through gguf-py, whose metadata parsing is most of every load (SmolLM2-135M's 49k-token
vocabulary and merges, a name map built per tensor): every command that named the offline model paid it, often
several times; the converted folder loads 28x faster in a new process on this project's CPU, hashes checked
(bench/gguf_load.py). The
weights as transformers dequantises them (float32), the config and the tokenizer it builds are written once as
safetensors and JSON under $EVOMERGE_CACHE/gguf, keyed by the file (path, size, time) and transformers' version,
and every later load reads those: the same tensors bit for bit, the same tokenizer. The GGUF stays the model's
identity (its reference and fingerprint).

Two ways a cache could hand out a wrong model are closed here. A GGUF that lacks a tensor the model needs is
refused before anything is cached (transformers would fill it at random, and every conversion would differ). And
the marker written last records each file's size and SHA-256: an entry is used only while its files match (checked
once per process for each state of the files), else it is converted again, said in one line."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from evomerge.core.assets import cache_root
from evomerge.core.errors import UserError

VERSION = "v2"  # of the folder's layout (v2: the marker lists every file with its hash)
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
    """The folder holding `folder/gguf_file` as a Hugging Face model (converted now if not cached yet, or if the
    cached entry no longer matches its record). Reading errors are transformers' own (callers say which model);
    a GGUF that does not cover its model is a UserError."""
    import transformers

    src = (Path(folder) / gguf_file).resolve()
    # keyed by what the file holds, not where it lies: every fresh environment installs the same GGUF at a new path,
    # and a path key gave each one its own 0.5 GB entry (fifteen of them once filled a disk)
    key = hashlib.sha256(f"{_content(src, _state(src))}:{transformers.__version__}:{VERSION}".encode())
    out = cache_root() / "gguf" / f"{src.stem}-{key.hexdigest()[:16]}"
    if (out / DONE).exists():
        damage = damaged(out)
        if damage is None:
            return out
        print(f"note: {out}: the cached conversion of {src.name} is damaged ({damage}); converting it again",
              file=sys.stderr)
        _discard(out)
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


def damaged(out: Path) -> str | None:
    """What is wrong with a finished cache entry (a file missing, changed, or not in its record: transformers
    might read it instead), or None when the folder holds exactly the files it records, each with the size and
    SHA-256 it was written with."""
    try:
        record = json.loads((out / DONE).read_text())
        files = record["files"]
        states = tuple((name, *_state(out / name)) for name in sorted(files))
    except (OSError, ValueError, KeyError, TypeError):
        return f"{DONE} is unreadable or lists no files"
    extra = sorted(p.name for p in out.iterdir() if p.name != DONE and p.name not in files)
    if extra:
        return f"{extra[0]} is not one of its files"
    for name, size, _, _ in states:
        if size is None:
            return f"{name} is missing"
        if size != files[name]["size"]:
            return f"{name} has changed"
    for name, actual in _hashes(out, states):
        if actual != files[name]["sha256"]:
            return f"{name} has changed"
    return None


def _state(path: Path) -> tuple[int | None, int | None, int | None]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None, None, None
    return st.st_size, st.st_mtime_ns, st.st_ino


@functools.lru_cache(maxsize=64)
def _hashes(out: Path, states: tuple) -> tuple[tuple[str, str], ...]:
    """The files' SHA-256, computed once per process for each state (size, time, inode) of the files: a process
    that loads the model many times pays it once (~0.3 s for SmolLM2-135M's 540 MB here), and a file changed
    since is hashed again."""
    return tuple((name, _sha256(out / name)) for name, *_ in states)


@functools.lru_cache(maxsize=64)
def _content(src: Path, state: tuple) -> str:
    """The GGUF's SHA-256, once per process for each state (size, time, inode) of the file (~0.2 s for 100 MB)."""
    return _sha256(src)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _discard(out: Path) -> None:
    """Moves a damaged entry aside, then deletes it (another process may be doing the same: either wins)."""
    aside = out.parent / f".{out.name}.{os.getpid()}.bad"
    try:
        os.replace(out, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def load_gguf_model(folder: Path, gguf_file: str, dtype):
    """Transformers' own reading of a GGUF, refused when the file lacks a tensor the model needs: transformers
    would fill it with random values without a word (each load differently)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report would list what the refusal below says in one line
    try:
        model, info = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=dtype,
                                                           output_loading_info=True)
    finally:
        hf_logging.set_verbosity(level)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError(f"the GGUF lacks tensors the model needs ({', '.join(missing[:3])}{more}); transformers "
                        f"would fill them at random", str(Path(folder) / gguf_file))
    return model


def _write(src: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its loading bars; the dequantising bar (plain tqdm) shows the work
    try:
        model = load_gguf_model(src.parent, src.name, torch.float32)
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
    seal(out, src)


def seal(out: Path, src: Path) -> None:
    """Writes the marker, last: every file of the finished conversion with its size and SHA-256."""
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(out.iterdir()) if p.is_file()}
    (out / DONE).write_text(json.dumps({"gguf": str(src), "version": VERSION, "files": files}, indent=1) + "\n")
