"""`evomerge report RUN_DIR`: pictures of a search, as PNG files plus a markdown summary.

- fitness.png: best and mean fitness per generation (and validation scores, when configured);
- parameters.png: the result's evolved values, as a heatmap of source x layer group (one panel per parameter)
  for parameter-space runs;
- path.png: the result's layer path for data-flow runs (which model, which layer, what scale, hop by hop).
"""

from __future__ import annotations

import re
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


_GENE = re.compile(r"^(?P<model>.+?)\.(?P<param>[a-z_]+)(?:\.g(?P<group>\d+))?(?:\.(?P<filter>[\w]+))?$")


def _group_ranges(best: Trial) -> list[tuple[int, int]]:
    """The layer range of each group, from the recipe's slices (the genome writes one slice per group)."""
    try:
        data = yaml.safe_load(best.recipe)
        return [tuple(s["sources"][0]["layer_range"]) for s in data["slices"]]
    except (TypeError, KeyError, IndexError, ValueError, yaml.YAMLError):
        return []


def plot_parameters(best: Trial, out: Path) -> Path | None:
    rows: dict[str, dict[tuple[str, str], dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for name, value in best.params.items():
        m = _GENE.match(name)
        if not m:
            continue
        label = m["model"] + (f" [{m['filter']}]" if m["filter"] else "")
        rows[m["param"]][(label, m["model"])][int(m["group"] or 0)] = value
    if not rows:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.2 + 1.1 * sum(len(r) for r in rows.values())),
                             squeeze=False)
    for ax, (param, by_row) in zip(axes[:, 0], sorted(rows.items())):
        labels = sorted(by_row)
        groups = max(max(v) for v in by_row.values()) + 1
        grid = [[by_row[k].get(g, float("nan")) for g in range(groups)] for k in labels]
        flat = [v for row in grid for v in row if v == v]
        lo, hi = min(0.0, min(flat)), max(1.0, max(flat))
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=lo, vmax=hi)
        ax.set_yticks(range(len(labels)), [k[0] for k in labels])
        ranges = _group_ranges(best)
        ax.set_xticks(range(groups), [f"{a}-{b - 1}" for a, b in ranges] if len(ranges) == groups else None)
        ax.set_xlabel(("layers" if len(ranges) == groups else "layer group") if groups > 1 else "")
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
    store = RunStore(run_dir)
    try:
        best = store.result()
        if best is None:
            raise UserError("the run has no completed trial yet", str(run_dir))
        out.mkdir(parents=True, exist_ok=True)
        images = [p for p in (plot_fitness(store, out), plot_parameters(best, out), plot_path(best, out)) if p]
        done, failed = store.count("complete"), store.count("failed")
        lines = [f"# Search report: {run_dir.name}", "",
                 f"{done} trials complete, {failed} failed, {len(store.generations())} generations.", "",
                 f"**Result:** trial {best.id}, fitness {best.fitness:.6g}"
                 + (f", validation {best.val_fitness:.6g}" if best.val_fitness is not None else ""), ""]
        for name, metrics in best.scores.items():
            lines.append(f"- {name}: " + ", ".join(f"{k} = {v:.4g}" for k, v in metrics.items()))
        lines += ["", "| generation | best | mean |", "|---|---|---|"]
        lines += [f"| {g['generation']} | {g['best']:.4g} | {g['mean']:.4g} |" for g in store.generations()]
        lines += [""] + [f"![{p.stem}]({p.name})" for p in images]
        lines += ["", "## Result", "", "```yaml", best.recipe.rstrip(), "```", ""]
        (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
        return out
    finally:
        store.close()
