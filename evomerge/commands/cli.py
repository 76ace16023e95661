"""The `evomerge` command line. Bad input ends with a short message and exit code 2, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from evomerge.core.devices import pick_device
from evomerge.core.errors import UserError

EXIT_USER_ERROR = 2
EXIT_NO_RESULT = 1  # a search that ran but has no completed trial, so no best


def _size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("B")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size such as 5G or 500M") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evomerge")
def cli() -> None:
    """Evolutionary model merging: run merge recipes, evolve them, export the result."""


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N]: where the arithmetic runs.")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists and is not empty.")
@click.option("--seed", type=int, default=None, help="Seed for DARE masks (overrides the recipe's `seed`).")
@click.option("--max-shard-size", default="5G", show_default=True, help="Largest safetensors shard, e.g. 2G, 500M.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def merge(recipe: Path, out_dir: Path, device: str, force: bool, seed: int | None, max_shard_size: str, quiet: bool) -> None:
    """Merge the models of RECIPE (mergekit YAML) into a Hugging Face model folder OUT_DIR."""
    from evomerge.merging.export import check_out_dir
    from evomerge.merging.merge import run_merge
    from evomerge.merging.recipe import load_recipe

    shard = _size(max_shard_size)
    pick_device(device, "--device")
    parsed = load_recipe(recipe)
    check_out_dir(out_dir, force)
    plan = run_merge(parsed, out_dir, device=device, seed=seed, force=force, max_shard_size=shard,
                     progress=not quiet, where=str(recipe))
    for w in plan.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"wrote {out_dir} ({plan.num_layers} layers, {len(plan.tasks)} tensors, method {plan.method.name})")


@cli.command()
@click.option("--config", "config_path", default=None, help="A search config: which fast paths apply to it, and "
              "the self-check on a small random model of its architecture.")
@click.option("--device", default="auto", show_default=True)
@click.option("--no-speed", is_flag=True, help="Skip the speed probe.")
@click.option("--json", "as_json", is_flag=True)
def doctor(config_path: str | None, device: str, no_speed: bool, as_json: bool) -> None:
    """What this machine will do: devices, dtypes, Triton, fast paths, the GPU self-check, a speed probe."""
    import json

    from evomerge.commands.doctor import diagnose, render

    report = diagnose(config_path, device, speed=not no_speed)
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
    if any(r["result"] == "FAILED" for r in report["rows"]):
        sys.exit(EXIT_NO_RESULT)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--racing", "racing", default=None, help="Racing settings, e.g. chunk=16,confidence=0.95,min_items=16.")
@click.option("--subset", "subset", default=None, help="Subset settings, e.g. items=32.")
@click.option("--json", "as_json", is_flag=True)
def replay(run_dir: Path, racing: str | None, subset: str | None, as_json: bool) -> None:
    """What racing or subset fitness would have decided and saved on a run scored in full (from its item results)."""
    import json

    from evomerge.search.economy.replay import replay_racing, replay_subset

    def settings(text: str, option: str) -> dict:
        try:
            return {k: float(v) if "." in v else int(v) for k, v in (kv.split("=") for kv in text.split(",") if kv)}
        except ValueError:
            raise UserError(f"write settings as key=value,key=value, got {text!r}", option) from None

    if (racing is None) == (subset is None):
        raise UserError("give --racing or --subset", "replay")
    try:
        report = (replay_racing(run_dir, **settings(racing, "--racing")) if racing is not None
                  else replay_subset(run_dir, **settings(subset, "--subset")))
    except TypeError as e:
        raise UserError(f"unknown setting ({e})", "--racing" if racing is not None else "--subset") from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for row in report["generations"]:
        click.echo("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                             if k not in ("raced_ids", "anchor_ids", "estimates")))
    choice = report.get("final_choice")
    if choice:
        if choice.get("note"):
            click.echo(choice["note"])
        click.echo(f"final choice: trial {choice['trial']} (generation {choice['generation']}), full score "
                   f"{choice['full']:.4g}; the run's best scored in full: {choice['run_best_full']:.4g}")
    agreement = report["mean_top_half_agreement"]
    click.echo(f"problems used {report['problems_used']} of {report['problems_full']} ({report['saving']:.2f}x fewer); "
               + (f"mean top-half agreement {agreement:.3f}" if agreement is not None else "no generation to compare"))


@cli.command()
@click.argument("samples_a", type=click.Path(path_type=Path))
@click.argument("samples_b", type=click.Path(path_type=Path))
@click.option("--metric", required=True, help="The per-item value to compare, e.g. acc_ja, correct, rougeL.")
@click.option("--json", "as_json", is_flag=True)
def compare(samples_a: Path, samples_b: Path, metric: str, as_json: bool) -> None:
    """B against A on the same items (two `eval --samples` files): a paired test (McNemar or Wilcoxon)."""
    import json

    from evomerge.evaluators.compare import compare_files

    r = compare_files(samples_a, samples_b, metric)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    low, high = r["interval_95"]
    click.echo(f"{metric} on {r['items']} items: A {r['mean_a']:.4f}, B {r['mean_b']:.4f}, B - A {r['difference']:+.4f} "
               f"(95% interval {low:+.4f} to {high:+.4f}); {r['test']} p = {r['p_value']:.3g}")


@cli.command()
def methods() -> None:
    """List the merge methods, what each does, its parameters, and which run compiled on the CPU and fused on a GPU."""
    from evomerge.merging.methods import get_method, method_names

    for name in method_names():
        m = get_method(name)
        params = ", ".join(p.name for p in m.params) or "none"
        notes = [n for n, on in (("needs base_model", m.base == "required"), ("seeded masks", m.randomised),
                                 ("CPU kernels", m.fused is not None),
                                 ("fused on GPU", m.fused is not None and m.fused.gpu)) if on]
        click.echo(f"{name:18} {m.description}")
        click.echo(f"{'':18} parameters: {params}" + (f"; {', '.join(notes)}" if notes else ""))


@cli.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--run-dir", required=True, type=click.Path(path_type=Path), help="Folder for the run's database.")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir where it stopped.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--tensorboard", is_flag=True, help="Stream trials to TensorBoard event files in RUN_DIR/tensorboard.")
@click.option("--wandb", "wandb_project", default=None, help="Stream trials to this Weights & Biases project.")
@click.option("--wandb-mode", type=click.Choice(["online", "offline"]), default="online", show_default=True)
def search(config: Path, run_dir: Path, resume: bool, quiet: bool, tensorboard: bool, wandb_project: str | None,
           wandb_mode: str) -> None:
    """Evolve the merge recipe described by CONFIG; every trial is recorded in --run-dir."""
    from evomerge.search.config import TrackingConfig, WandbConfig, load_search_config
    from evomerge.search.loop.run import run_search

    cfg = load_search_config(config)
    if tensorboard or wandb_project:  # flags add to the config's `tracking:` section
        tracking = cfg.tracking or TrackingConfig()
        if tensorboard:
            tracking = tracking.model_copy(update={"tensorboard": tracking.tensorboard or True})
        if wandb_project:
            tracking = tracking.model_copy(update={"wandb": WandbConfig(project=wandb_project, mode=wandb_mode)})
        cfg = cfg.model_copy(update={"tracking": tracking})
    best = run_search(cfg, run_dir, resume=resume, progress=not quiet,
                      config_text=config.read_text(encoding="utf-8"), log=lambda m: click.echo(m, err=True))
    if best is None:
        from evomerge.search.records.results import no_best_reason

        click.echo(f"error: {run_dir}: {no_best_reason(run_dir)}", err=True)
        sys.exit(EXIT_NO_RESULT)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="A live view, refreshed until the run ends.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between refreshes with --watch.")
def status(run_dir: Path, as_json: bool, watch: bool, interval: float) -> None:
    """Progress and best trial of the search in RUN_DIR (--watch --json: one JSON line per refresh)."""
    import json

    from evomerge.search.records.results import run_status

    info = run_status(run_dir)
    if watch:
        from evomerge.reports.watch import watch as live_view, watch_json

        if as_json:
            watch_json(run_dir, interval, emit=click.echo)
        else:
            live_view(run_dir, interval)
        return
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{info['completed']} complete, {info['failed']} failed, "
               + (f"{info['raced']} raced out, " if info["raced"] else "")
               + (f"{info['estimated']} estimated on a subset, " if info["estimated"] else "")
               + f"{info['running']} running "
               f"of {info['budget']} trials; {info['generations']} generations")
    spent = info["spent"]
    click.echo(f"spent: {spent['merge_s']:.0f}s merging, {spent['eval_s']:.0f}s scoring"
               + (f", {spent['prompt_tokens']} prompt and {spent['generated_tokens']} generated tokens"
                  if spent["prompt_tokens"] else "")
               + (f"; {spent['duplicates']} repeated candidates taken from earlier trials" if spent["duplicates"] else ""))
    if info["estimates"] in ("log-probability", "agreement") and info["estimated"]:
        what = ("the references' log-probabilities (nats per problem)" if info["estimates"] == "log-probability"
                else "the share of the references' tokens each candidate would pick itself")
        click.echo(f"estimates are {what}: they rank a generation, they are not the metric; the best is a "
                   "finalist scored on the metric")
    if info["estimation_error"]:
        e = info["estimation_error"]
        click.echo(f"subset estimates vs full-set scores of {e['checked']} generation bests: mean error "
                   f"{e['mean']:+.4g}, mean absolute {e['mean_abs']:.4g}, largest {e['max_abs']:.4g}")
    for note in info["self_check"]:
        click.echo(f"self-check: {note}")
    front = info.get("front")
    if front is not None:
        click.echo(f"Pareto front: {len(front['members'])} of {front['feasible']} trials that meet the constraints "
                   f"({front['scored']} scored)" + (f"; hypervolume {front['hypervolume']:.4g}"
                                                     if front["hypervolume"] is not None else ""))
        click.echo("  trial  gen  " + "  ".join(front["shown"]))
        for m in front["members"]:
            click.echo(f"  {m['trial']:>5}  {m['generation']:>3}  "
                       + "  ".join(f"{v:>{len(h)}.5g}" for v, h in zip(m["shown"], front["shown"])))
        click.echo("  (export any of them: evomerge export RUN_DIR OUT --trial ID)")
    for a in info.get("archive") or []:
        size = a["bins"] ** len(a["descriptors"])
        click.echo(f"archive by {a['quality']} ({a['shown']}): {len(a['cells'])} of {size} cells filled, "
                   f"cells over " + ", ".join(f"{d['key']} {d['metric']}" for d in a["descriptors"]))
        click.echo("  " + "  ".join(f"{tuple(c['cell'])}: trial {c['trial']} ({c['shown']:.4g})" for c in a["cells"]))
    best = info["best"]
    if not best:
        click.echo("best: none yet (no trial has completed)")
    else:
        click.echo(f"best: trial {best['trial']}, fitness {best['fitness']:.6g}")
        for k, v in best["params"].items():
            click.echo(f"  {k} = {v:.4f}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--trial", default="best", show_default=True, help="'best' or a trial id.")
@click.option("--device", default="auto", show_default=True)
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists and is not empty.")
@click.option("--quiet", is_flag=True)
def export(run_dir: Path, out_dir: Path, trial: str, device: str, force: bool, quiet: bool) -> None:
    """Write a trial of RUN_DIR (the best by default) as a Hugging Face model in OUT_DIR."""
    from evomerge.search.records.results import export_trial

    pick_device(device, "--device")
    t = export_trial(run_dir, out_dir, trial, device=device, force=force, progress=not quiet,
                     log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {out_dir} (trial {t.id}, fitness {t.fitness:.6g})")


@cli.command(name="eval")
@click.argument("model")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="A search config; its `fitness` section is used.")
@click.option("--device", default=None, help="Overrides the config's device.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a model's own modeling code (data-flow exports).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--samples", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write every item's response and score here (JSON lines).")
def eval_(model: str, config_path: Path, device: str | None, trust_remote_code: bool, as_json: bool,
          samples: Path | None) -> None:
    """Score MODEL (folder, .gguf, builtin:NAME or hub id) with a config's fitness."""
    import json

    from evomerge.evaluators import Fitness
    from evomerge.search.config import load_search_config
    from evomerge.sources.loading import load_for_eval

    if samples is not None and not samples.parent.is_dir():
        raise UserError(f"folder {samples.parent} does not exist", "--samples")
    cfg = load_search_config(config_path)
    pick_device(device or cfg.device, "--device" if device else f"{config_path}: device")
    fitness = Fitness(cfg.fitness, f"{config_path}: fitness")
    lm, tok = load_for_eval(model, device or cfg.device, trust_remote_code=trust_remote_code)
    if cfg.self_check:
        for note in fitness.check_generation(lm, tok):
            click.echo(f"warning: {note}", err=True)
    value, scores = fitness.score(lm, tok)
    if samples:
        fitness.write_samples(samples, keep_empty=True)
    if as_json:
        click.echo(json.dumps({"model": model, "fitness": value, "scores": scores}, indent=2))
    else:
        click.echo(f"fitness {value:.6g}")
        for name, metrics in scores.items():
            click.echo(f"  {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder (default RUN_DIR/report).")
def report(run_dir: Path, out: Path | None) -> None:
    """Plots (PNG) and a markdown summary of the search in RUN_DIR."""
    from evomerge.reports.report import write_report

    folder = write_report(run_dir, out)
    click.echo(f"wrote {folder / 'README.md'} and {', '.join(p.name for p in sorted(folder.glob('*.png')))}")


@cli.command()
@click.argument("config_path", metavar="TABLE", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the markdown here.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Result cache folder (default: .evomerge-cache/table next to TABLE).")
def table(config_path: Path, as_json: bool, out: Path | None, cache: Path | None) -> None:
    """Evaluate the models of TABLE on its tasks; print the table (cached cells are not recomputed)."""
    import json

    from evomerge.reports.table import build_table, load_table_config, to_markdown

    cfg = load_table_config(config_path)
    result = build_table(cfg, cache or config_path.parent / ".evomerge-cache" / "table",
                         log=lambda m: click.echo(m, err=True))
    text = to_markdown(result, cfg)
    if out:
        out.write_text(text, encoding="utf-8")
    click.echo(json.dumps(result, indent=2) if as_json else text)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder (default runs/miniature, or runs/miniature-small with --small).")
@click.option("--small", is_flag=True, help="The CPU setting: small budgets and problem counts.")
@click.option("--device", default=None, help="Overrides the configs' device.")
@click.option("--results", type=click.Path(path_type=Path), default=None, help="Where to write the table.")
@click.option("--quiet", is_flag=True)
def miniature(out: Path | None, small: bool, device: str | None, results: Path | None, quiet: bool) -> None:
    """The offline reproduction in small: specialists, PS and PS+DFS searches, held-out table."""
    from evomerge.miniature.run import run_miniature

    out = out or Path("runs/miniature-small" if small else "runs/miniature")
    text = run_miniature(out, small=small, device=device, results=results, progress=not quiet,
                         log=lambda m: click.echo(m, err=True))
    click.echo(text)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="evomerge", standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USER_ERROR)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        click.echo("interrupted (finished trials are kept; an unfinished merge leaves nothing behind)", err=True)
        sys.exit(130)
    sys.exit(0)


if __name__ == "__main__":
    main()
