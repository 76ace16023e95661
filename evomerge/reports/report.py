"""`evomerge report RUN_DIR`: pictures of a search, as PNG files plus a markdown summary.

- fitness.png: best and mean fitness per generation (and validation scores, when configured);
- parameters.png: the result's evolved values, as a heatmap of source x layer group (one panel per parameter)
  for parameter-space runs;
- path.png: the result's layer path for data-flow runs (which model, which layer, what scale, hop by hop).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from evomerge.core.errors import UserError
from evomerge.search.records.results import reference_estimates
from evomerge.search.records.store import RunStore, Trial


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fitness_units(config: dict) -> tuple[str, Any]:
    """How fitness is shown: (axis label with its direction, value -> shown value). One metric is shown in its
    own units (perplexity, not its negative log); a weighted sum stays a weighted sum."""
    import math

    from evomerge.evaluators import evaluator_class

    terms = config.get("fitness") or []
    if len(terms) != 1:
        return "fitness (weighted sum of metrics, higher is better)", lambda v: v
    term = terms[0]
    weight = term.get("weight", 1.0) or 1.0
    try:
        metric = term.get("metric") or evaluator_class(term["name"], "fitness").default_metric or "fitness"
    except UserError:
        metric = term.get("metric") or "fitness"
    if metric.startswith("neg_log_"):
        name = metric.removeprefix("neg_log_")
        return f"{name} (lower is better)", lambda v: math.exp(-v / weight)
    return f"{metric} (higher is better)", lambda v: v / weight


def fitness_series(store: RunStore) -> dict[str, Any]:
    """What the fitness plot draws, in the metric's units: every scored trial as a point (x = its generation),
    each generation's best and mean (the unfinished one too), the best so far, and validation scores."""
    config = store.config()
    label, shown = fitness_units(config)
    # estimates from references (log-probabilities, agreement) are not the metric: only metric scores are drawn
    drawn = ("complete", "raced") if reference_estimates(config) else ("complete", "raced", "estimated")
    trials = [t for t in store.trials() if t.status in drawn]
    gens = sorted({t.generation for t in trials})
    higher = "lower" not in label
    pick = max if higher else min
    points = [(t.generation, shown(t.fitness), t.status) for t in trials]
    best, mean, so_far, running = [], [], [], None
    for g in gens:
        full = [shown(t.fitness) for t in trials if t.generation == g and t.status == "complete"]
        values = full or [shown(t.fitness) for t in trials if t.generation == g]
        best.append(pick(values))
        mean.append(sum(values) / len(values))
        running = best[-1] if running is None else pick(running, best[-1])
        so_far.append(running)
    validation = [(t.generation, shown(t.val_fitness)) for t in trials if t.val_fitness is not None]
    closed = {g["generation"] for g in store.generations()}
    return {"label": label, "generations": gens, "points": points, "best": best, "mean": mean, "best_so_far": so_far,
            "validation": validation, "open": [g for g in gens if g not in closed]}


def plot_fitness(store: RunStore, out: Path) -> Path | None:
    data = fitness_series(store)
    gens = data["generations"]
    if not gens:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    full = [(g, v) for g, v, s in data["points"] if s == "complete"]
    partial = [(g, v) for g, v, s in data["points"] if s != "complete"]
    ax.scatter(*zip(*full), s=12, alpha=0.45, color="tab:blue", label="trial")
    if partial:
        ax.scatter(*zip(*partial), s=12, alpha=0.45, facecolors="none", edgecolors="tab:gray",
                   label="trial (raced out or estimated)")
    ax.plot(gens, data["best"], "o-", color="tab:green", label="generation best")
    ax.plot(gens, data["best_so_far"], "-", color="black", lw=1, label="best so far")
    ax.plot(gens, data["mean"], "s--", color="tab:orange", label="generation mean")
    if data["validation"]:
        ax.plot(*zip(*data["validation"]), "^:", color="tab:red", label="validation (generation best)")
    ticks = gens if len(gens) <= 20 else gens[:: -(-len(gens) // 20)]
    ax.set_xticks(ticks, [f"{g}\n(open)" if g in data["open"] else str(g) for g in ticks])
    ax.set_xlim(min(gens) - 0.6, max(gens) + 0.6)
    ax.set_xlabel("generation")
    ax.set_ylabel(data["label"])
    ax.legend(fontsize=8)
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


def plot_front(store: RunStore, out: Path) -> Path | None:
    """Multi-objective runs: every scored trial in the plane of the first two objectives (in their own units),
    constraint breakers hollow, the Pareto front joined; beside it the front's hypervolume per generation."""
    from evomerge.search.optimize import pareto
    from evomerge.search.optimize.optimizers import OPTIMIZERS

    if not getattr(OPTIMIZERS.get(store.config()["optimizer"]["name"]), "multi_objective", False):
        return None
    all_objs, constraints = pareto.for_run(store)
    objs = all_objs[:2]
    trials = store.trials("complete")
    rows = [(t, pareto.vector(t.scores, objs), pareto.violation(t.scores, constraints)) for t in trials]
    rows = [(t, v, c) for t, v, c in rows if v is not None]
    if not rows:
        return None
    front = pareto.front(trials, all_objs, constraints)
    on_front = {m["trial"] for m in front["members"]}
    history = pareto.hypervolume_history(trials, all_objs, constraints)
    plt = _plt()
    fig, (ax, hv) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})

    def xy(v):
        return [pareto.shown_value(o.metric, x) for o, x in zip(objs, v)]

    gens = [t.generation for t, _, c in rows if c == 0]
    feasible = [xy(v) for _, v, c in rows if c == 0]
    if feasible:
        sc = ax.scatter(*zip(*feasible), c=gens, cmap="viridis", s=16, alpha=0.7, label="trial (colour: generation)")
        fig.colorbar(sc, ax=ax, label="generation")
    broken = [xy(v) for _, v, c in rows if c > 0]
    if broken:
        ax.scatter(*zip(*broken), s=16, facecolors="none", edgecolors="tab:gray", label="breaks a constraint")
    members = sorted((xy(v) for t, v, _ in rows if t.id in on_front), key=lambda p: p[0])
    if members:
        ax.plot(*zip(*members), "o-", color="tab:red", mfc="none", ms=8, lw=1, label="Pareto front")
    ax.set_xlabel(f"{pareto.shown(objs[0].metric)}\n{objs[0].key}", fontsize=9)
    ax.set_ylabel(f"{pareto.shown(objs[1].metric)}\n{objs[1].key}", fontsize=9)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if history:
        hv.plot(*zip(*history), "o-", color="tab:purple")
    hv.set_xlabel("generation")
    hv.set_ylabel("hypervolume of the front (stored units)")
    hv.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "pareto.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_archive(store: RunStore, out: Path) -> Path | None:
    """Quality-diversity runs: each objective's archive as a heatmap of its elites' quality over the grid of the
    other objectives (two descriptors: a map; one: a strip; more: the first two, best over the rest)."""
    from evomerge.search.optimize.quality_diversity import archive_of_run, describe

    built = archive_of_run(store)
    if built is None:
        return None
    archives = describe(*built)
    plt = _plt()
    from evomerge.search.optimize import pareto

    one_d = all(len(a["descriptors"]) == 1 for a in archives)
    fig, axes = plt.subplots(1, len(archives), figsize=(5 * len(archives), 2.6 if one_d else 4.2), squeeze=False)
    for ax, a in zip(axes[0], archives):
        bins = a["bins"]
        dims = min(2, len(a["descriptors"]))
        grid = np.full((bins if dims == 2 else 1, bins), np.nan)
        for c in a["cells"]:
            i, j = (c["cell"][1], c["cell"][0]) if dims == 2 else (0, c["cell"][0])
            if np.isnan(grid[i, j]) or c["quality"] > _stored(grid[i, j], a["metric"]):
                grid[i, j] = c["shown"]
        cmap = "viridis_r" if (a["metric"] or "").startswith("neg_log_") else "viridis"
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap)
        fig.colorbar(im, ax=ax, label=a["shown"])
        def edges(d):  # each bin's lower edge, in the metric's own units
            lo, hi = d["range"]
            return [f"{pareto.shown_value(d['metric'], lo + (hi - lo) * i / bins):.3g}" for i in range(bins)]

        d0 = a["descriptors"][0]
        ax.set_xticks(range(bins), edges(d0), fontsize=7, rotation=30)
        ax.set_xlabel(f"{pareto.shown(d0['metric'])}, bins from\n{d0['key']}", fontsize=8)
        if dims == 2:
            d1 = a["descriptors"][1]
            ax.set_yticks(range(bins), edges(d1), fontsize=7)
            ax.set_ylabel(f"{pareto.shown(d1['metric'])}\n{d1['key']}", fontsize=8)
        else:
            ax.set_yticks([])
        ax.set_title(f"elites by {a['quality']} ({len(a['cells'])} cells)", fontsize=9)
    fig.tight_layout()
    path = out / "archive.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _stored(shown: float, metric: str | None) -> float:
    import math

    return -math.log(shown) if (metric or "").startswith("neg_log_") else shown


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """README.md with the pictures beside it, and report.html: the same page with the pictures inlined, one file
    to attach to a model card or send."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report"
    with RunStore(run_dir) as store:
        best = store.result()
        if best is None:
            raise UserError("the run has no completed trial yet", str(run_dir))
        out.mkdir(parents=True, exist_ok=True)
        images = [p for p in (plot_fitness(store, out), plot_front(store, out), plot_archive(store, out),
                              plot_parameters(best, store.genes_info(), out), plot_path(best, out)) if p]
        series = fitness_series(store)
        label, shown = fitness_units(store.config())
        spent = store.spent()
        done, failed = store.count("complete"), store.count("failed")
        summary = [f"{done} trials complete, {failed} failed, {len(series['generations'])} generations; "
                   f"{spent['merge_s']:.0f} s merging, {spent['eval_s']:.0f} s scoring"
                   + (f", {spent['generated_tokens']} generated tokens" if spent["generated_tokens"] else "") + ".",
                   f"Result: trial {best.id}, {label.split(' (')[0]} {shown(best.fitness):.6g} "
                   f"(fitness {best.fitness:.6g})"
                   + (f", validation {best.val_fitness:.6g}" if best.val_fitness is not None else "") + "."]
        summary += [f"Self-check: {note}" for note in store.notes("self_check")]
        from evomerge.search.records.results import _front

        front = _front(store, store.config())
        if front is not None:
            summary.append(f"Pareto front ({', '.join(front['shown'])}): " + "; ".join(
                f"trial {m['trial']}: " + ", ".join(f"{v:.4g}" for v in m["shown"]) for m in front["members"]) + ".")
        metrics = [f"{name}: " + ", ".join(f"{k} = {v:.4g}" for k, v in m.items()) for name, m in best.scores.items()]
        table = [(g, b, m) for g, b, m in zip(series["generations"], series["best"], series["mean"])]
        head = f"| generation | best {label} | mean |"
        lines = [f"# Search report: {run_dir.name}", ""] + [f"{line}" for line in summary] + [""]
        lines += [f"- {m}" for m in metrics] + ["", head, "|---|---|---|"]
        lines += [f"| {g} | {b:.4g} | {m:.4g} |" for g, b, m in table]
        lines += [""] + [f"![{p.stem}]({p.name})" for p in images]
        lines += ["", "## Result", "", "```yaml", best.recipe.rstrip(), "```", ""]
        (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
        (out / "report.html").write_text(_html(run_dir.name, summary, metrics, head, table, images, best.recipe),
                                         encoding="utf-8")
        return out


def _html(name: str, summary: list[str], metrics: list[str], head: str, table: list, images: list[Path],
          recipe: str) -> str:
    """One self-contained page: the pictures inlined as base64 PNGs, no outside resource."""
    import base64
    from html import escape

    cols = [c.strip() for c in head.strip("|").split("|")]
    rows = "".join(f"<tr><td>{g}</td><td>{b:.4g}</td><td>{m:.4g}</td></tr>" for g, b, m in table)
    pictures = "".join(f'<figure><img alt="{escape(p.stem)}" src="data:image/png;base64,'
                       f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{escape(p.stem)}</figcaption>'
                       "</figure>" for p in images)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Search report: {escape(name)}</title><style>body{{font-family:sans-serif;max-width:960px;"
            "margin:2em auto}}img{{max-width:100%}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;"
            "padding:2px 8px}}pre{{background:#f4f4f4;padding:1em;overflow:auto}}</style></head><body>"
            f"<h1>Search report: {escape(name)}</h1>" + "".join(f"<p>{escape(s)}</p>" for s in summary)
            + "<ul>" + "".join(f"<li>{escape(m)}</li>" for m in metrics) + "</ul>"
            + "<table><tr>" + "".join(f"<th>{escape(c)}</th>" for c in cols) + f"</tr>{rows}</table>"
            + pictures + f"<h2>Result</h2><pre>{escape(recipe)}</pre></body></html>")
