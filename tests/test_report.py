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
    assert "| generation | best | mean |" in text and "![fitness](fitness.png)" in text
    # the heatmap's rows and columns come from the gene metadata the run recorded
    from evomerge.report import parameter_grids
    from evomerge.search.store import RunStore

    with RunStore(tmp_path / "run") as store:
        best, genes = store.result(), store.genes_info()
    labels, columns, grid = parameter_grids(best, genes)["weight"]
    assert columns == ["layers 0-1", "layers 2-3"]
    assert labels == ["ja", "ja [mlp]", "math", "math [mlp]"]
    assert grid[1][1] == best.params["ja.weight.g1.mlp"]


def test_one_gene_per_model_reads_all_layers(family, target, tmp_path):
    from evomerge.report import parameter_grids
    from evomerge.search.store import RunStore

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
