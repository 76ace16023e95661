"""Writing a merged model as an ordinary Hugging Face folder, atomically.

Everything is written into a hidden temporary folder beside OUT_DIR and moved into place only when complete, so
an interrupted or failed merge never leaves something that looks like a model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm import tqdm

from evomerge import __version__
from evomerge.core.architecture import num_layers, text_config
from evomerge.merging.durable import sync_path, sync_tree
from evomerge.merging.direct_write import SequentialFile
from evomerge.core.errors import UserError, reason
from evomerge.sources.models import TOKENIZER_FILES, ModelSource
from evomerge.merging.plan import MergePlan
from evomerge.merging.recipe import Recipe

RECIPE_FILE = "evomerge_recipe.yaml"


def check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError("the output path is an existing file", str(out))
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError("the output folder exists and is not empty (use --force to replace it)", str(out))
    if not out.parent.exists():
        raise UserError("the parent folder of the output does not exist", str(out))


def _try_lock(path: Path):
    """An open file holding an exclusive flock on `path`, or None if another process holds it."""
    import fcntl

    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the `.OUT.partial-*` folders that killed writes to `out` left behind (full model size each).

    Each writer holds an flock on `.OUT.partial-XXXX.lock` for as long as it writes, and the kernel drops it when
    the writer dies: a partial folder whose lock can be taken (or that has no lock file, as older versions wrote)
    belongs to nobody alive. A folder whose writer is still running is left alone."""
    removed = []
    for folder in out.parent.glob(f".{out.name}.partial-*"):
        if not folder.is_dir():
            continue
        lock_path = folder.with_name(folder.name + ".lock")
        fh = _try_lock(lock_path) if lock_path.exists() else None
        if lock_path.exists() and fh is None:
            continue  # a live writer
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        if fh is not None:
            lock_path.unlink(missing_ok=True)
            fh.close()
    for lock_path in out.parent.glob(f".{out.name}.partial-*.lock"):  # a writer killed before its folder existed
        fh = _try_lock(lock_path)
        if fh is not None and not lock_path.with_suffix("").exists():
            lock_path.unlink(missing_ok=True)
        if fh is not None:
            fh.close()
    return removed


@contextmanager
def staged_output(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `out`, on any failure it is removed. Stale temporary
    folders of earlier, killed writes to `out` are removed first."""
    check_out_dir(out, force)
    remove_stale_partials(out)
    fd, lock_name = tempfile.mkstemp(prefix=f".{out.name}.partial-", suffix=".lock", dir=out.parent)
    os.close(fd)
    lock_path = Path(lock_name)
    lock = _try_lock(lock_path)  # held until the folder is in place; the kernel drops it if we are killed
    tmp = lock_path.with_suffix("")
    tmp.mkdir()
    try:
        yield tmp
        sync_tree(tmp)  # every byte on disk before the folder takes its final name (merging/durable.py)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            sync_path(out.parent)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
            sync_path(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        lock_path.unlink(missing_ok=True)
        if lock is not None:
            lock.close()


_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}


class ShardWriter:
    """Safetensors shards written tensor by tensor, in order, as a merge produces them.

    A merge plan knows every output's name, shape and dtype before the first tensor is computed, so each shard's
    header goes to disk first and each tensor's bytes follow it straight from the merge's output buffer: memory
    holds one tensor, not a shard (safetensors' `save_file` would hold a whole shard and a serialised copy), and the
    bytes bypass the page cache where the system allows (evomerge/merging/direct_write.py).
    A shard is cut before the tensor that would take it past `max_bytes`; names and the index follow Hugging
    Face's convention."""

    def __init__(self, folder: Path, entries: list[tuple[str, tuple[int, ...], torch.dtype]], max_bytes: int,
                 direct: bool = True):
        self.folder = folder
        self.shards: list[list[tuple[str, tuple[int, ...], torch.dtype, int]]] = []
        size = 0
        for name, shape, dtype in entries:
            nbytes = math.prod(shape) * dtype.itemsize
            if not self.shards or (self.shards[-1] and size + nbytes > max_bytes):
                self.shards.append([])
                size = 0
            self.shards[-1].append((name, tuple(shape), dtype, nbytes))
            size += nbytes
        self.total = sum(e[3] for shard in self.shards for e in shard)
        self._order = [(i, e) for i, shard in enumerate(self.shards) for e in shard]
        self._next = 0
        self._file: SequentialFile | None = None
        self.direct = direct

    def _open(self, i: int) -> None:
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape, dtype, nbytes in self.shards[i]:
            header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # tensor data 8-byte aligned, as safetensors writes it
        self._file = SequentialFile(self.folder / f"shard-{i}.tmp", direct=self.direct)
        self._file.write(len(text).to_bytes(8, "little") + text)

    def add(self, name: str, tensor: torch.Tensor) -> None:
        shard, (want, shape, dtype, nbytes) = self._order[self._next]
        if name != want or tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise RuntimeError(f"tensor {name} {list(tensor.shape)} {tensor.dtype} arrived where {want} "
                               f"{list(shape)} {dtype} was planned")
        if self._next == 0 or self._order[self._next - 1][0] != shard:
            if self._file is not None:
                self._file.close()
            self._open(shard)
        self._file.write(tensor)
        self._next += 1

    def abort(self) -> None:
        if self._file is not None:
            self._file.abort()
            self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._next != len(self._order):
            raise RuntimeError(f"{len(self._order) - self._next} planned tensors were never written")
        n = len(self.shards)
        if n == 1:
            os.replace(self.folder / "shard-0.tmp", self.folder / "model.safetensors")
            return
        weight_map = {}
        for i, shard in enumerate(self.shards):
            fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.folder / f"shard-{i}.tmp", self.folder / fname)
            weight_map.update({e[0]: fname for e in shard})
        index = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def output_config(config: Any, plan: MergePlan, dtype: torch.dtype | None) -> Any:
    """The donor's config with the layer count (and per-layer lists such as layer_types) of the merged stack."""
    cfg = copy.deepcopy(config)
    tc = text_config(cfg)
    old_n = getattr(tc, "num_hidden_layers", None)
    new_n = plan.num_layers
    if old_n is not None and old_n != new_n:
        for key, value in list(vars(tc).items()):
            if isinstance(value, list) and len(value) == old_n:
                setattr(tc, key, [value[src_layer] if src_layer < old_n else value[-1] for _, src_layer in plan.layer_sources])
        tc.num_hidden_layers = new_n
    if not getattr(cfg, "architectures", None):  # configs read from GGUF files carry none
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(cfg.model_type)
        if name:
            cfg.architectures = [name]
    if dtype is not None:
        cfg.dtype = dtype
        if tc is not cfg:
            tc.dtype = dtype
    return cfg


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def write_output_config(donor: ModelSource, plan: MergePlan, dtype: torch.dtype | None, out: Path) -> None:
    """config.json (and generation_config.json) of the output.

    Where the merged stack is the donor's own (same layers in the same order: every parameter-space merge),
    the donor's config.json is copied with the output dtype set, and its generation_config.json if it has one
    (transformers derives the same from config.json when there is none): no transformers import, which costs
    about 2 s of every `evomerge merge`. A new stack (passthrough, data-flow merges) goes through the
    transformers config, whose per-layer lists (layer_types ...) `output_config` rebuilds layer by layer."""
    plan_cfg = donor.plan_config  # config.json as read, where it states the layer stack itself
    n = plan.num_layers
    same_stack = [src for _, src in plan.layer_sources] == list(range(n))
    if isinstance(plan_cfg, dict) and num_layers(plan_cfg) == n and same_stack:
        data = copy.deepcopy(plan_cfg)
        if dtype is not None:
            for part in (data, data.get("text_config")):
                if isinstance(part, dict):
                    part["dtype"] = _dtype_name(dtype)
                    if "torch_dtype" in part:  # what transformers before 4.56 reads
                        part["torch_dtype"] = _dtype_name(dtype)
        (out / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        copy_generation_config(donor, out)
        return
    cfg = output_config(donor.config, plan, dtype)
    cfg.save_pretrained(str(out))
    copy_generation_config(donor, out, cfg)


def copy_code(src: ModelSource, out: Path) -> None:
    """A donor that ships its own modeling code (`auto_map` in config.json, as Asagi does) keeps it: its
    top-level .py files go with the config that names them, so the output loads the way the original does
    (`trust_remote_code=True`). Copied, never imported here."""
    if src.gguf_file is None and (src.config_json or {}).get("auto_map"):
        for code in sorted(src.folder.glob("*.py")):
            shutil.copy(code, out / code.name)


def has_tokenizer(src: ModelSource) -> bool:
    return src.gguf_file is not None or any((src.folder / name).exists() for name in TOKENIZER_FILES)


def copy_tokenizer(src: ModelSource, out: Path) -> None:
    """The tokenizer (and processor) files of `src`; a source without any copies nothing (`has_tokenizer`)."""
    if src.gguf_file is not None:  # the tokenizer transformers builds from it (as converted once)
        from transformers import AutoTokenizer

        from evomerge.sources.gguf import load_args

        try:
            path, extra = load_args(src.folder, src.gguf_file)
            AutoTokenizer.from_pretrained(path, **extra).save_pretrained(str(out))
        except Exception as e:
            raise UserError(f"cannot read the tokenizer: {reason(e)}", src.ref) from None
        return
    for name in TOKENIZER_FILES:
        if (src.folder / name).exists():
            shutil.copy(src.folder / name, out / name)


def copy_generation_config(src: ModelSource, out: Path, config: Any = None) -> None:
    """The donor's generation_config.json; where it has none, one derived from `config` (None: none, as
    transformers derives the same from config.json when it loads the model)."""
    if (src.folder / "generation_config.json").exists():
        shutil.copy(src.folder / "generation_config.json", out / "generation_config.json")
    elif config is not None:
        from transformers import GenerationConfig

        GenerationConfig.from_model_config(config).save_pretrained(str(out))


def model_card(recipe: Recipe, plan: MergePlan, extra: str = "") -> str:
    sources = recipe.referenced_models()
    front = ["---", "library_name: transformers", "tags:", "- merge", "- evomerge", "base_model:"]
    front += [f"- {json.dumps(s)}" for s in sources] + ["---", ""]
    name = recipe.name or "Merged model"
    lines = [
        f"# {name}",
        "",
        f"Merged with [evomerge](https://pypi.org/project/evomerge/) {__version__} using **{recipe.merge_method}**"
        + (f" on base `{recipe.base_model}`." if recipe.base_model else "."),
        "",
        "## Lineage",
        "",
        *[f"- `{s}`" + (" (base)" if s == recipe.base_model else "") for s in sources],
        "",
        f"{plan.num_layers} decoder layers; config taken from `{plan.donor}`.",
        "",
    ]
    if extra:
        lines += [extra, ""]
    lines += ["## Recipe", "", f"Saved as `{RECIPE_FILE}`; `evomerge merge {RECIPE_FILE} OUT` rebuilds this model.", "",
              "```yaml", recipe.to_yaml().rstrip(), "```", ""]
    return "\n".join(front + lines)


def tokenizer_donor(recipe: Recipe, plan: MergePlan, open_model) -> ModelSource:
    src = recipe.tokenizer_source
    if src is None:
        return open_model(plan.donor)  # the base model for text merges, the VLM (with its processor) for VLMs
    if src == "base":
        return open_model(recipe.base_model or plan.donor)
    return open_model(src)


def export_merge(run, out: Path, *, force: bool = False, max_shard_size: int = 5 * 2**30, progress: bool = True,
                 card_extra: str = "", staged: bool = True) -> None:
    """Stream a MergeRun's tensors into a complete model folder at `out` (`staged=False`: straight into `out`, an
    empty folder that the caller stages itself)."""
    plan, recipe, pool = run.plan, run.recipe, run.pool
    tok_src = tokenizer_donor(recipe, plan, pool.get)  # fail on a bad tokenizer source before the long part
    if not has_tokenizer(tok_src):  # as mergekit does: the weights are still worth having; say so, up front too
        plan.warnings.append(f"{tok_src.ref} has no tokenizer files, so the output has none: copy them in, or set "
                             "`tokenizer_source:` to a model that has them")
        if progress:
            tqdm.write(f"warning: {plan.warnings[-1]}", file=sys.stderr)
    with (staged_output(out, force) if staged else contextlib.nullcontext(out)) as tmp:
        writer = ShardWriter(tmp, run.layout(), max_shard_size)
        from concurrent.futures import ThreadPoolExecutor

        # each tensor is written on another thread while the next one merges; one write in flight at a time,
        # which is what the merge's reused output buffers allow (MergeRun.tensors(reuse=True))
        with ThreadPoolExecutor(1, thread_name_prefix="evomerge-write") as io:
            pending = None
            try:
                bar = tqdm(run.tensors(reuse=True), total=len(plan.tasks), desc="merging", unit="tensor",
                           disable=not progress)
                for name, tensor in bar:
                    if pending is not None:
                        pending.result()
                    pending = io.submit(writer.add, name, tensor)
                if pending is not None:
                    pending.result()
            except BaseException:
                if pending is not None:
                    pending.cancel() or pending.exception()
                writer.abort()  # the staged folder is removed with what it holds
                raise
        writer.close()
        write_output_config(pool.get(plan.donor), plan, run.out_dtype, tmp)
        copy_code(pool.get(plan.donor), tmp)
        copy_tokenizer(tok_src, tmp)
        (tmp / RECIPE_FILE).write_text(recipe.to_yaml(), encoding="utf-8")
        (tmp / "README.md").write_text(model_card(recipe, plan, card_extra), encoding="utf-8")
