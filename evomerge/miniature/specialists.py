"""Two specialists fine-tuned from SmolLM2-135M-Instruct, deterministically, and cached.

`ja` learns Japanese prose (and no arithmetic), `math` learns English arithmetic word problems. Their task
vectors against the base are what the miniature's searches merge. Training is short (tens of steps on short
sequences, embeddings frozen) so that it runs on a CPU in about a minute each; the result is cached under
$EVOMERGE_CACHE (default ~/.cache/evomerge) keyed by the training settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from evomerge.miniature import data

SPECS = {
    "ja": {"texts": "ja_prose", "steps": 40, "lr": 1e-4, "batch": 4, "seq": 32, "seed": 1},
    "math": {"texts": "en_math", "steps": 40, "lr": 1e-4, "batch": 4, "seq": 32, "seed": 2},
}


def cache_root() -> Path:
    return Path(os.environ.get("EVOMERGE_CACHE", Path.home() / ".cache" / "evomerge"))


def _texts(kind: str, n: int, seed: int) -> list[str]:
    return data.ja_prose(n, seed) if kind == "ja_prose" else data.en_math_texts(n, seed)


def specialist_path(name: str, log=print) -> Path:
    """The folder of a specialist, training it first if it is not cached."""
    spec = SPECS[name]
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    out = cache_root() / "specialists" / f"smollm2-{name}-{key}"
    if (out / "model.safetensors").exists():
        return out
    log(f"building the {name} specialist from SmolLM2-135M-Instruct ({spec['steps']} steps; cached in {out})")
    _train(spec, out)
    return out


def _train(spec: dict, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.assets import smollm2_gguf

    gguf = smollm2_gguf()
    torch.manual_seed(spec["seed"])
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.model.embed_tokens.weight.requires_grad_(False)  # tied with lm_head: the costly part, and not needed
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec["lr"], weight_decay=0.0)
    texts = _texts(spec["texts"], spec["steps"] * spec["batch"], spec["seed"])
    eos = tok.eos_token or ""
    ids = tok(eos.join(texts) + eos, return_tensors="pt").input_ids[0]
    seq, batch = spec["seq"], spec["batch"]
    model.train()
    for step in range(spec["steps"]):
        rows = [ids[(step * batch + r) * seq % (len(ids) - seq - 1):][: seq] for r in range(batch)]
        x = torch.stack(rows)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        # a GGUF-loaded model refuses save_pretrained; its weights are plain float32 tensors by now
        tied = model.config.tie_word_embeddings
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
                 if not (tied and k == "lm_head.weight")}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = torch.float32
        config.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
