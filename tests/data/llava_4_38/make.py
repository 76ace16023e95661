"""Writes this folder's tiny LLaVA as transformers 4.38.2 saves one (the version EvoVLM-JP-v1-7B's config.json
names): a Mistral language model and a CLIP tower, config.json with only the fields that differ from the
defaults, and no processor_config.json (the processor's class is named in preprocessor_config.json; the model
expands `<image>` itself). reference.json: the logits 4.38.2 gives for one image and prompt, as its processor
and model run them. tests/sources/test_processors.py checks that evomerge scores this model to the same logits.

Not part of the suite: run once by hand in an environment with transformers==4.38.2, e.g.
    python -m venv /tmp/t438 && /tmp/t438/bin/pip install torch==2.13.0 transformers==4.38.2 pillow
    /tmp/t438/bin/python tests/data/llava_4_38/make.py
"""

import json
from pathlib import Path

import torch
import transformers
from PIL import Image
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaTokenizerFast, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor, MistralConfig)

assert transformers.__version__ == "4.38.2", transformers.__version__
HERE = Path(__file__).parent
WORDS = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(29)] + ["<image>"]
PROMPT, COLOR, POSITIONS = "<image> w1 w2 w3", (200, 30, 30), 3


def main() -> None:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = LlamaTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                              pad_token="<unk>")  # the class 4.38's LLaVA processor insists on
    fast.add_tokens([AddedToken("<image>", special=True, normalized=False)])
    text = MistralConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    vision = CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                              image_size=30, patch_size=10, projection_dim=8)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=len(WORDS) - 1)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 30},
                                                                  crop_size={"height": 30, "width": 30}),
                               tokenizer=fast)
    model.save_pretrained(str(HERE))
    processor.save_pretrained(str(HERE))
    inputs = processor(text=PROMPT, images=Image.new("RGB", (40, 36), COLOR), return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -POSITIONS:]
    record = {"transformers": transformers.__version__, "prompt": PROMPT, "color": COLOR,
              "input_ids": inputs["input_ids"][0].tolist(),
              "logits": [[round(v, 7) for v in row] for row in logits.tolist()]}
    (HERE / "reference.json").write_text(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
