"""Model references: what a recipe, a config or a command line may name as a model, and how it becomes files.

A reference is a local folder or `.gguf` file, a hub id `org/name[@revision]`, `SCHEME:REST` for a scheme that a
higher layer registered (`builtin:NAME` for the offline models, `run:DIR` for a search's best model), and any of
those followed by `+ADAPTER` (a LoRA adapter). This module is the bottom of the package: it knows no scheme
itself. A scheme is registered from above as a function (evomerge/commands/schemes.py registers the package's
own, each importing its owner on first use, so opening a plain folder never loads the code behind `builtin:`);
other packages can add theirs with `register_scheme`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from evomerge.core.errors import UserError, reason

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")
# "*.py": a model's own code (auto_map), downloaded so an output can carry it; never imported without
# trust_remote_code
HUB_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken",
                "*.py"]

Resolver = Callable[[str], Path]  # the part after `SCHEME:` -> a local folder or .gguf file
_SCHEMES: dict[str, Resolver] = {}


def register_scheme(scheme: str, resolver: Resolver) -> None:
    """Make `SCHEME:REST` references resolve through `resolver`, a function of the part after `SCHEME:`."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", scheme):
        raise ValueError(f"a scheme is a lower-case word, got {scheme!r}")
    if not callable(resolver):
        raise TypeError(f"a scheme's resolver is a function, got {resolver!r}")
    _SCHEMES[scheme] = resolver


def scheme_of(ref: str) -> str | None:
    """The registered scheme a reference uses, or None (paths, hub ids; `C:` drive letters are not schemes)."""
    head, sep, _ = ref.partition(":")
    return head if sep and head in _SCHEMES else None


def resolve_scheme(ref: str) -> Path:
    """The local path behind `SCHEME:REST`, built or exported on first use by the scheme's owner."""
    scheme = scheme_of(ref)
    if scheme is None:
        raise UserError(f"unknown model scheme; known: {', '.join(sorted(_SCHEMES))}", ref)
    return Path(_SCHEMES[scheme](ref[len(scheme) + 1:]))


def split_reference(ref: str) -> tuple[str, str | None]:
    """`model+adapter` -> (model, adapter); a plain reference (or a path that really contains '+') -> (ref, None)."""
    if "+" not in ref or Path(ref).expanduser().exists():
        return ref, None
    model, adapter = ref.split("+", 1)
    if not model or not adapter or "+" in adapter:
        raise UserError("expected MODEL+ADAPTER (one LoRA adapter per model)", ref)
    return model, adapter


def download(ref: str, patterns: list[str] = HUB_PATTERNS) -> Path:
    """The hub repo `org/name[@revision]`, only the files matching `patterns`, as a local folder."""
    repo, _, revision = ref.partition("@")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, revision=revision or None, allow_patterns=patterns))
    except Exception as e:  # offline, unknown repo, gated repo, network error: all the user's to fix
        raise UserError(f"cannot fetch from the Hugging Face hub: {reason(e, 160, True)}", ref) from None
