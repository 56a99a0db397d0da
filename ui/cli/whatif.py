"""``whyclip whatif``: what dropping or adding descriptors would do to a stored run's
predictions, computed exactly from the run (no re-ingest, no re-eval), and optionally saved
as a new library version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from whyclip.ingest.services.explain import open_encoder
from whyclip.ingest.services.whatif import added_vectors, save_edit
from whyclip.store import InputError, WhatIf, find_run, load_run, plan_edit, read_edits, split_pair
from whyclip.store.choices import AGGREGATES
from whyclip.ui.cli.context import open_store
from whyclip.ui.cli.options import PRECISION

if TYPE_CHECKING:
    import numpy as np


def _ci(fig: dict) -> str:
    return f"{100 * fig['accuracy']:.1f}% [{100 * fig['ci95'][0]:.1f}, {100 * fig['ci95'][1]:.1f}]"


def whatif_text(a: dict, show: int) -> str:
    """The answer as people read it: the edit, both accuracies with intervals, the paired
    test, then the flips (at most ``show`` of each kind)."""
    lib, e = a["library"], a["edit"]
    edits = [f"drop {d['class']}: {d['descriptor']!r}" for d in e["drop"]] + [
        f"add {d['class']}: {d['text']!r}" for d in e["add"]
    ]
    lines = [
        f"what-if on run {a['run']['name']!r} of library {lib['name']} v{lib['version']} ({a['n']} images, "
        f"aggregate {a['aggregate']})",
        "edit: " + ("; ".join(edits) or "nothing"),
        f"top-1 before {_ci(a['accuracy_before'])}, after {_ci(a['accuracy_after'])} "
        f"({100 * a['difference']:+.1f} points; 95% Wilson intervals)",
        f"McNemar exact p = {a['p_value']:.3g} ({a['verdict']}): {len(a['flips']['wrong_to_right'])} wrong->right, "
        f"{len(a['flips']['right_to_wrong'])} right->wrong, {a['changed_between_wrong']} changed between wrong classes",
    ]
    lines += [f"note: {n}" for n in a["notes"]]
    for c in a["classes"]:
        if c["images"]:
            lines.append(
                f"class {c['class']}: {c['descriptors_before']} -> {c['descriptors_after']} descriptors, "
                f"{c['images']} images, top-1 {100 * c['accuracy_before']:.1f}% -> {100 * c['accuracy_after']:.1f}%"
            )
        else:
            lines.append(
                f"class {c['class']}: {c['descriptors_before']} -> {c['descriptors_after']} descriptors, no "
                "images in the run"
            )
    scale = lib["logit_scale"]
    for key, title in (("wrong_to_right", "wrong -> right"), ("right_to_wrong", "right -> wrong")):
        flips = a["flips"][key]
        lines += ["", f"{title} ({len(flips)})" + (": the predicted class and its S, before -> after" if flips else "")]
        for f in flips[:show]:
            lines.append(
                f"  {f['path']}  true {f['true']}: {f['before']} S {f['before_score'] * scale:.2f} -> {f['after']} "
                f"S {f['after_score'] * scale:.2f}"
            )
        if len(flips) > show:
            lines.append(f"  ... and {len(flips) - show} more (--show N, or --json)")
    return "\n".join(lines)


def _edits_file(path: str):

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such edits file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f'{path}: not a JSON edits file ({exc}): write {{"drop": [...], "add": [...]}}') from None
    return read_edits(data)


@click.command()
@click.option("--library", "-l", required=True, help="Library whose run to edit.")
@click.option("--run", "run_name", default=None, help="Run name (see 'whyclip runs') [default: the newest].")
@click.option(
    "--drop", "drops", multiple=True, metavar="CLASS:DESCRIPTOR", help="Drop a descriptor of a class (repeatable)."
)
@click.option(
    "--add",
    "adds",
    multiple=True,
    metavar="CLASS:TEXT",
    help="Add a descriptor to a class (repeatable); only its prompt is embedded.",
)
@click.option(
    "--edits",
    "edits_file",
    type=click.Path(dir_okay=False),
    default=None,
    help=(
        'A JSON file of edits: {"drop": [{"class": C, "descriptor": D}], "add": [{"class": C, "text": T}]} '
        "(what --json echoes)."
    ),
)
@click.option(
    "--aggregate",
    "-a",
    type=click.Choice(AGGREGATES),
    default=None,
    help="Aggregate to score with [default: the library's].",
)
@click.option(
    "--save-as-version",
    is_flag=True,
    help="Also publish the edited library as a new version (the run's version stays as it is).",
)
@click.option(
    "--note",
    default=None,
    help="With --save-as-version: a note stored with the new version (shown by 'whyclip libraries').",
)
@click.option(
    "--show",
    default=20,
    show_default=True,
    type=click.IntRange(0),
    help="Flips of each kind to list in the text output.",
)
@click.option("--model", "-m", default=None, help="CLIP model for --add [default: the one the library was built with].")
@click.option("--device", default=None, help="torch device for --add (default: a GPU when there is one).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@PRECISION
@click.pass_context
def whatif(
    ctx,
    library,
    run_name,
    drops,
    adds,
    edits_file,
    aggregate,
    save_as_version,
    note,
    show,
    model,
    device,
    as_json,
    precision,
):
    """What an edit of a library's descriptors would do to a stored run, exactly.

    Scores are linear in the descriptor similarities, so the edited classes are rescored
    from the run's stored image vectors and every other class keeps its score: the answer
    is the one re-ingesting the edited library and re-running eval would give. It lists the
    predictions that flip (right->wrong, wrong->right), the top-1 accuracy before and after
    with 95% intervals, and McNemar's exact paired p-value. A class left with no descriptor
    is scored by its baseline prompt (as an empty class of a library file is).
    """
    if note is not None and not save_as_version:
        raise click.UsageError("--note goes with --save-as-version")
    drop_pairs, add_pairs = _edits_file(edits_file) if edits_file else ([], [])
    if not (drops or adds or drop_pairs or add_pairs):
        raise click.UsageError("nothing to edit: give --drop CLASS:DESCRIPTOR, --add CLASS:TEXT or --edits FILE")
    writes = bool(adds or add_pairs or save_as_version)  # the embedding cache, a new version
    store = open_store(ctx, create=False, migrate=writes)
    info = find_run(store.engine, library, run_name)
    lib = store.load(library, info.library_version)
    drop_pairs += [split_pair(lib, d, "--drop") for d in drops]
    add_pairs += [split_pair(lib, d, "--add") for d in adds]
    edit = plan_edit(lib, drop_pairs, add_pairs)  # every name checked before a model loads
    session = WhatIf(load_run(store.engine, info), lib, aggregate)
    vectors: dict[str, tuple[np.ndarray, float]] = {}
    truncated: dict[str, bool] = {}
    warnings: list[str] = []
    if edit.new_prompts:
        encoder = open_encoder(store, model or lib.info.encoder_name, device, precision)
        vectors, truncated, warnings = added_vectors(store, lib, encoder, edit.new_prompts)
    answer = session.answer(edit, vectors)
    answer["warnings"] = warnings
    if save_as_version:
        saved = save_edit(store, lib, edit, vectors, truncated, note or "")
        answer["saved"] = {
            "library": saved.name,
            "version": saved.version,
            "note": saved.note,
            "descriptors": saved.n_descriptors,
        }
    if as_json:
        click.echo(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        click.echo(whatif_text(answer, show))
        if save_as_version:
            s = answer["saved"]
            click.echo(
                f"\nsaved as library {s['library']} v{s['version']} ({s['descriptors']} descriptors)"
                + (f", note: {s['note']}" if s["note"] else "")
                + f"; v{lib.info.version} is unchanged"
            )
