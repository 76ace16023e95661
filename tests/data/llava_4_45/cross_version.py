"""Makes asagi_merge_logits.json: how transformers 4.45.1 (the version Asagi's card pins) runs a merged tiny Asagi
the way Asagi's card does (AutoModel with its own code, one `<image>` token that the model expands itself).
tests/merging/test_japanese_vlms.py checks that evomerge scores the same merge (transformers 5, its LLaVA class,
the processor's image count filled from config.json) to the same logits.

Not part of the suite; two steps by hand, from the repository root:
    .venv/bin/python tests/data/llava_4_45/cross_version.py export /tmp/asagi-x    # this project's environment
    /tmp/t445/bin/python tests/data/llava_4_45/cross_version.py logits /tmp/asagi-x  # transformers==4.45.1 (make.py)
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
PROMPT = "<image> w1 w2 w3"
COLOR = (200, 30, 30)  # one solid 40x36 image
POSITIONS = 3  # the text positions after the image whose logits are kept


def export(root: Path) -> None:
    """The tests' tiny family and Asagi, merged with the tests' TIES recipe into root/merged."""
    tests = HERE.parent.parent
    sys.path[:0] = [str(tests), str(tests / "merging")]
    from families import build_asagi, build_family, ties_recipe
    from mergekit_reference import run_ours

    text = build_family(root / "llama", "llama")
    models = {**text, "vlm": build_asagi(root / "asagi", text["ft0"])}
    run_ours(ties_recipe(models, "vlm"), root / "merged")


def logits(root: Path) -> None:
    import torch
    import transformers
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    folder = str(root / "merged")
    model = AutoModel.from_pretrained(folder, trust_remote_code=True, torch_dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)
    pixels = processor(text=PROMPT, images=Image.new("RGB", (40, 36), COLOR), return_tensors="pt")["pixel_values"]
    ids = processor.tokenizer(PROMPT, return_tensors="pt")  # as Asagi's card: the model expands `<image>`
    with torch.no_grad():
        out = model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"], pixel_values=pixels)
    record = {"transformers": transformers.__version__, "class": f"{type(model).__module__}.{type(model).__name__}",
              "prompt": PROMPT, "color": COLOR, "input_ids": ids["input_ids"][0].tolist(),
              "logits": [[round(v, 7) for v in row] for row in out.logits[0, -POSITIONS:].tolist()]}
    (HERE / "asagi_merge_logits.json").write_text(json.dumps(record) + "\n")


if __name__ == "__main__":
    {"export": export, "logits": logits}[sys.argv[1]](Path(sys.argv[2]))
