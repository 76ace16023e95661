"""The GGUF conversion cache: keyed by the file, written whole or not at all, shared by processes."""

from __future__ import annotations

import os

import pytest

from evomerge.sources import gguf as cache


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A GGUF-named file and a conversion that only writes a marker (the real one is tested on SmolLM2)."""
    monkeypatch.setenv("EVOMERGE_CACHE", str(tmp_path / "cache"))
    calls = []

    def write(src, out):
        calls.append(src)
        out.mkdir(parents=True)
        (out / "model.safetensors").write_text(src.read_text())
        cache.seal(out, src)

    monkeypatch.setattr(cache, "_write", write)
    (tmp_path / "m.gguf").write_text("one")
    return tmp_path, calls


def test_converted_once_and_again_when_the_file_changes(fake):
    root, calls = fake
    first = cache.converted(root, "m.gguf")
    assert cache.converted(root, "m.gguf") == first and len(calls) == 1
    assert first.parent == root / "cache" / "gguf" and first.name.startswith("m-")
    (root / "m.gguf").write_text("two, longer")  # another file under the same name
    second = cache.converted(root, "m.gguf")
    assert second != first and (second / "model.safetensors").read_text() == "two, longer" and len(calls) == 2
    assert not [p for p in second.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_an_interrupted_conversion_is_redone_and_a_failed_one_leaves_nothing(fake, monkeypatch):
    root, calls = fake
    out = cache.converted(root, "m.gguf")
    (out / cache.DONE).unlink()  # as a crash before the marker would leave it
    assert cache.converted(root, "m.gguf") == out and (out / cache.DONE).exists() and len(calls) == 2

    def broken(src, out):
        out.mkdir(parents=True)
        (out / "model.safetensors").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(cache, "_write", broken)
    (root / "m.gguf").write_text("three, changed")
    with pytest.raises(OSError):
        cache.converted(root, "m.gguf")
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # nothing half-written beside it


def test_a_conversion_finished_first_by_another_process_is_kept(fake, monkeypatch):
    root, calls = fake
    real = cache._write

    def racing(src, out):  # another process renames its finished folder into place while this one writes
        real(src, out)
        final = out.parent / out.name.split(".")[1]
        real(src, final.parent / ".other.tmp")
        os.replace(final.parent / ".other.tmp", final)

    monkeypatch.setattr(cache, "_write", racing)
    out = cache.converted(root, "m.gguf")
    assert (out / cache.DONE).exists() and sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_large_files_and_unwritable_caches_are_read_directly(fake, monkeypatch):
    """A GGUF too large to keep dequantised, or a cache that cannot be written: transformers reads the file itself
    (as slowly as before)."""
    root, calls = fake
    assert cache.load_args(root, "m.gguf") == (str(cache.converted(root, "m.gguf")), {})
    monkeypatch.setattr(cache, "CACHE_LIMIT", 2)
    assert cache.load_args(root, "m.gguf") == (str(root), {"gguf_file": "m.gguf"})
    monkeypatch.setattr(cache, "CACHE_LIMIT", 1 << 30)
    (root / "m.gguf").write_text("changed")

    def unwritable(src, out):
        raise PermissionError(13, "Permission denied", str(out))

    monkeypatch.setattr(cache, "_write", unwritable)
    assert cache.load_args(root, "m.gguf") == (str(root), {"gguf_file": "m.gguf"})


@pytest.mark.parametrize("damage, said", [
    (lambda out: (out / "model.safetensors").write_text("ONE"), "model.safetensors has changed"),  # same size
    (lambda out: (out / "model.safetensors").write_text("one, longer"), "model.safetensors has changed"),
    (lambda out: (out / "model.safetensors").unlink(), "model.safetensors is missing"),
    (lambda out: (out / "model-00002-of-00002.safetensors").write_text("x"), "is not one of its files"),
    (lambda out: (out / cache.DONE).write_text("{not json"), "unreadable"),
    (lambda out: (out / cache.DONE).write_text("{}"), "lists no files"),
], ids=["edited-same-size", "edited-longer", "file-missing", "file-added", "marker-unreadable", "marker-empty"])
def test_a_damaged_entry_is_converted_again_and_said_in_one_line(fake, capsys, damage, said):
    """The entry must prove it is the conversion it claims to be: its files as the marker records them."""
    root, calls = fake
    out = cache.converted(root, "m.gguf")
    capsys.readouterr()
    damage(out)
    assert cache.converted(root, "m.gguf") == out and len(calls) == 2
    assert (out / "model.safetensors").read_text() == "one" and cache.damaged(out) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0] and "converting it again" in err[0], err
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # the damaged copy is not left beside it
    assert cache.converted(root, "m.gguf") == out and len(calls) == 2  # and the new one is used as it is


def test_an_entry_changed_after_it_was_checked_is_checked_again(fake):
    """Hashes are computed once per process for each state of the files: a change afterwards is still seen."""
    root, calls = fake
    out = cache.converted(root, "m.gguf")
    assert cache.converted(root, "m.gguf") == out and len(calls) == 1
    os.utime(out / "model.safetensors", ns=(1, 1))  # an older time, as a copy that keeps times would leave
    (out / "model.safetensors").write_text("ONE")
    assert cache.damaged(out) == "model.safetensors has changed"
