"""The ``whyclip`` command line. Results go to stdout; progress, logs and warnings to
stderr, so ``--json`` output pipes cleanly. Bad input exits non-zero with one line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from whyclip.store import NoStore, WhyclipError
from whyclip.store.choices import AGGREGATES

from whyclip.ui.cli.lifecycle import register as register_lifecycle
from whyclip.ui.cli.options import PRECISION
from whyclip.ui.render.explanation_json import explanation_json
from whyclip.ui.cli.progress import progress_bar

log = logging.getLogger("whyclip")
IMAGE_BATCH = 32  # images decoded, encoded and scored together (as whyclip.ingest.services.explain batches them)
DEFAULT_MODEL_HELP = "CLIP model: a sentence-transformers name or a local folder [default: clip-ViT-B-32]"


class WhyclipGroup(click.Group):
    """Bad input gives one line on stderr and a non-zero exit, never a traceback: the
    project's own errors exit 1, usage errors exit 2 (without click's usage block)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except WhyclipError as exc:
            raise click.ClickException(str(exc)) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


class _LowerLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _configure_logging(verbose: bool) -> None:
    """Our warnings on stderr as 'warning: ...'; the libraries' chatter only with -v."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowerLevelFormatter())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)
    if not verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")
        for name in ("transformers", "sentence_transformers", "huggingface_hub", "faiss"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _store(ctx: click.Context, create: bool, migrate: bool | None = None):
    """Write commands create (and migrate) the store; read commands only open a current one."""
    from whyclip.store import Store  # not at import: `whyclip --help` loads no SQLAlchemy

    return Store.open(ctx.obj["home"], ctx.obj["db"], create=create, migrate=migrate)


@click.group(cls=WhyclipGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(file_okay=False), envvar="WHYCLIP_HOME",
              help="Data directory for the database and index files [env WHYCLIP_HOME; default: per-user data dir].")
@click.option("--db", envvar="WHYCLIP_DB", help="SQLAlchemy URL for the metadata [env WHYCLIP_DB; default: SQLite in --home].")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (to stderr).")
@click.version_option(package_name="whyclip")
@click.pass_context
def cli(ctx: click.Context, home: str | None, db: str | None, verbose: bool) -> None:
    """whyclip: explainable zero-shot image classification by visual descriptors.

    Each class is described by short visual descriptors; CLIP scores a class by the image's
    similarity to them, and the ranked descriptor similarities are the explanation.
    """
    _configure_logging(verbose)
    ctx.obj = {"home": home, "db": db}


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--library", "-l", default=None,
              help="Library name for one FILE [default: its file name without the suffix]; with several FILES, a prefix put before each file's name.")
@click.option("--model", "-m", default=None, help=DEFAULT_MODEL_HELP)
@click.option("--template", "-t", default=None,
              help="Prompt template: 'paper' (the published rule), 'bare', or a format string with {class} and {descriptor} or {which} (the descriptor under the paper's rule) [default: paper, or the template in FILE.meta.json beside an exported FILE].")
@click.option("--baseline", "-b", default=None,
              help="Class-name prompt for the baseline [default: 'a photo of a {class}.', or the one in FILE.meta.json beside an exported FILE].")
@click.option("--strict", is_flag=True, help="Refuse prompts over CLIP's 77-token limit instead of truncating them.")
@click.option("--device", default=None, help="torch device (default: a GPU when there is one).")
@PRECISION
@click.option("--commit-every", default=1024, show_default=True, type=click.IntRange(1),
              help="Prompts embedded and committed at a time: an interrupted ingest resumes from the last commit.")
@click.option("--index", "index_factory", default=None, metavar="FACTORY",
              help="Library-wide retrieval index: Flat (exact), PQ256x4fs+rerank (PQ codes re-ranked exactly), ClassIVF, or any FAISS factory string; approximate ones are calibrated on image-like queries [default: Flat up to 50,000 descriptors, PQ256x4fs+rerank above].")
@click.pass_context
def ingest(ctx, files, library, model, template, baseline, strict, device, precision, commit_every, index_factory):
    """Embed descriptor library FILES (.json, .jsonl or .csv) into new library versions, one
    library per file.

    The model loads once for all FILES. Each library is named by --library (one FILE) or
    by its file name without the suffix (descriptors_cub.json: library descriptors_cub),
    after the --library prefix when several FILES are given. Every file is read and checked
    before the model loads; each library is then published whole, one after the other.
    """
    from whyclip.ingest import load_encoder, read_library
    from whyclip.ingest.services.library_ingest import check_library_name, plan_ingest, run_ingest
    from whyclip.store import StoreVerdicts, Template, check_baseline

    from whyclip.ui.cli.lifecycle import settings_from_sidecar, warn_changed_prompts

    names = _library_names(files, library)
    for name in names:
        check_library_name(name)
    inputs = []
    for file, name in zip(files, names):  # every file fails here, before a model loads
        t, b, sidecar = settings_from_sidecar(file, template, baseline)
        Template(t)
        check_baseline(b)
        inputs.append((name, t, b, sidecar, read_library(file)))
    encoder = load_encoder(model, device, precision)
    plans = []
    for name, t, b, sidecar, parsed in inputs:
        plans.append(plan_ingest(parsed, name, encoder, template=t, baseline=b, strict=strict, index_factory=index_factory))
        warn_changed_prompts(sidecar, plans[-1].classes)
    store = _store(ctx, create=True)  # only now is anything written
    encoder.verdicts = StoreVerdicts(store)
    for plan in plans:
        label = "embedding prompts" if len(plans) == 1 else f"embedding {plan.name}"
        with progress_bar(label, unit="prompt") as bar:
            report = run_ingest(store, plan, encoder, progress=bar, commit_every=commit_every)
        i = report.info
        click.echo(
            f"library {i.name} v{i.version}: {i.n_classes} classes, {i.n_descriptors} descriptors, {i.n_prompts} prompts "
            f"({report.n_embedded} embedded, {report.n_reused} from the cache) in {report.seconds:.1f}s "
            f"({i.encoder_name}, dim {i.dim}, {getattr(encoder, 'precision', 'fp32')})"
        )


def _library_names(files: tuple[str, ...], library: str | None) -> list[str]:
    """One library name per file: --library for one file, else prefix + the file's stem;
    two files may not give the same name."""
    if len(files) == 1 and library is not None:
        return [library]
    names = [(library or "") + Path(f).stem for f in files]
    seen: dict[str, str] = {}
    for file, name in zip(files, names):
        if name in seen:
            raise click.UsageError(f"{seen[name]} and {file} would both make library {name!r}: ingest them separately with --library")
        seen[name] = file
    return names


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--all", "every_version", is_flag=True, help="Every version of each library, not only the newest.")
@click.pass_context
def libraries(ctx, as_json, every_version):
    """List libraries (newest version of each, or --all) with encoder, dimension, template and counts."""
    from whyclip.store import list_calibrations

    try:
        store = _store(ctx, create=False)
        infos = store.libraries(every_version=every_version)
        calibrations = {c.library_id: c for c in list_calibrations(store)}  # the newest of each version wins
    except NoStore:
        infos, calibrations = [], {}
    if as_json:
        click.echo(json.dumps([{**_info_dict(i), "calibration": calibrations[i.id].block() if i.id in calibrations else None}
                               for i in infos], indent=2, default=str))  # fmt: skip
        return
    if not infos:
        click.echo("no libraries yet: add one with 'whyclip ingest FILE --library NAME' (or run 'whyclip demo')", err=True)
        return
    head = ("library", "version", "classes", "descriptors", "empty", "pairs", "dim", "template", "index", "recall@10",
            "recall measured on", "encoder", "calibrated", "created", "note")  # fmt: skip
    rows = [(i.name, i.version, i.n_classes, i.n_descriptors, i.n_empty_classes, i.n_pairs, i.dim, i.template,
             _index_cell(i), f"{i.retrieval['recall_at_10']:.3f}", i.retrieval["calibrated_on"] or "-", i.encoder_name,
             f"T {calibrations[i.id].temperature:.3g} ({calibrations[i.id].aggregate})" if i.id in calibrations else "-",
             i.created_at.strftime("%Y-%m-%d %H:%M"),
             i.note if len(i.note) <= 60 else i.note[:57] + "...") for i in infos]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for r in (head, *rows):
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())


def _index_cell(i) -> str:
    """The index, its calibrated knob, and "exact scan" where calibration fell back to it."""
    label = i.index_label.replace(" probe ", " (probe ").replace(" nprobe ", " (nprobe ").replace(" efSearch ", " (efSearch ")
    label += ")" if label != i.index_label else ""
    return label + (" -> exact scan" if i.retrieval["exact"] and i.index_factory != "Flat" else "")


def _info_dict(i) -> dict:
    d = dict(vars(i))
    d["retrieval"] = i.retrieval
    d["created_at"] = i.created_at.isoformat()
    return d


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--library", "-l", required=True, help="Library to explain with.")
@click.option("--version", "lib_version", type=int, default=None, help="Library version [default: newest].")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1), help="Classes to show, with all their descriptors.")
@click.option("--aggregate", "-a", type=click.Choice(AGGREGATES), default=None,
              help="How descriptor similarities make a class score [default: the library's, mean].")
@click.option("--compare", nargs=2, default=None, metavar="A B", help="Contrast these two classes [default: the top two].")
@click.option("--retrieve", default=10, show_default=True, type=click.IntRange(0), help="Library-wide best descriptors to list.")
@click.option("--model", "-m", default=None, help="CLIP model [default: the one the library was built with].")
@click.option("--device", default=None, help="torch device (default: a GPU when there is one).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image, one per line (schema in README).")
@PRECISION
@click.option("--server", default=None, metavar="URL", envvar="WHYCLIP_SERVER",
              help="Ask a running 'whyclip serve' at URL instead of loading the model here [env WHYCLIP_SERVER].")
@click.option("--api-key", default=None, envvar="WHYCLIP_API_KEY", help="API key for --server, if it needs one [env WHYCLIP_API_KEY].")
@click.option("--calibrated", is_flag=True,
              help="Probabilities from the library version's stored calibration (made by 'whyclip calibrate').")
@click.pass_context
def explain(ctx, images, library, lib_version, top, aggregate, compare, retrieve, model, device, as_json, precision,
            server, api_key, calibrated):  # fmt: skip
    """Explain why each IMAGE (file or folder of images) gets its classes.

    Images are encoded and scored in batches. An unreadable image is reported on stderr
    (one line: the file and why) and skipped, the others are explained, and the exit
    status is then 1.
    """
    from whyclip.ingest import expand_image_paths
    from whyclip.ingest.images import check_image
    from whyclip.ingest.services.explain import ExplainOptions, ImageFailure, open_encoder, plan_explain

    if server:
        from whyclip.ui.cli.remote import explain_remote

        form = {"library": library, "top": top, "retrieve": retrieve, **({"version": lib_version} if lib_version else {}),
                **({"aggregate": aggregate} if aggregate else {}), **({"compare": list(compare)} if compare else {}),
                **({"calibrated": "true"} if calibrated else {})}  # fmt: skip
        return explain_remote(ctx, server, api_key, expand_image_paths(images), form, as_json)
    store = _store(ctx, create=False)
    options = ExplainOptions(top=top, aggregate=aggregate, compare=tuple(compare) if compare else None, retrieve=retrieve,
                             calibrated=calibrated)  # fmt: skip
    plan = plan_explain(store, library, lib_version, options)
    paths, failed = _readable(expand_image_paths(images), check_image)  # headers, before the model loads
    encoder = open_encoder(store, model or plan.library.info.encoder_name, device, precision)
    explainer = plan.with_encoder(encoder)
    shown = 0
    with progress_bar("explaining images", unit="image") as bar:
        for result in explainer.explain_files(paths, progress=bar if len(paths) > IMAGE_BATCH else None):
            if isinstance(result, ImageFailure):
                click.echo(f"Error: {result.error}", err=True)
                failed += 1
            elif as_json:
                click.echo(json.dumps(explanation_json(result, encoder), ensure_ascii=False))
            else:
                click.echo(("\n" if shown else "") + result.to_text())
            shown += not isinstance(result, ImageFailure)
    if failed:
        ctx.exit(1)


def _readable(paths: list[Path], check) -> tuple[list[Path], int]:
    """The paths whose headers pass ``check``; each one that fails is reported on stderr in
    one line (name and reason). None readable: one line, exit 1, before any model loads."""
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
    for line in bad:
        click.echo(f"Error: {line}", err=True)
    return good, len(bad)


@cli.command("eval")
@click.argument("dataset", type=click.Path())
@click.option("--library", "-l", required=True, help="Library to evaluate.")
@click.option("--version", "lib_version", type=int, default=None, help="Library version [default: newest].")
@click.option("--name", default=None, help="Name of the run [default: the dataset's name, numbered if taken].")
@click.option("--skip-unmatched", is_flag=True, help="Leave out images whose label matches no class, instead of refusing.")
@click.option("--model", "-m", default=None, help="CLIP model [default: the one the library was built with].")
@click.option("--device", default=None, help="torch device (default: a GPU when there is one).")
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON.")
@click.option("--method", "methods", multiple=True, type=click.Choice(["fudd", "no-fudd"]),
              help="fudd: also re-rank with the version's pair descriptors (FuDD), refusing a version without any; "
                   "no-fudd: leave FuDD out [default: FuDD whenever the version has pair descriptors].")
@click.option("--fudd-top-k", default=5, show_default=True, type=click.IntRange(2, 5),
              help="FuDD re-ranks each image's top classes under the library's aggregate: how many.")
@PRECISION
@click.pass_context
def eval_cmd(ctx, dataset, library, lib_version, name, skip_unmatched, model, device, as_json, methods, fudd_top_k, precision):
    """Score a labelled DATASET with a library and store the run for 'whyclip audit'.

    DATASET is a folder with one subfolder of images per class (ImageFolder) or a CSV of
    path,label rows. Labels must match the library's classes (case, underscores and spaces
    ignored). Every image is scored by each aggregate, by the class-name baseline and by a
    random-word control library; an unreadable image is reported and skipped. When the
    version has pair descriptors ('whyclip ingest-pairs'), FuDD re-ranks each image's top
    classes with them, and its accuracy is reported beside the others.
    """
    from whyclip.ingest.datasets import read_dataset
    from whyclip.ingest.services.evaluate import plan_eval, run_eval
    from whyclip.ingest.services.explain import open_encoder
    from whyclip.ingest.encoder.legacy_ids import check_library_encoder
    from whyclip.store import AuditSettings, FUDD, accuracy, confusions, fudd_summary as fudd_control, per_class

    from whyclip.ui.render.audit_report import accuracy_lines, confusion_lines, per_class_lines

    store = _store(ctx, create=False, migrate=True)  # it writes a run: migrates, creates nothing
    lib = store.load(library, lib_version)
    if {"fudd", "no-fudd"} <= set(methods):
        raise click.UsageError("--method fudd and --method no-fudd contradict each other: give one")
    fudd = True if "fudd" in methods else False if "no-fudd" in methods else None
    plan = plan_eval(store, lib, read_dataset(dataset), name=name, skip_unmatched=skip_unmatched, fudd=fudd,
                     fudd_top_k=fudd_top_k)  # before the model loads  # fmt: skip
    encoder = open_encoder(store, model or lib.info.encoder_name, device, precision)
    check_library_encoder(lib, encoder, store)  # an old id of this encoder is renamed in the store
    with progress_bar("embedding images", unit="image") as bar:
        report = run_eval(store, lib, plan, encoder, progress=bar)
    run = report.data
    agg = lib.info.aggregate
    acc, classes = accuracy(run), per_class(run, lib, agg)
    pairs = confusions(run, lib, agg, AuditSettings())
    fudd_summary = fudd_control(run, agg) if FUDD in run.results else None
    rate = report.images_per_second
    if as_json:
        click.echo(json.dumps({"run": report.run.to_dict(), "images_per_second": rate, "embedded": report.n_embedded,
                               "cached": report.n_cached, "seconds": report.seconds, "timings": report.timings,
                               "accuracy": acc, "per_class": classes, "confusions": pairs,
                               **({"fudd": fudd_summary} if fudd_summary else {})}, indent=2, ensure_ascii=False))  # fmt: skip
    else:
        r, tm = report.run, report.timings
        lines = [f"run {r.name!r} of library {library} v{lib.info.version}: {r.n_images} images "
                 f"({report.n_embedded} embedded, {report.n_cached} from the cache, {len(report.skipped)} skipped) "
                 f"in {report.seconds:.1f}s: images {tm['images']:.1f}s ({rate:.1f} images/s), random-word control "
                 f"{tm['control']:.1f}s, scoring {tm['scoring']:.1f}s", "", *accuracy_lines(acc), "",
                 *([f"FuDD ({fudd_summary['pairs']} stored pairs): {fudd_summary['verdict']}", ""] if fudd_summary else []),
                 f"classes with the largest loss against the baseline ({agg}; every class: --json, or the audit)",
                 *per_class_lines(classes), "",
                 "most confused (predicted for true)", *confusion_lines(pairs, 5), "",
                 f"details: whyclip audit --library {library} --run {r.name} [--format html]"]  # fmt: skip
        click.echo("\n".join(lines))
    if report.skipped:
        ctx.exit(1)


@cli.command()
@click.option("--library", "-l", default=None, help="Only this library's runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def runs(ctx, library, as_json):
    """List evaluation runs (made by 'whyclip eval')."""
    from whyclip.store import list_runs

    try:
        found = list_runs(_store(ctx, create=False), library)
    except NoStore:
        found = []
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in found], indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo("no evaluation runs yet: make one with 'whyclip eval DATASET --library NAME'", err=True)
        return
    head = ("library", "version", "run", "images", "skipped", "dataset", "created")
    rows = [(r.library_name, r.library_version, r.name, r.n_images, len(r.details.get("skipped", [])), r.dataset,
             r.created_at.strftime("%Y-%m-%d %H:%M")) for r in found]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for r in (head, *rows):
        click.echo("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())


@cli.command()
@click.option("--library", "-l", required=True, help="Library whose run to audit.")
@click.option("--run", "run_name", default=None, help="Run name (see 'whyclip runs') [default: the newest].")
@click.option("--format", "fmt", type=click.Choice(["text", "html", "csv", "json"]), default="text", show_default=True,
              help="text and json print to stdout; html writes one self-contained page; csv a folder of tables.")
@click.option("--out", "-o", type=click.Path(), default=None,
              help="Where to write [default: stdout for text/json, LIBRARY-RUN-audit.html or LIBRARY-RUN-audit/ for html/csv].")
@click.option("--aggregate", "-a", type=click.Choice(AGGREGATES), default=None, help="Aggregate to audit [default: the library's].")
@click.option("--delete-k", default=3, show_default=True, type=click.IntRange(1), help="Descriptors removed by the deletion control.")
@click.option("--near", "near_threshold", default=0.95, show_default=True, type=click.FloatRange(-1, 1),
              help="Cosine above which prompts of different classes count as near-identical.")
@click.option("--flat-ratio", default=0.25, show_default=True, type=click.FloatRange(0),
              help="A descriptor is flat when its similarity's spread is below this times the median spread.")
@click.option("--pairs", default=10, show_default=True, type=click.IntRange(1), help="Confused pairs to list with evidence.")
@click.option("--min-n", default=10, show_default=True, type=click.IntRange(1),
              help="Images a class needs before it is flagged as doing worse than its class name.")
@click.pass_context
def audit(ctx, library, run_name, fmt, out, aggregate, delete_k, near_threshold, flat_ratio, pairs, min_n):
    """Accuracy with intervals, controls with paired tests, the descriptors that drive predictions, hygiene."""
    from whyclip.store import AuditSettings, audit as make_audit, find_run, latest_calibration, load_run

    from whyclip.ui.render.audit_report import to_text, write_report

    store = _store(ctx, create=False)
    info = find_run(store, library, run_name)
    lib = store.load(library, info.library_version)
    settings = AuditSettings(aggregate=aggregate, delete_k=delete_k, near_threshold=near_threshold,
                             flat_ratio=flat_ratio, pairs=pairs, min_n=min_n)  # fmt: skip
    calibration = latest_calibration(store, lib.info.id, aggregate or lib.info.aggregate)
    result = make_audit(load_run(store, info), lib, settings, calibration)
    if out is None and fmt in ("text", "json"):
        click.echo(to_text(result) if fmt == "text" else json.dumps(result, indent=2, ensure_ascii=False))
        return
    if fmt == "text":
        raise click.UsageError("--out is for html, csv and json; text goes to stdout")
    default = f"{_safe(library)}-{_safe(info.name)}-audit" + (".html" if fmt == "html" else ".json" if fmt == "json" else "")
    target = Path(out or default)
    if fmt == "csv" and target.exists() and not target.is_dir():
        raise click.ClickException(f"{target} is a file; csv writes a folder of tables: give --out a folder")
    if fmt != "csv" and target.is_dir():
        raise click.ClickException(f"{target} is a folder: give --out a file name")
    written = write_report(result, fmt, target)
    click.echo(f"wrote {target}" + (f" ({len(written)} tables)" if fmt == "csv" else ""), err=True)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


@cli.command()
@click.option("--model", "-m", default=None, help=DEFAULT_MODEL_HELP)
@click.option("--device", default=None, help="torch device (default: a GPU when there is one).")
@PRECISION
@click.pass_context
def demo(ctx, model, device, precision):
    """Ingest the bundled demo library and explain a few drawn sample images."""
    from whyclip.ui.demo.run import run_demo

    run_demo(lambda: _store(ctx, create=True), model, device, echo=click.echo, precision=precision)


@cli.command()
@click.option("--library", "-l", default=None, help="Library to open first [default: the first one].")
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535), help="Port on 127.0.0.1.")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="A folder of images to pick from in the dashboard.")
@click.option("--model", "-m", default=None, help="CLIP model [default: the one each library was built with].")
@click.pass_context
def ui(ctx, library, port, images, model):
    """Start the dashboard (Streamlit) on http://127.0.0.1:PORT."""
    import subprocess

    if library is not None:
        _store(ctx, create=False).library(library)  # an unknown name fails here, in one line
    env = dict(os.environ)
    settings = {"WHYCLIP_HOME": ctx.obj["home"], "WHYCLIP_DB": ctx.obj["db"], "WHYCLIP_UI_LIBRARY": library,
                "WHYCLIP_UI_IMAGES": images and str(Path(images).resolve()), "WHYCLIP_UI_MODEL": model}  # fmt: skip
    env.update({k: v for k, v in settings.items() if v})
    app = Path(__file__).parents[1] / "dashboard" / "streamlit_app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", "127.0.0.1",
               "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "minimal"]  # fmt: skip
    click.echo(f"whyclip dashboard on http://127.0.0.1:{port} (Ctrl+C to stop)", err=True)
    sys.stderr.flush()
    if os.name == "posix":  # become the server, so that signals (Ctrl+C, kill) reach it directly
        os.execve(sys.executable, command, env)
    try:
        code = subprocess.call(command, env=env)
    except KeyboardInterrupt:
        code = 0
    ctx.exit(code)


@cli.command("make-test-model")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--full-size", is_flag=True, help="ViT-B/32's architecture (same compute as the real model) instead of a tiny one.")
@click.option("--vocab", type=click.Path(exists=True), default=None,
              help="CLIP's bpe_simple_vocab_16e6.txt.gz, a clip-anytorch wheel, or a folder holding either (needed for --full-size).")
@click.option("--seed", default=0, show_default=True, help="Random seed for the weights.")
def make_test_model_cmd(directory, full_size, vocab, seed):
    """Write a random-weight CLIP model folder, built offline, loadable with --model DIRECTORY.

    For plumbing and speed checks only: its explanations mean nothing.
    """
    from whyclip.ingest.encoder.testmodel import make_test_model

    try:
        path = make_test_model(directory, full_size=full_size, vocab=vocab, seed=seed)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote a {'full-size ViT-B/32' if full_size else 'tiny'} random-weight CLIP to {path}; use it with --model {path}")


register_lifecycle(cli)  # delete, gc, export

from whyclip.ui.cli.generate import clean, eval_pairs_cmd, generate, generate_pairs_cmd, ingest_pairs_cmd, pairs_cmd  # noqa: E402  (their own module)

for _command in (generate, clean, generate_pairs_cmd, ingest_pairs_cmd, pairs_cmd, eval_pairs_cmd):
    cli.add_command(_command)


def _register_serve() -> None:
    from whyclip.ui.cli.serve import serve

    cli.add_command(serve)


_register_serve()

from whyclip.ui.cli.migrate import migrate  # noqa: E402 - the store's maintenance commands
from whyclip.ui.cli.whatif import whatif  # noqa: E402  (its own module)

cli.add_command(migrate)
cli.add_command(whatif)

from whyclip.ui.cli.calibrate import calibrate  # noqa: E402  (its own module)

cli.add_command(calibrate)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli(prog_name="whyclip")


if __name__ == "__main__":
    main()
