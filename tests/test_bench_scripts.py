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
    """evomerge against mergekit-yaml on the CPU, outputs compared first (mergekit is the reference)."""
    out = tmp_path / "cpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_merge.py"), "--small", "--json", str(out),
                           "--methods", "breadcrumbs", "--repeat", "1"], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"breadcrumbs"}
    assert all(r["max_abs_diff"] is not None and r["evomerge_s"] > 0 and r["mergekit_s"] > 0 for r in rows.values())
