"""``whyclip explain``: images in, explanations out, through the explanation service
(:mod:`whyclip.ingest.services.explain`), or from a running ``whyclip serve`` with ``--server``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from whyclip.ingest import expand_image_paths
from whyclip.ingest.images import check_image, read_image
from whyclip.ingest.services.explain import IMAGE_BATCH, ExplainOptions, ImageFailure, open_encoder, plan_explain
from whyclip.ingest.services.maps import MapOptions
from whyclip.store import WhyclipError, shown_text
from whyclip.store.choices import AGGREGATES
from whyclip.ui.cli.context import open_store
from whyclip.ui.cli.options import PRECISION
from whyclip.ui.cli.progress import progress_bar
from whyclip.ui.render.explanation_json import explanation_json
from whyclip.ui.render.maps import MapsWriter, check_maps_dir, maps_note


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--library", "-l", required=True, help="Library to explain with.")
@click.option("--version", "lib_version", type=int, default=None, help="Library version [default: newest].")
@click.option(
    "--top", default=5, show_default=True, type=click.IntRange(1), help="Classes to show, with all their descriptors."
)
@click.option(
    "--aggregate",
    "-a",
    type=click.Choice(AGGREGATES),
    default=None,
    help="How descriptor similarities make a class score [default: the library's, mean].",
)
@click.option(
    "--compare", nargs=2, default=None, metavar="A B", help="Contrast these two classes [default: the top two]."
)
@click.option(
    "--retrieve", default=10, show_default=True, type=click.IntRange(0), help="Library-wide best descriptors to list."
)
@click.option("--model", "-m", default=None, help="CLIP model [default: the one the library was built with].")
@click.option("--device", default=None, help="torch device (default: a GPU when there is one).")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per image, one per line (schema: docs/explanations.md)."
)
@PRECISION
@click.option(
    "--server",
    default=None,
    metavar="URL",
    envvar="WHYCLIP_SERVER",
    help="Ask a running 'whyclip serve' at URL instead of loading the model here [env WHYCLIP_SERVER].",
)
@click.option(
    "--api-key",
    default=None,
    envvar="WHYCLIP_API_KEY",
    help="API key for --server, if it needs one [env WHYCLIP_API_KEY].",
)
@click.option(
    "--calibrated",
    is_flag=True,
    help="Probabilities from the library version's stored calibration (made by 'whyclip calibrate').",
)
@click.option(
    "--maps",
    "maps_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Where in the image: write each shown descriptor's map (a PNG over the picture, with its S) and "
    "DIR/index.html showing them together; --json gains each map as a grid of numbers.",
)
@click.option(
    "--check",
    type=click.Choice(["occlusion"]),
    default=None,
    help="With --maps: also mask each cell of a 7x7 grid and re-encode (49 encodes per image), and give "
    "each map's agreement with that.",
)
@click.option("--dense", is_flag=True, help="With --maps: also the sharper ClearCLIP map (it does not add up to S).")
@click.pass_context
def explain(
    ctx,
    images,
    library,
    lib_version,
    top,
    aggregate,
    compare,
    retrieve,
    model,
    device,
    as_json,
    precision,
    server,
    api_key,
    calibrated,
    maps_dir,
    check,
    dense,
):
    """Explain why each IMAGE (file or folder of images) gets its classes.

    A folder means every image under it, subfolders included (hidden ones skipped), in path
    order; its count is said on stderr. Images are encoded and scored in batches. An
    unreadable image is reported on stderr (one line: the file and why) and skipped, the
    others are explained, and the exit status is then 1.

    With --maps DIR, each shown descriptor also gets a map of where in the image it is seen:
    the exact split of its S among the image patches (through the last 4 attention layers,
    plus a stated remainder), optionally the dense map (--dense) and the occlusion check
    (--check occlusion). A model with a random-weight test model's maps mean nothing.
    With --server, the service makes the maps (one image a request) and they are drawn here.
    """
    if (check or dense) and maps_dir is None:
        raise click.UsageError(f"{'--check' if check else '--dense'} goes with --maps DIR: add --maps DIR")
    if maps_dir is not None:
        check_maps_dir(maps_dir)
    map_options = MapOptions(check=check, dense=dense) if maps_dir is not None else None
    found: list[str] = []  # each folder's image count ("found 12 images in 3 folders under DIR")
    if server:
        from whyclip.ui.cli.remote import explain_remote

        form = {
            "library": library,
            "top": top,
            "retrieve": retrieve,
            **({"version": lib_version} if lib_version else {}),
            **({"aggregate": aggregate} if aggregate else {}),
            **({"compare": list(compare)} if compare else {}),
            **({"calibrated": "true"} if calibrated else {}),
            **({"maps": "true"} if maps_dir is not None else {}),
            **({"check": check} if check else {}),
            **({"dense": "true"} if dense else {}),
        }
        paths = expand_image_paths(images, found.append)
        _say(found)
        return explain_remote(ctx, server, api_key, paths, form, as_json, maps_dir)
    store = open_store(ctx, create=False)
    options = ExplainOptions(
        top=top,
        aggregate=aggregate,
        compare=tuple(compare) if compare else None,
        retrieve=retrieve,
        calibrated=calibrated,
        maps=map_options,
    )
    plan = plan_explain(store, library, lib_version, options)
    listed = expand_image_paths(images, found.append)
    paths, failed = _readable(listed, check_image, found)  # headers, before the model loads
    encoder = open_encoder(store, model or plan.library.info.encoder_name, device, precision)
    explainer = plan.with_encoder(encoder)
    writer = MapsWriter(maps_dir) if maps_dir is not None else None
    shown = 0
    said: set[str] = set()  # why the name/description split is missing: once per command, on stderr
    with progress_bar("explaining images", unit="image") as bar:
        # maps take up to seconds an image (occlusion): then the bar moves an image at a time
        shown_bar = len(paths) > IMAGE_BATCH or (maps_dir is not None and len(paths) > 1)
        for result in explainer.explain_files(paths, progress=bar if shown_bar else None):
            if isinstance(result, ImageFailure):
                click.echo(f"Error: {result.error}", err=True)
                failed += 1
                continue
            if as_json:
                click.echo(json.dumps(explanation_json(result, encoder), ensure_ascii=False))
            else:
                if (note := result.split_note) and note not in said:
                    said.add(note)
                    click.echo(shown_text(note), err=True)
                click.echo(("\n" if shown else "") + shown_text(result.to_text(split_note=False)))
            if writer is not None and result.maps is not None:
                if (note := result.maps.note) and note not in said:
                    said.add(note)
                    click.echo(note, err=True)
                model = encoder.map_model()
                writer.add(result, model.view(model.pixels(read_image(result.image))))
            shown += not isinstance(result, ImageFailure)
    if writer is not None and writer.images:
        click.echo(f"maps of {len(writer.images)} image(s) in {writer.finish(maps_note(encoder))}", err=True)
    if failed:
        ctx.exit(1)


def _say(lines: list[str]) -> None:
    """Each folder's image count, on stderr (stdout stays the explanations)."""
    for line in lines:
        click.echo(line, err=True)


def _readable(paths: list[Path], check, found: list[str]) -> tuple[list[Path], int]:
    """The paths whose headers pass ``check``; each one that fails is reported on stderr in
    one line (name and reason), after the folders' counts (``found``). None readable: one
    line, exit 1, before any model loads."""
    good, bad = [], []
    for path in paths:
        try:
            check(path)
            good.append(path)
        except WhyclipError as exc:
            bad.append(str(exc))
    if not good:
        listed = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise click.ClickException(f"no readable image: {listed}" if len(bad) > 1 else bad[0])
    _say(found)
    for line in bad:
        click.echo(f"Error: {line}", err=True)
    return good, len(bad)
