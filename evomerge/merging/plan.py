"""Planning a merge: from a recipe and the opened models to one task per output tensor.

Every check that needs the models happens here, before anything is computed or written: layer ranges against
depth, input counts and base models against the method, tensor names and shapes across sources, parameter
values. Planning reads only tensor metadata, so it is cheap enough to redo for every search candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from evomerge.core.architecture import Layout, detect_layout
from evomerge.core.errors import UserError
from evomerge.merging.methods import MergeMethod, get_method
from evomerge.merging.methods.base import ParamSpec
from evomerge.sources.models import ModelSource
from evomerge.merging.recipe import OutputSlice, Recipe, Setting, SliceSource, evaluate_setting


@dataclass
class TensorTask:
    out_name: str
    inputs: list[tuple[str, str]]  # (model reference, tensor name in that model)
    base: int | None  # index into inputs
    shared: dict[str, Any]
    per_input: list[dict[str, Any]]
    copy: bool = False  # a tensor outside the merged language model (a VLM's vision tower): copied from the donor


@dataclass
class MergePlan:
    method: MergeMethod
    tasks: list[TensorTask]
    layer_sources: list[tuple[str, int]]  # for each output layer: (model, input layer index)
    donor: str  # the model whose config (and by default tokenizer) the output takes
    layout: Layout  # the donor's layout; output tensor names follow it
    warnings: list[str] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return len(self.layer_sources)


Opener = Callable[[str], ModelSource]


@dataclass
class _Scopes:
    """Parameter settings at each level of the recipe, parsed once."""

    recipe: dict[str, Setting]
    slice_: dict[str, Setting]
    sources: list[tuple[str, dict[str, Setting]]]  # (model, settings) for each source of the slice

    def for_shared(self) -> list[dict[str, Setting]]:
        return [self.slice_, self.recipe]

    def for_model(self, model: str) -> list[dict[str, Setting]]:
        return [s for m, s in self.sources if m == model] + [self.slice_, self.recipe]


def _resolve(spec: ParamSpec, scopes: list[dict[str, Setting]], tensor: str, t: float, where: str) -> Any:
    for scope in scopes:
        if spec.name in scope:
            value = evaluate_setting(scope[spec.name], tensor, t)
            if value is not None:
                return spec.check(value, f"{where}: parameter {spec.name}")
    if spec.required:
        raise UserError(f"parameter {spec.name!r} is required by this method but not set", where)
    return spec.default


def normalize_slices(recipe: Recipe, open_model: Opener) -> list[OutputSlice]:
    """The `models:` form as one slice over every model's full depth (plus the base, as mergekit does)."""
    if recipe.slices:
        return recipe.slices
    from evomerge.core.architecture import num_layers

    sources = []
    refs = [m.model for m in recipe.models]
    entries = list(recipe.models)
    if recipe.base_model and recipe.base_model not in refs:
        entries.append(type(entries[0])(model=recipe.base_model))
    for entry in entries:
        n = num_layers(open_model(entry.model).plan_config)
        source = SliceSource(model=entry.model, layer_range=(0, n), parameters=entry.parameters)
        source._settings = entry.settings()  # already parsed
        sources.append(source)
    return [OutputSlice(sources=sources)]


def plan_merge(recipe: Recipe, open_model: Opener, where: str = "recipe") -> MergePlan:
    method = get_method(recipe.merge_method)
    slices = normalize_slices(recipe, open_model)
    layouts: dict[str, Layout] = {}

    def layout(ref: str) -> Layout:
        if ref not in layouts:
            src = open_model(ref)
            layouts[ref] = detect_layout(src.names(), src.plan_config, ref)
        return layouts[ref]

    donor = output_donor(recipe, open_model)
    donor_layout = layout(donor)
    donor_root = lm_root(open_model(donor), donor_layout)
    donor_vlm = open_model(donor).vlm
    global_params = recipe.settings(f"{where}: parameters")
    known = {p.name for p in method.params}
    warnings = [
        f"parameter {name!r} is not used by {method.name}" for name in _all_param_names(recipe) if name not in known
    ]

    tasks: list[TensorTask] = []
    layer_sources: list[tuple[str, int]] = []
    slice_scopes: list[tuple[OutputSlice, _Scopes, str | None]] = []

    for si, sl in enumerate(slices):
        loc = f"{where}: slices[{si}]" if recipe.slices else f"{where}: models"
        models = [s.model for s in sl.sources]
        if len(set(models)) != len(models):
            raise UserError("the same model appears twice in one slice", loc)
        base = sl.base_model or recipe.base_model
        if method.base == "ignored":
            base = None
        elif base is not None and base not in models:
            if method.base == "required":
                raise UserError(f"base_model {base} must be one of the slice's sources", loc)
            base = None
        method.check_inputs(len(models), base is not None, loc)
        lengths = {s.layer_range[1] - s.layer_range[0] for s in sl.sources}
        if len(lengths) != 1:
            raise UserError("all sources of a slice must span the same number of layers", loc)
        for j, s in enumerate(sl.sources):
            depth = layout(s.model).num_layers
            if s.layer_range[1] > depth:
                raise UserError(
                    f"layer_range {list(s.layer_range)} goes past the model's {depth} layers ({s.model})",
                    f"{loc}.sources[{j}]" if recipe.slices else loc,
                )
        scopes = _Scopes(
            recipe=global_params,
            slice_=sl.settings(f"{loc}.parameters"),
            sources=[(s.model, s.settings(f"{loc}.sources[{j}].parameters")) for j, s in enumerate(sl.sources)],
        )
        slice_scopes.append((sl, scopes, base))

    def make_task(out_name: str, inputs: list[tuple[str, str]], base: str | None, scopes: _Scopes, t: float) -> TensorTask:
        models = [m for m, _ in inputs]
        _check_inputs(out_name, inputs, open_model)
        shared = {
            p.name: _resolve(p, scopes.for_shared(), out_name, t, f"{where}: {out_name}")
            for p in method.params if p.scope == "shared"
        }
        per_input = []
        for m, in_name in inputs:
            per_input.append({
                p.name: _resolve(p, scopes.for_model(m), in_name, t, f"{where}: {m}: {in_name}")
                for p in method.params
                if p.scope == "input" or (p.scope == "non_base" and m != base)
            })
        method.check_task(shared, per_input, f"{where}: {out_name}")
        return TensorTask(out_name, inputs, models.index(base) if base else None, shared, per_input)

    def non_layer_task(name: str, sl: OutputSlice, base: str | None, scopes: _Scopes) -> TensorTask:
        """Embeddings, final norm, head: merged by their language-model name (a text model's own name; inside a
        VLM, the name under its language model); a VLM's tensors that not every source has (vision tower,
        projector) are copied from the donor."""
        canonical = name[len(donor_root):] if name.startswith(donor_root) else name

        def source_name(model: str) -> str:  # its language model's name for it (a VLM stored under runtime names
            src = open_model(model)          # keeps `lm_head` at the top, beside `model.language_model.layers`)
            rooted = lm_root(src, layout(model)) + canonical
            return rooted if src.has(rooted) or not src.has(canonical) else canonical

        inputs = [(s.model, _alias(open_model(s.model), source_name(s.model))) for s in sl.sources]
        if donor_vlm and not all(open_model(m).has(n) for m, n in inputs):
            return TensorTask(name, [(donor, name)], None, {}, [{}], copy=True)
        return make_task(name, inputs, base, scopes, 0.0)

    # Embeddings and other tensors before the layers: the first slice's sources and settings, at t = 0.
    first, first_scopes, first_base = slice_scopes[0]
    for name in donor_layout.pre:
        tasks.append(non_layer_task(name, first, first_base, first_scopes))

    for sl, scopes, base in slice_scopes:
        n = sl.sources[0].layer_range[1] - sl.sources[0].layer_range[0]
        for i in range(n):
            t = i / (n - 1) if n > 1 else 1.0
            out_index = len(layer_sources)
            layer_sources.append((sl.sources[0].model, sl.sources[0].layer_range[0] + i))
            for key in donor_layout.layer_keys:
                inputs = [
                    (s.model, layout(s.model).layer_tensor(s.layer_range[0] + i, key)) for s in sl.sources
                ]
                tasks.append(make_task(donor_layout.layer_tensor(out_index, key), inputs, base, scopes, t))

    last, last_scopes, last_base = slice_scopes[-1]
    for name in donor_layout.post:
        tasks.append(non_layer_task(name, last, last_base, last_scopes))

    return MergePlan(method, tasks, layer_sources, donor, donor_layout, warnings)


def lm_root(src: ModelSource, layout: Layout) -> str:
    """The prefix under which a model keeps a text LLM's tensor names: '' for a text model (whatever its own
    prefix: `gpt_neox.`, `transformer.`), 'language_model.' for a LLaVA-style VLM (`language_model.model.layers.N...`,
    `language_model.lm_head.weight`)."""
    if not src.transformers_vlm:  # text models, and LLaVA-style projects that keep the LM's names at the top
        return ""
    for marker in ("model.layers.", "layers."):
        if layout.prefix.endswith(marker):
            return layout.prefix[: -len(marker)]
    return ""


def output_donor(recipe: Recipe, open_model: Opener) -> str:
    """Whose architecture the output takes: `output_model` if set, else the first VLM among the sources (its
    language model is what gets merged; vision tower and projector come along unchanged), else the base model
    or the first model, as in mergekit."""
    if recipe.output_model:
        return recipe.output_model
    for ref in recipe.referenced_models():
        if open_model(ref).vlm:
            return ref
    return recipe.base_model or recipe.referenced_models()[0]


def _alias(src: ModelSource, name: str) -> str:
    """A model with tied embeddings has no lm_head tensor: its input embedding stands in for it."""
    if src.has(name) or not name.endswith("lm_head.weight"):
        return name
    embeds = [n for n in src.names() if n.endswith(("embed_tokens.weight", "wte.weight", "word_embeddings.weight"))]
    return embeds[0] if len(embeds) == 1 else name


def _check_inputs(out_name: str, inputs: list[tuple[str, str]], open_model: Opener) -> None:
    shapes = []
    for model, name in inputs:
        src = open_model(model)
        if not src.has(name):
            raise UserError(f"tensor {name} is missing: the architectures do not line up", model)
        shapes.append(src.infos[name].shape)
    if len(set(shapes)) > 1:
        detail = ", ".join(f"{m}: {list(s)}" for (m, _), s in zip(inputs, shapes))
        raise UserError(f"shapes differ for {out_name} ({detail})", "recipe")


def _all_param_names(recipe: Recipe) -> set[str]:
    from evomerge.merging.recipe import iter_parameter_blocks

    return {k for _, owner in iter_parameter_blocks(recipe) for k in owner.parameters}
