"""A file written front to back without passing through the page cache, where the system allows it.

Writing a 2.4 GB merged model through the page cache costs several seconds of kernel time on a small machine:
every page of the output is allocated, filled and later written back, and on a virtual machine fresh pages may
first have to come back from the host (measured here: 0.5-3 GB/s for the same 2.4 GB, 1-4 s of system time,
bench/RESULTS.md). With O_DIRECT the bytes go from one aligned staging buffer straight to the device (here
1.5-2.5 GB/s at a tenth of the CPU time), so the merge keeps both cores. The output is then not left in the page
cache, which a merge's output rarely needs to be.

O_DIRECT asks for buffers, sizes and file offsets aligned to the device's blocks, so bytes are staged in an
aligned buffer and written in whole blocks; the last block is padded and the file cut back to its true size.
Where O_DIRECT is missing (macOS, Windows) or refused (tmpfs, some network and overlay file systems) the same
class writes plainly."""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import torch

_ALIGN = 4096  # a multiple of every common logical block size (512, 4096)


class SequentialFile:
    """Bytes appended in order to a new file; `close` makes it complete (`direct=False`: plain writes)."""

    def __init__(self, path: Path, direct: bool = True, stage_bytes: int = 16 << 20):
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        o_direct = getattr(os, "O_DIRECT", 0) if direct else 0
        self.fd = -1
        if o_direct:
            try:
                self.fd = os.open(path, flags | o_direct, 0o644)
            except OSError:  # the file system refuses O_DIRECT: write plainly
                pass
        self.direct = self.fd >= 0
        if not self.direct:
            self.fd = os.open(path, flags, 0o644)
        self.size = 0  # bytes accepted so far (the file's final length)
        self._used = 0  # bytes waiting in the staging buffer
        if self.direct:
            stage_bytes = max(_ALIGN, stage_bytes // _ALIGN * _ALIGN)
            self._map = mmap.mmap(-1, stage_bytes)  # anonymous maps are page-aligned, as O_DIRECT needs
            self._stage = torch.frombuffer(self._map, dtype=torch.uint8)

    def write(self, data) -> None:
        """Append `data` (bytes, a memoryview, or a contiguous CPU tensor of any dtype)."""
        if isinstance(data, torch.Tensor):
            src = data.detach().contiguous().reshape(-1).view(torch.uint8)
            n = src.numel()
        else:
            src = memoryview(data).cast("B")
            n = len(src)
        if n == 0:
            return
        if not self.direct:
            if self._used:  # staged before O_DIRECT was refused: those bytes come first
                self._flush(self._used)
            self._write_all(memoryview(src.numpy()) if isinstance(src, torch.Tensor) else src)
            self.size += n
            return
        done, room = 0, self._stage.numel()
        while done < n:
            k = min(n - done, room - self._used)
            if isinstance(src, torch.Tensor):
                self._stage[self._used:self._used + k].copy_(src[done:done + k])  # releases the GIL
            else:
                self._map[self._used:self._used + k] = src[done:done + k]
            self._used += k
            done += k
            if self._used == room:
                self._flush(room)
        self.size += n

    def _flush(self, nbytes: int) -> None:
        """Write the first `nbytes` (a multiple of _ALIGN) of the staging buffer and empty it."""
        self._write_all(memoryview(self._map)[:nbytes])
        self._used = 0

    def _write_all(self, view: memoryview) -> None:
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except OSError as e:
                if not self.direct or e.errno != errno.EINVAL:  # O_DIRECT accepted at open, refused at write
                    raise
                self._go_plain()

    def _go_plain(self) -> None:
        import fcntl

        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self.direct = False

    def close(self) -> None:
        """Write what is staged (padded to a block, then cut back) and close the file."""
        if self.fd < 0:
            return
        try:
            if self._used and self.direct:
                padded = -(-self._used // _ALIGN) * _ALIGN
                self._stage[self._used:padded].zero_()
                self._flush(padded)
                os.ftruncate(self.fd, self.size)
            elif self._used:
                self._flush(self._used)
        finally:
            self.abort()

    def abort(self) -> None:
        """Close without writing what is staged (the caller removes the file)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if getattr(self, "_map", None) is not None:
            self._stage = None
            try:
                self._map.close()
            except BufferError:  # a view is still alive: it is freed when collected
                pass
            self._map = None
