"""Files that ship inside the package (example configs, the miniature's data), named `evomerge:PATH`.

Configs and data that commands need at run time live in the package (evomerge/configs, evomerge/data), so a
regular `pip install` runs them from anywhere: `evomerge search evomerge:configs/search/quickstart.yaml`, and a
config's `data: evomerge:data/ja_math_fitness.txt`. Any other path is an ordinary file path. In a checkout,
search/, tables/ and evaluators/data are links to the same files.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "evomerge:"


def package_path(rel: str) -> Path:
    """A file or folder inside the installed package."""
    from importlib.resources import files

    return Path(str(files("evomerge").joinpath(rel)))


def resolve_path(spec: str | Path) -> Path:
    """`evomerge:PATH` inside the package, anything else as given."""
    text = str(spec)
    return package_path(text[len(PREFIX):]) if text.startswith(PREFIX) else Path(spec)
