"""Fused merge kernels (Triton) for searches: each candidate tensor in one pass over its sources.

A search merges the same sources thousands of times with different weights and densities, so everything that
depends only on the sources is computed once per search and kept (`SourceStats`): the L1 norm of each task
vector (DARE's rescale), the norms and dot product of slerp's two tensors, and for TIES a histogram of each
task vector's magnitudes by the upper 16 bits of their float32 bit pattern. Per candidate:

- linear, task_arithmetic, slerp: one elementwise pass (slerp's coefficients come from the kept norms and dot).
- dare_linear, dare_ties: the keep mask is evomerge.core.rng's counter-based hash, computed in the kernel from the
  element index and the (seed, tensor, source) keys, so the exported model regenerates it exactly; one pass sums
  the kept magnitudes (the rescale factor), one pass merges.
- ties: the exact k-th largest magnitude without sorting: the kept histogram names the 16-bit bucket holding it,
  one pass histograms the lower 16 bits inside that bucket; entries equal to the threshold are kept lowest index
  first (one more pass counts them per block), then one pass merges. Thresholds stay on the device: no host
  sync per tensor.

Every kernel reads the sources in their stored dtype, rounds them to the recipe's dtype, computes in float32
in the reference's order of operations (evomerge/merging/methods/task_arithmetic.py) and writes the live parameter in
place; whole-tensor sums may differ from the reference in the last float32 bits (summation order). Without a
GPU the same kernels run in Triton's interpreter, which is how the CPU tests check them against the reference.
Which tensors take these kernels is merging/kernels.py's choice. (Over 400 lines: the Triton kernels and the one
merger that launches them, which share block sizes and argument padding.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

if not torch.cuda.is_available():
    # No GPU: the kernels run in Triton's interpreter, which must be chosen before Triton is first imported
    # (its own library functions are compiled or interpreted at import). Without a GPU nothing else runs Triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference path needs no Triton
    triton = None

BLOCK = 1024
MAX_SOURCES = 4
_TL_DTYPES: dict[Any, Any] = {}


def available() -> bool:
    return triton is not None


def _kernel(fn=None, **kwargs):
    if triton is None:
        return fn if fn is not None else (lambda f: f)
    return triton.jit(fn, **kwargs) if fn is not None else triton.jit(**kwargs)


# Triton turns integer arguments equal to 1 into compile-time constants (and recompiles for them); the hash keys
# are data, so they stay ordinary arguments.
_DATA_INTS = [f"{p}{i}" for p in ("a", "b") for i in range(4)]


if triton is not None:
    _TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}

    @_kernel
    def _fmix32(h):
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        h ^= h >> 16
        return h

    @_kernel
    def _uniform(offs, k0, k1):
        """evomerge.core.rng.uniform, element by element: 64-bit integer ops on 32-bit values, as the reference."""
        h = offs.to(tl.int64) ^ k0.to(tl.int64)
        h = _fmix32(h)
        h = (h + k1.to(tl.int64)) & 0xFFFFFFFF
        h = _fmix32(h)
        return (h >> 8).to(tl.float32) * (1.0 / 16777216.0)

    @_kernel
    def _load(ptr, offs, mask, IN_DTYPE: tl.constexpr):
        x = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if IN_DTYPE == tl.bfloat16:
            x = _bf16_rne_bits(x).to(tl.float32, bitcast=True)  # no-op for values already in bf16
        elif IN_DTYPE == tl.float16:
            x = x.to(tl.float16).to(tl.float32)
        return x

    @_kernel
    def _bf16_rne_bits(x):
        """float32 -> bfloat16 rounded to nearest even, as torch does, in integer ops (the same on the GPU and in
        the interpreter, whose own cast truncates); returns float32 bits with the low 16 cleared."""
        bits = x.to(tl.int32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return bits & -65536

    @_kernel
    def _kept(d, offs, mask, dens, k0, k1, thr, m, rank_base, SPARSIFY: tl.constexpr):
        """The sparsified task vector: SPARSIFY 0 none, 1 DARE (hash mask), 2 TIES (magnitude threshold with
        exact-k tie-breaking: entries equal to thr are kept while their global rank is below m)."""
        if SPARSIFY == 1:
            keep = _uniform(offs, k0, k1) < dens
            d = tl.where(keep, d, 0.0)
        elif SPARSIFY == 2:
            a = tl.abs(d)
            eq = (a == thr) & mask
            rank = rank_base + tl.cumsum(eq.to(tl.int64), 0) - eq.to(tl.int64)
            keep = (a > thr) | (eq & (rank < m))
            d = tl.where(keep, d, 0.0)
        return d

    @_kernel(do_not_specialize=_DATA_INTS[:8])
    def _combine(out_ptr, base_ptr, s0, s1, s2, s3, ranks_ptr, r_ptr, thr_ptr, m_ptr, flag_ptr, n,
                 w0, w1, w2, w3, dn0, dn1, dn2, dn3,
                 a0, a1, a2, a3, b0, b1, b2, b3, lam, norm_div,
                 N_SRC: tl.constexpr, HAS_BASE: tl.constexpr, SPARSIFY: tl.constexpr, CONSENSUS: tl.constexpr,
                 NORMALIZE: tl.constexpr, IN_DTYPE: tl.constexpr, OUT_DTYPE: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        """out = base + lam * combine_i(w_i * r_i * sparsify(s_i - base)), or without a base sum_i w_i * s_i."""
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offs < n
        if HAS_BASE:
            b = _load(base_ptr, offs, mask, IN_DTYPE)
        rb0 = 0
        rb1 = 0
        rb2 = 0
        rb3 = 0
        t0 = 0.0
        t1 = 0.0
        t2 = 0.0
        t3 = 0.0
        m0 = 0
        m1 = 0
        m2 = 0
        m3 = 0
        if SPARSIFY == 2:  # TIES: thresholds, kept tie counts and per-block tie ranks, all left on the device
            rb0 = tl.load(ranks_ptr + pid * 4 + 0)
            rb1 = tl.load(ranks_ptr + pid * 4 + 1)
            rb2 = tl.load(ranks_ptr + pid * 4 + 2)
            rb3 = tl.load(ranks_ptr + pid * 4 + 3)
            t0 = tl.load(thr_ptr + 0)
            t1 = tl.load(thr_ptr + 1)
            t2 = tl.load(thr_ptr + 2)
            t3 = tl.load(thr_ptr + 3)
            m0 = tl.load(m_ptr + 0)
            m1 = tl.load(m_ptr + 1)
            m2 = tl.load(m_ptr + 2)
            m3 = tl.load(m_ptr + 3)
        r0 = tl.load(r_ptr + 0)  # DARE's rescale factors stay on the device: no host sync per tensor
        r1 = tl.load(r_ptr + 1)
        r2 = tl.load(r_ptr + 2)
        r3 = tl.load(r_ptr + 3)
        # One block per source, written out: a Triton kernel cannot index a list of pointers, and N_SRC is a
        # compile-time constant, so the unused blocks cost nothing.
        x0 = _load(s0, offs, mask, IN_DTYPE)
        if HAS_BASE:
            x0 = _kept(x0 - b, offs, mask, dn0, a0, b0, t0, m0, rb0, SPARSIFY) * r0
        d0 = x0 * w0
        mixed = d0
        d1 = d0 * 0.0
        d2 = d0 * 0.0
        d3 = d0 * 0.0
        if N_SRC > 1:
            x1 = _load(s1, offs, mask, IN_DTYPE)
            if HAS_BASE:
                x1 = _kept(x1 - b, offs, mask, dn1, a1, b1, t1, m1, rb1, SPARSIFY) * r1
            d1 = x1 * w1
            mixed = mixed + d1
        if N_SRC > 2:
            x2 = _load(s2, offs, mask, IN_DTYPE)
            if HAS_BASE:
                x2 = _kept(x2 - b, offs, mask, dn2, a2, b2, t2, m2, rb2, SPARSIFY) * r2
            d2 = x2 * w2
            mixed = mixed + d2
        if N_SRC > 3:
            x3 = _load(s3, offs, mask, IN_DTYPE)
            if HAS_BASE:
                x3 = _kept(x3 - b, offs, mask, dn3, a3, b3, t3, m3, rb3, SPARSIFY) * r3
            d3 = x3 * w3
            mixed = mixed + d3
        if CONSENSUS:
            major = tl.where(mixed >= 0, 1.0, -1.0)
            g0 = _sign(d0) == major
            mixed = tl.where(g0, d0, 0.0)
            div = tl.where(g0, w0, 0.0)
            if N_SRC > 1:
                g1 = _sign(d1) == major
                mixed = mixed + tl.where(g1, d1, 0.0)
                div = div + tl.where(g1, w1, 0.0)
            if N_SRC > 2:
                g2 = _sign(d2) == major
                mixed = mixed + tl.where(g2, d2, 0.0)
                div = div + tl.where(g2, w2, 0.0)
            if N_SRC > 3:
                g3 = _sign(d3) == major
                mixed = mixed + tl.where(g3, d3, 0.0)
                div = div + tl.where(g3, w3, 0.0)
            div = tl.where(div == 0.0, 1.0, div)
            if NORMALIZE:
                mixed = mixed / div
        elif NORMALIZE:
            mixed = mixed / norm_div
        if HAS_BASE:
            mixed = b + mixed * lam  # x * 1.0 is exact: the reference's "lambda != 1" skip changes nothing
        finite = (mixed == mixed) & (tl.abs(mixed) < float("inf"))
        tl.atomic_max(flag_ptr, tl.max(tl.where(finite | ~mask, 0, 1), 0))  # NaN or inf anywhere in the block
        if OUT_DTYPE == tl.float32:
            tl.store(out_ptr + offs, mixed, mask=mask)
        elif OUT_DTYPE == tl.bfloat16:
            bf = (_bf16_rne_bits(mixed) >> 16).to(tl.int16)
            tl.store(out_ptr + offs, bf.to(tl.bfloat16, bitcast=True), mask=mask)
        else:
            tl.store(out_ptr + offs, mixed.to(OUT_DTYPE), mask=mask)

    @_kernel
    def _sign(x):
        return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))

    @_kernel(do_not_specialize=_DATA_INTS[:8])
    def _kept_abs_sums(base_ptr, s0, s1, s2, s3, sums_ptr, n, dn0, dn1, dn2, dn3, a0, a1, a2, a3, b0, b1, b2, b3,
                       N_SRC: tl.constexpr, IN_DTYPE: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        """Per block, sum |DARE-kept task vector| of each source (the rescale's denominator)."""
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offs < n
        b = _load(base_ptr, offs, mask, IN_DTYPE)
        d = _kept(_load(s0, offs, mask, IN_DTYPE) - b, offs, mask, dn0, a0, b0, 0.0, 0, 0, 1)
        tl.store(sums_ptr + pid * 4 + 0, tl.sum(tl.abs(d), 0))
        if N_SRC > 1:
            d = _kept(_load(s1, offs, mask, IN_DTYPE) - b, offs, mask, dn1, a1, b1, 0.0, 0, 0, 1)
            tl.store(sums_ptr + pid * 4 + 1, tl.sum(tl.abs(d), 0))
        if N_SRC > 2:
            d = _kept(_load(s2, offs, mask, IN_DTYPE) - b, offs, mask, dn2, a2, b2, 0.0, 0, 0, 1)
            tl.store(sums_ptr + pid * 4 + 2, tl.sum(tl.abs(d), 0))
        if N_SRC > 3:
            d = _kept(_load(s3, offs, mask, IN_DTYPE) - b, offs, mask, dn3, a3, b3, 0.0, 0, 0, 1)
            tl.store(sums_ptr + pid * 4 + 3, tl.sum(tl.abs(d), 0))

    @_kernel
    def _low_histograms(base_ptr, s0, s1, s2, s3, hist_ptr, bucket_ptr, n,
                        N_SRC: tl.constexpr, IN_DTYPE: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        """Per source i: histogram (row i of hist, 65536 bins) of the lower 16 bits of |s_i - base| as float32
        bits, over the entries whose upper 16 bits equal bucket[i]."""
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offs < n
        b = _load(base_ptr, offs, mask, IN_DTYPE)
        _bucket_hits(s0, b, offs, mask, hist_ptr, tl.load(bucket_ptr + 0), IN_DTYPE)
        if N_SRC > 1:
            _bucket_hits(s1, b, offs, mask, hist_ptr + 65536, tl.load(bucket_ptr + 1), IN_DTYPE)
        if N_SRC > 2:
            _bucket_hits(s2, b, offs, mask, hist_ptr + 2 * 65536, tl.load(bucket_ptr + 2), IN_DTYPE)
        if N_SRC > 3:
            _bucket_hits(s3, b, offs, mask, hist_ptr + 3 * 65536, tl.load(bucket_ptr + 3), IN_DTYPE)

    @_kernel
    def _bucket_hits(src_ptr, b, offs, mask, hist_ptr, bucket, IN_DTYPE: tl.constexpr):
        bits = tl.abs(_load(src_ptr, offs, mask, IN_DTYPE) - b).to(tl.int32, bitcast=True)
        hit = mask & ((bits >> 16) == bucket)
        tl.atomic_add(hist_ptr + (bits & 0xFFFF), tl.where(hit, 1, 0), mask=hit)

    @_kernel
    def _equal_counts(base_ptr, s0, s1, s2, s3, counts_ptr, thr_ptr, n,
                      N_SRC: tl.constexpr, IN_DTYPE: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        """Per block, how many |s_i - base| equal source i's threshold (for lowest-index-first tie-breaking)."""
        pid = tl.program_id(0)
        t0 = tl.load(thr_ptr + 0)
        t1 = tl.load(thr_ptr + 1)
        t2 = tl.load(thr_ptr + 2)
        t3 = tl.load(thr_ptr + 3)
        offs = pid.to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offs < n
        b = _load(base_ptr, offs, mask, IN_DTYPE)
        a = tl.abs(_load(s0, offs, mask, IN_DTYPE) - b)
        tl.store(counts_ptr + pid * 4 + 0, tl.sum(((a == t0) & mask).to(tl.int64), 0))
        if N_SRC > 1:
            a = tl.abs(_load(s1, offs, mask, IN_DTYPE) - b)
            tl.store(counts_ptr + pid * 4 + 1, tl.sum(((a == t1) & mask).to(tl.int64), 0))
        if N_SRC > 2:
            a = tl.abs(_load(s2, offs, mask, IN_DTYPE) - b)
            tl.store(counts_ptr + pid * 4 + 2, tl.sum(((a == t2) & mask).to(tl.int64), 0))
        if N_SRC > 3:
            a = tl.abs(_load(s3, offs, mask, IN_DTYPE) - b)
            tl.store(counts_ptr + pid * 4 + 3, tl.sum(((a == t3) & mask).to(tl.int64), 0))



def _pad4(values: list, fill) -> list:
    return list(values) + [fill] * (MAX_SOURCES - len(values))


@dataclass
class SourceStats:
    """What depends only on the sources of one output tensor, computed once per search."""

    l1: list[float] = field(default_factory=list)  # sum |s_i - base| per non-base source (float32, as a tensor sum)
    # TIES, [sources, 65537]: [i, j] = entries of source i whose upper 16 bits are >= j (last column 0)
    hist_cum: torch.Tensor | None = None
    slerp: tuple[float, float, float] | None = None  # |v0|, |v1|, <v0, v1> in float64
    l1_device: torch.Tensor | None = None


def _method(method: Any):
    from evomerge.merging.methods import get_method

    return get_method(method) if isinstance(method, str) else method


class FusedMerger:
    """Merges plan tasks into live tensors with the fused kernels. One per live model: it keeps `SourceStats`."""

    def __init__(self, in_dtype: torch.dtype | None):
        if triton is None:
            raise RuntimeError("the fused merge path needs Triton")
        if not torch.cuda.is_available() and not triton.knobs.runtime.interpret:
            raise RuntimeError("without a GPU the fused kernels run only in Triton's interpreter "
                               "(TRITON_INTERPRET=1 set before Triton is imported)")
        self.in_dtype = in_dtype
        self.stats: dict[tuple, SourceStats] = {}
        self._ones: dict[torch.device, torch.Tensor] = {}

    def supports(self, method: Any, task: Any) -> bool:
        """Whether `method` (a MergeMethod or its name) declares a fused form that fits this tensor."""
        form = _method(method).fused
        n_src = len(task.inputs) - (task.base is not None)
        if form is None or not form.gpu or task.copy or n_src > MAX_SOURCES or n_src < 1:
            return False
        if form.kind == "weighted_sum" and len(task.inputs) > MAX_SOURCES:
            return False
        if form.sparsify == "magnitude" and task.shared.get("rescale"):
            return False  # rare (mergekit's default is off): the reference path handles it
        return True

    def _tl_in(self):
        return _TL_DTYPES[self.in_dtype] if self.in_dtype is not None else None

    def _load_ref(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.in_dtype) if self.in_dtype is not None else t
        return t.to(torch.float32)

    def _stats(self, form: Any, task: Any, tensors: list[torch.Tensor]) -> SourceStats:
        key = (task.out_name, tuple(task.inputs), task.base)
        st = self.stats.get(key)
        if st is not None:
            return st
        st = SourceStats()
        if task.base is not None:
            base = self._load_ref(tensors[task.base])
            cums = []
            for i, t in enumerate(tensors):
                if i == task.base:
                    continue
                delta = self._load_ref(t) - base
                st.l1.append(float(delta.abs().sum()))
                if form.sparsify == "magnitude":
                    upper = (delta.abs().reshape(-1).view(torch.int32) >> 16).long()
                    hist = torch.bincount(upper, minlength=1 << 16)
                    cums.append(torch.cat([hist.flip(0).cumsum(0).flip(0), hist.new_zeros(1)]))
                del delta
            if cums:
                st.hist_cum = torch.stack(cums)
            if form.kind == "slerp":
                a = base.reshape(-1).double()
                other = self._load_ref(tensors[1 - task.base]).reshape(-1).double()
                st.slerp = (a.norm().item(), other.norm().item(), float(torch.dot(a, other)))
        self.stats[key] = st
        return st

    def merge_into(self, method: Any, task: Any, tensors: list[torch.Tensor], out: torch.Tensor, seed: int,
                   bad_flag: torch.Tensor) -> None:
        """Write `method`'s merge (by its FusedForm) into `out` (same shape). Sets bad_flag to 1 if any output is
        NaN or inf."""
        from evomerge.core import rng

        form = _method(method).fused
        n = out.numel()
        grid = (triton.cdiv(n, BLOCK),)
        flat = [t.reshape(-1) for t in tensors]
        out_flat = out.view(-1)
        sh, per = task.shared, task.per_input
        if form.kind == "weighted_sum":
            w = [p["weight"] for p in per]
            div = sum(w) if sh["normalize"] else 1.0
            self._launch_combine(out_flat, None, flat, w, None, n, grid, 0, False, sh["normalize"],
                                 bad_flag, norm_div=div)
            return
        st = self._stats(form, task, tensors)
        if form.kind == "slerp":
            from evomerge.merging.methods.slerp import EPS, coefficients

            na, nb, dot = st.slerp
            ca, cb = coefficients(sh["t"], dot / ((na if na > EPS else 1.0) * (nb if nb > EPS else 1.0)))
            pair = [flat[task.base], flat[1 - task.base]]
            self._launch_combine(out_flat, None, pair, [ca, cb], None, n, grid, 0, False, False, bad_flag)
            return
        others = [i for i in range(len(tensors)) if i != task.base]
        base = flat[task.base]
        srcs = [flat[i] for i in others]
        w = [per[i]["weight"] for i in others]
        dens = [per[i].get("density", 1.0) for i in others]
        keys = [rng.mask_keys(seed, task.out_name, i) for i in others]
        consensus = form.consensus
        sparsify, r = 0, None
        thr, m, ranks = None, None, None
        if form.sparsify == "random" and any(d < 1 for d in dens):
            sparsify = 1
            eff = [d if d < 1 else 2.0 for d in dens]  # density >= 1 keeps everything: u < 2 always
            if sh["rescale"]:
                r = self._rescale(base, srcs, eff, keys, st, dens, n, grid)
            dens = eff
        elif form.sparsify == "magnitude" and any(d < 1 for d in dens):
            sparsify = 2
            thr, m, ranks = self._thresholds(base, srcs, dens, st, n, grid)
        self._launch_combine(out_flat, base, srcs, w, r, n, grid, sparsify, consensus, sh["normalize"], bad_flag,
                             dens=dens, keys=keys, thr=thr, m=m, ranks=ranks, lam=sh["lambda"],
                             norm_div=self._plain_div(w))

    @staticmethod
    def _plain_div(w: list[float]) -> float:
        """task_arithmetic / dare_linear with normalize: divide by the weight sum (1 when it is ~0)."""
        s = torch.tensor(w, dtype=torch.float32).sum().item()
        return 1.0 if abs(s) < 1e-8 else s

    def _rescale(self, base, srcs, eff, keys, st, dens, n, grid) -> torch.Tensor:
        """L1 rescale factors |delta| / |kept delta| per source, as a device tensor of 4 (1 where nothing is
        dropped or a norm is ~0, as the reference)."""
        sums = torch.zeros(grid[0], 4, dtype=torch.float32, device=base.device)
        k = _pad4([kk[0] for kk in keys], 0), _pad4([kk[1] for kk in keys], 0)
        _kept_abs_sums[grid](base, *_pad4(srcs, base), sums, n, *_pad4(eff, 2.0), *k[0], *k[1],
                             N_SRC=len(srcs), IN_DTYPE=self._tl_in(), BLOCK_SIZE=BLOCK)
        after = sums.sum(0)
        if st.l1_device is None or st.l1_device.device != base.device:
            st.l1_device = torch.tensor(_pad4(st.l1, 0.0), dtype=torch.float32, device=base.device)
        before = st.l1_device
        drops = torch.tensor(_pad4([d < 1 for d in dens], False), device=base.device)
        tiny = (before < 1e-7) | (after < 1e-7) | ~drops
        return torch.where(tiny, torch.ones_like(after), before / torch.where(tiny, torch.ones_like(after), after))

    def _thresholds(self, base, srcs, dens, st, n, grid):
        """Per source, the exact k-th largest |delta| and how many entries equal to it are kept, as device
        tensors: the host never waits for the GPU here."""
        dev, S = base.device, len(srcs)
        k = torch.tensor([max(1, int(d * n)) for d in dens], dtype=torch.int64, device=dev)
        cum = st.hist_cum
        # the bucket holding the k-th largest: the highest j with cum[j] >= k (cum falls as j grows)
        bucket = (cum >= k[:, None]).sum(1) - 1
        above = cum.gather(1, (bucket + 1)[:, None]).squeeze(1)  # entries in higher buckets
        hist = torch.zeros(MAX_SOURCES, 1 << 16, dtype=torch.int32, device=dev)
        buckets = torch.zeros(MAX_SOURCES, dtype=torch.int32, device=dev)
        buckets[:S] = bucket.to(torch.int32)
        _low_histograms[grid](base, *_pad4(srcs, base), hist, buckets, n, N_SRC=S, IN_DTYPE=self._tl_in(),
                              BLOCK_SIZE=BLOCK)
        low_cum = hist[:S].long().flip(1).cumsum(1).flip(1) + above[:, None]
        low_cum = torch.cat([low_cum, above[:, None]], 1)  # [.., 65536] = entries above the bucket
        low = (low_cum >= k[:, None]).sum(1) - 1
        thr = ((bucket << 16) | low).to(torch.int32).view(torch.float32)
        m = k - low_cum.gather(1, (low + 1)[:, None]).squeeze(1)  # entries equal to thr that are kept
        keep_all = torch.tensor([d >= 1 for d in dens], device=dev)
        keep_none = torch.tensor([d <= 0 for d in dens], device=dev)
        thr = torch.where(keep_all, torch.full_like(thr, -1.0), thr)  # |delta| > -1: everything
        thr = torch.where(keep_none, torch.full_like(thr, float("inf")), thr)
        m = torch.where(keep_all | keep_none, torch.zeros_like(m), m)
        thr4 = torch.full((MAX_SOURCES,), -1.0, dtype=torch.float32, device=dev)
        m4 = torch.zeros(MAX_SOURCES, dtype=torch.int64, device=dev)
        thr4[:S], m4[:S] = thr, m
        counts = torch.zeros(grid[0], 4, dtype=torch.int64, device=dev)
        _equal_counts[grid](base, *_pad4(srcs, base), counts, thr4, n, N_SRC=S, IN_DTYPE=self._tl_in(),
                            BLOCK_SIZE=BLOCK)
        ranks = torch.zeros_like(counts)
        ranks[1:] = counts.cumsum(0)[:-1]
        return thr4, m4, ranks

    def _launch_combine(self, out, base, srcs, w, r, n, grid, sparsify, consensus, normalize, bad_flag,
                        dens=None, keys=None, thr=None, m=None, ranks=None, lam=1.0, norm_div=1.0):
        k = len(srcs)
        dens = dens or [1.0] * k
        keys = keys or [(0, 0)] * k
        if r is None or thr is None:  # placeholders the kernel does not read for this method
            ones = self._ones.get(out.device)
            if ones is None:
                ones = self._ones[out.device] = torch.ones(4, dtype=torch.float32, device=out.device)
            r = ones if r is None else r
        if thr is None:
            thr, m, ranks = ones, ones, ones
        _combine[grid](out, base if base is not None else srcs[0], *_pad4(srcs, srcs[0]), ranks, r, thr, m,
                       bad_flag, n, *_pad4(w, 0.0), *_pad4(dens, 2.0),
                       *_pad4([kk[0] for kk in keys], 0), *_pad4([kk[1] for kk in keys], 0),
                       float(lam), float(norm_div),
                       N_SRC=k, HAS_BASE=base is not None, SPARSIFY=sparsify, CONSENSUS=consensus,
                       NORMALIZE=bool(normalize), IN_DTYPE=self._tl_in(), OUT_DTYPE=_TL_DTYPES[out.dtype],
                       BLOCK_SIZE=BLOCK)
