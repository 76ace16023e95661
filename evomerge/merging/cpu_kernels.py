"""The compiled pieces of evomerge/merging/fused_cpu.py (numba): bit casts, bfloat16 loads and stores, the DARE hash, and
the block-wise passes whose loops do not depend on the number of sources (histograms, tie counts, slerp's
dots). Kept apart so that importing evomerge does not import numba; fused_cpu loads this on a merge's first
tensor. The element loops per source count are generated (fused_cpu._source)."""

import math  # noqa: F401  (generated kernels use it through their own import)

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload

_BLOCK = 8192  # elements per block of the block-wise passes (sums, histograms); fused_cpu uses the same



@intrinsic
def _f32(typingctx, bits):
    """The float32 whose bits are `bits` (uint32)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.uint32), codegen

@intrinsic
def _bits(typingctx, x):
    """The bits (uint32) of the float32 `x`."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint32))
    return types.uint32(types.float32), codegen

def _load(a, i):
    pass

@overload(_load)
def _load_impl(a, i):
    if a.dtype == types.uint16:  # bfloat16 words
        def impl(a, i):
            return _f32(np.uint32(a[i]) << np.uint32(16))
        return impl
    return lambda a, i: a[i]

def _store(a, i, v):
    pass

@overload(_store)
def _store_impl(a, i, v):
    if a.dtype == types.uint16:  # round to nearest even, as torch's float -> bfloat16
        def impl(a, i, v):
            b = _bits(v)
            if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
                a[i] = np.uint16(0x7FC0)
            else:
                a[i] = np.uint16((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
        return impl

    def impl(a, i, v):
        a[i] = v
    return impl

@njit(inline="always")
def _fmix32(h):
    h ^= h >> np.uint32(16)
    h = np.uint32(h * np.uint32(0x85EBCA6B))
    h ^= h >> np.uint32(13)
    h = np.uint32(h * np.uint32(0xC2B2AE35))
    h ^= h >> np.uint32(16)
    return h

@njit(inline="always")
def _u24(i, k0, k1):
    """The 24 bits of evomerge.core.rng.uniform's number for element i of the stream (k0, k1): fmix32(fmix32(i ^ k0) +
    k1) >> 8; the uniform is u24 / 2**24, so `uniform < density` is `u24 < fused_cpu._keep_below(density)`
    (integer compares vectorise better than converting every number to float)."""
    h = _fmix32(np.uint32(np.uint32(i) ^ k0))
    h = _fmix32(np.uint32(h + k1))
    return h >> np.uint32(8)

@njit(inline="always")
def _sign(x):
    if x > 0:
        return np.float32(1.0)
    if x < 0:
        return np.float32(-1.0)
    return np.float32(0.0)

@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def _magnitude_hist(base, xs, which, shift, prefix, hist):
    """Per block, per selected source: histogram of 16 bits of |delta|'s bits at `shift`, counting only
    magnitudes whose bits above shift + 16 equal prefix[j] (the high bin found by the first pass)."""
    n = base.size
    S = len(xs)
    nchunk = hist.shape[0]
    per = (n + nchunk - 1) // nchunk
    for c in prange(nchunk):
        lo = np.uint64(c * per)
        hi = np.uint64(min(n, c * per + per))
        for j in range(S):
            if not which[j]:
                continue
            x = xs[j]
            p = prefix[j]
            h = hist[c, j]
            for i in range(lo, hi):
                bits = _bits(_load(x, i) - _load(base, i)) & np.uint32(0x7FFFFFFF)
                if shift == 0:
                    if (bits >> np.uint32(16)) == p:
                        h[bits & np.uint32(0xFFFF)] += 1
                else:
                    h[bits >> np.uint32(16)] += 1

@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def _equal_counts(base, xs, which, thr, counts):
    """counts[j, blk]: magnitudes of source j in block blk whose bits equal the threshold thr[j]."""
    n = base.size
    S = len(xs)
    nblk = counts.shape[1]
    for blk in prange(nblk):
        lo = np.uint64(blk * _BLOCK)
        hi = np.uint64(min(n, blk * _BLOCK + _BLOCK))
        for j in range(S):
            if not which[j]:
                continue
            x = xs[j]
            T = thr[j]
            c = 0
            for i in range(lo, hi):
                if (_bits(_load(x, i) - _load(base, i)) & np.uint32(0x7FFFFFFF)) == T:
                    c += 1
            counts[j, blk] = c

@njit(nogil=True, cache=True)
def _nth_equal(base, x, T, lo, hi, r):
    """The index of the r-th (from 0) element in lo..hi whose |x - base| has the bits T."""
    for i in range(lo, hi):
        if (_bits(_load(x, i) - _load(base, i)) & np.uint32(0x7FFFFFFF)) == T:
            if r == 0:
                return i
            r -= 1
    return hi - 1

@njit(parallel=True, nogil=True, cache=True, error_model="numpy", fastmath={"reassoc"})
def _dots(a, b, part):
    """Per block: (|a|^2, |b|^2, a.b) in float64 (fixed blocks: the same sums on any number of threads)."""
    n = a.size
    for blk in prange(part.shape[0]):
        aa = 0.0
        bb = 0.0
        ab = 0.0
        for i in range(np.uint64(blk * _BLOCK), np.uint64(min(n, blk * _BLOCK + _BLOCK))):
            x = np.float64(_load(a, i))
            y = np.float64(_load(b, i))
            aa += x * x
            bb += y * y
            ab += x * y
        part[blk, 0] = aa
        part[blk, 1] = bb
        part[blk, 2] = ab

@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def _lincomb(a, b, ca, cb, out, bad):
    """out = ca a + cb b; bad[blk] set where block blk of the output holds a NaN or an infinity."""
    n = a.size
    for blk in prange(bad.size):
        flag = np.uint32(0)
        for e in range(np.uint64(blk * _BLOCK), np.uint64(min(n, blk * _BLOCK + _BLOCK))):
            _store(out, e, ca * _load(a, e) + cb * _load(b, e))
            flag |= np.uint32((_bits(_load(out, e)) & np.uint32(0x7F800000)) == np.uint32(0x7F800000))
        bad[blk] = flag

# Exact sums. DARE's rescale divides two whole-tensor L1 sums; `evomerge merge` sums them in blocks while a live
# merge reads them from tables (fused_cpu.DareTables). Both then round the sum to float32 the same way: the
# float64 estimate where its error bound cannot cross a rounding boundary, else these exact sums (a float32 is
# m * 2**(e - 150); the mantissas are added per exponent in int64), so an export equals its live candidate bit
# for bit whichever way each one summed.

@njit(inline="always")
def _exact_add(acc, a):
    """Add the float32 a >= 0 (or NaN / inf, which land in acc[255]) to the exact accumulator acc (int64[256])."""
    bits = _bits(a) & np.uint32(0x7FFFFFFF)
    ex = bits >> np.uint32(23)
    m = bits & np.uint32(0x7FFFFF)
    if ex == 0:
        ex = np.uint32(1)  # subnormal: m * 2**(1 - 150)
    else:
        m |= np.uint32(0x800000)
    acc[ex] += np.int64(m)

@njit(nogil=True, cache=True)
def _exact_acc(values, acc):
    for e in range(np.uint64(values.size)):
        _exact_add(acc, values[e])

# Tables of a live DARE merge (fused_cpu.DareTables): each source's mask numbers, and its |delta| grouped by them.

@njit(parallel=True, nogil=True, cache=True)
def _u24_fill(k0, k1, out):
    for e in prange(out.size):
        out[e] = _u24(e, k0, k1)

@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def _absd_fill(base, x, out):
    for e in prange(out.size):
        out[e] = abs(_load(x, e) - _load(base, e))

_CHUNKS = 16  # fixed, so the grouping and its sums do not depend on the number of threads


@njit(parallel=True, nogil=True, cache=True)
def _group(u, absd, shift, sorted_u, sorted_absd, offsets, binsum):
    """Counting sort of the elements by the top bits of their mask number (bin = u >> shift), stable, in
    _CHUNKS fixed chunks on all threads; binsum[b] is the float64 sum of the bin's |delta| (each chunk's in
    element order, then the chunks' in order: a path of at most the bin's count + _CHUNKS additions). Returns
    the largest bin's count."""
    n = u.size
    nb = offsets.size - 1
    per = (n + _CHUNKS - 1) // _CHUNKS
    counts = np.zeros((_CHUNKS, nb), np.int64)
    sums = np.zeros((_CHUNKS, nb), np.float64)
    for c in prange(_CHUNKS):
        for e in range(c * per, min(n, c * per + per)):
            b = u[e] >> shift
            counts[c, b] += 1
            sums[c, b] += np.float64(absd[e])
    start = np.empty((_CHUNKS, nb), np.int64)
    pos = 0
    widest = 0
    for b in range(nb):
        offsets[b] = pos
        total = 0.0
        for c in range(_CHUNKS):
            start[c, b] = pos
            pos += counts[c, b]
            total += sums[c, b]
        binsum[b] = total
        widest = max(widest, pos - offsets[b])
    offsets[nb] = pos
    for c in prange(_CHUNKS):
        fill = start[c].copy()
        for e in range(c * per, min(n, c * per + per)):
            b = u[e] >> shift
            p = fill[b]
            sorted_u[p] = u[e]
            sorted_absd[p] = absd[e]
            fill[b] = p + 1
    return widest
