"""``whyclip serve``: the HTTP service (FastAPI under uvicorn), one model per process."""

from __future__ import annotations

import os
import sys

import click

from whyclip.ui.api.settings import KEYS_ENV, MB, SETTINGS_ENV, Limits, ServiceSettings, load_keys
from whyclip.ui.cli.options import check_port_free

EVERY_INTERFACE = ("0.0.0.0", "::", "")
KEEP_ALIVE_S = 5  # a kept-alive connection silent this long is closed (uvicorn's timer)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@click.option("--model", "-m", default=None, help="CLIP model, loaded once per process [default: clip-ViT-B-32].")
@click.option("--device", default=None, help="torch device (default: a GPU when there is one).")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="Numeric precision of the encoder (auto: checked against fp32 on a sample).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes, each with its own model.",
)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help=f"File of API keys, one a line (also: ${KEYS_ENV}, comma-separated). Writes need a key.",
)
@click.option("--keys-for-reads", is_flag=True, help="Reads (explain, retrieve, listings, jobs) need an API key too.")
@click.option("--max-body-mb", default=64, show_default=True, type=click.IntRange(1), help="Largest request body.")
@click.option("--max-images", default=32, show_default=True, type=click.IntRange(1), help="Images per explain request.")
@click.option(
    "--max-map-images",
    default=8,
    show_default=True,
    type=click.IntRange(1),
    help="Images per explain request with maps=true (a decomposition each).",
)
@click.option(
    "--max-occlusion-images",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="Images per explain request with check=occlusion (49 image encodes each).",
)
@click.option(
    "--max-pixels",
    default=40_000_000,
    show_default=True,
    type=click.IntRange(1),
    help="Pixels of one image (decompression bombs).",
)
@click.option(
    "--max-library-mb", default=32, show_default=True, type=click.IntRange(1), help="Largest uploaded library file."
)
@click.option(
    "--request-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a request may take (then 504).",
)
@click.option(
    "--batch-wait-ms",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0),
    help="How long an image waits for others to share its encode.",
)
@click.option(
    "--queue",
    "queue_images",
    default=256,
    show_default=True,
    type=click.IntRange(1),
    help="Images waiting to be encoded before requests get 503 with Retry-After.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    callback=lambda _ctx, _param, names: _check_host_names(names),
    help="A Host name the server answers to, besides localhost names and the --host address (repeatable; "
    "'*.example.com' for its subdomains, '*' for any). Others get 400.",
)
@click.option("--docs", is_flag=True, help="Serve interactive docs at /docs (Swagger UI, loaded from a CDN).")
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds a connection may take to send a request's headers (then it is closed).",
)
@click.pass_context
def serve(
    ctx,
    host,
    port,
    model,
    device,
    precision,
    workers,
    key_file,
    keys_for_reads,
    max_body_mb,
    max_images,
    max_map_images,
    max_occlusion_images,
    max_pixels,
    max_library_mb,
    request_timeout,
    batch_wait_ms,
    queue_images,
    allowed_hosts,
    docs,
    header_timeout,
):
    """Serve explanations over HTTP: POST /v1/explain, /v1/retrieve, /v1/libraries; schema at /openapi.json.

    The model is loaded once per worker process; concurrent requests' images are encoded
    together. Writes (uploading, deleting libraries) need an API key.
    """
    import uvicorn

    from whyclip.ui.api.connections import HeaderTimeoutProtocol

    limits = Limits(
        max_body_bytes=max_body_mb * MB,
        max_images=max_images,
        max_map_images=max_map_images,
        max_occlusion_images=max_occlusion_images,
        max_image_pixels=max_pixels,
        max_library_bytes=max_library_mb * MB,
        request_seconds=request_timeout,
    )
    settings = ServiceSettings(
        home=ctx.obj["home"],
        db=ctx.obj["db"],
        model=model,
        device=device,
        precision=precision,
        key_file=key_file and os.path.abspath(key_file),
        keys_for_reads=keys_for_reads,
        limits=limits,
        batch_wait_ms=batch_wait_ms,
        queue_images=queue_images,
        allowed_hosts=trusted_hosts(host, allowed_hosts),
        docs=docs,
        header_seconds=header_timeout,
    )
    keys = load_keys(settings)
    if keys_for_reads and not keys:
        raise click.UsageError(f"--keys-for-reads needs API keys: set {KEYS_ENV} or give --key-file")
    check_port_free(host, port)
    os.environ[SETTINGS_ENV] = settings.to_env()  # worker processes read it (never the keys)
    click.echo(
        f"whyclip service on http://{host}:{port} ({'docs at /docs, ' if docs else ''}{len(keys)} API key(s); "
        "Ctrl+C to stop)",
        err=True,
    )
    sys.stderr.flush()
    uvicorn.run(
        "whyclip.ui.api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        http=HeaderTimeoutProtocol,
        timeout_keep_alive=KEEP_ALIVE_S,
    )


def _check_host_names(names: tuple[str, ...]) -> tuple[str, ...]:
    for name in names:
        if not name.strip() or ("*" in name and name != "*" and not (name.startswith("*.") and "*" not in name[1:])):
            raise click.BadParameter(f"{name!r}: give a host name, '*.example.com' or '*'")
    return names


def trusted_hosts(host: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The Host names the service answers to: the localhost names, the address it listens on
    (unless every interface), and the ``--allowed-host`` names, each once."""
    from whyclip.ui.api.gates import LOCAL_HOSTS, host_pattern

    names = [*LOCAL_HOSTS, *([] if host in EVERY_INTERFACE else [host]), *extra]
    return tuple(dict.fromkeys(host_pattern(n) for n in names))
