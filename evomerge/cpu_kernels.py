"""The compiled pieces of evomerge/fused_cpu.py (numba): bit casts, bfloat16 loads and stores, the DARE hash, and
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
def _uniform(i, k0, k1):
    """evomerge.rng.uniform's number for element i of the stream (k0, k1): fmix32(fmix32(i ^ k0) + k1) >> 8."""
    h = _fmix32(np.uint32(np.uint32(i) ^ k0))
    h = _fmix32(np.uint32(h + k1))
    return np.float32(h >> np.uint32(8)) * np.float32(1.0 / (1 << 24))

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
def _lincomb(a, b, ca, cb, out):
    n = a.size
    nblk = (n + _BLOCK - 1) // _BLOCK
    bad = 0
    for blk in prange(nblk):
        lo = blk * _BLOCK
        m = min(_BLOCK, n - lo)
        for t in range(m):
            v = ca * _load(a, lo + t) + cb * _load(b, lo + t)
            if not math.isfinite(v):
                bad += 1
            _store(out, lo + t, v)
    return bad
