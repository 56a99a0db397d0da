"""``whyclip calibrate``: fit a temperature (and optionally per-class biases) on a seeded
split of a stored run, report the held-out figures before and after with a reliability
diagram, and store the calibration with the library version for ``explain --calibrated``."""

from __future__ import annotations

import html
import json
from pathlib import Path

import click
import matplotlib

from whyclip.store import calibrate_run, find_run, load_run, save_calibration
from whyclip.store.choices import AGGREGATES
from whyclip.ui.cli.context import open_store
from whyclip.ui.cli.progress import progress_bar
from whyclip.ui.render.audit_plots import reliability, reliability_figure
from whyclip.ui.render.audit_report import ci, pct, write_atomic

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def calibration_text(r: dict, stored: bool) -> str:

    bias = " and per-class biases" if r["per_class_bias"] else ""
    lines = [
        f"calibration of library {r['library']} v{r['version']} on run {r['run']!r} ({r['aggregate']} aggregate): "
        f"fitted on {r['n_fit']} images, measured on {r['n_held_out']} held out (seed {r['seed']}, fit fraction "
        f"{r['fit_fraction']:g})",
        f"  temperature {r['temperature']:.4g}{bias} (logits: logit scale {r['logit_scale']:g} x score, divided by T)",
        "",
        f"  {'held out':<16}{'before':<28}after",
        f"  {'ECE (15 bins)':<16}{r['ece_before']:.4f} {_ci3(r['ece_before_ci95']):<21}{r['ece_after']:.4f} "
        f"{_ci3(r['ece_after_ci95'])}",
        f"  {'NLL':<16}{r['nll_before']:<28.4f}{r['nll_after']:.4f}",
        f"  {'top-1':<16}{pct(r['accuracy_before']) + ' ' + ci(r['accuracy_before_ci95']):<28}"
        f"{pct(r['accuracy_after'])} {ci(r['accuracy_after_ci95'])}",
        "",
        "  reliability (confidence bin: images, mean confidence -> accuracy, before | after)",
    ]
    for b in r["bins"]:
        x, y = b["before"], b["after"]
        if x["count"] or y["count"]:
            lines.append(f"    ({b['lower']:.2f}, {b['upper']:.2f}]  {_bin(x):<26}| {_bin(y)}")
    lines += [f"  note: {n}" for n in r["notes"]]
    if stored:
        lines += [
            "",
            f"stored as the calibration of {r['library']} v{r['version']} ({r['aggregate']}): "
            f"'whyclip explain --library {r['library']} --calibrated IMAGE' uses it",
        ]
    return "\n".join(lines)


def _ci3(interval: list[float]) -> str:
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _bin(b: dict) -> str:
    return f"{b['count']:>5}  {b['confidence']:.2f} -> {b['accuracy']:.2f}" if b["count"] else f"{0:>5}"


def calibration_html(r: dict) -> str:
    """A self-contained page: the figures and the reliability diagram as inline SVG."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after the backend is chosen: no display here

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "whyclip", "font.size": 10})
    svg = reliability(r, plt)
    rows = "".join(
        f"<tr><td>{name}</td><td class=num>{r[key + '_before']:.4f}</td><td class=num>{r[key + '_after']:.4f}</td></tr>"
        for name, key in (("ECE (15 bins)", "ece"), ("NLL", "nll"), ("top-1 accuracy", "accuracy"))
    )
    notes = "".join(f"<p><small>Note: {html.escape(n)}</small></p>" for n in r["notes"])
    title = html.escape(f"{r['library']} v{r['version']}, run {r['run']}")
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>whyclip calibration: {title}</title><style>"
        "body{font:14px/1.45 system-ui,sans-serif;color:#1f2933;max-width:800px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #e4e7eb}td.num{text-align:right}"
        f"svg{{max-width:100%;height:auto}}</style></head><body><h1>Calibration: {title}</h1>"
        f"<p>{html.escape(r['aggregate'])} aggregate; temperature <b>{r['temperature']:.4g}</b>"
        f"{' and per-class biases' if r['per_class_bias'] else ''}, fitted on {r['n_fit']} images and measured on "
        f"{r['n_held_out']} held out (seed {r['seed']}).</p>"
        f"<table id=calibration><tr><th>held out</th><th>before</th><th>after</th></tr>{rows}</table>"
        f"<div class=plot>{svg}</div>{notes}</body></html>"
    )


@click.command()
@click.option("--library", "-l", required=True, help="Library whose run to calibrate on.")
@click.option("--run", "run_name", default=None, help="Run name (see 'whyclip runs') [default: the newest].")
@click.option(
    "--aggregate",
    "-a",
    type=click.Choice(AGGREGATES),
    default=None,
    help="Aggregate to calibrate [default: the library's].",
)
@click.option(
    "--per-class-bias", is_flag=True, help="Also fit a bias per class (jointly with the temperature; mild L2)."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the fit / held-out split.")
@click.option(
    "--fit-fraction",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of each class's images used to fit; the rest is held out for the figures.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a self-contained HTML page with the figures and the reliability diagram.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the reliability diagram as an image (.png, .svg or .pdf).",
)
@click.option("--dry-run", is_flag=True, help="Fit and report, but store nothing.")
@click.pass_context
def calibrate(
    ctx, library, run_name, aggregate, per_class_bias, seed, fit_fraction, as_json, html_path, plot_path, dry_run
):
    """Fit a temperature (LeVine et al., 2023) on a run; report held-out ECE, NLL and accuracy before and after.

    The run's images are split, seeded and stratified by class; the fit uses one part and
    every figure is measured on the other. The calibration is stored with the library
    version (the newest one is used) for 'whyclip explain --calibrated'.
    """
    if plot_path and Path(plot_path).suffix.lower() not in PLOT_SUFFIXES:
        raise click.UsageError(f"--plot {plot_path}: the file name must end in {', '.join(PLOT_SUFFIXES)}")
    # it stores the calibration: migrates, creates nothing (--dry-run reads only)
    store = open_store(ctx, create=False, migrate=not dry_run)
    info = find_run(store.engine, library, run_name)
    lib = store.load(library, info.library_version)
    run = load_run(store.engine, info)
    with progress_bar("scoring the run", unit="image") as bar:
        report = calibrate_run(
            run,
            lib,
            aggregate,
            per_class_bias=per_class_bias,
            fraction=fit_fraction,
            seed=seed,
            progress=bar if info.n_images > 4096 else None,
        )
    if not dry_run:
        saved = save_calibration(
            store.engine, library_id=lib.info.id, run_id=info.id, aggregate=report["aggregate"], report=report
        )
        report = {**report, "calibration_id": saved.id, "created_at": saved.created_at.isoformat()}
    report["stored"] = not dry_run
    if html_path:
        write_atomic(Path(html_path), calibration_html(report))
        click.echo(f"wrote {html_path}", err=True)
    if plot_path:
        Path(plot_path).parent.mkdir(parents=True, exist_ok=True)
        reliability_figure(report, plot_path)
        click.echo(f"wrote {plot_path}", err=True)
    click.echo(json.dumps(report, indent=2, ensure_ascii=False) if as_json else calibration_text(report, not dry_run))
