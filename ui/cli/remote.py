"""``whyclip explain --server URL``: the same explanations from a running ``whyclip serve``.

Images are checked and read here (an unreadable one is reported and skipped, as locally),
sent in batches, and the answers printed exactly as the local command prints them: the
JSON objects as they come, the text rebuilt from them. With ``--maps DIR`` the service
makes the maps (``maps=true``) and they are drawn here, as the local command draws them."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from whyclip.store import Explanation, InputError, WhyclipError, shown_text

BATCH = 32
MAPS_BATCH = 1  # images a request with maps: within any server's limits on them (maps dominate its time)
TIMEOUT_S = 120


def _post(client, url: str, files: list, form: dict) -> list[dict]:
    import httpx

    try:
        r = client.post(url.rstrip("/") + "/v1/explain", files=files, data=form)
    except httpx.HTTPError as exc:
        raise WhyclipError(f"cannot reach the whyclip service at {url}: {exc}") from None
    if r.status_code != 200:
        try:
            message = r.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {r.status_code}"
        raise WhyclipError(f"the service at {url} refused the request: {message}")
    return r.json()["explanations"]


def explain_remote(
    ctx: click.Context,
    url: str,
    api_key: str | None,
    paths: list[Path],
    form: dict,
    as_json: bool,
    maps_dir: Path | None = None,
) -> None:
    """Explain ``paths`` through the service at ``url``; exit 1 if any image was unreadable.
    With ``maps_dir``, the maps the service made are drawn there as the local command draws
    them, over the picture the model saw (made here: :func:`model_view`)."""
    import httpx

    from whyclip.ingest.images import read_image

    headers = {"X-API-Key": api_key} if api_key else {}
    failed = shown = 0
    said: set[str] = set()  # as the local command: why the split is missing, once, on stderr
    writer = None
    if maps_dir is not None:
        from whyclip.ui.render.maps import MapsWriter

        writer = MapsWriter(maps_dir)
    batch = MAPS_BATCH if maps_dir is not None else BATCH
    with httpx.Client(timeout=TIMEOUT_S, headers=headers) as client:
        for start in range(0, len(paths), batch):
            files, sent = [], []
            for path in paths[start : start + batch]:
                try:
                    read_image(path)  # the local command's checks and messages
                    files.append(("image", (str(path), path.read_bytes())))
                    sent.append(path)
                except (InputError, OSError) as exc:
                    click.echo(f"Error: {exc}", err=True)
                    failed += 1
            if not files:
                continue
            for path, d in zip(sent, _post(client, url, files, form), strict=True):
                exp = Explanation.from_dict(d)
                if as_json:
                    click.echo(json.dumps(d, ensure_ascii=False))
                else:
                    if (note := exp.split_note) and note not in said:
                        said.add(note)
                        click.echo(shown_text(note), err=True)
                    click.echo(("\n" if shown else "") + shown_text(exp.to_text(split_note=False)))
                shown += 1
                if writer is not None and exp.maps is not None:
                    if (note := exp.maps.note) and note not in said:
                        said.add(note)
                        click.echo(note, err=True)
                    writer.add(exp, model_view(read_image(path), exp.maps.size))
    if writer is not None and writer.images:
        click.echo(f"maps of {len(writer.images)} image(s) in {writer.finish()}", err=True)
    if failed:
        ctx.exit(1)


def model_view(picture, size) -> np.ndarray:
    """The picture the model saw, (H, W, 3) uint8, for a model input of ``size`` (height,
    width): the shortest edge resized to the height (bicubic) and the centre cropped, as CLIP's
    image processor does (:class:`~whyclip.ingest.encoder.vision.ImageProcessor`, without
    its rescaling and normalisation), so the service's maps fit it without the model here."""
    from whyclip.ingest.encoder.vision import ImageProcessor

    if size is None:
        raise WhyclipError("the service's maps do not say the model's input size: upgrade the server")
    height, width = int(size[0]), int(size[1])
    seen = ImageProcessor(shortest_edge=height, crop=(height, width), rescale_factor=None, mean=None, std=None)
    x = seen.one(picture)  # (3, H, W) uint8
    return np.ascontiguousarray(np.moveaxis(x, 0, -1))
