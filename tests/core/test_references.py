"""Model references: schemes registered from above, adapters, and what is not a scheme."""

from __future__ import annotations

import pytest

from evomerge.core.errors import UserError
from evomerge.sources.models import fingerprint, resolve_reference
from evomerge.core.references import register_scheme, resolve_scheme, scheme_of, split_reference


def test_a_registered_scheme_resolves_everywhere_a_model_is_named(family):
    register_scheme("testzoo", lambda name: family[name])
    assert scheme_of("testzoo:ja") == "testzoo"
    assert resolve_scheme("testzoo:ja") == family["ja"]
    assert resolve_reference("testzoo:math") == (family["math"], None)
    assert fingerprint("testzoo:ja") == fingerprint(str(family["ja"]))  # the files decide, not the name
    with pytest.raises(TypeError, match="a function"):
        register_scheme("testlazy", "pathlib:Path")  # no 'module:function' strings: an import nobody sees


def test_the_package_schemes_are_registered_from_above_but_not_imported(family):
    import subprocess
    import sys

    assert scheme_of("builtin:smollm2-ja") == "builtin" and scheme_of("run:runs/x") == "run"
    code = ("import sys; from evomerge.sources.models import open_model; open_model(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.startswith(('evomerge.miniature', 'evomerge.search'))))")
    out = subprocess.run([sys.executable, "-c", code, str(family["ja"])], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # opening a plain folder loads neither the miniature nor the search
    from test_packaging import import_graph  # the wiring is an import the graph shows, from the top layer

    graph = import_graph()
    assert "evomerge.commands.schemes" in graph["evomerge"]
    assert {"evomerge.search.records.results", "evomerge.miniature.builtins"} <= graph["evomerge.commands.schemes"]
    assert scheme_of("org/model") is None and scheme_of("C:/models/x") is None and scheme_of("nope:x") is None
    with pytest.raises(ValueError, match="lower-case word"):
        register_scheme("Bad Scheme", lambda rest: rest)


def test_adapters_split_off_unless_the_path_really_has_a_plus(tmp_path):
    assert split_reference("org/base+org/lora") == ("org/base", "org/lora")
    assert split_reference("org/base") == ("org/base", None)
    odd = tmp_path / "a+b"
    odd.mkdir()
    assert split_reference(str(odd)) == (str(odd), None)
    with pytest.raises(UserError, match="one LoRA adapter per model"):
        split_reference("m+a+b")
