"""Click options that several command modules share (kept apart from ``cli.py``, so that a
command module never imports the module that registers it)."""

from __future__ import annotations

import click

PRECISION = click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="Numeric precision: auto = bf16 on CPUs that support it, fp16 on GPUs, each checked against fp32 on a sample.",
)

DEFAULT_MODEL_HELP = "CLIP model: a sentence-transformers name or a local folder [default: clip-ViT-B-32]"
