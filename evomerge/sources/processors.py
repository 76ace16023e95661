"""Loading a vision-language model's processor so that it counts image tokens as the model's config says.

A LLaVA-style processor saved before transformers 4.47 stores `patch_size: null`, or no processor_config.json
at all before 4.44 (the model expanded each `<image>` token into the image's features itself). Transformers 5
expands it in the processor and fails on the null, so every VQA score of such a model would fail (Asagi, saved
with 4.45.1; EvoVLM-JP-v1-7B, with 4.38.2). The count follows from config.json: the vision tower's patch size,
the feature selection strategy, and whether the tower adds a class token.

The processor's files are checked here as well, before any model is built: a file that is not a JSON object, or
an image-token setting no processor could use (a patch size of 0, negative or a string), is refused naming the
file, instead of failing every candidate of a search one by one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from evomerge.core.errors import UserError, reason

# image features a vision tower yields beyond one per patch: CLIP's class token; SigLIP has none
EXTRA_TOKENS = {"clip_vision_model": 1, "siglip_vision_model": 0}
# the processors that expand `<image>` by patch size (LLaVA, LLaVA-NeXT, their video variants)
# the files a saved processor consists of, beside the tokenizer's
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
COUNTING = ("LlavaProcessor", "LlavaNextProcessor", "LlavaNextVideoProcessor", "VideoLlavaProcessor")


def image_count(folder: Path) -> dict | None:
    """What a processor saved without a patch size lacks, from the folder's files alone (so a search says it,
    or refuses, before any model is built); None when the processor counts by itself or is not of that kind."""
    folder = Path(folder)
    path = folder / "processor_config.json"
    saved = _read(path)  # absent when saved before transformers 4.44: its class is named beside the image's
    kind_of = saved.get("processor_class") or _read(folder / "preprocessor_config.json").get("processor_class")
    if kind_of not in COUNTING or saved.get("patch_size") is not None:
        return None
    config = json.loads((folder / "config.json").read_text())
    vision = config.get("vision_config") or {}
    kind, patch = vision.get("model_type"), vision.get("patch_size")
    if kind in EXTRA_TOKENS and patch is None:  # configs saved before 4.41 leave out what equals the default
        from transformers import CONFIG_MAPPING

        patch = CONFIG_MAPPING[kind]().patch_size
    if kind not in EXTRA_TOKENS or not isinstance(patch, int):
        raise UserError(f"the processor has no patch_size (saved before transformers 4.47) and config.json's "
                        f"vision tower ({kind!r}, patch_size {patch!r}) does not say how many tokens an image "
                        "takes; set patch_size and num_additional_image_tokens in processor_config.json", str(path))
    strategy = saved.get("vision_feature_select_strategy") or config.get("vision_feature_select_strategy",
                                                                           "default")
    return {"patch_size": patch, "vision_feature_select_strategy": strategy,
            "num_additional_image_tokens": EXTRA_TOKENS[kind]}


# what a processor_config.json may hold for the settings that count image tokens
_COUNTS = {"patch_size": (1, "a positive integer"), "num_additional_image_tokens": (0, "an integer >= 0")}
_STRATEGIES = ("default", "full")


def _read(path: Path) -> dict:
    """A processor's JSON file as a dict ({} when absent), refused naming the file when it is not a JSON object
    or holds an image-token setting that cannot work."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"not valid JSON ({reason(e)})", str(path)) from None
    if not isinstance(data, dict):
        raise UserError(f"must hold a JSON object, not a {type(data).__name__}", str(path))
    for key, (least, what) in _COUNTS.items():
        value = data.get(key)
        if value is not None and (type(value) is not int or value < least):
            raise UserError(f"{key} must be {what} or null, got {value!r}", str(path))
    strategy = data.get("vision_feature_select_strategy")
    if strategy is not None and strategy not in _STRATEGIES:
        raise UserError(f"vision_feature_select_strategy must be one of {', '.join(_STRATEGIES)} or null, got "
                        f"{strategy!r}", str(path))
    return data


def image_count_note(folder: Path) -> str | None:
    fill = image_count(folder)
    if fill is None:
        return None
    return (f"{folder}: the processor has no patch_size (saved before transformers 4.47); image tokens are "
            f"counted from config.json: patch {fill['patch_size']}, strategy "
            f"{fill['vision_feature_select_strategy']!r}, {fill['num_additional_image_tokens']} extra")


def load_processor(folder: Path, trust_remote_code: bool = False, log: Callable[[str], None] | None = None) -> Any:
    """AutoProcessor, with a legacy processor's image-token count filled in (`log` gets one line saying so)."""
    from transformers import AutoProcessor

    fill = image_count(folder)
    processor = AutoProcessor.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    if fill is not None:
        for name, value in fill.items():
            setattr(processor, name, value)
        if log is not None:
            log(f"note: {image_count_note(folder)}")
    return processor
