"""``whyclip ui``: the Streamlit dashboard on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from whyclip.ui.cli.context import open_store
from whyclip.ui.cli.options import check_port_free


def _images_found(folder: str) -> str:
    """--images' count ("found 12 images in 3 folders under DIR"), or why there are none to pick."""
    from whyclip.ingest.images import list_images
    from whyclip.store import InputError

    try:
        listing = list_images(folder)
    except InputError as exc:
        return f"warning: {exc}"
    return listing.summary if listing.files else f"warning: {listing.summary}: the dashboard has none to pick from"


@click.command()
@click.option("--library", "-l", default=None, help="Library to open first [default: the one made most recently].")
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535), help="Port on 127.0.0.1.")
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A folder of images to pick from in the dashboard.",
)
@click.option("--model", "-m", default=None, help="CLIP model [default: the one each library was built with].")
@click.pass_context
def ui(ctx, library, port, images, model):
    """Start the dashboard (Streamlit) on http://127.0.0.1:PORT."""
    if library is not None:
        open_store(ctx, create=False).library(library)  # an unknown name fails here, in one line
    env = dict(os.environ)
    settings = {
        "WHYCLIP_HOME": ctx.obj["home"],
        "WHYCLIP_DB": ctx.obj["db"],
        "WHYCLIP_UI_LIBRARY": library,
        "WHYCLIP_UI_IMAGES": images and str(Path(images).resolve()),
        "WHYCLIP_UI_MODEL": model,
    }
    env.update({k: v for k, v in settings.items() if v})
    app = Path(__file__).parents[1] / "dashboard" / "streamlit_app.py"
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]
    check_port_free("127.0.0.1", port)
    if images:
        click.echo(_images_found(images), err=True)
    click.echo(f"whyclip dashboard on http://127.0.0.1:{port} (Ctrl+C to stop)", err=True)
    sys.stderr.flush()
    if os.name == "posix":  # become the server, so that signals (Ctrl+C, kill) reach it directly
        os.execve(sys.executable, command, env)
    try:
        code = subprocess.call(command, env=env)
    except KeyboardInterrupt:
        code = 0
    ctx.exit(code)
