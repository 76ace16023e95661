"""Loading a finished model for scoring (`evomerge eval`), the same way users load it: transformers."""

from __future__ import annotations

from typing import Any

from evomerge.core.errors import UserError, reason
from evomerge.core.architecture import is_vlm
from evomerge.core.devices import pick_device
from evomerge.sources.gguf import load_args
from evomerge.sources.models import load_tokenizer, open_model, resolve_reference


def load_for_eval(ref: str, device: str = "auto", dtype: str | None = None,
                  trust_remote_code: bool = False, native_class: bool = False, quiet: bool = False
                  ) -> tuple[Any, Any]:
    """(model, tokenizer or processor). A model that ships its own code (auto_map) is refused without
    `trust_remote_code`, unless `native_class` (a data-flow search, as a parameter-space one): then transformers'
    own class for its model_type builds it and its code is never run (the search says so once). A processor
    saved without a patch size gets it from config.json, said on stderr unless `quiet` (a search says it once)."""
    import json

    from transformers import AutoModelForCausalLM

    target = pick_device(device)  # a bad or missing device fails before the model is read
    folder, gguf_file = resolve_reference(ref)
    if gguf_file is None:
        open_model(ref).check_loadable(trust_remote_code)  # pickled weights, unbuildable VLMs: refused up front
        config = json.loads((folder / "config.json").read_text())
        if config.get("auto_map") and not trust_remote_code and not native_class:
            raise UserError("this model ships its own modeling code (auto_map in config.json); "
                            "pass --trust-remote-code if you trust it", ref)
    if gguf_file is None and is_vlm(json.loads((folder / "config.json").read_text())):
        from transformers import AutoModelForImageTextToText

        from evomerge.sources.processors import image_count, load_processor

        image_count(folder)  # a processor that cannot count image tokens is refused before the model is read
        try:
            model = AutoModelForImageTextToText.from_pretrained(str(folder), dtype=dtype or "auto",
                                                                trust_remote_code=trust_remote_code)
            processor = load_processor(folder, trust_remote_code, None if quiet else _say)
        except Exception as e:
            raise UserError(f"cannot load the vision-language model: {reason(e)}", ref) from None
        _fold_adapter(model, ref)
        return model.to(target).eval(), processor
    try:
        path, extra = load_args(folder, gguf_file)  # a GGUF: converted once
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto", trust_remote_code=trust_remote_code,
                                                     **extra)
    except Exception as e:
        raise UserError(f"cannot load the model: {reason(e)}", ref) from None
    _fold_adapter(model, ref)
    model.to(target).eval()
    return model, load_tokenizer(folder, gguf_file)


def _say(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def _fold_adapter(model: Any, ref: str) -> None:
    """`MODEL+ADAPTER`: the LoRA adapter folded into the loaded model's weights."""
    from evomerge.sources.lora import fold_into_module, open_adapter
    from evomerge.core.references import split_reference

    adapter = split_reference(ref)[1]
    if adapter is not None:
        fold_into_module(model, open_adapter(adapter), ref)
