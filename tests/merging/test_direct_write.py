"""Writing a file around the page cache: the bytes are exactly what was written, whatever the file system allows."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from evomerge.merging import direct_write
from evomerge.merging.direct_write import SequentialFile


def _pieces():
    g = torch.Generator().manual_seed(0)
    return [b"header!", torch.randn(3000, generator=g), torch.randn(5, 7, generator=g).bfloat16(),
            memoryview(bytes(range(256)) * 40), torch.zeros(0), torch.arange(1001, dtype=torch.int64),
            torch.randn(4097, generator=g).half()]


def _expected(pieces) -> bytes:
    out = b""
    for p in pieces:
        out += p.contiguous().view(torch.uint8).numpy().tobytes() if isinstance(p, torch.Tensor) else bytes(p)
    return out


@pytest.mark.parametrize("direct", [True, False])
def test_bytes_round_trip_across_staging_boundaries(tmp_path, direct):
    path = tmp_path / "f"
    f = SequentialFile(path, direct=direct, stage_bytes=8192)  # pieces cross the 8 KiB staging buffer both ways
    for p in _pieces():
        f.write(p)
    f.close()
    want = _expected(_pieces())
    assert f.size == len(want) and path.read_bytes() == want  # padded last block cut back to the true length
    if not direct:
        assert not f.direct


def test_a_file_system_that_refuses_o_direct_gets_plain_writes(tmp_path, monkeypatch):
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this system")
    real_open = os.open

    def no_direct(path, flags, *a):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *a)

    monkeypatch.setattr(direct_write.os, "open", no_direct)
    f = SequentialFile(tmp_path / "f", stage_bytes=8192)
    assert not f.direct
    for p in _pieces():
        f.write(p)
    f.close()
    assert (tmp_path / "f").read_bytes() == _expected(_pieces())


def test_o_direct_refused_at_the_first_write_falls_back_without_losing_bytes(tmp_path, monkeypatch):
    f = SequentialFile(tmp_path / "f", stage_bytes=8192)
    if not f.direct:
        f.abort()
        pytest.skip("this file system refuses O_DIRECT at open")
    real_write = os.write
    refused = []

    def refuse_direct(fd, data):
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(direct_write.os, "write", refuse_direct)
    for p in _pieces():
        f.write(p)
    f.close()
    assert refused and not f.direct
    assert (tmp_path / "f").read_bytes() == _expected(_pieces())


def test_other_write_errors_are_raised(tmp_path, monkeypatch):
    f = SequentialFile(tmp_path / "f", direct=False)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct_write.os, "write", full)
    with pytest.raises(OSError, match="No space"):
        f.write(b"x" * 10)
    f.abort()
