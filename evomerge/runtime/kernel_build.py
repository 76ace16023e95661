"""Compiling the fused merge kernels for real GPUs, on any machine: Triton lowers a kernel to PTX and a cubin for
a named target without a GPU present. The test suite compiles every specialisation a search can reach for Hopper
(sm_90) and Ampere (sm_80), so a kernel that Triton's interpreter accepts but the compiler rejects fails CI, and
checks what ptxas reports (registers, spills, shared memory) against the targets' limits.

Which specialisations a search reaches: the merge path (FusedForm -> HAS_BASE, SPARSIFY, CONSENSUS), 1 to 4
sources, normalize on or off, the sources' stored dtype, the recipe's dtype (IN_DTYPE) and the live model's dtype
(OUT_DTYPE), and whether an integer argument fits 32 bits. `variants()` gives each dimension in full against a
fixed rest (the default), or their whole product (`full=True`, EVOMERGE_COMPILE_ALL=1 in the tests).

Run in a process with TRITON_INTERPRET=0 (the kernels must be JIT functions, not interpreted ones).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Per target: registers a thread may hold, registers per multiprocessor, shared memory a block may use.
LIMITS = {90: {"regs_per_thread": 255, "regs_per_sm": 65536, "shared": 227 * 1024},
          80: {"regs_per_thread": 255, "regs_per_sm": 65536, "shared": 163 * 1024}}
FLOATS = ("fp32", "fp16", "bf16")
# (HAS_BASE, SPARSIFY, CONSENSUS) of each FusedForm path: weighted_sum and slerp; task_vectors without
# sparsification (task_arithmetic, or ties/dare with every density 1), with and without sign election;
# DARE (dare_linear, dare_ties); TIES.
PATHS = [(False, 0, False), (True, 0, False), (True, 0, True), (True, 1, False), (True, 1, True), (True, 2, True)]


@dataclass(frozen=True)
class Variant:
    kernel: str
    src: str  # the sources' stored dtype (pointer element type)
    consts: tuple[tuple[str, object], ...]  # constexpr name -> value (dtype names as strings)
    ints: str = "i32"  # n and the hash keys: i32 when they fit, else i64

    def label(self) -> str:
        return f"{self.kernel}[src={self.src},ints={self.ints}," + ",".join(f"{k}={v}" for k, v in self.consts) + "]"


def variants(full: bool = False) -> list[Variant]:
    out: list[Variant] = []
    dtypes = list(itertools.product(FLOATS, (None, *FLOATS), FLOATS))  # (src, IN_DTYPE, OUT_DTYPE)
    for n_src, (has_base, sparsify, consensus), normalize in itertools.product((1, 2, 3, 4), PATHS, (False, True)):
        for src, ind, outd in (dtypes if full else [("fp32", None, "fp32")]):
            for ints in (("i32", "i64") if full else ("i32",)):
                out.append(_combine(n_src, has_base, sparsify, consensus, normalize, src, ind, outd, ints))
    if not full:  # every dtype triple and integer width on the heaviest path
        out += [_combine(4, True, 2, True, True, s, i, o, "i32") for s, i, o in dtypes[1:]]
        out += [_combine(4, True, 1, True, True, "bf16", "bf16", "bf16", "i64"),
                _combine(4, True, 2, True, True, "bf16", "bf16", "bf16", "i64")]
    for kernel in ("_kept_abs_sums", "_low_histograms", "_equal_counts"):
        for n_src, src, ind in itertools.product((1, 2, 3, 4) if full else (1, 4), FLOATS, (None, *FLOATS)):
            if full or n_src == 4 or (src == "fp32" and ind is None):
                out.append(Variant(kernel, src, (("N_SRC", n_src), ("IN_DTYPE", ind), ("BLOCK_SIZE", 1024))))
    return out


def _combine(n_src, has_base, sparsify, consensus, normalize, src, ind, outd, ints) -> Variant:
    return Variant("_combine", src, (("N_SRC", n_src), ("HAS_BASE", has_base), ("SPARSIFY", sparsify),
                                     ("CONSENSUS", consensus), ("NORMALIZE", normalize), ("IN_DTYPE", ind),
                                     ("OUT_DTYPE", outd), ("BLOCK_SIZE", 1024)), ints)


_POINTERS = {  # argument -> pointer element type, where it is not the sources' dtype
    "ranks_ptr": "i64", "r_ptr": "fp32", "thr_ptr": "fp32", "m_ptr": "i64", "flag_ptr": "i32", "sums_ptr": "fp32",
    "hist_ptr": "i32", "bucket_ptr": "i32", "counts_ptr": "i64",
}


def _signature(fn, v: Variant) -> dict[str, str]:
    consts = dict(v.consts)
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name == "out_ptr":
            sig[name] = "*" + consts["OUT_DTYPE"]
        elif name in _POINTERS:
            sig[name] = "*" + _POINTERS[name]
        elif name.endswith("_ptr") or re.fullmatch(r"s\d", name):
            sig[name] = "*" + v.src
        elif name == "n" or re.fullmatch(r"[ab]\d", name):
            sig[name] = v.ints
        else:
            sig[name] = "fp32"
    return sig


@dataclass
class Build:
    variant: Variant
    arch: int
    registers: int
    spill_bytes: int
    shared: int
    num_warps: int
    error: str | None = None

    def problems(self) -> list[str]:
        if self.error:
            return [self.error]
        lim, out = LIMITS[self.arch], []
        if self.registers > lim["regs_per_thread"]:
            out.append(f"{self.registers} registers per thread (limit {lim['regs_per_thread']})")
        if self.registers * 32 * self.num_warps > lim["regs_per_sm"]:
            out.append(f"{self.registers} registers x {32 * self.num_warps} threads exceed the multiprocessor's")
        if self.shared > lim["shared"]:
            out.append(f"{self.shared} bytes of shared memory (limit {lim['shared']})")
        return out

    def notes(self) -> list[str]:
        """What is legal but worth knowing: spills to local memory cost bandwidth."""
        return [f"{self.spill_bytes} bytes spilled to local memory"] if self.spill_bytes else []


def build(v: Variant, arch: int) -> Build:
    """Compile one variant for sm_`arch` (PTX and cubin) and read ptxas's resource report."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from evomerge.merging import fused_gpu

    fn = getattr(fused_gpu, v.kernel)
    tl_types = {None: None, "fp32": tl.float32, "fp16": tl.float16, "bf16": tl.bfloat16}
    consts = {k: (tl_types[val] if k.endswith("DTYPE") else val) for k, val in v.consts}
    try:
        src = ASTSource(fn=fn, signature=_signature(fn, v),
                        constexprs={(fn.arg_names.index(k),): val for k, val in consts.items()})
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32))
    except Exception as e:  # the compiler rejects what the interpreter ran
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        why = " ... ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else ""
        return Build(v, arch, 0, 0, 0, 0, f"{type(e).__name__}: {why[:400]}")
    try:
        regs, spills = _ptxas_report(compiled.asm["ptx"], arch)
    except RuntimeError as e:
        return Build(v, arch, 0, 0, 0, 0, str(e))
    return Build(v, arch, regs, spills, int(compiled.metadata.shared), int(compiled.metadata.num_warps))


def _ptxas_report(ptx: str, arch: int) -> tuple[int, int]:
    """(registers, spilled bytes) as ptxas -v reports them, with the ptxas that Triton ships."""
    from triton.backends.nvidia.compiler import get_ptxas

    tool = get_ptxas(arch)
    ptxas = getattr(tool, "path", tool)
    target = re.search(r"^\.target\s+(\w+)", ptx, re.M).group(1)  # sm_90a for Hopper: what Triton wrote
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.ptx"
        path.write_text(ptx)
        res = subprocess.run([ptxas, f"-arch={target}", "-v", str(path), "-o", str(Path(tmp) / "k.cubin")],
                             capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"ptxas rejected the PTX: {(res.stderr or res.stdout).strip().splitlines()[-1]}")
    text = res.stderr + res.stdout
    regs = max(int(x) for x in re.findall(r"Used (\d+) registers", text))
    spills = sum(int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", text))
    return regs, spills


def main(argv: list[str] | None = None) -> int:
    """`python -m evomerge.runtime.kernel_build [--full] ARCH...`: compile every variant, print problems."""
    import argparse
    import json
    import os

    os.environ.setdefault("TRITON_INTERPRET", "0")
    p = argparse.ArgumentParser()
    p.add_argument("archs", nargs="+", type=int)
    p.add_argument("--full", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    rows = [build(v, arch) for arch in a.archs for v in variants(a.full)]
    bad = [f"sm_{b.arch} {b.variant.label()}: {prob}" for b in rows for prob in b.problems()]
    notes = [f"sm_{b.arch} {b.variant.label()}: {n}" for b in rows for n in b.notes()]
    regs = max(b.registers for b in rows)
    if a.json:
        print(json.dumps({"built": len(rows), "max_registers": regs, "problems": bad, "notes": notes}))
    else:
        for line in bad + notes:
            print(line)
        print(f"{len(rows)} builds, {len(bad)} problems, {len(notes)} notes, at most {regs} registers per thread")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
