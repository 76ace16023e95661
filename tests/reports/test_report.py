"""`evomerge report` draws the fitness curve, the evolved parameters (PS) and the layer path (DFS)."""

from __future__ import annotations

from helpers import cli
from helpers import dfs_config, make_config, search

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG) and len(data) > 5000


def test_report_for_layerwise_ps_run(family, target, tmp_path, capsys):
    cfg = make_config(family, target, budget=12)
    cfg["genome"] = {"parameters": ["weight"], "granularity": "layer_group", "group_size": 2, "split": ["mlp"]}
    search(cfg, tmp_path / "run")
    assert cli("report", tmp_path / "run") == 0
    out = tmp_path / "run" / "report"
    assert _png(out / "fitness.png") and _png(out / "parameters.png") and not (out / "path.png").exists()
    text = (out / "README.md").read_text()
    assert "| generation | best neg_mse (higher is better) | mean |" in text and "![fitness](fitness.png)" in text
    # the heatmap's rows and columns come from the gene metadata the run recorded
    from evomerge.reports.report import parameter_grids
    from evomerge.search.records.store import RunStore

    with RunStore(tmp_path / "run") as store:
        best, genes = store.result(), store.genes_info()
    labels, columns, grid = parameter_grids(best, genes)["weight"]
    assert columns == ["layers 0-1", "layers 2-3"]
    assert labels == ["ja", "ja [mlp]", "math", "math [mlp]"]
    assert grid[1][1] == best.params["ja.weight.g1.mlp"]


def test_one_gene_per_model_reads_all_layers(family, target, tmp_path):
    from evomerge.reports.report import parameter_grids
    from evomerge.search.records.store import RunStore

    search(make_config(family, target, budget=6), tmp_path / "run")
    with RunStore(tmp_path / "run") as store:
        best, genes = store.result(), store.genes_info()
    labels, columns, grid = parameter_grids(best, genes)["weight"]
    assert columns == ["all layers"] and labels == ["ja", "math"]
    assert grid == [[best.params["ja.weight"]], [best.params["math.weight"]]]


def test_report_for_dataflow_run(family, other, target_logits, tmp_path):
    search(dfs_config(family, target_logits, other, budget=16, scales=True), tmp_path / "run")
    assert cli("report", tmp_path / "run", "--out", tmp_path / "rep") == 0
    assert _png(tmp_path / "rep" / "path.png") and _png(tmp_path / "rep" / "fitness.png")


def test_report_needs_a_run(tmp_path, capsys):
    assert cli("report", tmp_path) == 2


def test_the_fitness_picture_shows_every_trial_whole_generations_and_the_metrics_units(family, tmp_path):
    """One generation and a half of a perplexity search: the unfinished generation is drawn, generations are
    whole numbers, every trial is a point, and the axis is perplexity (lower is better), not its negative log."""
    import math

    from evomerge.reports.report import fitness_series
    from evomerge.search.records.store import RunStore

    text = tmp_path / "t.txt"
    text.write_text(" ".join(f"w{(i * 7) % 61}" for i in range(200)))
    cfg = {"merge": {"merge_method": "linear", "models": [{"model": str(family["ja"])}, {"model": str(family["math"])}]},
           "genome": {"parameters": ["weight"]}, "optimizer": {"name": "cma", "seed": 1, "popsize": 6},
           "budget": {"max_trials": 9}, "device": "cpu",
           "fitness": [{"name": "perplexity", "data": str(text), "max_length": 32}]}
    search(cfg, tmp_path / "run")
    with RunStore(tmp_path / "run") as store:
        series = fitness_series(store)
        trials = store.trials("complete")
    assert series["generations"] == [0, 1] and len(series["points"]) == len(trials) == 9
    assert series["label"] == "perplexity (lower is better)"
    assert sorted(v for _, v, _ in series["points"]) == sorted(math.exp(-t.fitness) for t in trials)
    assert series["best"][1] == min(math.exp(-t.fitness) for t in trials if t.generation == 1)  # unfinished, drawn
    assert all(isinstance(g, int) for g, _, _ in series["points"])


def test_the_html_report_is_one_self_contained_page(family, target, tmp_path):
    import base64
    from html.parser import HTMLParser

    search(make_config(family, target, budget=6), tmp_path / "run")  # a single generation
    assert cli("report", tmp_path / "run") == 0
    page = (tmp_path / "run" / "report" / "report.html").read_text()

    class Images(HTMLParser):
        sources: list = []

        def handle_starttag(self, tag, attrs):
            if tag in ("img", "script", "link"):
                self.sources.append(dict(attrs).get("src") or dict(attrs).get("href"))

    parser = Images()
    parser.feed(page)
    assert len(parser.sources) == 2  # fitness and parameters, nothing fetched from elsewhere
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    assert "<table>" in page and "Search report" in page


def test_the_html_report_renders_its_figures_in_chromium(family, target, tmp_path):
    """Headless Chromium opens report.html and decodes every figure (their natural sizes are read after load)."""
    import re
    import shutil
    import subprocess

    import pytest

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium here (CI installs it: .ci/run)")
    search(make_config(family, target, budget=6), tmp_path / "run")
    assert cli("report", tmp_path / "run") == 0
    page = (tmp_path / "run" / "report" / "report.html").read_text()
    probe = tmp_path / "probe.html"  # the page plus a script that records what the browser decoded
    probe.write_text(page.replace("</body>", "<script>window.addEventListener('load', () => {document.body.dataset"
                                  ".sizes = [...document.images].map(i => i.naturalWidth + 'x' + i.naturalHeight)"
                                  ".join(',')})</script></body>"))
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    sizes = re.search(r'data-sizes="([^"]*)"', out.stdout)
    assert sizes, out.stderr[-2000:]
    decoded = [tuple(map(int, s.split("x"))) for s in sizes.group(1).split(",")]
    assert len(decoded) == 2 and all(w > 300 and h > 200 for w, h in decoded)
