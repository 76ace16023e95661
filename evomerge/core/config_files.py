"""Reading the YAML files users write (recipes, search configs, table configs) and saying what is wrong with them.

Every layer that reads a user's file uses these two, so a file error reads the same everywhere: the file named, the
line of a syntax error, the first field pydantic refuses as one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from evomerge.core.errors import UserError, reason


def read_yaml_file(path: str | Path, what: str = "file") -> Any:
    """Parse a YAML file with `yaml.safe_load`; a missing, empty or malformed file is a UserError naming it.
    `evomerge:PATH` names a file that ships with the package (evomerge/core/resources.py)."""
    from evomerge.core.resources import resolve_path

    path = resolve_path(path)
    if not path.exists():
        raise UserError("no such file", str(path))
    if path.is_dir():
        raise UserError(f"is a folder, not a {what}", str(path))
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise UserError(f"the {what} is empty", str(path))
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or reason(e)
        raise UserError(f"YAML syntax error{line}: {problem}", str(path)) from None


def first_pydantic_error(e: ValidationError) -> str:
    """The first error of a validation as one line: `field.path: what is wrong`."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return f"{loc}: {msg}" if loc else msg
