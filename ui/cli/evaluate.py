"""``whyclip eval`` (score a labelled image set and store the run), ``whyclip runs`` and
``whyclip audit`` (the report of a stored run)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.services.evaluate import plan_eval, run_eval
from whyclip.ingest.services.explain import open_encoder
from whyclip.store import (
    FUDD,
    AuditSettings,
    NoStore,
    accuracy,
    confusions,
    find_run,
    latest_calibration,
    list_runs,
    load_run,
    per_class,
    run_top1,
    shown_text,
)
from whyclip.store import audit as make_audit
from whyclip.store import fudd_summary as summarise_fudd
from whyclip.store.choices import AGGREGATES
from whyclip.ui.cli.context import open_store
from whyclip.ui.cli.options import PRECISION, check_ray, on_cluster, ray_options
from whyclip.ui.cli.progress import progress_bar
from whyclip.ui.render.audit_report import accuracy_lines, confusion_lines, per_class_lines, to_text, write_report
from whyclip.ui.render.table import table_lines


@click.command("eval")
@click.argument("dataset", type=click.Path())
@click.option("--library", "-l", required=True, help="Library to evaluate.")
@click.option("--version", "lib_version", type=int, default=None, help="Library version [default: newest].")
@click.option("--name", default=None, help="Name of the run [default: the dataset's name, numbered if taken].")
@click.option(
    "--skip-unmatched", is_flag=True, help="Leave out images whose label matches no class, instead of refusing."
)
@click.option("--model", "-m", default=None, help="CLIP model [default: the one the library was built with].")
@click.option("--device", default=None, help="torch device (default: a GPU when there is one).")
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON.")
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice(["fudd", "no-fudd"]),
    help="fudd: also re-rank with the version's pair descriptors (FuDD), refusing a version without any; "
    "no-fudd: leave FuDD out [default: FuDD whenever the version has pair descriptors].",
)
@click.option(
    "--fudd-top-k",
    default=5,
    show_default=True,
    type=click.IntRange(2, 5),
    help="FuDD re-ranks each image's top classes under the library's aggregate: how many.",
)
@PRECISION
@ray_options
@click.pass_context
def eval_cmd(
    ctx,
    dataset,
    library,
    lib_version,
    name,
    skip_unmatched,
    model,
    device,
    as_json,
    methods,
    fudd_top_k,
    precision,
    ray_address,
    ray_actors,
):
    """Score a labelled DATASET with a library and store the run for 'whyclip audit'.

    DATASET is a folder with one subfolder of images per class (ImageFolder) or a CSV of
    path,label rows (a header row such as path,label or file,class is optional). Labels
    must match the library's classes (case, underscores and spaces ignored). Every image is
    scored by each aggregate, by the class-name baseline and by a random-word control
    library; an unreadable image is reported and skipped. When the version has pair
    descriptors ('whyclip ingest-pairs'), FuDD re-ranks each image's top classes with them,
    and its accuracy is reported beside the others.
    """
    check_ray(ray_address, ray_actors)
    store = open_store(ctx, create=False, migrate=True)  # it writes a run: migrates, creates nothing
    lib = store.load(library, lib_version)
    if {"fudd", "no-fudd"} <= set(methods):
        raise click.UsageError("--method fudd and --method no-fudd contradict each other: give one")
    fudd = True if "fudd" in methods else False if "no-fudd" in methods else None
    data = read_dataset(dataset)
    plan = plan_eval(store, lib, data, name=name, skip_unmatched=skip_unmatched, fudd=fudd, fudd_top_k=fudd_top_k)
    # (planned before the model loads)
    if data.found:
        click.echo(data.found, err=True)  # a folder's image count, once the plan holds (bad input: one line)
    started = time.perf_counter()
    encoder = open_encoder(store, model or lib.info.encoder_name, device, precision)
    loaded_in = time.perf_counter() - started
    with (
        on_cluster(encoder, ray_address, ray_actors, "image") as encoder,
        progress_bar("embedding images", unit="image") as bar,
    ):
        report = run_eval(store, lib, plan, encoder, progress=bar, loaded_in=loaded_in)
    run = report.data
    agg = lib.info.aggregate
    acc, classes = accuracy(run), per_class(run, lib, agg)
    pairs = confusions(run, lib, agg, AuditSettings())
    fudd_summary = summarise_fudd(run, agg) if FUDD in run.results else None
    rate = report.images_per_second
    if as_json:
        click.echo(
            json.dumps(
                {
                    "run": report.run.to_dict(),
                    "images_per_second": rate,
                    "embedded": report.n_embedded,
                    "cached": report.n_cached,
                    "seconds": report.seconds,
                    "timings": report.timings,
                    "accuracy": acc,
                    "per_class": classes,
                    "confusions": pairs,
                    **({"fudd": fudd_summary} if fudd_summary else {}),
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        r, tm = report.run, report.timings
        lines = [
            f"run {r.name!r} of library {library} v{lib.info.version}: {r.n_images} images "
            f"({report.n_embedded} embedded, {report.n_cached} from the cache, {len(report.skipped)} skipped) "
            f"in {report.seconds:.1f}s",
            f"  model load {tm['model_load']:.1f}s, images {tm['images']:.1f}s ({rate:.1f} images/s), "
            f"control libraries {tm['control']:.1f}s, scoring {tm['scoring']:.1f}s, "
            f"retrieval tuning {tm['recalibrate']:.1f}s",
            "",
            *accuracy_lines(acc),
            "",
            *([f"FuDD ({fudd_summary['pairs']} stored pairs): {fudd_summary['verdict']}", ""] if fudd_summary else []),
            f"classes with the largest loss against the baseline ({agg}; every class: --json, or the audit)",
            *per_class_lines(classes),
            "",
            "most confused (predicted for true)",
            *confusion_lines(pairs, lib.info.logit_scale, agg, 5),
            "",
            f"details: whyclip audit --library {library} --run {r.name} [--format html]",
        ]
        click.echo(shown_text("\n".join(lines)))
    if report.skipped:
        ctx.exit(1)


@click.command()
@click.option("--library", "-l", default=None, help="Only this library's runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def runs(ctx, library, as_json):
    """List evaluation runs (made by 'whyclip eval').

    Each run with its top-1 accuracy under its library version's aggregate, and how many
    points the descriptors gain over the class names (the baseline); 'whyclip audit' has
    the intervals and the tests.
    """
    try:
        engine = open_store(ctx, create=False).engine
        found = list_runs(engine, library)
        top1 = run_top1(engine, found)
    except NoStore:
        found, top1 = [], {}
    if as_json:
        click.echo(
            json.dumps([{**r.to_dict(), "accuracy": top1.get(r.id)} for r in found], indent=2, ensure_ascii=False)
        )
        return
    if not found:
        click.echo("no evaluation runs yet: make one with 'whyclip eval DATASET --library NAME'", err=True)
        return
    head = ("library", "version", "run", "images", "skipped", "top-1", "vs name", "dataset", "created")
    rows = [
        (
            r.library_name,
            r.library_version,
            r.name,
            r.n_images,
            len(r.details.get("skipped", [])),
            *_accuracy_cells(top1.get(r.id)),
            r.dataset,
            r.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for r in found
    ]
    click.echo("\n".join(table_lines(head, rows)))


def _accuracy_cells(acc: dict | None) -> tuple[str, str]:
    """ "71.4% mean" and "+14.3 pts" (the descriptors' gain over the class names), or "-"."""
    if not acc or acc["top1"] is None:
        return "-", "-"
    gain = "-" if acc["baseline_top1"] is None else f"{100 * (acc['top1'] - acc['baseline_top1']):+.1f} pts"
    return f"{acc['top1']:.1%} {acc['aggregate']}", gain


@click.command()
@click.option("--library", "-l", required=True, help="Library whose run to audit.")
@click.option("--run", "run_name", default=None, help="Run name (see 'whyclip runs') [default: the newest].")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "html", "csv", "json"]),
    default="text",
    show_default=True,
    help="text and json print to stdout; html writes one self-contained page; csv a folder of tables.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(),
    default=None,
    help="Where to write [default: stdout for text/json, LIBRARY-RUN-audit.html or LIBRARY-RUN-audit/ for html/csv].",
)
@click.option(
    "--aggregate",
    "-a",
    type=click.Choice(AGGREGATES),
    default=None,
    help="Aggregate to audit [default: the library's].",
)
@click.option(
    "--delete-k",
    default=3,
    show_default=True,
    type=click.IntRange(1),
    help="Descriptors removed by the deletion control.",
)
@click.option(
    "--near",
    "near_threshold",
    default=0.95,
    show_default=True,
    type=click.FloatRange(-1, 1),
    help="Cosine above which prompts of different classes count as near-identical.",
)
@click.option(
    "--flat-ratio",
    default=0.25,
    show_default=True,
    type=click.FloatRange(0),
    help="A descriptor is flat when its similarity's spread is below this times the median spread.",
)
@click.option(
    "--pairs", default=10, show_default=True, type=click.IntRange(1), help="Confused pairs to list with evidence."
)
@click.option(
    "--min-n",
    default=10,
    show_default=True,
    type=click.IntRange(1),
    help="Images a class needs before it is flagged as doing worse than its class name.",
)
@click.pass_context
def audit(ctx, library, run_name, fmt, out, aggregate, delete_k, near_threshold, flat_ratio, pairs, min_n):
    """Accuracy with intervals, controls with paired tests, the descriptors that drive predictions, hygiene."""
    store = open_store(ctx, create=False)
    info = find_run(store.engine, library, run_name)
    lib = store.load(library, info.library_version)
    settings = AuditSettings(
        aggregate=aggregate,
        delete_k=delete_k,
        near_threshold=near_threshold,
        flat_ratio=flat_ratio,
        pairs=pairs,
        min_n=min_n,
    )
    calibration = latest_calibration(store.engine, lib.info.id, aggregate or lib.info.aggregate)
    result = make_audit(load_run(store.engine, info), lib, settings, calibration)
    if out is None and fmt in ("text", "json"):
        click.echo(shown_text(to_text(result)) if fmt == "text" else json.dumps(result, indent=2, ensure_ascii=False))
        return
    if fmt == "text":
        raise click.UsageError("--out is for html, csv and json; text goes to stdout")
    default = f"{_safe(library)}-{_safe(info.name)}-audit" + (
        ".html" if fmt == "html" else ".json" if fmt == "json" else ""
    )
    target = Path(out or default)
    if fmt == "csv" and target.exists() and not target.is_dir():
        raise click.ClickException(f"{target} is a file; csv writes a folder of tables: give --out a folder")
    if fmt != "csv" and target.is_dir():
        raise click.ClickException(f"{target} is a folder: give --out a file name")
    written = write_report(result, fmt, target)
    click.echo(f"wrote {target}" + (f" ({len(written)} tables)" if fmt == "csv" else ""), err=True)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
