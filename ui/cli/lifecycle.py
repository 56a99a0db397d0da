"""The lifecycle commands of the ``whyclip`` command line: ``delete``, ``gc`` and ``export``
(the work is in :mod:`whyclip.store.db.lifecycle`), and how ``ingest`` takes its template,
baseline and model from an export's sidecar."""

from __future__ import annotations

import sys

import click

from whyclip import ingest
from whyclip.store import (
    DEFAULT_BASELINE,
    DEFAULT_TEMPLATE,
    GC_MIN_AGE_S,
    InputError,
    ModelLoadError,
    WhyclipError,
    collect_garbage,
    delete_versions,
    export_library,
    read_sidecar,
    shown,
    sidecar_path,
    sidecar_prompt_changes,
)
from whyclip.ui.cli.context import open_store
from whyclip.ui.cli.options import chosen_library, library_name_or_option


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.command("delete")
@library_name_or_option
@click.option(
    "--version",
    "lib_version",
    type=click.IntRange(1),
    default=None,
    help="Delete only this version [default: every version of NAME].",
)
@click.option("--with-runs", is_flag=True, help="Also delete the evaluation runs made with the version(s).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete_cmd(ctx, name, library, lib_version, with_runs, yes):
    """Delete library NAME (every version, or --version N): its rows and index files.

    NAME may be given as --library NAME, as the other commands take it. Cached vectors stay,
    so ingesting the same file again embeds nothing. A version with evaluation runs is
    refused unless --with-runs is given.
    """
    store = open_store(ctx, create=False)
    name = chosen_library(store, name, library)
    infos = [
        i
        for i in store.libraries(every_version=True)
        if i.name == name and (lib_version is None or i.version == lib_version)
    ]
    if infos and not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not asking on a non-interactive input: pass --yes to delete")
        listed = ", ".join(f"v{i.version}" for i in infos)
        click.confirm(f"delete library {shown(name)} {listed}?", abort=True, err=True)
    done = delete_versions(store, name, lib_version, with_runs=with_runs)
    runs = f"; {len(done.runs)} evaluation run(s) deleted with it" if done.runs else ""
    click.echo(
        f"deleted library {shown(done.name)} {', '.join(f'v{v}' for v in done.versions)}: {done.folders} index "
        f"folder(s), {_size(done.bytes)} freed{runs}; cached vectors kept"
    )
    for folder in done.left:
        click.echo(f"warning: could not remove {folder}: 'whyclip gc' removes it later", err=True)


@click.command("gc")
@click.option(
    "--cache",
    "with_cache",
    is_flag=True,
    help="Also remove embedding-cache rows that no library version and no evaluation run uses (kept: every "
    "version's prompts and the bare descriptors explain's name vs description split reads; eval's control "
    "prompts go, and the next eval embeds them again).",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.pass_context
def gc_cmd(ctx, with_cache, dry_run):
    """Remove index folders no library version owns (left by a killed ingest or a failed
    removal), and with --cache unused cached vectors; report what was freed."""
    freed = collect_garbage(open_store(ctx, create=False), cache=with_cache, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    line = f"{verb} {len(freed.folders)} index folder(s) ({_size(freed.folder_bytes)})"
    if with_cache:
        line += f" and {freed.cache_rows} cache row(s) ({_size(freed.cache_bytes)} of vectors)"
    click.echo(line)
    if with_cache:
        click.echo(_kept_line(freed.kept))
    if freed.young:
        click.echo(
            f"left {len(freed.young)} unowned index folder(s) younger than {GC_MIN_AGE_S // 60} minutes "
            "(an ingest may still be publishing them): run gc again later",
            err=True,
        )


def _kept_line(kept: dict[str, int]) -> str:
    """What gc --cache keeps as in use, e.g. "kept 24 cache row(s) in use: 9 prompt(s) of
    library versions, 6 bare descriptor(s) for explain's name vs description split, 9 image(s)
    of evaluation runs"."""
    words = {
        "prompts": "prompt(s) of library versions",
        "split": "bare descriptor(s) for explain's name vs description split",
        "images": "image(s) of evaluation runs",
    }
    parts = [f"{n} {words[kind]}" for kind, n in kept.items() if n]
    return f"kept {sum(kept.values())} cache row(s) in use" + (": " + ", ".join(parts) if parts else "")


@click.command("export")
@library_name_or_option
@click.option(
    "--version", "lib_version", type=click.IntRange(1), default=None, help="Library version [default: newest]."
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="Library file to write: .json (the paper's format), .jsonl or .csv; FILE.meta.json is written beside it.",
)
@click.option("--force", is_flag=True, help="Overwrite FILE and its sidecar if they exist.")
@click.pass_context
def export_cmd(ctx, name, library, lib_version, out, force):
    """Write a library version as a descriptor file plus a metadata sidecar (settings,
    encoder and every prompt exactly); 'whyclip ingest FILE' reads the sidecar back.

    The library is NAME or --library NAME, as the other commands take it.
    """
    store = open_store(ctx, create=False)
    meta = export_library(store, chosen_library(store, name, library), lib_version, out, force=force)
    click.echo(
        f"wrote library {meta['name']} v{meta['version']} to {out} ({meta['n_classes']} classes, "
        f"{meta['n_descriptors']} descriptors) and {sidecar_path(out)}"
    )


def settings_from_sidecar(file: str, template: str | None, baseline: str | None) -> tuple[str, str, dict | None]:
    """The template and baseline for ``ingest FILE``: as given, else from an export
    sidecar beside FILE (said on stderr), else the defaults."""
    meta = read_sidecar(file) if template is None or baseline is None else None
    if meta is not None:
        taken = []
        if template is None:
            template = meta["template"]
            taken.append(f"template {template!r}")
        if baseline is None:
            baseline = meta["baseline_template"]
            taken.append(f"baseline {baseline!r}")
        click.echo(f"using {' and '.join(taken)} from {sidecar_path(file)}", err=True)
    return template or DEFAULT_TEMPLATE, baseline or DEFAULT_BASELINE, meta


def load_ingest_encoder(ctx, files, model: str | None, device: str | None, precision: str):
    """The encoder ``ingest FILES`` embeds with: ``--model``, else the model the FILES' export
    sidecars name (:mod:`whyclip.ingest.services.export_model`; said on stderr), else the
    default. An explicit ``--model`` that is not the sidecar's model is said in one line."""
    from whyclip.ingest.services.export_model import known_folders, other_model_note, sidecar_model

    metas = []
    for file in files:
        try:
            meta = read_sidecar(file)
        except InputError:
            continue  # an unreadable sidecar: settings_from_sidecar says so where it reads one
        if meta is not None and meta.get("encoder_id"):
            metas.append((sidecar_path(file), meta))
    if model is not None or not metas:
        encoder = ingest.load_encoder(model, device, precision)
        for sidecar, meta in metas:
            if note := other_model_note(encoder, meta, sidecar):
                click.echo(note, err=True)
        return encoder
    named = {meta["encoder_id"]: sidecar for sidecar, meta in metas}
    if len(named) > 1:
        raise click.UsageError(
            f"{' and '.join(str(s) for s in named.values())} name different models: ingest those files separately, "
            "or pass --model"
        )
    sidecar, meta = metas[0]
    try:
        known = known_folders(open_store(ctx, create=False), meta["encoder_id"])
    except WhyclipError:  # no store yet (or one to migrate): no folder known
        known = []
    chosen, said = sidecar_model(meta, sidecar, known)
    click.echo(said, err=True)
    try:
        return ingest.load_encoder(chosen, device, precision)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{exc} (the model {sidecar} names; --model chooses another)") from None


def warn_changed_prompts(meta: dict | None, classes) -> None:
    """Say when the prompts about to be embedded differ from those an export recorded."""
    changed = sidecar_prompt_changes(meta, classes) if meta else 0
    if changed:
        click.echo(
            f"warning: {changed} prompt(s) differ from those the export recorded (another template or "
            "prompt rule): the vectors will differ from the exported version's",
            err=True,
        )
