"""What the machine can do at best, measured in the run that compares against it (the floors of bench/ claims)."""

from __future__ import annotations

import time

import torch


def copy_bandwidth(nbytes: int = 1 << 28) -> float:
    """Bytes read + written per second by one large in-memory copy (best of three)."""
    src = torch.empty(nbytes, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best


def matmul_rate() -> float:
    """The best float32 matmul rate of a few large products on torch's threads (FLOP/s)."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(5):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best
