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

LOCAL_RAY = "local"  # --ray without an address: a local Ray cluster for the command


def ray_options(f):
    """``--ray [ADDRESS]`` and ``--ray-actors N``: embed on a Ray cluster (:mod:`whyclip.ingest.cluster`)."""
    f = click.option(
        "--ray-actors",
        type=click.IntRange(1),
        default=None,
        metavar="N",
        help="Encoder actors on the Ray cluster [default: one per GPU, else one per 4 CPUs].",
    )(f)
    return click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value=LOCAL_RAY,
        default=None,
        metavar="[ADDRESS]",
        help=(
            "Embed on a Ray cluster (pip install 'whyclip[ray]'): ADDRESS is any cluster (auto, ray://host:10001); "
            "without one, a local cluster starts and stops with the command. Only what the cache lacks is sent out."
        ),
    )(f)


def on_cluster(encoder, ray_address: str | None, actors: int | None, modality: str):
    """``encoder`` with its ``modality`` embedding sent to the Ray cluster ``--ray`` names
    (a context manager: disconnected, a local cluster stopped, at the end); ``encoder``
    itself without ``--ray``."""
    from whyclip.ingest.cluster import RayOptions, on_ray

    address = None if ray_address in (None, LOCAL_RAY) else ray_address
    return on_ray(encoder, None if ray_address is None else RayOptions(address=address, actors=actors), modality)


def check_ray(ray_address: str | None, actors: int | None) -> None:
    """Before any work: ``--ray`` needs Ray installed; ``--ray-actors`` needs ``--ray``."""
    if actors is not None and ray_address is None:
        raise click.UsageError("--ray-actors sizes the Ray pool: give --ray too")
    if ray_address is not None:
        from whyclip.ingest.cluster import import_ray

        import_ray()


DEFAULT_MODEL_HELP = "CLIP model: a sentence-transformers name or a local folder [default: clip-ViT-B-32]"


def check_port_free(host: str, port: int) -> None:
    """A one-line error naming the port and ``--port`` when something already listens there,
    before anything is announced or started (the server would fail after saying where it
    runs). A probe, not a reservation: what binds in between still fails in the server."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise click.ClickException(f"cannot listen on {host!r}: {exc.strerror}: give another --host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no obstacle
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} on {host} is already in use: stop what listens there, or choose another --port"
                ) from None
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def library_name_or_option(f):
    """The library as a positional NAME or as ``--library/-l`` (as every other command
    takes it); :func:`chosen_library` settles which."""
    f = click.option(
        "--library", "-l", "library", default=None, help="The library (the same as NAME; give one of them)."
    )(f)
    return click.argument("name", required=False)(f)


def chosen_library(store, name: str | None, library: str | None) -> str:
    """The one library NAME and ``--library`` name: the same name twice is one, two names or
    none is a one-line usage error (none lists the store's libraries)."""
    if name is not None and library is not None and name != library:
        raise click.UsageError(f"two libraries given, NAME {name!r} and --library {library!r}: give one")
    chosen = name if name is not None else library
    if chosen is None:
        names = sorted({i.name for i in store.libraries()})
        listed = ", ".join(repr(n) for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        held = f"the store holds {listed}" if names else "the store has no libraries yet"
        raise click.UsageError(f"which library? give --library NAME (or NAME): {held}")
    return chosen
