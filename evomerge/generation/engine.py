"""The fast generation engine: greedy decoding with continuous batching over a KV cache the engine owns.

Why not `generate`: per step it rebuilds masks and caches in Python, and a batch runs until its longest row
ends. Here every row has its own position and length in one preallocated cache, finished rows leave the batch
(the last active row moves into the freed slot, so the active rows are always the first n and attention reads a
view, not a gathered copy), and waiting prompts are prefilled into free slots as soon as rows finish. The
host looks at the GPU only every `sync_every` steps (rows that finished in between decode a few wasted tokens,
which are cut off), so the CPU can queue kernels ahead of the GPU.

The engine computes with the model's own modules and weights (norms, projections, rotary embedding, the
model's `apply_rotary_pos_emb`), read at call time: a live merge that overwrites weights in place is seen by
the next call, and a data-flow hop model runs with one cache slot per hop. It supports the Llama family
and its relatives (Llama, Mistral, Qwen2, SmolLM2, Qwen3 with its per-head q/k norms, Phi-3/Phi-4 with their fused
qkv projection, the MoE models Mixtral, Qwen2-MoE and Qwen3-MoE, whose MLP block runs as the model's own module;
Gemma 2 and 3: norms around each block's output, Gemma 2's soft-capped attention and output logits, Gemma 3's
two rotary bases for local and global layers; Starcoder2; StableLM 2 with its partial rotary, per-head q/k norms
and parallel residual); `supports(model)` says when it does not apply (GPT-2, GPT-NeoX, ..., or sequences
longer than a sliding window), and callers then use plain `generate`, saying so once. Greedy output equals
plain greedy decoding up to floating-point ties (tested token for token in float32 on CPU).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from evomerge.core.architecture import layers_and_scales

FAMILY = ("llama", "mistral", "qwen2", "qwen3", "phi3", "mixtral", "qwen2_moe", "qwen3_moe", "gemma2", "gemma3_text", "starcoder2", "stablelm")


def supports(model: Any, max_len: int | None = None) -> str | None:
    """None if the engine can run `model`; otherwise why not (the caller falls back to `generate`)."""
    cfg = model.config
    if getattr(cfg, "model_type", None) not in FAMILY:
        return f"model type {getattr(cfg, 'model_type', None)!r} is not in the Llama family"
    parts = layers_and_scales(model)
    if parts is None:
        return "no decoder layers found"
    inner, layers = parts
    for name in ("embed_tokens", "norm", "rotary_emb"):
        if not hasattr(inner, name):
            return f"the decoder has no {name}"
    for layer, _ in layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        projections = ("q_proj", "k_proj", "v_proj") if not hasattr(attn, "qkv_proj") else ("qkv_proj",)
        if attn is None or mlp is None or not all(hasattr(attn, n) for n in (*projections, "o_proj")):
            return "a layer is not a standard attention + MLP block"
        if not callable(mlp):
            return "a layer's MLP is not a module"
    if len({p.device for p in model.parameters()}) > 1:
        return "the model is spread over several devices"
    window = getattr(cfg, "sliding_window", None)
    uses_window = getattr(cfg, "use_sliding_window", True) and window is not None
    if uses_window and (max_len is None or max_len > window):
        return "sequences longer than the sliding window"
    return None


@dataclass
class Request:
    ids: list[int]
    budget: int
    out: list[int] = field(default_factory=list)
    done: bool = False


class Engine:
    """Greedy generation for one model. Create once per model object; `generate` can be called repeatedly
    (the cache is reallocated only when a call needs more rows or length)."""

    def __init__(self, model: Any, max_batch: int = 256, sync_every: int = 8):
        why = supports(model)
        if why is not None and not why.startswith("sequences longer"):
            raise ValueError(f"the generation engine cannot run this model: {why}")
        self.model, self.max_batch, self.sync_every = model, max_batch, sync_every
        cfg = model.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.stats: dict[str, int] = {}  # of the last call: decode steps, rows decoded (summed over steps), prefills
        self.prefix: tuple[int, Any] = (0, None)  # the shared prompt prefix of the current call (_shared_prefix)

    # -- model pieces -------------------------------------------------------------------------------------------

    def _parts(self):
        return layers_and_scales(self.model)  # looked up per call: hop models and live merges change underneath

    def _rope(self, attn: Any) -> Callable:
        return sys.modules[type(attn).__module__].apply_rotary_pos_emb

    def _project(self, attn: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values as [b, t, heads, head_dim]: from q/k/v projections, or split from one fused
        `qkv_proj` (Phi-3, Phi-4: queries, then keys, then values)."""
        b, t, _ = x.shape
        if hasattr(attn, "qkv_proj"):
            qkv = attn.qkv_proj(x)
            nq, nk = self.n_heads * self.head_dim, self.n_kv * self.head_dim
            q, k, v = qkv[..., :nq], qkv[..., nq:nq + nk], qkv[..., nq + nk:]
        else:
            q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        return (q.view(b, t, -1, self.head_dim), k.view(b, t, -1, self.head_dim), v.view(b, t, -1, self.head_dim))

    def _rotate(self, attn: Any, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """The model's rotary function on queries and keys; StableLM rotates only the first `rotary_ndims` of each
        head, split off in its attention (Phi-3's function splits by itself)."""
        n = getattr(attn, "rotary_ndims", None)
        if n is None or n >= q.shape[-1]:
            return self._rope(attn)(q, k, cos, sin)
        q_rot, k_rot = self._rope(attn)(q[..., :n], k[..., :n], cos, sin)
        return torch.cat((q_rot, q[..., n:]), dim=-1), torch.cat((k_rot, k[..., n:]), dim=-1)

    def _attend(self, attn: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """Attention over [b, heads, t, head_dim]; `mask` True where a query may look. Gemma 2 soft-caps the scores
        before the mask, as its own (eager) attention does: scaled_dot_product_attention cannot."""
        cap = getattr(attn, "attn_logit_softcapping", None)
        if cap is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=attn.scaling,
                                                  enable_gqa=self.n_kv != self.n_heads)
        if self.n_kv != self.n_heads:
            k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        w = torch.matmul(q, k.transpose(2, 3)) * attn.scaling
        w = torch.tanh(w / cap) * cap
        if causal:
            mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril(k.shape[2] - q.shape[2])
        if mask is not None:
            w = w.masked_fill(~mask, float("-inf"))
        return torch.matmul(F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype), v)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """The head's logits, soft-capped where the model caps them (Gemma 2): a cap can round near-equal logits
        into ties, and the argmax must break them as `generate` does."""
        logits = self.model.lm_head(h)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def _alloc(self, rows: int, length: int, device: torch.device, dtype: torch.dtype, n_layers: int) -> None:
        if self.cache is not None:
            k, _ = self.cache
            if (k.shape[0] == n_layers and k.shape[1] >= rows and k.shape[3] >= length and k.device == device
                    and k.dtype == dtype):
                return
        self.cache = None  # free the old one first
        shape = (n_layers, rows, self.n_kv, length, self.head_dim)
        # zeros, not empty: masked slots still enter the attention product, and 0 x NaN garbage would be NaN
        self.cache = (torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    def _layers_forward(self, h: torch.Tensor, positions: torch.Tensor, rows: slice, write_at: torch.Tensor | None,
                        lengths: torch.Tensor | None, span: int = 0, offset: int = 0) -> torch.Tensor:
        """Run every layer. Prefill (write_at None): h is [b, t, d] for cache rows `rows` at positions
        offset..offset+t-1, causal; with `offset`, the rows' first `offset` cache slots already hold a shared
        prompt prefix, which every token also attends to. Decode: h is [n, 1, d], token i goes to position
        write_at[i] and attends to the first lengths[i] slots; `span` (a host number, so the host never waits for
        the GPU) is the longest of them."""
        inner, layers = self._parts()
        rotary = inner.rotary_emb
        if hasattr(rotary, "layer_types"):  # Gemma 3: local and global layers rotate with different bases
            rope = {kind: rotary(h, positions, kind) for kind in rotary.layer_types}
        else:
            rope = rotary(h, positions)
        ck, cv = self.cache
        b, t, _ = h.shape
        if write_at is not None:
            idx = torch.arange(b, device=h.device)
            mask = (torch.arange(span, device=h.device)[None, :] < lengths[:, None])[:, None, None, :]
        elif offset:  # the prefix, then causal over the new tokens
            key = torch.arange(offset + t, device=h.device)[None, :]
            mask = (key < offset) | (key - offset <= torch.arange(t, device=h.device)[:, None])
        for li, (layer, scale) in enumerate(layers):
            if scale != 1.0:
                h = h * scale
            attn, mlp = layer.self_attn, layer.mlp
            x = layer.input_layernorm(h)
            q, k, v = self._project(attn, x)
            if getattr(attn, "q_norm", None) is not None:  # Qwen3: RMSNorm over each head's query and key
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            if getattr(attn, "q_layernorm", None) is not None:  # StableLM 2: a LayerNorm per head, after the split
                q, k = attn.q_layernorm(q), attn.k_layernorm(k)
            cos, sin = rope[attn.layer_type] if isinstance(rope, dict) else rope
            q, k = self._rotate(attn, q, k, cos, sin)
            if write_at is None and offset:
                ck[li, rows, :, offset:offset + t] = k
                cv[li, rows, :, offset:offset + t] = v
                o = self._attend(attn, q, ck[li, rows, :, :offset + t], cv[li, rows, :, :offset + t], mask)
            elif write_at is None:
                ck[li, rows, :, :t] = k
                cv[li, rows, :, :t] = v
                o = self._attend(attn, q, k, v, causal=True)
            else:
                ck[li, idx, :, write_at] = k[:, :, 0]
                cv[li, idx, :, write_at] = v[:, :, 0]
                o = self._attend(attn, q, ck[li, :b, :, :span], cv[li, :b, :, :span], mask)
            a = attn.o_proj(o.transpose(1, 2).reshape(b, t, -1))
            if hasattr(layer, "pre_feedforward_layernorm"):  # Gemma 2/3: each block's output is normed too
                h = h + layer.post_attention_layernorm(a)
                h = h + layer.post_feedforward_layernorm(mlp(layer.pre_feedforward_layernorm(h)))
            elif getattr(layer, "use_parallel_residual", False):  # StableLM 2 12B: attention and MLP side by side
                h = h + a + mlp(x)
            else:
                h = h + a
                h = h + mlp(layer.post_attention_layernorm(h))  # a gated MLP, or a sparse mixture of experts
        return inner.norm(h)

    # -- generation ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], max_new_tokens: int | list[int], eos_ids: set[int] | list[int] = (),
                 should_stop: Callable[[list[int]], bool] | None = None, progress: Callable[[int], None] | None = None,
                 ) -> list[list[int]]:
        """Greedy continuations (token ids, without the prompt, ending at and excluding EOS) of every prompt.
        `should_stop(tokens)` ends a row early (stop strings); it is checked every `sync_every` steps, so a row
        may run a few tokens past the stop, which callers cut off as they do for `generate`. `max_new_tokens`
        may be one number or one per prompt."""
        if not prompts:
            return []
        budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        max_new_tokens = max(budgets)
        inner, layers = self._parts()
        device, dtype = inner.embed_tokens.weight.device, inner.embed_tokens.weight.dtype
        rows = min(self.max_batch, len(prompts))
        max_len = max(len(p) for p in prompts) + max_new_tokens + self.sync_every
        self._alloc(rows, max_len, device, dtype, len(layers))
        eos = set(eos_ids)
        reqs = [Request(list(p), budget=b) for p, b in zip(prompts, budgets)]
        # waiting prompts, longest first: long prompts start early and similar lengths prefill together
        waiting = sorted(range(len(reqs)), key=lambda i: -len(reqs[i].ids))
        slots: list[int] = []  # the request held by each active slot; active slots are always 0..n-1
        lengths = torch.zeros(rows, dtype=torch.long, device=device)  # tokens in the cache, per slot
        host_len = [0] * rows  # the same on the host: spans and row moves need no device sync
        last = torch.zeros(rows, dtype=torch.long, device=device)  # the token each slot feeds next
        pending: list[torch.Tensor] = []  # tokens generated since the last sync, one [n] tensor per step
        self.stats = {"decode_steps": 0, "row_steps": 0, "prefills": 0, "shared_prefix": 0}
        self.prefix = self._shared_prefix([r.ids for r in reqs], inner)

        def finished(r: Request) -> bool:
            return (len(r.out) >= r.budget or any(t in eos for t in r.out)
                    or (should_stop is not None and should_stop(r.out)))

        def sync() -> None:
            """Bring the steps since the last sync to the host, retire finished rows, compact the slots."""
            nonlocal slots
            steps = torch.stack(pending).tolist() if pending else []  # one device-to-host copy per sync
            for step in steps:
                for s, tok in enumerate(step):
                    if not reqs[slots[s]].done:
                        reqs[slots[s]].out.append(tok)
            pending.clear()
            keep = []
            for s, ri in enumerate(slots):
                r = reqs[ri]
                if not r.done and finished(r):
                    r.done = True
                    if progress is not None:
                        progress(1)
                if not r.done:
                    keep.append(s)
            if len(keep) != len(slots):
                slots = self._compact(keep, slots, lengths, host_len, last)

        while waiting or slots:
            if waiting and len(slots) < rows:
                take = [waiting.pop(0) for _ in range(min(rows - len(slots), len(waiting)))]
                first = self._prefill(take, reqs, len(slots), lengths, last)
                for j, i in enumerate(take):
                    host_len[len(slots) + j] = len(reqs[i].ids)
                self.stats["prefills"] += 1
                for i, tok in zip(take, first):
                    reqs[i].out.append(tok)
                slots = slots + take
                sync()  # a prompt whose first token ends it leaves at once
                continue
            n = len(slots)
            self.stats["decode_steps"] += 1
            self.stats["row_steps"] += n
            h = inner.embed_tokens(last[:n, None])
            span = max(host_len[:n]) + 1
            h = self._layers_forward(h, lengths[:n, None], slice(0, n), lengths[:n], lengths[:n] + 1, span)
            nxt = self._logits(h[:, -1]).argmax(-1)
            lengths[:n] += 1
            for i in range(n):
                host_len[i] += 1
            last[:n] = nxt
            pending.append(nxt)
            if len(pending) >= self.sync_every:
                sync()
        out = []
        for r in reqs:
            toks = r.out[:r.budget]
            cut = next((i for i, t in enumerate(toks) if t in eos), len(toks))
            out.append(toks[:cut])
        return out

    MIN_SHARED_PREFIX = 8  # tokens: below this, computing a prefix once saves less than it costs

    def _shared_prefix(self, prompts: list[list[int]], inner: Any) -> tuple[int, Any]:
        """The prompts' common first tokens (an instruction header, say), run through the model once; every row's
        prefill then starts from a copy of its keys and values. (length, (keys, values)) or (0, None)."""
        if len(prompts) < 2:
            return 0, None
        n = min(len(p) for p in prompts) - 1  # every row keeps at least one token of its own to prefill
        first = prompts[0]
        p = next((i for i in range(n) if any(q[i] != first[i] for q in prompts)), n)
        if p < self.MIN_SHARED_PREFIX:
            return 0, None
        device = inner.embed_tokens.weight.device
        ids = torch.tensor([first[:p]], device=device)
        self._layers_forward(inner.embed_tokens(ids), torch.arange(p, device=device)[None], slice(0, 1), None, None)
        ck, cv = self.cache
        self.stats["shared_prefix"] = p
        return p, (ck[:, 0:1, :, :p].clone(), cv[:, 0:1, :, :p].clone())

    def _prefill(self, take: list[int], reqs: list[Request], start: int, lengths: torch.Tensor,
                 last: torch.Tensor) -> list[int]:
        """Run the prompts `take` (right-padded, causal) into slots start.. and return their first tokens. With a
        shared prefix, its keys and values are copied in and only each prompt's own tokens are run."""
        inner, _ = self._parts()
        device = lengths.device
        p, kv = self.prefix
        rows = slice(start, start + len(take))
        if p:
            ck, cv = self.cache
            ck[:, rows, :, :p] = kv[0]
            cv[:, rows, :, :p] = kv[1]
        ids = [reqs[i].ids[p:] for i in take]
        longest = max(len(x) for x in ids)
        pad = torch.zeros(len(ids), longest, dtype=torch.long)
        for j, x in enumerate(ids):
            pad[j, : len(x)] = torch.tensor(x)
        pad = pad.to(device)
        lens = torch.tensor([len(x) for x in ids], device=device)
        positions = p + torch.arange(longest, device=device)[None].expand(len(ids), -1)
        h = self._layers_forward(inner.embed_tokens(pad), positions, rows, None, None, offset=p)
        nxt = self._logits(h[torch.arange(len(ids), device=device), lens - 1]).argmax(-1)
        lens = lens + p
        lengths[start: start + len(ids)] = lens
        last[start: start + len(ids)] = nxt
        return nxt.tolist()

    def _compact(self, keep: list[int], slots: list[int], lengths: torch.Tensor, host_len: list[int],
                 last: torch.Tensor) -> list[int]:
        """Fill the holes left by finished rows with active rows from the end: O(finished) row copies."""
        n = len(keep)
        holes = [s for s in range(n) if s not in set(keep)]
        movers = [s for s in keep if s >= n]
        ck, cv = self.cache
        new_slots = list(slots[:n])
        for dst, src in zip(holes, movers):
            span = host_len[src]
            ck[:, dst, :, :span] = ck[:, src, :, :span]
            cv[:, dst, :, :span] = cv[:, src, :, :span]
            lengths[dst], last[dst] = lengths[src], last[src]
            host_len[dst] = host_len[src]
            new_slots[dst] = slots[src]
        return new_slots
