"""``whyclip demo`` (the bundled library explained on drawn samples) and ``whyclip
make-test-model`` (a random-weight CLIP folder, built offline)."""

from __future__ import annotations

import shlex

import click

from whyclip.ingest.encoder.testmodel import make_test_model
from whyclip.ui.cli.context import open_store
from whyclip.ui.cli.options import DEFAULT_MODEL_HELP, PRECISION
from whyclip.ui.demo.run import run_demo


@click.command()
@click.option("--model", "-m", default=None, help=DEFAULT_MODEL_HELP)
@click.option("--device", default=None, help="torch device (default: a GPU when there is one).")
@PRECISION
@click.pass_context
def demo(ctx, model, device, precision):
    """Ingest the bundled demo library and explain a few drawn sample images."""
    home = ctx.obj["home"]  # the hints repeat --home (never --db: its URL may hold a password)
    whyclip = "whyclip" + (f" --home {shlex.quote(str(home))}" if home else "")
    run_demo(lambda: open_store(ctx, create=True), model, device, echo=click.echo, precision=precision, whyclip=whyclip)


@click.command("make-test-model")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--full-size", is_flag=True, help="ViT-B/32's architecture (same compute as the real model) instead of a tiny one."
)
@click.option(
    "--vocab",
    type=click.Path(exists=True),
    default=None,
    help=(
        "CLIP's bpe_simple_vocab_16e6.txt.gz, a clip-anytorch wheel, or a folder holding either (needed for "
        "--full-size)."
    ),
)
@click.option("--seed", default=0, show_default=True, help="Random seed for the weights.")
def make_test_model_cmd(directory, full_size, vocab, seed):
    """Write a random-weight CLIP model folder, built offline, loadable with --model DIRECTORY.

    For plumbing and speed checks only: its explanations mean nothing.
    """
    try:
        path = make_test_model(directory, full_size=full_size, vocab=vocab, seed=seed)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"wrote a {'full-size ViT-B/32' if full_size else 'tiny'} random-weight CLIP to {path}; use it with "
        f"--model {path}"
    )
