"""Loading a GGUF model: transformers' own reader (the peer) against evomerge's converted-once folder.

Checks before it times: the converted folder's tensors equal transformers' reading bit for bit, and its tokenizer
gives the same ids on a few texts. Then, each `--repeat` times (fresh reads of files the page cache holds):
the peer (AutoModelForCausalLM + AutoTokenizer from the GGUF), the conversion into an empty cache (once), and a
load from the converted folder. Floor: the converted folder's bytes / the copy bandwidth measured in the run (the
files are in the page cache, so loading them cannot be faster than copying them once).

    python bench/gguf_load.py [--repeat 2] [--json bench/json/gguf_load-DATE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.floors import copy_bandwidth  # noqa: E402

TEXTS = ["こんにちは、世界！ 12+30=42です。", "What is 12 plus 30? Answer:", "ｶﾀｶﾅ 漢字 😀 <|im_start|>user"]


def load_direct(gguf: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def load_folder(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(str(folder))


def load_cached(gguf: Path):
    """What a new process pays: the cache entry proven against its record (every file's SHA-256), then loaded."""
    from evomerge.sources import gguf as cache

    cache._hashes.cache_clear()
    return load_folder(cache.converted(gguf.parent, gguf.name))


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from transformers.utils import logging as hf_logging

    from evomerge.core.assets import smollm2_gguf
    from evomerge.sources import gguf as cache

    hf_logging.disable_progress_bar()
    gguf = smollm2_gguf()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EVOMERGE_CACHE"] = tmp  # an empty cache: the first call converts
        convert_s, folder = timed(cache.converted, gguf.parent, gguf.name)
        direct_s, (ref, ref_tok) = timed(load_direct, gguf)
        folder_s, (ours, tok) = timed(load_folder, folder)
        mine, theirs = ours.state_dict(), ref.state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine), "tensors differ"
        assert all(tok(t)["input_ids"] == ref_tok(t)["input_ids"] for t in TEXTS), "tokenizers differ"
        del ref, ref_tok, ours, tok
        direct, warm, proven = [direct_s], [folder_s], []
        for _ in range(args.repeat - 1):
            direct.append(timed(load_direct, gguf)[0])
            warm.append(timed(load_folder, folder)[0])
        for _ in range(args.repeat):
            proven.append(timed(load_cached, gguf)[0])
        nbytes = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    bandwidth = copy_bandwidth(1 << 29)
    floor = nbytes / bandwidth * 2  # read + write once
    res = {"gguf": gguf.name, "gguf_bytes": gguf.stat().st_size, "folder_bytes": nbytes, "copy_bandwidth": bandwidth,
           "floor_s": floor, "convert_s": convert_s, "direct_s": direct, "converted_s": warm,
           "converted_verified_s": proven, "checked": True,
           "torch": torch.__version__}
    best_direct, best_warm, best_proven = min(direct), min(warm), min(proven)
    print("| load of " + gguf.name + " (model + tokenizer) | seconds (best of "
          f"{args.repeat}) | / floor | peer / this |")
    print("|---|---|---|---|")
    print(f"| transformers from the GGUF (peer) | {best_direct:.2f} | {best_direct / floor:.0f}x | 1.00x |")
    print(f"| evomerge, first use (converts and writes the folder) | {convert_s:.2f} | {convert_s / floor:.0f}x | "
          f"{best_direct / convert_s:.2f}x |")
    print(f"| evomerge, cached folder in a new process (its SHA-256s checked first) | {best_proven:.2f} | "
          f"{best_proven / floor:.0f}x | {best_direct / best_proven:.1f}x |")
    print(f"| the converted folder alone (no check: what a later load in the same process pays) | {best_warm:.2f} | "
          f"{best_warm / floor:.0f}x | {best_direct / best_warm:.1f}x |")
    print(f"\nfloor = {nbytes / 1e9:.2f} GB read and written once / {bandwidth / 1e9:.1f} GB/s copy bandwidth "
          f"= {floor:.3f} s; tensors equal bit for bit, tokenizer ids equal")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
