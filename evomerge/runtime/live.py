"""A live merged model for searches: sources loaded once, each candidate merged into the same model in place.

Nothing is written to disk per candidate. Each tensor is merged through the same entry point as `evomerge merge`
(merging/kernels.py: the same planner, the same choice between the GPU kernels, the compiled CPU kernels and the
reference, the same DARE streams), straight into the live model's weights, so on the CPU exporting a trial's recipe
gives the model that was scored, bit for bit. On a GPU the fused kernels (merging/fused_gpu.py) compute the same
function in one pass per tensor; whole-tensor sums (DARE's rescale) may then differ from the export in the last
float32 bits.
"""

from __future__ import annotations


import torch

from evomerge.core.errors import UserError, reason
from evomerge.merging.export import output_config
from evomerge.core.devices import pick_device
from evomerge.core.dtypes import torch_dtype
from evomerge.generation.vllm_engine import bump
from evomerge.merging import kernels
from evomerge.sources.models import ModelPool, load_tokenizer
from evomerge.core.architecture import checkpoint_to_runtime, ignored_on_load, is_vlm
from evomerge.merging.plan import MergePlan, plan_merge
from evomerge.merging.recipe import Recipe


def _nothing():
    import contextlib

    return contextlib.nullcontext()


class CandidateError(RuntimeError):
    """A candidate that cannot be scored (NaN weights, a failed merge); the search records it and goes on."""


class LiveMerge:
    """Holds every source tensor a recipe family needs, and one model whose weights `apply` overwrites."""

    def __init__(self, example: Recipe, pool: ModelPool, device: str = "auto", fused: bool | None = None,
                 sources_on: str = "device", devices: list[torch.device] | None = None,
                 tables_bytes: int = 4 << 30):
        """`devices`: spread the model over several devices (evomerge/runtime/placement.py); each tensor's sources then
        live on its device. Otherwise everything is on `device`.

        `tables_bytes`: on the CPU, DARE merges with `rescale` keep each source's |delta| grouped by its mask
        numbers between candidates (fused_cpu.DareTables, 8 bytes per source element), up to this much memory,
        which takes the merge of a candidate from two passes over its sources to one (bench/RESULTS.md); 0
        turns it off. Either way the merged weights are the same bits."""
        from transformers import AutoModelForCausalLM

        from evomerge.merging import fused_gpu as fused_kernels

        self.pool = pool
        self.device = devices[0] if devices else pick_device(device)
        plan = plan_merge(example, pool.get)
        self.names = [t.out_name for t in plan.tasks]
        self.in_dtype = torch_dtype(example.dtype) if example.dtype else None
        donor = pool.get(plan.donor)
        donor.check_loadable()
        out_name = example.out_dtype or example.dtype
        first = plan.tasks[0].inputs[0]
        self.dtype = torch_dtype(out_name) if out_name else pool.get(first[0]).infos[first[1]].dtype
        config = output_config(donor.config, plan, self.dtype)
        vlm = is_vlm(config)
        if vlm:
            from transformers import AutoModelForImageTextToText as AutoClass
        else:
            AutoClass = AutoModelForCausalLM
        with torch.device("cpu" if devices and len(devices) > 1 else self.device):
            self.model = AutoClass.from_config(config, dtype=self.dtype)
        if devices and len(devices) > 1:
            from evomerge.runtime.placement import spread

            self.model = spread(self.model, devices)
        self.model.eval()
        state = self.model.state_dict()
        runtime = checkpoint_to_runtime(self.model, self.names, state)
        # what transformers drops when it loads the output, the live model skips: buffers older checkpoints stored
        # (Pythia's attention masks), and tensors the class has no place for at all (the `image_newline` of a
        # LLaVA-1.6 converted to the LLaVA class). A tensor whose name the class does carry elsewhere is refused
        # instead: a naming fault, which would leave that parameter unset
        def foreign(name: str) -> bool:
            tail = ".".join(name.split(".")[-2:])
            return not any(k == tail or k.endswith("." + tail) for k in state)

        unplaced = [n for n in self.names if runtime[n] not in state]
        self.skipped = {n for n in unplaced if ignored_on_load(self.model, runtime[n]) or foreign(runtime[n])}
        self.notes = [f"note: {plan.donor}: {n} has no place in {type(self.model).__name__}; transformers drops it "
                      "when it loads the output, so candidates are scored without it (exports keep it)"
                      for n in sorted(self.skipped) if not ignored_on_load(self.model, runtime[n])]
        missing = [n for n in unplaced if n not in self.skipped]
        if missing:
            raise UserError(f"the model class has no parameter {missing[0]}", plan.donor)
        self.params = {n: state[runtime[n]] for n in self.names if n not in self.skipped}
        # every parameter of the class gets a tensor (tied ones share their twin's): one that none reaches would keep
        # its random initialisation and every score would be silently wrong
        filled = {t.data_ptr() for t in self.params.values()}
        unset = [name for name, t in self.model.named_parameters() if t.data_ptr() not in filled]
        if unset:
            raise UserError(f"{unset[0]} of {type(self.model).__name__} gets no tensor from the sources (loading would "
                            f"initialise it at random){' and ' + str(len(unset) - 1) + ' more' if len(unset) > 1 else ''}",
                            plan.donor)
        shapes = {t.out_name: tuple(pool.get(t.inputs[0][0]).infos[t.inputs[0][1]].shape) for t in plan.tasks}
        wrong = [n for n, p in self.params.items() if tuple(p.shape) != shapes[n]]
        if wrong:
            raise UserError(f"{wrong[0]} {list(shapes[wrong[0]])} has no counterpart of its shape in the model class "
                            f"(it maps to {runtime[wrong[0]]} {list(state[runtime[wrong[0]]].shape)})", plan.donor)
        # Sources stay in their stored dtype, on their output tensor's device or (streamed per candidate) in
        # pinned host memory; merge_task upcasts one tensor group at a time.
        self.stream = sources_on == "host" and self.device.type == "cuda"
        if self.stream and devices and len(devices) > 1:
            raise UserError("sources: host streams to one GPU; with gpus > 1 keep the sources on the devices")
        self.sources: dict[tuple[str, str], torch.Tensor] = {}
        self.source_device: dict[tuple[str, str], torch.device] = {}
        for task in self._live(plan):
            where = self.params[task.out_name].device
            for key in task.inputs:
                if key not in self.sources:
                    t = pool.get(key[0]).get(key[1])
                    self.sources[key] = t.pin_memory() if self.stream else t.to(where)
                    self.source_device[key] = where
        if fused is None:  # the fused kernels by default wherever they compile
            fused = self.device.type == "cuda" and fused_kernels.available()
        if fused and not fused_kernels.available():
            raise UserError("the fused merge kernels need Triton (pip install triton)")
        # the GPU kernels' merger, where they are to run; merging/kernels.py chooses them tensor by tensor (float64
        # sources, say, take the reference path) and the self-check may turn them off (None)
        self.fused = fused_kernels.FusedMerger(self.in_dtype) if fused else None
        self.tables_bytes = tables_bytes
        self._tables: dict[str, tuple[tuple, object]] = {}  # out name -> (what they were built for, DareTables)
        self._tables_used = 0  # bytes the built tables hold
        if vlm:
            from evomerge.sources.processors import PROCESSOR_FILES, load_processor

            try:  # VQA evaluators take the processor; text-only fitness works with the tokenizer (a search
                self.tokenizer = load_processor(donor.folder)  # says once what a legacy processor lacked)
            except (OSError, ValueError) as e:
                saved = [n for n in PROCESSOR_FILES if (donor.folder / n).exists()]
                if saved:  # a processor is there but does not load: every VQA score would fail, so say it now
                    raise UserError(f"cannot load the processor ({', '.join(saved)}): {reason(e)}",
                                    str(donor.folder)) from None
                self.tokenizer = load_tokenizer(donor.folder)
        else:
            self.tokenizer = load_tokenizer(donor.folder, donor.gguf_file)

    def _live(self, plan: MergePlan) -> list:
        """The plan's tasks that write a tensor of the live model (not a buffer loading drops)."""
        return [t for t in plan.tasks if t.out_name not in self.skipped]

    def fetch(self, model: str, name: str) -> torch.Tensor:
        return self.sources[(model, name)]

    def _dare_tables(self, plan: MergePlan, task, tensors: list[torch.Tensor], seed: int):
        """This tensor's DARE tables (built on first use while the budget lasts), or None."""
        from evomerge.merging import fused_cpu

        key = (seed, tuple(task.inputs), task.base, self.in_dtype, plan.method.name)
        held = self._tables.get(task.out_name)
        if held is not None and held[0] == key:
            return held[1]
        if held is not None and held[1] is not None:  # built for another seed or inputs: replaced
            self._tables_used -= held[1].nbytes
        need = 8 * sum(t.numel() for i, t in enumerate(tensors) if i != task.base)
        fits = self._tables_used + need <= self.tables_bytes and fused_cpu.available()
        tables = fused_cpu.dare_tables(plan.method, tensors, task.base, task.shared, seed, task.out_name,
                                       self.in_dtype) if fits else None
        self._tables[task.out_name] = (key, tables)
        self._tables_used += tables.nbytes if tables is not None else 0
        return tables

    def _streamed(self, tasks):
        """Each task's inputs copied from pinned host memory on a side stream, one task ahead of the merge, so
        the transfer of the next tensor group overlaps the merge of this one."""
        copy_stream, compute = torch.cuda.Stream(), torch.cuda.current_stream()

        def start(task):
            with torch.cuda.stream(copy_stream):
                ts = [self.sources[k].to(self.source_device[k], non_blocking=True) for k in task.inputs]
                done = torch.cuda.Event()
                done.record(copy_stream)
            return ts, done

        ahead = start(tasks[0]) if tasks else None
        for i in range(len(tasks)):
            ts, done = ahead
            if i + 1 < len(tasks):
                ahead = start(tasks[i + 1])
            compute.wait_event(done)
            for t in ts:
                t.record_stream(compute)  # the allocator must not reuse this memory before the merge has run
            yield ts

    def check_fused(self, recipe: Recipe, max_elements: int = 1 << 27) -> str | None:
        """The fused kernels' self-check: merge `recipe` with them and with the reference, tensor by tensor
        (all tensors, or an even spread of them up to `max_elements` for large models), and compare. None if
        they agree (or no fused kernel runs here); otherwise why not, and the live model falls back to the
        reference path for the rest of the run.

        Tolerance: 2 units in the last place of the output dtype, relative to the tensor's largest magnitude
        (whole-tensor sums such as DARE's rescale may differ in their last bits). A DARE mask that differs in
        even one element moves that element by |delta| / density, far beyond it; NaN never passes."""
        if self.fused is None:
            return None
        plan = plan_merge(recipe, self.pool.get)
        tasks = [t for t in self._live(plan) if kernels.choose(plan.method, t, [self.fetch(*k) for k in t.inputs],
                                                                  self.params[t.out_name], self.in_dtype,
                                                                  self.fused) == "gpu"]
        sizes = [self.params[t.out_name].numel() for t in tasks]
        if sum(sizes) > max_elements:  # a bounded sample, spread over the layers
            step = -(-sum(sizes) // max_elements)
            tasks = tasks[::step]
        try:
            for task in tasks:
                target = self.params[task.out_name]
                tensors = [self.fetch(*k).to(target.device) for k in task.inputs]
                out = torch.full_like(target, float("nan"))  # poisoned: every element must be written
                flag = torch.zeros(1, dtype=torch.int32, device=target.device)
                with torch.cuda.device(target.device) if target.is_cuda else _nothing(), torch.no_grad():
                    self.fused.merge_into(plan.method, task, tensors, out, recipe.seed or 0, flag)
                on_device = dict(zip(task.inputs, tensors))
                ref = kernels.merge_task(plan, task, lambda m, n: on_device[(m, n)], recipe.seed or 0, target.device,
                                 self.in_dtype).to(out.dtype).float()
                got = out.float()
                if not torch.isfinite(got).all() and torch.isfinite(ref).all():
                    raise AssertionError(f"{task.out_name}: NaN, inf or unwritten elements")
                tol = 2 * torch.finfo(out.dtype).eps * float(ref.abs().max()) + 1e-7
                err = float((got - ref).abs().max())
                if not err <= tol:
                    raise AssertionError(f"{task.out_name}: differs from the reference merge by {err:.3g} "
                                         f"(tolerance {tol:.3g})")
        except Exception as e:  # a kernel that does not compile, raises, or computes something else
            self.fused = None
            what = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {str(e)[:160]}"
            return f"the fused merge kernels failed their self-check ({what}); merging with the reference path"
        return None

    def apply(self, recipe: Recipe) -> MergePlan:
        """Merge `recipe` into the live model's weights."""
        plan = plan_merge(recipe, self.pool.get)
        if [t.out_name for t in plan.tasks] != self.names:
            raise CandidateError("the candidate recipe does not produce the live model's tensors")
        bad: dict[torch.device, torch.Tensor] = {}  # one non-finite flag per device the GPU kernels write to
        tasks = self._live(plan)
        inputs = self._streamed(tasks) if self.stream else ([self.fetch(*k) for k in t.inputs] for t in tasks)
        seed = recipe.seed or 0
        with torch.no_grad():
            for task, tensors in zip(tasks, inputs):
                target = self.params[task.out_name]
                on_device = dict(zip(task.inputs, tensors))
                flag = tables = None
                path = kernels.choose(plan.method, task, tensors, target, self.in_dtype, self.fused)
                if path == "gpu":
                    flag = bad.get(target.device)
                    if flag is None:
                        flag = bad[target.device] = torch.zeros(1, dtype=torch.int32, device=target.device)
                elif target.device.type == "cpu" and self.tables_bytes > 0 and not task.copy:
                    tables = self._dare_tables(plan, task, tensors, seed)
                with torch.cuda.device(target.device) if target.is_cuda else _nothing():
                    finite = kernels.merge_into(plan, task, lambda m, n: on_device[(m, n)], seed, target,
                                                self.in_dtype, tables, self.fused, flag)
                if finite is False:
                    raise CandidateError(f"NaN or inf in {task.out_name}")
        if any(int(flag.item()) for flag in bad.values()):
            raise CandidateError("NaN or inf in the merged weights")
        bump(self.model)  # an engine holding the weights (vLLM) pushes them again before it scores
        return plan
