"""``whyclip explain --server URL``: the same explanations from a running ``whyclip serve``.

Images are checked and read here (an unreadable one is reported and skipped, as locally),
sent in batches, and the answers printed exactly as the local command prints them: the
JSON objects as they come, the text rebuilt from them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from whyclip.store import Explanation, InputError, WhyclipError, shown_text

BATCH = 32
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
    """Explain ``paths`` through the service at ``url``; exit 1 if any image was unreadable."""
    if maps_dir is not None:
        raise click.UsageError("--maps is not yet served to --server: drop --server to make maps here")
    import httpx

    from whyclip.ingest.images import read_image

    headers = {"X-API-Key": api_key} if api_key else {}
    failed = shown = 0
    said: set[str] = set()  # as the local command: why the split is missing, once, on stderr
    with httpx.Client(timeout=TIMEOUT_S, headers=headers) as client:
        for start in range(0, len(paths), BATCH):
            files = []
            for path in paths[start : start + BATCH]:
                try:
                    read_image(path)  # the local command's checks and messages
                    files.append(("image", (str(path), path.read_bytes())))
                except (InputError, OSError) as exc:
                    click.echo(f"Error: {exc}", err=True)
                    failed += 1
            if not files:
                continue
            for d in _post(client, url, files, form):
                if as_json:
                    click.echo(json.dumps(d, ensure_ascii=False))
                else:
                    exp = Explanation.from_dict(d)
                    if (note := exp.split_note) and note not in said:
                        said.add(note)
                        click.echo(shown_text(note), err=True)
                    click.echo(("\n" if shown else "") + shown_text(exp.to_text(split_note=False)))
                shown += 1
    if failed:
        ctx.exit(1)
