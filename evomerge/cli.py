"""The `evomerge` command line. Bad input ends with a short message and exit code 2, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from evomerge.errors import UserError

EXIT_USER_ERROR = 2


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
    from evomerge.export import check_out_dir
    from evomerge.merge import run_merge
    from evomerge.recipe import load_recipe

    shard = _size(max_shard_size)
    parsed = load_recipe(recipe)
    check_out_dir(out_dir, force)
    plan = run_merge(parsed, out_dir, device=device, seed=seed, force=force, max_shard_size=shard,
                     progress=not quiet, where=str(recipe))
    for w in plan.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"wrote {out_dir} ({plan.num_layers} layers, {len(plan.tasks)} tensors, method {plan.method.name})")


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
        click.echo("interrupted; nothing was written", err=True)
        sys.exit(130)
    sys.exit(0)


if __name__ == "__main__":
    main()
