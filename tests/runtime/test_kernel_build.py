"""Every fused kernel specialisation a search can reach compiles for Hopper (sm_90) and Ampere (sm_80) on this
CPU-only machine, within the targets' register and shared-memory limits (evomerge/runtime/kernel_build.py).
The default covers each dimension in full; EVOMERGE_COMPILE_ALL=1 compiles their whole product (about 3600 builds
per target)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")


@pytest.mark.slow  # one to four minutes on 2 cores: the second test command (README), which CI also runs
def test_every_reachable_kernel_compiles_for_sm90_and_sm80():
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1")
    full = ["--full"] if os.environ.get("EVOMERGE_COMPILE_ALL") else []
    procs = {arch: subprocess.Popen([sys.executable, "-m", "evomerge.runtime.kernel_build", str(arch), "--json", *full],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for arch in (90, 80)}  # one process per target: both cores
    for arch, proc in procs.items():
        out, err = proc.communicate(timeout=1800)
        report = json.loads(out.strip().splitlines()[-1])
        assert report["problems"] == [], report["problems"]
        assert proc.returncode == 0, err[-2000:]
        assert report["built"] >= 120 and 0 < report["max_registers"] <= 255
        for note in report["notes"]:  # legal, reported: a spill costs bandwidth, not correctness
            print(f"sm_{arch}: {note}")


def test_a_kernel_the_compiler_rejects_is_reported(monkeypatch):
    """The check itself can fail: a variant whose signature does not type-check is a problem, not a crash."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    code = ("from evomerge.runtime import kernel_build as kb\n"
            "v = kb.Variant('_combine', 'fp32', (('N_SRC', 2), ('HAS_BASE', True), ('SPARSIFY', 1),"
            " ('CONSENSUS', True), ('NORMALIZE', False), ('IN_DTYPE', None), ('OUT_DTYPE', 'fp32'),"
            " ('BLOCK_SIZE', 1000)))\n"  # not a power of two: tl.arange refuses it
            "b = kb.build(v, 90)\n"
            "print(b.problems())\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CompilationError" in out.stdout and "power of 2" in out.stdout, out.stdout
