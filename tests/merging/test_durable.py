"""A merged or exported folder survives a power loss: every file and folder is fsynced before the folder takes its
final name, and the parent folder (which records that rename) after it."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import cli, write


def test_every_file_is_on_disk_before_the_rename_and_the_rename_after(family, tmp_path, monkeypatch):
    import evomerge.merging.durable as durable
    import evomerge.merging.export as export

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", f"{os.path.realpath(src)} -> {os.path.realpath(os.path.dirname(dst))}/{Path(dst).name}"))
        real_replace(src, dst)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(export.os, "replace", replace)
    recipe = write(tmp_path / "r.yaml", f"""
merge_method: linear
models:
  - {{model: {family['ja']}, parameters: {{weight: 0.5}}}}
  - {{model: {family['math']}, parameters: {{weight: 0.5}}}}
""")
    out = tmp_path / "merged"
    assert cli("merge", recipe, out, "--device", "cpu", "--quiet") == 0
    final = [i for i, (kind, what) in enumerate(events) if kind == "replace" and what.endswith(f"-> {out}")]
    assert len(final) == 1, events
    staged = events[final[0]][1].split(" -> ")[0]
    synced_before = {what for kind, what in events[:final[0]] if kind == "fsync"}
    files = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert len(files) >= 4  # weights, config, recipe, card (and tokenizer files)
    missing = [str(f) for f in files if f"{staged}/{f}" not in synced_before]
    assert not missing, f"not fsynced before the rename: {missing}"
    assert staged in synced_before  # the folder's own entries
    assert ("fsync", str(tmp_path.resolve())) in events[final[0] + 1:]  # the rename itself


def test_sync_tree_reaches_nested_folders(tmp_path, monkeypatch):
    import evomerge.merging.durable as durable

    seen = []
    monkeypatch.setattr(durable.os, "fsync", lambda fd: seen.append(os.path.realpath(f"/proc/self/fd/{fd}")))
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.bin").write_bytes(b"1")
    (tmp_path / "y.json").write_text("{}")
    durable.sync_tree(tmp_path)
    root = str(tmp_path.resolve())
    assert set(seen) == {root, f"{root}/a", f"{root}/a/b", f"{root}/a/b/x.bin", f"{root}/y.json"}
    assert seen[-1] == root  # the top folder last, after everything in it
