"""``whyclip ingest`` (descriptor library files into new library versions) and ``whyclip libraries``
(what the store holds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from whyclip.ingest import read_library
from whyclip.ingest.services.library_ingest import (
    check_ingest_options,
    check_library_name,
    plan_ingest,
    run_ingest,
    run_ingests,
)
from whyclip.store import NoStore, StoreVerdicts, list_calibrations
from whyclip.ui.cli.context import open_store
from whyclip.ui.cli.lifecycle import load_ingest_encoder, settings_from_sidecar, warn_changed_prompts
from whyclip.ui.cli.options import PRECISION, check_ray, on_cluster, ray_options
from whyclip.ui.cli.progress import progress_bar
from whyclip.ui.render.table import table_lines


@click.command("ingest")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--library",
    "-l",
    default=None,
    help=(
        "Library name for one FILE [default: its file name without the suffix]; with several FILES, a prefix "
        "put before each file's name."
    ),
)
@click.option(
    "--model",
    "-m",
    default=None,
    help="CLIP model: a sentence-transformers name or a local folder [default: the model an export's "
    "sidecar names, else clip-ViT-B-32]",
)
@click.option(
    "--template",
    "-t",
    default=None,
    help=(
        "Prompt template: 'paper' (the published rule), 'bare', or a format string with {class} and "
        "{descriptor} or {which} (the descriptor under the paper's rule) [default: paper, or the template in "
        "FILE.meta.json beside an exported FILE]."
    ),
)
@click.option(
    "--baseline",
    "-b",
    default=None,
    help=(
        "Class-name prompt for the baseline [default: 'a photo of a {class}.', or the one in FILE.meta.json "
        "beside an exported FILE]."
    ),
)
@click.option("--strict", is_flag=True, help="Refuse prompts over CLIP's 77-token limit instead of truncating them.")
@click.option("--device", default=None, help="torch device (default: a GPU when there is one).")
@PRECISION
@click.option(
    "--commit-every",
    default=1024,
    show_default=True,
    type=click.IntRange(1),
    help="Prompts embedded and committed at a time: an interrupted ingest resumes from the last commit.",
)
@click.option(
    "--index",
    "index_factory",
    default=None,
    metavar="FACTORY",
    help=(
        "Library-wide retrieval index: Flat (exact), PQ256x4fs+rerank (PQ codes re-ranked exactly), ClassIVF, "
        "or any FAISS factory string; approximate ones are calibrated on image-like queries [default: Flat up "
        "to 50,000 descriptors, PQ256x4fs+rerank above]."
    ),
)
@ray_options
@click.pass_context
def ingest_cmd(
    ctx,
    files,
    library,
    model,
    template,
    baseline,
    strict,
    device,
    precision,
    commit_every,
    index_factory,
    ray_address,
    ray_actors,
):
    """Embed descriptor library FILES (.json, .jsonl or .csv) into new library versions, one
    library per file.

    The model loads once for all FILES. Each library is named by --library (one FILE) or
    by its file name without the suffix (descriptors_cub.json: library descriptors_cub),
    after the --library prefix when several FILES are given. Every file is read and checked
    before the model loads; each library is then published whole, one after the other.
    """
    check_ray(ray_address, ray_actors)
    names = _library_names(files, library)
    for name in names:
        check_library_name(name)
    inputs = []
    for file, name in zip(files, names, strict=True):  # every file fails here, before a model loads
        t, b, sidecar = settings_from_sidecar(file, template, baseline)
        check_ingest_options(name, t, b)
        inputs.append((name, t, b, sidecar, read_library(file)))
    encoder = load_ingest_encoder(ctx, files, model, device, precision)  # --model, else an export's
    plans = []
    for name, t, b, sidecar, parsed in inputs:
        plans.append(
            plan_ingest(parsed, name, encoder, template=t, baseline=b, strict=strict, index_factory=index_factory)
        )
        warn_changed_prompts(sidecar, plans[-1].classes)
    store = open_store(ctx, create=True)  # only now is anything written
    encoder.verdicts = StoreVerdicts(store)
    if ray_address is not None:  # one stream of chunks, one actor pool, for every file
        label = "embedding prompts" if len(plans) == 1 else f"embedding the prompts of {len(plans)} libraries"
        with on_cluster(encoder, ray_address, ray_actors, "text") as remote, progress_bar(label, unit="prompt") as bar:
            for report in run_ingests(store, plans, remote, progress=bar, commit_every=commit_every):
                _say_ingested(report, remote)
        return
    for plan in plans:
        label = "embedding prompts" if len(plans) == 1 else f"embedding {plan.name}"
        with progress_bar(label, unit="prompt") as bar:
            report = run_ingest(store, plan, encoder, progress=bar, commit_every=commit_every)
        _say_ingested(report, encoder)


def _say_ingested(report, encoder) -> None:
    i = report.info
    click.echo(
        f"library {i.name} v{i.version}: {i.n_classes} classes, {i.n_descriptors} descriptors, "
        f"{i.n_prompts} prompts ({report.n_embedded} embedded, {report.n_reused} from the cache) in "
        f"{report.seconds:.1f}s "
        f"({i.encoder_name}, dim {i.dim}, {_text_precision(encoder)}{_on_ray(encoder)})"
    )


def _on_ray(encoder) -> str:
    return ", on Ray" if hasattr(encoder, "embed_text_chunks") else ""


def _text_precision(encoder) -> str:
    """The precision of the text vectors an ingest wrote (images, untouched by it, may differ)."""
    text = getattr(encoder, "precisions", {}).get("text")
    return str(text or getattr(encoder, "precision", "fp32"))


def _library_names(files: tuple[str, ...], library: str | None) -> list[str]:
    """One library name per file: --library for one file, else prefix + the file's stem;
    two files may not give the same name."""
    if len(files) == 1 and library is not None:
        return [library]
    names = [(library or "") + Path(f).stem for f in files]
    seen: dict[str, str] = {}
    for file, name in zip(files, names, strict=True):
        if name in seen:
            raise click.UsageError(
                f"{seen[name]} and {file} would both make library {name!r}: ingest them separately with --library"
            )
        seen[name] = file
    return names


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--all", "every_version", is_flag=True, help="Every version of each library, not only the newest.")
@click.option(
    "--wide",
    is_flag=True,
    help="Every column (pairs, dimension, template, index and its recall, empty classes, the time made), nothing "
    "cut, whatever the terminal's width.",
)
@click.pass_context
def libraries(ctx, as_json, every_version, wide):
    """List libraries (newest version of each, or --all) with encoder, dimension, template and counts.

    The table fits the terminal: a few columns, long encoder paths and notes cut with
    "..."; --wide shows every column in full, --json everything.
    """
    try:
        store = open_store(ctx, create=False)
        infos = store.libraries(every_version=every_version)
        calibrations = {c.library_id: c for c in list_calibrations(store.engine)}  # the newest of each version wins
    except NoStore:
        infos, calibrations = [], {}
    if as_json:
        click.echo(
            json.dumps(
                [
                    {**_info_dict(i), "calibration": calibrations[i.id].block() if i.id in calibrations else None}
                    for i in infos
                ],
                indent=2,
                default=str,
            )
        )
        return
    if not infos:
        click.echo(
            "no libraries yet: add one with 'whyclip ingest FILE --library NAME' (or run 'whyclip demo')", err=True
        )
        return
    cells = {
        i.id: {
            "library": i.name,
            "version": i.version,
            "classes": i.n_classes,
            "descriptors": i.n_descriptors,
            "empty": i.n_empty_classes,
            "pairs": i.n_pairs,
            "dim": i.dim,
            "template": i.template,
            "index": _index_cell(i),
            "recall@10": f"{i.retrieval['recall_at_10']:.3f}",
            "recall measured on": i.retrieval["calibrated_on"] or "-",
            "encoder": i.encoder_name,
            "calibrated": (
                f"T {calibrations[i.id].temperature:.3g} ({calibrations[i.id].aggregate})"
                if i.id in calibrations
                else "-"
            ),
            "created": i.created_at.strftime("%Y-%m-%d %H:%M" if wide else "%Y-%m-%d"),
            "note": i.note if not wide or len(i.note) <= 60 else i.note[:57] + "...",
        }
        for i in infos
    }
    head: tuple[str, ...] = WIDE_COLUMNS
    if not wide:  # the few columns that tell libraries apart; calibrated and note only when some row has one
        shown_any = {h for h in COMPACT_OPTIONAL if any(c[h] not in ("-", "") for c in cells.values())}
        head = tuple(h for h in COMPACT_COLUMNS if h not in COMPACT_OPTIONAL or h in shown_any)
    rows = [tuple(cells[i.id][h] for h in head) for i in infos]
    if wide:
        click.echo("\n".join(table_lines(head, rows)))
    else:
        width = shutil.get_terminal_size().columns
        click.echo("\n".join(table_lines(head, rows, width=width, cut=COMPACT_CUT)))


#: ``whyclip libraries --wide``: every column
WIDE_COLUMNS = (
    "library",
    "version",
    "classes",
    "descriptors",
    "empty",
    "pairs",
    "dim",
    "template",
    "index",
    "recall@10",
    "recall measured on",
    "encoder",
    "calibrated",
    "created",
    "note",
)
#: the default: what tells libraries apart, cut to the terminal's width (the end of a path,
#: the start of the other texts)
COMPACT_COLUMNS = ("library", "version", "classes", "descriptors", "encoder", "calibrated", "created", "note")
COMPACT_OPTIONAL = ("calibrated", "note")
COMPACT_CUT = {"note": "end", "encoder": "start", "calibrated": "end", "library": "end"}


def _index_cell(i) -> str:
    """The index, its calibrated knob, and "exact scan" where calibration fell back to it."""
    label = (
        i.index_label.replace(" probe ", " (probe ")
        .replace(" nprobe ", " (nprobe ")
        .replace(" efSearch ", " (efSearch ")
    )
    label += ")" if label != i.index_label else ""
    return label + (" -> exact scan" if i.retrieval["exact"] and i.index_factory != "Flat" else "")


def _info_dict(i) -> dict:
    d = dict(vars(i))
    d["retrieval"] = i.retrieval
    d["created_at"] = i.created_at.isoformat()
    return d
