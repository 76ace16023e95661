"""Merge recipes: mergekit's YAML format, validated up front.

A recipe that passes `load_recipe` is structurally sound; checks that need the models themselves (layer counts,
shapes) happen when the merge is planned (`evomerge.merging.plan`). Semantics follow mergekit 0.1.5:

- `parameters` may sit on a source, a slice or the whole recipe; the most specific one that yields a value wins.
- a list of numbers is a gradient, interpolated over the layers of a slice (t = i / (n - 1));
- a list of `{filter, value}` entries matches tensor names by substring, first match wins; `filter` missing or
  `"*"` matches everything; no match falls through to the next, less specific level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from evomerge.core.dtypes import canonical
from evomerge.core.config_files import first_pydantic_error, read_yaml_file
from evomerge.core.errors import UserError

Scalar = Union[bool, int, float, str]


class FilterRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    filter: str | None = None
    value: Union[Scalar, tuple[Scalar, ...]]

    @field_validator("value", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v


# A parameter setting: a scalar, a gradient (tuple of scalars) or filter rules (tuple of FilterRule).
Setting = Union[Scalar, tuple[Scalar, ...], tuple[FilterRule, ...]]


def parse_setting(value: Any, where: str) -> Setting:
    """Turn a raw YAML parameter value into a Setting, naming `where` on error."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        if not value:
            raise UserError("an empty list is not a parameter value", where)
        if all(isinstance(v, dict) for v in value):
            try:
                return tuple(FilterRule.model_validate(v) for v in value)
            except ValidationError as e:
                raise UserError(first_pydantic_error(e), where) from None
        if all(isinstance(v, (bool, int, float, str)) for v in value):
            return tuple(value)
        raise UserError("a list must hold either plain values (a gradient) or {filter, value} entries", where)
    raise UserError(f"unsupported value {value!r}", where)


def _interpolate(values: tuple[Scalar, ...], t: float) -> Scalar:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numeric:
        return values[int(t * (len(values) - 1))]
    scaled = t * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * values[i0] + frac * values[i1]


def evaluate_setting(setting: Setting, tensor_name: str, t: float) -> Scalar | None:
    """The value a setting gives for one tensor at relative depth t, or None if no filter matches."""
    if isinstance(setting, tuple) and setting and isinstance(setting[0], FilterRule):
        for rule in setting:
            if rule.filter is None or rule.filter == "*" or (tensor_name and rule.filter in tensor_name):
                v = rule.value
                return _interpolate(v, t) if isinstance(v, tuple) else v
        return None
    if isinstance(setting, tuple):
        return _interpolate(setting, t)
    return setting


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _parse_params(raw: Any, where: str) -> dict[str, Setting]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError("parameters must be a mapping of name: value", where)
    return {str(k): parse_setting(v, f"{where}.{k}") for k, v in raw.items()}


class _WithParameters(_Strict):
    """A recipe level that carries `parameters:`. They stay raw (they are written back as YAML) and are parsed into
    typed Settings once, the first time they are asked for (by validation, normally), then kept."""

    parameters: dict[str, Any] = Field(default_factory=dict)
    _settings: dict[str, Setting] | None = PrivateAttr(None)

    def settings(self, where: str = "parameters") -> dict[str, Setting]:
        if self._settings is None:
            self._settings = _parse_params(self.parameters, where)
        return self._settings


class ModelEntry(_WithParameters):
    model: str


class SliceSource(_WithParameters):
    model: str
    layer_range: tuple[int, int]

    @field_validator("layer_range")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0 or v[1] <= v[0]:
            raise ValueError(f"layer_range must be [start, end) with 0 <= start < end, got {list(v)}")
        return v


class OutputSlice(_WithParameters):
    sources: list[SliceSource]
    base_model: str | None = None
    residual_weight: float | None = None

    @field_validator("sources")
    @classmethod
    def _nonempty(cls, v: list[SliceSource]) -> list[SliceSource]:
        if not v:
            raise ValueError("a slice needs at least one source")
        return v




class Recipe(_WithParameters):
    """A validated merge recipe. Parameter values are parsed into `Setting`s (see `params`)."""

    merge_method: str
    models: list[ModelEntry] | None = None
    slices: list[OutputSlice] | None = None
    base_model: str | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    chat_template: str | None = None
    # evomerge extension: seed for randomised methods (DARE). Exported recipes always carry it.
    seed: int | None = None
    name: str | None = None
    # evomerge extension: the model whose architecture the output takes (default: the first VLM source, else
    # the base model, else the first model). With a VLM, only its language model is merged.
    output_model: str | None = None

    @field_validator("dtype", "out_dtype")
    @classmethod
    def _dtype(cls, v: str | None) -> str | None:
        return v if v is None else canonical(v)

    @field_validator("merge_method")
    @classmethod
    def _method(cls, v: str) -> str:
        from evomerge.merging.methods import get_method, method_names

        if v not in method_names():
            raise ValueError(f"unknown merge method {v!r}; known: {', '.join(method_names())}")
        get_method(v)
        return v

    @model_validator(mode="after")
    def _shape(self) -> "Recipe":
        if bool(self.models) == bool(self.slices):
            raise ValueError("give exactly one of 'models' or 'slices' (and it must not be empty)")
        if self.tokenizer_source == "union":
            raise ValueError("tokenizer_source: union (vocabulary merging) is not supported; use 'base' or a model")
        return self

    def referenced_models(self) -> list[str]:
        """Every model the recipe names, base first, without duplicates, in order of appearance."""
        seen: list[str] = []
        for m in [self.base_model, self.output_model] + [m.model for m in self.models or []] + [
            s.model for sl in self.slices or [] for s in sl.sources
        ] + [sl.base_model for sl in self.slices or []]:
            if m and m not in seen:
                seen.append(m)
        return seen

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        data["merge_method"] = self.merge_method
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def recipe_from_dict(data: Any, where: str = "recipe") -> Recipe:
    if data is None:
        raise UserError("the recipe is empty", where)
    if not isinstance(data, dict):
        raise UserError("a recipe must be a YAML mapping (merge_method, models or slices, ...)", where)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise UserError(first_pydantic_error(e), where) from None
    validate_parameters(recipe, where)
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file. Errors name the file and the field at fault."""
    return recipe_from_dict(read_yaml_file(path, "recipe"), str(path))


def iter_parameter_blocks(recipe: Recipe) -> list[tuple[str, _WithParameters]]:
    """(location, owner) for every level of the recipe that carries parameters."""
    blocks: list[tuple[str, _WithParameters]] = [("parameters", recipe)]
    for i, m in enumerate(recipe.models or []):
        blocks.append((f"models[{i}].parameters", m))
    for i, sl in enumerate(recipe.slices or []):
        blocks.append((f"slices[{i}].parameters", sl))
        for j, s in enumerate(sl.sources):
            blocks.append((f"slices[{i}].sources[{j}].parameters", s))
    return blocks


def validate_parameters(recipe: Recipe, where: str) -> None:
    """Check every parameter value against the method's spec: type, range, known names."""
    from evomerge.merging.methods import get_method

    method = get_method(recipe.merge_method)
    specs = {p.name: p for p in method.params}
    for loc, owner in iter_parameter_blocks(recipe):
        for name, setting in owner.settings(f"{where}: {loc}").items():
            spec = specs.get(name)
            if spec is None:
                continue  # mergekit ignores parameters a method does not use; so do we (plan warns)
            for value in _setting_values(setting):
                spec.check(value, f"{where}: {loc}.{name}")


def _setting_values(setting: Setting) -> list[Scalar]:
    if isinstance(setting, tuple):
        out: list[Scalar] = []
        for item in setting:
            if isinstance(item, FilterRule):
                out.extend(item.value if isinstance(item.value, tuple) else [item.value])
            else:
                out.append(item)
        return out
    return [setting]
