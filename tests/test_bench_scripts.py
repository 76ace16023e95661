"""The bench/ scripts run end to end at their --small setting (on CPU: the fused kernels in Triton's
interpreter), so a GPU session spends its time measuring, not debugging the scripts; their correctness checks
must pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[1]


def run(script: str, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / f"{script}.json"
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), "--small", "--json", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "|---|" in proc.stdout  # the table
    return json.loads(out.read_text())


def test_merge_bench(tmp_path):
    res = run("merge", tmp_path, "--repeat", "1", "--methods", "dare_ties", "ties", "--no-peer", "--no-reference")
    assert set(res["methods"]) == {"dare_ties", "ties"}
    assert all(m["correct"] for m in res["methods"].values())


def test_generate_bench(tmp_path):
    res = run("generate", tmp_path, "--no-peer")
    assert res["fp32_exact"] is True and res["engine_s"] > 0


def test_candidate_bench(tmp_path):
    res = run("candidate", tmp_path, "--no-peer")
    assert res["resident"]["rows"] >= 1 and res["resident"]["merge_s"] > 0


def test_cpu_merge_bench(tmp_path):
    """evomerge against mergekit-yaml on the CPU, every tensor compared first (dare_ties with evomerge's masks handed
    to mergekit), and the raw numbers kept."""
    out = tmp_path / "cpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_merge.py"), "--small", "--json", str(out),
                           "--methods", "dare_ties", "--repeat", "1"], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.index("check dare_ties") < proc.stdout.index("|---|")  # checked before timed
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"dare_ties"}
    check = rows["dare_ties"]["check"]
    assert check["ok"] and check["tensors"] > 10 and check["max_abs"] < 0.02
    assert all(r["evomerge_s"] > 0 and r["mergekit_s"] > 0 for r in rows.values())
    table = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_merge.py"), "--table", str(out)],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert table.returncode == 0 and "| dare_ties |" in table.stdout  # the table comes back from the JSON


def test_cpu_merge_bench_refuses_an_output_that_differs(family, tmp_path):
    """The check has teeth: one element moved in one tensor of the second shard is a difference."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(ROOT))
    from bench.cpu_merge import compare_outputs

    folders = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        state = load_file(str(family["ja"] / "model.safetensors"))
        names = sorted(state)
        half = {n: state[n] for n in names[: len(names) // 2]}, {n: state[n] for n in names[len(names) // 2:]}
        for i, part in enumerate(half):
            save_file(part, str(folder / f"model-{i + 1:05d}-of-00002.safetensors"))
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
            n: f"model-{i + 1:05d}-of-00002.safetensors" for i, part in enumerate(half) for n in part}}))
        folders.append(folder)
    assert compare_outputs(*folders, "linear")["ok"]
    shard = folders[1] / "model-00002-of-00002.safetensors"
    state = load_file(str(shard))
    last = sorted(state)[-1]
    state[last] = state[last].clone()
    state[last].view(-1)[0] += 1.0
    save_file(state, str(shard))
    result = compare_outputs(*folders, "linear")
    assert not result["ok"] and last in result["problems"][0]
    shutil.rmtree(tmp_path / "a")
