"""Tiny seeded models of the transformers classes users merge, saved as the hub stores them, for the family tests:
a base and fine-tunes of it (base + a task vector), in transformers 5's checkpoint names, and where the hub's
checkpoints hold more (Pythia's per-layer attention buffers) with those too."""

from __future__ import annotations

import shutil
import zlib

from pathlib import Path

import torch

from conftest import save_tokenizer

COMMON = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def family_config(arch: str):
    import transformers as tf

    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=64, bos_token_id=1,
                             eos_token_id=2)
    if arch == "gpt_bigcode":
        return tf.GPTBigCodeConfig(vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=64, bos_token_id=1,
                                   eos_token_id=2)
    if arch == "falcon":  # the new decoder (Falcon 40B / 180B, Falcon 2); the head stored, as mergekit requires
        return tf.FalconConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                               num_kv_heads=2, new_decoder_architecture=True, tie_word_embeddings=False,
                               bos_token_id=1, eos_token_id=2)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                num_attention_heads=4, max_position_embeddings=64, tie_word_embeddings=False,
                                bos_token_id=1, eos_token_id=2)
    extra = {
        "llama": (tf.LlamaConfig, {}), "mistral": (tf.MistralConfig, {}), "qwen2": (tf.Qwen2Config, {}),
        "qwen3": (tf.Qwen3Config, {"head_dim": 8}), "gemma2": (tf.Gemma2Config, {"head_dim": 8}),
        "gemma3_text": (tf.Gemma3TextConfig, {"head_dim": 8}), "phi3": (tf.Phi3Config, {}),
        "stablelm": (tf.StableLmConfig, {}), "starcoder2": (tf.Starcoder2Config, {}),
        # the other decoder architectures mergekit 0.1.5 defines that transformers builds without remote code
        "gemma": (tf.GemmaConfig, {"head_dim": 8}), "olmo2": (tf.Olmo2Config, {}),
        "cohere": (tf.CohereConfig, {"use_qk_norm": True}), "cohere2": (tf.Cohere2Config, {}),
        "granite": (tf.GraniteConfig, {}), "phi": (tf.PhiConfig, {}), "glm4": (tf.Glm4Config, {"head_dim": 8}),
        "arcee": (tf.ArceeConfig, {}), "apertus": (tf.ApertusConfig, {}),
        "mixtral": (tf.MixtralConfig, {"num_local_experts": 4, "num_experts_per_tok": 2}),
        "qwen2_moe": (tf.Qwen2MoeConfig, {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                           "shared_expert_intermediate_size": 48, "decoder_sparse_step": 1}),
        "qwen3_moe": (tf.Qwen3MoeConfig, {"head_dim": 8, "num_experts": 4, "num_experts_per_tok": 2,
                                           "moe_intermediate_size": 32, "decoder_sparse_step": 1}),
    }
    cls, more = extra[arch]
    if arch == "qwen2":  # room for the byte-level BPE tokenizer Qwen2's tokenizer class needs (bpe_tokenizer)
        return cls(**{**COMMON, "vocab_size": 330}, **more)
    return cls(**COMMON, **more)


def save_bpe_tokenizer(folder: Path) -> None:
    """A byte-level BPE tokenizer trained on the tests' words: transformers 5 loads a Qwen2 model's tokenizer as
    Qwen2's class whatever tokenizer_config.json says, and that class rebuilds a BPE from tokenizer.json (the
    word-level one of the other families reads as no tokens at all)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=330, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(f"w{i}" for i in range(61))] * 20, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                            pad_token="<|endoftext|>").save_pretrained(str(folder))


def pythia_buffers(state: dict, config) -> dict:
    """The per-layer buffers Pythia's hub checkpoints hold (and mergekit's gpt-neox definition expects)."""
    n = config.max_position_embeddings
    head = config.hidden_size // config.num_attention_heads
    rot = head // 4  # Pythia rotates a quarter of each head
    for i in range(config.num_hidden_layers):
        state[f"gpt_neox.layers.{i}.attention.bias"] = torch.tril(torch.ones(n, n, dtype=torch.bool)).view(1, 1, n, n)
        state[f"gpt_neox.layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
        state[f"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
    return state


def per_expert(state: dict, arch: str) -> dict:
    """Mixture-of-experts tensors as the hub stores them, one per expert (transformers 5 fuses them on load):
    Mixtral's `block_sparse_moe.experts.N.w1/w3/w2` and `block_sparse_moe.gate`, Qwen-MoE's
    `mlp.experts.N.gate_proj/up_proj/down_proj`."""
    out = {}
    for name, t in state.items():
        if name.endswith("mlp.experts.gate_up_proj"):
            layer = name[: -len("mlp.experts.gate_up_proj")]
            half = t.shape[1] // 2
            for e in range(t.shape[0]):
                gate, up = t[e, :half].clone(), t[e, half:].clone()
                if arch == "mixtral":
                    out[f"{layer}block_sparse_moe.experts.{e}.w1.weight"] = gate
                    out[f"{layer}block_sparse_moe.experts.{e}.w3.weight"] = up
                else:
                    out[f"{layer}mlp.experts.{e}.gate_proj.weight"] = gate
                    out[f"{layer}mlp.experts.{e}.up_proj.weight"] = up
        elif name.endswith("mlp.experts.down_proj"):
            layer = name[: -len("mlp.experts.down_proj")]
            for e in range(t.shape[0]):
                key = f"block_sparse_moe.experts.{e}.w2.weight" if arch == "mixtral" else f"mlp.experts.{e}.down_proj.weight"
                out[layer + key] = t[e].clone()
        elif arch == "mixtral" and name.endswith("mlp.gate.weight"):
            out[name.replace("mlp.gate.weight", "block_sparse_moe.gate.weight")] = t
        else:
            out[name] = t
    return out


def build_family(root: Path, arch: str, n_tunes: int = 2, seed: int = 0, hub_experts: bool = False
                 ) -> dict[str, Path]:
    """base, ft0, ft1...: folders with config.json, model.safetensors and the tests' word-level tokenizer
    (`hub_experts`: mixture-of-experts tensors one per expert, as the hub stores them)."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    config = family_config(arch)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    config.architectures = [type(model).__name__]
    base = {}
    for name, t in model.state_dict().items():
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))  # not hash(): salted per process
        base[name] = (torch.randn(t.shape, generator=g) * 0.1 + (1.0 if t.dim() == 1 else 0.0)).to(t.dtype) \
            if t.is_floating_point() else t.clone()
    tied = getattr(config, "tie_word_embeddings", False)
    out = {}
    for i, name in enumerate(["base", *[f"ft{j}" for j in range(n_tunes)]]):
        g = torch.Generator().manual_seed(seed * 100 + i)
        state = {k: (v + 0.02 * torch.randn(v.shape, generator=g)) if i and v.is_floating_point() else v.clone()
                 for k, v in base.items()}
        if tied:
            state.pop("lm_head.weight", None)  # as saved: a tied head is not stored
        if arch == "gpt_neox":  # Pythia as on the hub: the head under its old name, the attention buffers stored
            state["embed_out.weight"] = state.pop("lm_head.weight")
            state = pythia_buffers(state, config)
        if hub_experts:
            state = per_expert(state, arch)
        folder = root / name
        folder.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
        config.save_pretrained(str(folder))
        (save_bpe_tokenizer if arch == "qwen2" else save_tokenizer)(folder)
        out[name] = folder
    return out



def build_llava_jp(folder: Path, lm: Path, seed: int = 7) -> Path:
    """A tiny llava-jp as its project stores it: the GPT-2 language model of `lm` under its own names
    (`transformer.h.N...`, `transformer.wte`, `lm_head`), a CLIP vision tower under `model.vision_tower.*`, a
    two-layer MLP projector under `model.mm_projector.*`, and a config that says `model_type: llava` with GPT-2
    fields (not transformers' LLaVA: the project loads it with its own LlavaGpt2ForCausalLM)."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    state = load_file(str(lm / "model.safetensors"))
    g = torch.Generator().manual_seed(seed)
    hidden = json.loads((lm / "config.json").read_text())["n_embd"]
    vis, vision = 16, "model.vision_tower.vision_tower.vision_model."
    extra = {f"{vision}embeddings.patch_embedding.weight": (vis, 3, 4, 4),
             f"{vision}embeddings.position_embedding.weight": (17, vis),
             f"{vision}post_layernorm.weight": (vis,), f"{vision}post_layernorm.bias": (vis,),
             "model.mm_projector.0.weight": (hidden, vis), "model.mm_projector.0.bias": (hidden,),
             "model.mm_projector.2.weight": (hidden, hidden), "model.mm_projector.2.bias": (hidden,)}
    for i in range(2):  # the vision encoder's own layers (fewer than the LM's)
        for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1"):
            extra[f"{vision}encoder.layers.{i}.{part}.weight"] = (vis, vis)
    state.update({n: torch.randn(s, generator=g) * 0.1 for n, s in extra.items()})
    folder.mkdir(parents=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((lm / "config.json").read_text())
    config.update({"model_type": "llava", "architectures": ["LlavaGpt2ForCausalLM"],
                   "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_projector_type": "mlp2x_gelu",
                   "mm_hidden_size": vis, "mm_vision_select_layer": -2, "image_aspect_ratio": "square"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for f in lm.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, folder / f.name)
    return folder


ASAGI_CODE = {  # stand-ins for the project's own code files that config.json's auto_map names
    "configuration_llava.py": "from transformers import LlavaConfig as _Base\n\n\nclass LlavaConfig(_Base):\n"
                              "    pass\n",
    "modeling_llava.py": "from transformers import LlavaForConditionalGeneration as _Base\n\n"
                         "from .configuration_llava import LlavaConfig\n\n\n"
                         "class LlavaForConditionalGeneration(_Base):\n    config_class = LlavaConfig\n",
}


def ties_recipe(m: dict, first: str) -> str:
    """TIES over a family's base, `first` (a text model or a VLM holding the same LM) and ft1."""
    return f"""
merge_method: ties
base_model: {m['base']}
models:
  - {{model: {m['base']}}}
  - {{model: {m[first]}, parameters: {{weight: 0.6, density: 0.5}}}}
  - {{model: {m['ft1']}, parameters: {{weight: 0.4, density: 0.7}}}}
dtype: float32
"""


LLAVA_4_45 = Path(__file__).parent / "data" / "llava_4_45"  # a LLaVA's files as transformers 4.45.1 saves them


def build_asagi(folder: Path, lm: Path, seed: int = 11) -> Path:
    """A tiny Asagi as its hub repos store it: an llm-jp-3 (Llama) language model with `lm`'s weights, a SigLIP
    vision tower and a two-layer projector, saved by transformers 4.45.1 (the version its card pins): tensors in
    the older LLaVA layout (`language_model.model.*`, `vision_tower.vision_model.*`, `multi_modal_projector.*`,
    checked name for name and shape for shape against what 4.45.1 writes, tests/data/llava_4_45), and
    config.json, processor_config.json (`patch_size: null`) and preprocessor_config.json as 4.45.1 writes them,
    plus an `auto_map` to the project's own code (loaded with `AutoModel.from_pretrained(...,
    trust_remote_code=True)`); the tokenizer files too (the tests' words, the last one `<image>`, an added token)."""
    import json

    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

    saved = json.loads((LLAVA_4_45 / "config.json").read_text())
    text = LlamaConfig.from_pretrained(str(lm))
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_key_value_heads"):
        assert saved["text_config"][key] == getattr(text, key), key  # the template is this LM's shape
    vision = SiglipVisionConfig(**{k: saved["vision_config"][k] for k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size")})
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=saved["image_token_index"],
                      vision_feature_select_strategy=saved["vision_feature_select_strategy"],
                      vision_feature_layer=saved["vision_feature_layer"])
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    lm_state = load_file(str(lm / "model.safetensors"))
    old = {}
    for name, t in model.state_dict().items():
        if name.startswith("model.language_model."):
            key = "model." + name[len("model.language_model."):]
            old["language_model." + key] = lm_state[key].clone()
        elif name == "lm_head.weight":
            old["language_model.lm_head.weight"] = lm_state["lm_head.weight"].clone()
        elif name.startswith("model.vision_tower.") and not name.startswith("model.vision_tower.vision_model."):
            old["vision_tower.vision_model." + name[len("model.vision_tower."):]] = t.contiguous()  # SigLIP <4.50
        else:
            old[name[len("model."):]] = t.contiguous()
    shapes = json.loads((LLAVA_4_45 / "tensors.json").read_text())
    assert {n: list(t.shape) for n, t in old.items()} == shapes  # 4.45.1's names and shapes, no more, no less
    folder.mkdir(parents=True)
    save_file(old, str(folder / "model.safetensors"), metadata={"format": "pt"})
    saved.update(auto_map={"AutoConfig": "configuration_llava.LlavaConfig",
                           "AutoModel": "modeling_llava.LlavaForConditionalGeneration"})
    (folder / "config.json").write_text(json.dumps(saved, indent=2))
    for name, code in ASAGI_CODE.items():
        (folder / name).write_text(code)
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy(LLAVA_4_45 / name, folder / name)
    return folder
