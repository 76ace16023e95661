"""Specialists fine-tuned from SmolLM2-135M-Instruct, deterministically, and cached.

Two pairs. `ja` / `math` are language-model fine-tunes on raw text (Japanese prose; English problems with their
solutions), about a minute each on a CPU: the quickstart's and the tests' sources. `ja-instruct` / `math-instruct`
are the miniature's: instruction fine-tunes (prompt -> answer, loss on the answer only) like the paper's
sources. The Japanese one answers Japanese instructions in Japanese and sets Japanese word problems up as
equations, but is never scored on a result it would have to compute; the math one solves English word problems.
Raw-text fine-tunes turned out useless there (results/miniature-investigation.md: half of each training row is a
cut-off problem). Embeddings stay frozen (tied with the head: the costly part).
Results are cached under $EVOMERGE_CACHE (default ~/.cache/evomerge), keyed by the training settings.
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

from evomerge.core.assets import cache_root
from evomerge.miniature import data

SPECS = {
    "ja": {"texts": "ja_prose", "steps": 40, "lr": 1e-4, "batch": 4, "seq": 32, "seed": 1},
    "math": {"texts": "en_math", "steps": 40, "lr": 1e-4, "batch": 4, "seq": 32, "seed": 2},
    # instruction fine-tunes: about 9 CPU minutes each, seconds on a GPU
    "ja-instruct": {"pairs": "ja_instruct", "steps": 40, "lr": 1e-4, "batch": 8, "seed": 3},
    "math-instruct": {"pairs": "en_math_instruct", "steps": 60, "lr": 2e-4, "batch": 16, "seed": 4},
}


def _texts(kind: str, n: int, seed: int) -> list[str]:
    return data.ja_prose(n, seed) if kind == "ja_prose" else data.en_math_texts(n, seed)


def _pairs(kind: str, n: int, seed: int) -> list[tuple[str, str]]:
    """(prompt, answer): Japanese instructions in the evaluation's own prompt, English ones in alpaca's."""
    from evomerge.evaluators.mgsm_ja import JA_ALPACA_COT

    if kind == "ja_instruct":
        return [(JA_ALPACA_COT.format(question=q), a) for q, a in data.ja_instruct(n, seed)]
    return [(data.EN_ALPACA.format(question=p.question), p.solution) for p in data.en_math_instruct(n, seed)]


def specialist_path(name: str, log=print, spec: dict | None = None) -> Path:
    """The folder of a specialist, training it first if it is not cached (`spec` overrides SPECS, for tests)."""
    spec = spec or SPECS[name]
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    out = cache_root() / "specialists" / f"smollm2-{name}-{key}"
    if (out / "model.safetensors").exists():
        return out
    log(f"building the {name} specialist from SmolLM2-135M-Instruct ({spec['steps']} steps; cached in {out})")
    _train(spec, out, log)
    return out


def _unscored_spans(answer: str) -> tuple[str, list[tuple[int, int]]]:
    """The answer without its unscored marks, and the character spans the marks enclosed."""
    left, right = data.UNSCORED
    text, spans = "", []
    rest = answer
    while left in rest:
        before, _, rest = rest.partition(left)
        inside, _, rest = rest.partition(right)
        text += before
        spans.append((len(text), len(text) + len(inside)))
        text += inside
    return text + rest, spans


def _batch(tok, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and labels that score only the answer and its end-of-text token, less
    the tokens of its unscored spans (data.UNSCORED)."""
    ids, labels = [], []
    for prompt, answer in pairs:
        p = tok(prompt).input_ids
        text, spans = _unscored_spans(" " + answer + (tok.eos_token or ""))
        enc = tok(text, return_offsets_mapping=bool(spans))
        a = enc.input_ids
        lab = list(a)
        for k, (start, end) in enumerate(enc["offset_mapping"] if spans else []):
            if any(start < e and s < end for s, e in spans):
                lab[k] = -100
        ids.append(p + a)
        labels.append([-100] * len(p) + lab)
    width = max(map(len, ids))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    x = torch.tensor([i + [pad] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    y = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])
    return x, mask, y


def _train(spec: dict, out: Path, log=print) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.core.assets import smollm2_gguf
    from evomerge.sources.gguf import load_args

    gguf = smollm2_gguf()
    torch.manual_seed(spec["seed"])
    base, extra = load_args(gguf.parent, gguf.name)  # the GGUF as transformers reads it, converted once
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, **extra)
    tok = AutoTokenizer.from_pretrained(base, **extra)
    model.model.embed_tokens.weight.requires_grad_(False)  # tied with lm_head: the costly part, and not needed
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec["lr"], weight_decay=0.0)
    steps = spec["steps"]
    model.train()
    if "pairs" in spec:
        # short warm-up, then linear decay: the answers' format is learned in a few steps, the rest refines
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5) * (1 - s / steps))
        pairs = _pairs(spec["pairs"], steps * spec["batch"], spec["seed"])
        for step in range(steps):
            x, mask, labels = _batch(tok, pairs[step * spec["batch"]:(step + 1) * spec["batch"]])
            loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            if (step + 1) % 10 == 0 or step + 1 == steps:
                log(f"  step {step + 1}/{steps}: loss {loss.item():.3f}")
    else:
        texts = _texts(spec["texts"], steps * spec["batch"], spec["seed"])
        eos = tok.eos_token or ""
        ids = tok(eos.join(texts) + eos, return_tensors="pt").input_ids[0]
        seq, batch = spec["seq"], spec["batch"]
        for step in range(steps):
            rows = [ids[(step * batch + r) * seq % (len(ids) - seq - 1):][: seq] for r in range(batch)]
            x = torch.stack(rows)
            model(input_ids=x, labels=x).loss.backward()
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
