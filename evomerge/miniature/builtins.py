"""`builtin:NAME` models: SmolLM2-135M-Instruct and the models the miniature builds from it, offline.

Registered as the `builtin` reference scheme (evomerge/core/references.py); a builtin that must be trained is built on
first use and cached in ~/.cache/evomerge.
"""

from __future__ import annotations

from pathlib import Path

from evomerge.core.assets import smollm2_gguf
from evomerge.core.errors import UserError


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
