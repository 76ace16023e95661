"""The fused forms of merge methods on the CPU: each output tensor in a few compiled passes (numba), written
straight into its destination in the output dtype.

The reference `merge` of a method (evomerge/methods) is plain torch: clear, but every step is a pass over the
tensor with a float32 temporary (delta, mask, rescale, weight, sign election ...), and TIES' top-k is a
`kthvalue`. That put `evomerge merge` and each live CPU candidate 100-1000x above the memory floor (issue 21). Here
the same functions, declared by each method's `FusedForm`, run element-wise in compiled loops over both cores:

- weighted_sum: sum_i w_i x_i (/ sum w), one pass;
- slerp: one pass for the norms and the dot product, one for c0 x_base + c1 x_other;
- task_vectors: one pass that combines base and sparsified, weighted deltas (sign election included); DARE's mask
  is evomerge.core.rng's counter hash computed in the loop (bit for bit the reference's numbers); `rescale` adds a
  pass for the L1 sums (which keeps the masks, so the output pass does not hash again), or, in a live merge,
  reads them from DareTables (no pass); the sums are rounded to float32 as if summed exactly, so every order
  of summation gives the same bits; TIES' exact top-k is
  found with two 16-bit histogram passes over the magnitudes' bits (equal magnitudes kept lowest index first, as
  the reference does), Breadcrumbs' band of ranks with two such top-k cuts (equal magnitudes ranked by index,
  as the reference's stable sort does).

bfloat16 sources are read as raw 16-bit words and widened in the loop; bfloat16 outputs are rounded to nearest
even as torch does. Results equal the reference up to float32 rounding of whole-tensor sums (DARE's rescale,
slerp's norms) and of fused arithmetic: tests/merging/test_fused_cpu.py checks every form against it, and the
mergekit-equivalence tests run through here. Output loops flag blocks holding a NaN or an infinity (after rounding
to the output dtype) as they write. `evomerge merge` and the live merge of a search both reach these kernels
through merging/kernels.py's one chooser, so an export still equals the scored candidate bit for bit. (Over 400
lines: every form's host-side preparation, which shares the top-k and rounding helpers; the loops themselves are
cpu_kernels.py.)
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import math
import os
import sys
import threading
import types as pytypes
from typing import Any

import numpy as np
import torch

from evomerge.core import rng
from evomerge.merging.methods.base import FusedForm, MergeMethod


_KERNEL_DTYPES = (torch.float32, torch.bfloat16)  # what the kernels read and write
_BLOCK = 8192  # elements per block of the block-wise passes (sums, histograms): cpu_kernels._BLOCK
_PARALLEL_FROM = 1 << 18  # elements: smaller tensors merge on one thread


def available() -> bool:
    """Whether numba is installed (it is a dependency; without it every tensor takes the reference path)."""
    return importlib.util.find_spec("numba") is not None


def _array(t: torch.Tensor) -> np.ndarray:
    """A flat numpy view of a contiguous CPU tensor (bfloat16 as its raw 16-bit words)."""
    flat = t.reshape(-1)
    if t.dtype == torch.bfloat16:
        return flat.view(torch.int16).numpy().view(np.uint16)
    return flat.numpy()


def supports(method: MergeMethod, tensors: list[torch.Tensor], out: torch.Tensor,
             in_dtype: torch.dtype | None) -> bool:
    """Whether this tensor can take the compiled path: a method with a CPU form, CPU tensors of one kernel dtype,
    a recipe dtype the kernels can honour, and an output they can write."""
    form = method.fused
    if form is None or not available() or form.kind not in ("weighted_sum", "slerp", "task_vectors"):
        return False
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _KERNEL_DTYPES or out.dtype not in _KERNEL_DTYPES:
        return False
    if in_dtype not in (None, torch.float32, torch.bfloat16):
        return False
    if any(t.device.type != "cpu" for t in tensors) or out.device.type != "cpu" or not out.is_contiguous():
        return False
    n = out.numel()
    return n < 2**32 and all(t.numel() == n for t in tensors)  # the mask hash counts in 32 bits


def _threads(n: int) -> None:
    """Numba's pool as wide as torch's, so a merge uses the cores the user gave torch (`torch.set_num_threads`);
    one thread for small tensors, where waking the pool costs more than it saves (and its OpenMP threads spin
    after each loop, which starves other processes: many search workers on few cores)."""
    import numba

    want = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)) if n >= _PARALLEL_FROM else 1
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)


def merge_into(method: MergeMethod, tensors: list[torch.Tensor], base: int | None, shared: dict,
               per_input: list[dict], out: torch.Tensor, seed: int, name: str,
               in_dtype: torch.dtype | None, tables: DareTables | None = None) -> int:
    """Merge `tensors` (one task's sources) into `out` with the method's fused form; returns 1 if an output
    element is NaN or inf after rounding to the output dtype, else 0 (a usable merge). Call only where `supports`
    said yes; `tables`: a live merge's DareTables for this tensor."""
    with _lock:
        _threads(out.numel())
        return _merge_into(method, tensors, base, shared, per_input, out, seed, name, in_dtype, tables)


def _merge_into(method, tensors, base, shared, per_input, out, seed, name, in_dtype, tables=None) -> int:
    from evomerge.merging import cpu_kernels as ck

    if in_dtype == torch.bfloat16:  # the recipe's dtype rounds float32 sources first, as the reference does
        tensors = [t.to(torch.bfloat16) for t in tensors]
    tensors = [t.contiguous() for t in tensors]
    arrays = [_array(t) for t in tensors]
    dst = _array(out)
    form: FusedForm = method.fused
    if form.kind == "weighted_sum":
        w = np.array([p["weight"] for p in per_input], np.float32)
        divisor = np.float32(sum(p["weight"] for p in per_input))
        bad = _flags(dst)
        _kernels(len(arrays)).weighted_sum(*arrays, w, bool(shared["normalize"]), divisor, dst, bad)
        return int(bad.any())
    if form.kind == "slerp":
        from evomerge.merging.methods.slerp import EPS, coefficients

        a, b = arrays[base], arrays[1 - base]
        part = np.zeros(((a.size + _BLOCK - 1) // _BLOCK, 3), np.float64)
        ck._dots(a, b, part)
        aa, bb, ab = part.sum(0)
        na = math.sqrt(aa) if math.sqrt(aa) > EPS else 1.0
        nb = math.sqrt(bb) if math.sqrt(bb) > EPS else 1.0
        ca, cb = coefficients(shared["t"], ab / (na * nb))
        bad = _flags(dst)
        ck._lincomb(a, b, np.float32(ca), np.float32(cb), dst, bad)
        return int(bad.any())
    return _task_vectors_into(form, arrays, base, shared, per_input, dst, seed, name, tables)


def _task_vectors_into(form: FusedForm, arrays: list[np.ndarray], base: int, shared: dict, per_input: list[dict],
                       dst: np.ndarray, seed: int, name: str, tables: DareTables | None = None) -> int:
    others = [i for i in range(len(arrays)) if i != base]
    base_a = arrays[base]
    if not others:
        bad = _flags(dst)
        _kernels(1).weighted_sum(base_a, np.ones(1, np.float32), False, np.float32(1), dst, bad)
        return int(bad.any())
    S = len(others)
    n = base_a.size
    xs = tuple(arrays[i] for i in others)
    dens = np.full(S, 1 << 25, np.uint32)  # DARE keeps u24 < dens[j]; uniforms are < 1: 2**25 keeps everything
    k0 = np.zeros(S, np.uint32)
    k1 = np.zeros(S, np.uint32)
    thr = np.zeros(S, np.uint32)  # magnitude bits above thr are kept, equal ones up to index cut
    cut = np.full(S, n, np.int64)
    thr2 = np.full(S, 0xFFFFFFFF, np.uint32)  # Breadcrumbs' outlier cut: nothing by default
    cut2 = np.full(S, n, np.int64)
    ks = np.zeros(S, np.int64)
    ks2 = np.zeros(S, np.int64)
    sparse = np.zeros(S, np.bool_)
    for row, i in enumerate(others):
        density = per_input[i].get("density", 1.0)
        if form.sparsify == "random" and density < 1:
            sparse[row] = True
            dens[row] = _keep_below(density)
            k0[row], k1[row] = rng.mask_keys(seed, name, i)
        elif form.sparsify == "magnitude" and density < 1 and n > 0:
            sparse[row] = True
            if density <= 0:
                thr[row], cut[row] = 0xFFFFFFFF, -1  # nothing kept
            else:
                ks[row] = min(n, max(1, int(density * n)))
        elif form.sparsify == "outliers" and density < 1 and n > 0:
            # the reference keeps ascending (stable) magnitude ranks [bottom, bottom + target): the top n - bottom
            # less the top n - bottom - target, equal magnitudes ranked by index
            sparse[row] = True
            target = max(0, int(density * n))
            bottom = max(0, n - target - int(per_input[i]["gamma"] * n))
            ks[row], ks2[row] = n - bottom, n - bottom - target
            if ks[row] == 0:
                thr[row] = 0xFFFFFFFF  # an empty top: nothing kept
            else:
                cut[row] = 0  # with ks == n: everything is in the top
    if form.sparsify == "outliers":
        select = (ks > 0) & (ks < n)
        if select.any():
            _top_k_thresholds(base_a, xs, select, ks, thr, cut, lowest_first=False)
        select2 = ks2 > 0
        if select2.any():
            _top_k_thresholds(base_a, xs, select2, ks2, thr2, cut2, lowest_first=False)
    elif (ks > 0).any():
        _top_k_thresholds(base_a, xs, ks > 0, ks, thr, cut)
    kernels = _kernels(S)
    sp = form.sparsify if form.sparsify and sparse.any() else "none"
    scale = np.ones(S, np.float32)
    use_tables = tables is not None and sp == "random" and tables.sorted_u.shape == (S, n)
    # DARE's rescale stores the masks between its two passes; with tables there is one pass, which hashes
    masks = _mask_buffer(S, n if sp == "random" and shared.get("rescale") and not use_tables else 0)
    if shared.get("rescale") and sparse.any():
        if use_tables:
            sums = [(tables.total(row), tables.kept(row, int(dens[row]))) for row in range(S)]
        else:
            part = np.zeros(((n + _BLOCK - 1) // _BLOCK, S, 2), np.float64)
            getattr(kernels, f"sums_{sp}")(base_a, *xs, dens, k0, k1, thr, cut, thr2, cut2, masks, part)
            if sp == "random":
                sp = "masked"
            exact: list[np.ndarray] = []

            def exact_sum(row: int, which: int) -> np.float32:
                if not exact:  # rare: one exact pass for the tensor's every sum
                    exact.append(np.zeros((S, 2, 256), np.int64))
                    getattr(kernels, f"exact_{sp}")(base_a, *xs, dens, k0, k1, thr, cut, thr2, cut2, masks, exact[0])
                return _exact_f32(exact[0][row, which])

            total = part.sum(0)
            terms = _BLOCK + part.shape[0]  # float64 additions on any path to the sum: a block's, then the blocks'
            sums = [(_rounded(total[row, 0], terms, lambda r=row: exact_sum(r, 0)),
                     _rounded(total[row, 1], terms, lambda r=row: exact_sum(r, 1))) for row in range(S)]
        for row in range(S):
            before, after = sums[row]
            if sparse[row] and not (before < 1e-7 or after < 1e-7):
                scale[row] = before / after
    w = np.array([per_input[i]["weight"] for i in others], np.float32)
    divisor = w.sum(dtype=np.float32)
    if abs(divisor) < 1e-8:
        divisor = np.float32(1.0)
    kernel = getattr(kernels, f"tv_{sp}_{int(form.consensus)}")
    bad = _flags(dst)
    kernel(base_a, *xs, dens, k0, k1, thr, cut, thr2, cut2, masks, scale, w, bool(shared["normalize"]), divisor,
           np.float32(shared["lambda"]), dst, bad)
    return int(bad.any())


_U = 2.0**-53  # float64's unit roundoff


def _rounded(approx: float, terms: int, exact) -> np.float32:
    """A sum of non-negative float32 numbers, rounded to float32 as if it had been summed exactly: `approx` is a
    float64 sum along any order with at most `terms` additions on each path, so it is within terms * 2**-53 *
    approx of the exact sum; where that interval rounds to one float32 (almost always), that is the answer,
    else `exact()` is. Every order of summation then gives the same float32."""
    bound = (terms + 4) * _U * abs(approx) * 1.001 + 1e-300
    lo, hi = np.float32(approx - bound), np.float32(approx + bound)
    return lo if lo == hi and math.isfinite(approx) else exact()


def _exact_f32(acc: np.ndarray) -> np.float32:
    """The float32 nearest (ties to even) to the exact sum held in an accumulator of cpu_kernels._exact_add."""
    if acc[255]:
        return np.float32("nan")
    total = sum(int(c) << (e - 1) for e, c in enumerate(acc[:255].tolist()) if c)  # in units of 2**-149
    shift = max(0, total.bit_length() - 24)
    q, r = divmod(total, 1 << shift) if shift else (total, 0)
    if shift and (r > 1 << (shift - 1) or (r == 1 << (shift - 1) and q & 1)):
        q += 1
    with np.errstate(over="ignore"):
        return np.float32(q * 2.0 ** (shift - 149))


class DareTables:
    """What a live DARE merge with `rescale` can keep between candidates, for one output tensor.

    A search draws every candidate's masks from the same streams (one seed): only the densities change. Each
    source's |delta| values are stored grouped by the top bits of their mask numbers (u24), with each group's
    sum, so a candidate's kept L1 sum (the sum over u24 < T) is the groups below T's plus the few elements of
    T's own group: no pass over the tensor. That pass (hashing every element, storing the masks) was over half
    of each candidate's merge; the output pass hashes again instead of reading stored masks (storing the mask
    numbers instead made the output pass memory-bound and slower). Memory: 8 bytes per source element, which
    is why LiveMerge caps what it builds."""

    def __init__(self, arrays: list[np.ndarray], base: int, seed: int, name: str):
        from evomerge.merging import cpu_kernels as ck

        others = [i for i in range(len(arrays)) if i != base]
        n = arrays[base].size
        S = len(others)
        bits = min(12, max(0, n.bit_length() - 7))  # about 64 elements per bin or more; few bins sort fast
        self.shift = 24 - bits
        self.sorted_u = np.empty((S, n), np.uint32)
        self.sorted_absd = np.empty((S, n), np.float32)
        self.offsets = np.empty((S, (1 << bits) + 1), np.int64)
        self.below = np.zeros((S, (1 << bits) + 1), np.float64)  # below[b]: the sum of bins < b (below[-1]: all)
        self.widest = np.zeros(S, np.int64)
        with _lock:
            _threads(n)
            absd = _buffer("absd", (n,), np.float32)
            u = _buffer("u24", (n,), np.uint32)
            for row, i in enumerate(others):
                k0, k1 = rng.mask_keys(seed, name, i)
                ck._u24_fill(np.uint32(k0), np.uint32(k1), u)
                ck._absd_fill(arrays[base], arrays[i], absd)
                binsum = np.zeros(1 << bits, np.float64)
                self.widest[row] = ck._group(u, absd, np.uint32(self.shift), self.sorted_u[row],
                                             self.sorted_absd[row], self.offsets[row], binsum)
                np.cumsum(binsum, out=self.below[row, 1:])
        self.nbytes = self.sorted_u.nbytes + self.sorted_absd.nbytes
        self._totals = [self._sum(row, len(self.below[row]) - 1, 0, 0) for row in range(S)]

    def total(self, row: int) -> np.float32:
        """The float32 L1 sum of source `row`'s delta (rounded as `_rounded` does)."""
        return self._totals[row]

    def kept(self, row: int, below: int) -> np.float32:
        """The float32 L1 sum of source `row`'s delta over the elements its mask keeps (u24 < below)."""
        if below >= 1 << 24:
            return self.total(row)
        b = below >> self.shift
        start, end = int(self.offsets[row, b]), int(self.offsets[row, b + 1])
        return self._sum(row, b, start, end, below)

    def _sum(self, row: int, b: int, start: int, end: int, below: int = 0) -> np.float32:
        from evomerge.merging import cpu_kernels as ck

        part = self.sorted_absd[row, start:end][self.sorted_u[row, start:end] < below]
        approx = float(self.below[row, b]) + float(part.sum(dtype=np.float64))
        # additions on a path to the sum: a bin's (its count + the chunks'), the bins', the partial bin's
        terms = int(self.widest[row]) + ck._CHUNKS + len(self.below[row]) + len(part)

        def exact() -> np.float32:
            acc = np.zeros(256, np.int64)
            ck._exact_acc(self.sorted_absd[row, :int(self.offsets[row, b])], acc)
            ck._exact_acc(np.ascontiguousarray(part), acc)
            return _exact_f32(acc)

        return _rounded(approx, terms, exact)


def dare_tables(method: MergeMethod, tensors: list[torch.Tensor], base: int | None, shared: dict, seed: int,
                name: str, in_dtype: torch.dtype | None) -> DareTables | None:
    """DareTables for a tensor whose fused form draws DARE masks and rescales, else None."""
    form = method.fused
    if form is None or form.kind != "task_vectors" or form.sparsify != "random" or not shared.get("rescale") \
            or base is None or len(tensors) < 2:
        return None
    if in_dtype == torch.bfloat16:
        tensors = [t.to(torch.bfloat16) for t in tensors]
    arrays = [_array(t.contiguous()) for t in tensors]
    return DareTables(arrays, base, seed, name)


def _keep_below(density: float) -> int:
    """The integer T with (u24 < T) == (u24 / 2**24 < density), the density rounded to float32 as the reference
    compares it: u24 / 2**24 is exact in float32, so u < d exactly when u24 < d * 2**24 (exact in float64)."""
    return min(1 << 25, max(0, math.ceil(float(np.float32(density)) * (1 << 24))))


def _flags(dst: np.ndarray) -> np.ndarray:
    """One flag per block of the output kernels: set where the block holds a NaN or an infinity."""
    return np.zeros((dst.size + _BLOCK - 1) // _BLOCK, np.uint32)


def _top_k_thresholds(base_a, xs, which, ks, thr, cut, lowest_first: bool = True) -> None:
    """For each selected source: the bits T of its k-th largest |delta| (two 16-bit histogram passes) and, when
    not every magnitude equal to T fits in the k, which of those are in: lowest index first (the reference's
    `top_k`; cut = the last index kept) or highest first (Breadcrumbs' stable ascending sort; cut = the first
    index kept), so the output pass decides each element on its own."""
    import numba

    from evomerge.merging.cpu_kernels import _equal_counts, _magnitude_hist, _nth_equal

    S = len(xs)
    n = base_a.size
    chunks = max(1, numba.get_num_threads())
    hist = np.zeros((chunks, S, 1 << 16), np.int64)
    _magnitude_hist(base_a, xs, which, 16, np.zeros(S, np.uint32), hist)
    high = hist.sum(0)
    prefix = np.zeros(S, np.uint32)
    above = np.zeros(S, np.int64)
    for j in range(S):
        if which[j]:
            prefix[j], above[j] = _bin_of_kth(high[j], ks[j])
    hist[:] = 0
    _magnitude_hist(base_a, xs, which, 0, prefix, hist)
    low = hist.sum(0)
    room = np.zeros(S, np.int64)
    need_order = np.zeros(S, np.bool_)
    for j in range(S):
        if not which[j]:
            continue
        lb, above_low = _bin_of_kth(low[j], ks[j] - above[j])
        thr[j] = (int(prefix[j]) << 16) | int(lb)
        room[j] = ks[j] - above[j] - above_low
        need_order[j] = room[j] < low[j][lb]
        if not lowest_first:
            cut[j] = 0  # every equal magnitude in, unless ordered below
            room[j] = low[j][lb] - room[j]  # from here on: how many equal magnitudes are left out, lowest first
    if not need_order.any():
        return
    counts = np.zeros((S, (n + _BLOCK - 1) // _BLOCK), np.int64)
    _equal_counts(base_a, xs, need_order, thr, counts)
    for j in np.flatnonzero(need_order):
        if room[j] == 0:
            cut[j] = -1 if lowest_first else 0
            continue
        running = np.cumsum(counts[j])
        blk = int(np.searchsorted(running, room[j]))  # the block holding the room-th equal magnitude
        before = int(running[blk - 1]) if blk > 0 else 0
        lo = blk * _BLOCK
        if lowest_first:  # the room-th equal magnitude is the last one in
            cut[j] = _nth_equal(base_a, xs[j], thr[j], lo, min(n, lo + _BLOCK), room[j] - 1 - before)
        else:  # the first `room` equal magnitudes are out: the one after them is the first in
            cut[j] = _nth_equal(base_a, xs[j], thr[j], lo, min(n, lo + _BLOCK), room[j] - 1 - before) + 1


def _bin_of_kth(hist: np.ndarray, k: int) -> tuple[int, int]:
    """The bin holding the k-th largest value of a histogram, and how many values lie in higher bins."""
    above = np.cumsum(hist[::-1])  # above[i]: values in the top i + 1 bins
    top = int(np.searchsorted(above, k))  # the first count of top bins reaching k
    b = len(hist) - 1 - top
    return b, int(above[top - 1]) if top > 0 else 0


# Generated kernels. numba cannot keep a tuple of per-source values in registers across a loop over a runtime
# number of sources (a loop over blocks with scratch arrays ran 3-5x slower), so the element loops are written
# out for each source count: one module text per count, saved under $EVOMERGE_CACHE/cpu_kernels and imported,
# so numba's on-disk cache keeps the compiled code between runs (compiling all of them takes about a minute).

def _source(S: int) -> str:
    xs = ", ".join(f"x{j}" for j in range(S))
    head = [
        '"""evomerge.merging.fused_cpu kernels for %d source(s): generated, do not edit."""' % S,
        "import math", "import numpy as np", "from numba import njit, prange",
        "from evomerge.merging.cpu_kernels import _bits, _exact_add, _load, _sign, _store, _u24",
        "Z = np.float32(0.0)", "ONE = np.float32(1.0)", "MASK = np.uint32(0x7FFFFFFF)", "EXP = np.uint32(0x7F800000)",
        "",
    ]
    out = list(head)
    jit = "@njit(parallel=True, nogil=True, cache=True, error_model='numpy')"
    # block sums may be reassociated (vectorised); blocks are fixed, so the result does not depend on threads
    fast = "@njit(parallel=True, nogil=True, cache=True, error_model='numpy', fastmath={'reassoc'})"
    loads = [f"    {v}{j} = {a}[{j}]" for j in range(S) for v, a in
             (("dens", "dens"), ("ka", "k0"), ("kb", "k1"), ("thr", "thr"), ("cut", "cut"), ("thrb", "othr"),
              ("cutb", "ocut"))]

    def delta(sp: str, j: int, ind: str) -> list[str]:
        lines = [f"{ind}d{j} = _load(x{j}, e) - b"]
        if sp == "random":
            lines.append(f"{ind}k{j} = _u24(e, ka{j}, kb{j}) < dens{j}")
        elif sp == "masked":
            lines.append(f"{ind}k{j} = masks[{j}, e] != 0")
        elif sp == "magnitude":  # the top k, equal magnitudes lowest index first
            lines += [f"{ind}m{j} = _bits(d{j}) & MASK",
                      f"{ind}k{j} = (m{j} > thr{j}) | ((m{j} == thr{j}) & (e <= cut{j}))"]
        elif sp == "outliers":  # the top k1 less the top k2, equal magnitudes highest index first
            lines += [f"{ind}m{j} = _bits(d{j}) & MASK",
                      f"{ind}k{j} = ((m{j} > thr{j}) | ((m{j} == thr{j}) & (e >= cut{j}))) & "
                      f"(((m{j} > thrb{j}) | ((m{j} == thrb{j}) & (e >= cutb{j}))) ^ True)"]
        return lines

    # output loops run over fixed blocks with unsigned indices and flag each block holding a NaN or an infinity
    # (after rounding to the output dtype): an integer OR inside the loop vectorises, a count did not
    blocks = ["    n = out.size", "    for blk in prange(bad.size):", f"        lo = np.uint64(blk * {_BLOCK})",
              f"        hi = np.uint64(min(n, blk * {_BLOCK} + {_BLOCK}))", "        flag = np.uint32(0)",
              "        for e in range(lo, hi):"]
    flag = ["            flag |= np.uint32((_bits(_load(out, e)) & EXP) == EXP)", "        bad[blk] = flag", ""]
    out += [jit, f"def weighted_sum({xs}, w, normalize, divisor, out, bad):"]
    out += [f"    w{j} = w[{j}]" for j in range(S)]
    out += blocks + ["            acc = " + " + ".join(f"w{j} * _load(x{j}, e)" for j in range(S)),
                     "            _store(out, e, acc / divisor if normalize else acc)", *flag]
    for sp in ("masked", "magnitude", "outliers"):  # exact rescale sums, where the float64 ones cannot decide
        out += ["@njit(nogil=True, cache=True, error_model='numpy')",
                f"def exact_{sp}(base, {xs}, dens, k0, k1, thr, cut, othr, ocut, masks, acc):", *loads]
        out += ["    for e in range(np.uint64(base.size)):", "        b = _load(base, e)"]
        for j in range(S):
            out += delta(sp, j, "        ")
            out += [f"        a{j} = abs(d{j})", f"        _exact_add(acc[{j}, 0], a{j})",
                    f"        if k{j}:", f"            _exact_add(acc[{j}, 1], a{j})"]
        out.append("")
    for sp in ("none", "random", "magnitude", "outliers", "masked"):
        out += [fast, f"def sums_{sp}(base, {xs}, dens, k0, k1, thr, cut, othr, ocut, masks, part):", *loads]
        # unsigned indices: numba then drops its negative-index check, which kept these loops from vectorising
        out += ["    n = base.size", "    for blk in prange(part.shape[0]):",
                f"        lo = np.uint64(blk * {_BLOCK})", f"        hi = np.uint64(min(n, blk * {_BLOCK} + {_BLOCK}))"]
        out += [f"        f{j} = 0.0\n        g{j} = 0.0" for j in range(S)]
        out += ["        for e in range(lo, hi):", "            b = _load(base, e)"]
        for j in range(S):
            out += delta(sp, j, "            ")
            if sp == "random":  # the output pass reads the mask instead of hashing again
                out.append(f"            masks[{j}, e] = k{j}")
            out += [f"            a{j} = np.float64(abs(d{j}))", f"            f{j} += a{j}",
                    f"            g{j} += a{j}" + (f" if k{j} else 0.0" if sp != "none" else "")]
        out += [f"        part[blk, {j}, 0] = f{j}\n        part[blk, {j}, 1] = g{j}" for j in range(S)] + [""]
        for consensus in (0, 1):
            out += [jit, f"def tv_{sp}_{consensus}(base, {xs}, dens, k0, k1, thr, cut, othr, ocut, masks, scale, w, "
                         "normalize, divisor, lam, out, bad):", *loads]
            out += [f"    s{j} = scale[{j}]\n    w{j} = w[{j}]" for j in range(S)]
            body = ["b = _load(base, e)"]
            for j in range(S):
                body += delta(sp, j, "")
                if sp != "none":
                    body.append(f"d{j} = d{j} if k{j} else d{j} * Z")
                body.append(f"d{j} = (d{j} * s{j}) * w{j}")
            if consensus:
                body += ["tot = " + " + ".join(f"d{j}" for j in range(S)), "maj = ONE if tot >= 0 else -ONE"]
                body += [f"a{j} = ONE if _sign(d{j}) == maj else Z" for j in range(S)]
                body += ["mixed = " + " + ".join(f"d{j} * a{j}" for j in range(S)),
                         "div = " + " + ".join(f"w{j} * a{j}" for j in range(S)), "if div == 0:", "    div = ONE"]
            else:
                body += ["mixed = " + " + ".join(f"d{j}" for j in range(S)), "div = divisor"]
            body += ["if normalize:", "    mixed = mixed / div", "if lam != 1:", "    mixed = mixed * lam",
                     "_store(out, e, b + mixed)"]
            out += blocks + ["            " + line for line in body] + flag
    return "\n".join(out)


_modules: dict[int, Any] = {}  # compiled kernel modules of this process, by source count
_lock = threading.Lock()  # numba's default thread pool must not be entered from two threads at once
_scratch: dict[str, np.ndarray] = {}  # working memory reused (under _lock) from tensor to tensor, by use


def _buffer(use: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A scratch array, reused: fresh memory for a large tensor's DARE masks cost more than both passes over it
    (page faults: 85 ms against 21 for an embedding's 57 MB on the 2-core machine here)."""
    need = math.prod(shape) * np.dtype(dtype).itemsize
    held = _scratch.get(use)
    if held is None or held.size < need:
        held = _scratch[use] = np.empty(need, np.uint8)
    return held[:need].view(dtype).reshape(shape)


def _mask_buffer(S: int, n: int) -> np.ndarray:
    return _buffer("masks", (S, n), np.bool_)


def _kernels(S: int) -> Any:
    mod = _modules.get(S)
    if mod is not None:
        return mod
    src = _source(S)
    import numba

    from evomerge.merging import cpu_kernels as ck

    # numba's cache does not see changes in the helpers the kernels call: they are part of the key
    helpers = "".join(inspect.getsource(f) for f in (ck._load_impl, ck._store_impl, ck._fmix32.py_func,
                                                     ck._u24.py_func, ck._sign.py_func, ck._exact_add.py_func))
    digest = hashlib.sha1((src + helpers + numba.__version__).encode()).hexdigest()[:12]
    name = f"evomerge_cpu_kernels_{S}_{digest}"
    from evomerge.core.assets import cache_root

    folder = cache_root() / "cpu_kernels"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.py"
        if not path.exists() or path.read_text() != src:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(src)
            os.replace(tmp, path)  # another process may write the same text at the same time
            for old in folder.glob(f"evomerge_cpu_kernels_{S}_*"):  # other versions' kernels and numba caches
                if old != path:
                    old.unlink(missing_ok=True)
            for old in (folder / "__pycache__").glob(f"evomerge_cpu_kernels_{S}_*"):
                if not old.name.startswith(name):
                    old.unlink(missing_ok=True)
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # numba's cache finds the module by name when it loads compiled code
        spec.loader.exec_module(mod)
    except OSError:  # no writable cache: compile in memory, every run
        mod = pytypes.ModuleType(name)
        exec(compile(src.replace("cache=True", "cache=False"), name, "exec"), mod.__dict__)
    _modules[S] = mod
    return mod
