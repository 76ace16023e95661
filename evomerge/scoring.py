"""Loading a finished model for scoring (`evomerge eval`), the same way users load it: transformers."""

from __future__ import annotations

from typing import Any

from evomerge.errors import UserError
from evomerge.live import load_tokenizer
from evomerge.merge import pick_device
from evomerge.models import open_model, resolve_reference


def load_for_eval(ref: str, device: str = "auto") -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    folder, gguf_file = resolve_reference(ref)
    if gguf_file is None:
        open_model(ref)  # refuses pickled checkpoints before transformers would read them
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype="auto")
    except Exception as e:
        raise UserError(f"cannot load the model: {str(e).splitlines()[0][:200]}", ref) from None
    model.to(pick_device(device)).eval()
    return model, load_tokenizer(folder, gguf_file)
