"""`evomerge report RUN_DIR`: pictures of a search, as PNG files plus a markdown summary.

- fitness.png: best and mean fitness per generation (and validation scores, when configured);
- parameters.png: the result's evolved values, as a heatmap of source x layer group (one panel per parameter)
  for parameter-space runs;
- path.png: the result's layer path for data-flow runs (which model, which layer, what scale, hop by hop).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import yaml

from evomerge.errors import UserError
from evomerge.search.store import RunStore, Trial


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fitness(store: RunStore, out: Path) -> Path | None:
    gens = store.generations()
    if not gens:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    g = [x["generation"] for x in gens]
    best_so_far, b = [], float("-inf")
    for x in gens:
        b = max(b, x["best"])
        best_so_far.append(b)
    ax.plot(g, [x["best"] for x in gens], "o-", label="generation best")
    ax.plot(g, best_so_far, "-", color="black", lw=1, label="best so far")
    ax.plot(g, [x["mean"] for x in gens], "s--", label="generation mean")
    val = [(t.generation, t.val_fitness) for t in store.trials() if t.val_fitness is not None]
    if val:
        ax.plot(*zip(*val), "^:", label="validation (generation best)")
    ax.set_xlabel("generation")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("fitness")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "fitness.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parameter_grids(best: Trial, genes: list[dict] | None) -> dict[str, tuple[list[str], list[str], list[list]]]:
    """param -> (row labels: source [filter], column labels: the layers each group covers, values), from the
    gene metadata the run recorded (SearchSpace.genes_info). One value per model reads "all layers"."""
    genes = [g for g in genes or [] if g.get("kind") == "parameter" and g["name"] in best.params]
    rows: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    layers: dict[int, tuple[int, int]] = {}
    for g in genes:
        label = Path(g["model"].split("@")[0]).name + (f" [{g['filter']}]" if g["filter"] else "")
        rows[g["param"]][label][g["group"]] = best.params[g["name"]]
        layers[g["group"]] = tuple(g["layers"])
    groups = sorted(layers)
    columns = (["all layers"] if all(g["whole_model"] for g in genes)
               else [f"layers {layers[g][0]}-{layers[g][1] - 1}" for g in groups])
    return {param: (sorted(by_row), columns, [[by_row[k].get(g, float("nan")) for g in groups] for k in sorted(by_row)])
            for param, by_row in sorted(rows.items())}


def plot_parameters(best: Trial, genes: list[dict] | None, out: Path) -> Path | None:
    grids = parameter_grids(best, genes)
    if not grids:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(grids), 1, figsize=(8, 1.2 + 1.1 * sum(len(r) for r, _, _ in grids.values())),
                             squeeze=False)
    for ax, (param, (labels, columns, grid)) in zip(axes[:, 0], grids.items()):
        flat = [v for row in grid for v in row if v == v]
        lo, hi = min(0.0, min(flat)), max(1.0, max(flat))
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=lo, vmax=hi)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xticks(range(len(columns)), columns)
        ax.set_title(param)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                dark = (v - lo) / (hi - lo) < 0.6
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if dark else "black", fontsize=8)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path = out / "parameters.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_path(best: Trial, out: Path) -> Path | None:
    data = yaml.safe_load(best.recipe)
    if not (isinstance(data, dict) and "dataflow" in data):
        return None
    hops = data["dataflow"]["hops"]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, len(hops) * 0.18), 4))
    for model, color in (("a", "tab:blue"), ("b", "tab:orange")):
        pts = [(i, h["layer"], h.get("scale", 1.0)) for i, h in enumerate(hops) if h["model"] == model]
        if pts:
            x, y, s = zip(*pts)
            ax.scatter(x, y, s=[20 + 40 * v for v in s], color=color, label=f"model {model.upper()}")
    ax.plot(range(len(hops)), [h["layer"] for h in hops], color="gray", lw=0.6)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("hop (position in the path)")
    ax.set_ylabel("source layer")
    ax.set_title(f"layer path: {len(hops)} hops (marker size = input scale)")
    ax.legend()
    fig.tight_layout()
    path = out / "path.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report"
    with RunStore(run_dir) as store:
        best = store.result()
        if best is None:
            raise UserError("the run has no completed trial yet", str(run_dir))
        out.mkdir(parents=True, exist_ok=True)
        images = [p for p in (plot_fitness(store, out), plot_parameters(best, store.genes_info(), out), plot_path(best, out)) if p]
        done, failed = store.count("complete"), store.count("failed")
        lines = [f"# Search report: {run_dir.name}", "",
                 f"{done} trials complete, {failed} failed, {len(store.generations())} generations.", "",
                 f"**Result:** trial {best.id}, fitness {best.fitness:.6g}"
                 + (f", validation {best.val_fitness:.6g}" if best.val_fitness is not None else ""), ""]
        lines += [f"**Self-check:** {note}" for note in store.notes("self_check")] + [""] * bool(store.notes("self_check"))
        for name, metrics in best.scores.items():
            lines.append(f"- {name}: " + ", ".join(f"{k} = {v:.4g}" for k, v in metrics.items()))
        lines += ["", "| generation | best | mean |", "|---|---|---|"]
        lines += [f"| {g['generation']} | {g['best']:.4g} | {g['mean']:.4g} |" for g in store.generations()]
        lines += [""] + [f"![{p.stem}]({p.name})" for p in images]
        lines += ["", "## Result", "", "```yaml", best.recipe.rstrip(), "```", ""]
        (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
        return out
