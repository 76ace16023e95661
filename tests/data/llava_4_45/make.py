"""Writes this folder's files: what transformers 4.45.1 (the version Asagi's model card pins) saves for a LLaVA
model and processor, at the tests' tiny sizes (tests/families.py COMMON; build_asagi's SigLIP tower).

Not part of the suite: run once by hand in an environment with transformers==4.45.1, e.g.
    python -m venv /tmp/t445 && /tmp/t445/bin/pip install torch==2.13.0 transformers==4.45.1 pillow
    /tmp/t445/bin/python tests/data/llava_4_45/make.py
The tests' tiny Asagi (tests/families.py build_asagi) takes config.json, the processor and tokenizer files from
here as written, and checks its tensors against tensors.json (name -> shape). The tokenizer is the tests'
word-level one with `<image>` as an added special token.
The processor is saved as a LLaVA processor of that time was when nothing set its patch size: `patch_size: null`
(the model expanded the image token itself before transformers 4.47)."""

import json
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import (LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
                          PreTrainedTokenizerFast, SiglipImageProcessor, SiglipVisionConfig)

assert transformers.__version__ == "4.45.1", transformers.__version__
HERE = Path(__file__).parent
WORDS = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(60)] + ["<image>"]  # the tests' VOCAB, last = <image>


def main() -> None:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>")
    fast.add_tokens([AddedToken("<image>", special=True, normalized=False)])  # as LLaVA tokenizers add it
    text = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1,
                       eos_token_id=2, pad_token_id=0)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                image_size=30, patch_size=10)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=len(WORDS) - 1,
                         vision_feature_select_strategy="full", vision_feature_layer=-2)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        LlavaProcessor(image_processor=SiglipImageProcessor(size={"height": 30, "width": 30}),
                       tokenizer=fast).save_pretrained(tmp)
        for name in ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer.json",
                     "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(Path(tmp) / name, HERE / name)
        from safetensors import safe_open

        with safe_open(str(Path(tmp) / "model.safetensors"), "pt") as f:
            shapes = {name: list(f.get_slice(name).get_shape()) for name in sorted(f.keys())}
    (HERE / "tensors.json").write_text(json.dumps(shapes, indent=1) + "\n")


if __name__ == "__main__":
    main()
