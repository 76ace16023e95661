"""`builtin:smollm2-vlm`: a LLaVA whose language model is SmolLM2-135M-Instruct, for offline VLM searches.

No real VLM can be had offline, so this one is assembled: SmolLM2's weights as the language model, a small
CLIP vision tower with seeded random weights, and a projector whose output is scaled down so the image tokens
barely disturb the language model. It exercises every VLM code path (the LLaVA class and processor, batched
image + text generation, merging and data-flow paths through the language model, export with the processor),
but it does not see: a search with it measures how the merged language model answers, not visual grounding.
The image token is SmolLM2's `<filename>` token, so the vocabulary (and so merges with SmolLM2 fine-tunes) is
unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch

from evomerge.core.assets import cache_root

VERSION = "v1"
IMAGE_TOKEN = "<filename>"
IMAGE_SIZE, PATCH = 64, 16
PROJECTOR_SCALE = 0.05


def tiny_vlm_path(log=print) -> Path:
    out = cache_root() / "builtin" / f"smollm2-vlm-{VERSION}"
    if (out / "model.safetensors").exists():
        return out
    log(f"assembling the tiny SmolLM2 VLM (cached in {out})")
    _build(out)
    return out


def _build(out: Path) -> None:
    from transformers import (AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig,
                              LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor)

    from evomerge.core.assets import smollm2_gguf
    from evomerge.sources.gguf import load_args

    gguf = smollm2_gguf()
    base, extra = load_args(gguf.parent, gguf.name)  # the GGUF as transformers reads it, converted once
    lm = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, **extra)
    tok = AutoTokenizer.from_pretrained(base, **extra)
    text = lm.config
    if hasattr(text, "quantization_config"):
        del text.quantization_config
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=64)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_select_strategy="default", tie_word_embeddings=text.tie_word_embeddings)
    torch.manual_seed(0)
    vlm = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        vlm.model.language_model.load_state_dict(lm.model.state_dict())
        vlm.lm_head.weight.copy_(lm.lm_head.weight)
        vlm.model.multi_modal_projector.linear_2.weight.mul_(PROJECTOR_SCALE)
        vlm.model.multi_modal_projector.linear_2.bias.zero_()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                           crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1, chat_template=tok.chat_template)
    from evomerge.merging.export import staged_output

    out.parent.mkdir(parents=True, exist_ok=True)
    with staged_output(out, force=True) as tmp:  # a crash leaves no half-written cache entry
        vlm.save_pretrained(str(tmp))
        processor.save_pretrained(str(tmp))
