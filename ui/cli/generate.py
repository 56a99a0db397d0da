"""``whyclip generate`` (descriptors from an LLM on any OpenAI-compatible server) and
``whyclip clean`` (the same cleaning on an existing library), each with a cleaning report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from whyclip import ingest
from whyclip.ingest.encoder.legacy_ids import check_library_encoder
from whyclip.ingest.generate.classes import read_classes, read_raw_library
from whyclip.ingest.generate.cleaning import DEFAULT_ACTIONS, STEPS, CleanSettings, clean_classes
from whyclip.ingest.generate.generation import (
    GenerateSettings,
    check_output,
    generate_library,
    write_json_atomic,
    write_outputs,
)
from whyclip.ingest.generate.llm_client import DEFAULT_BASE_URL, ChatClient, resolve_api_key
from whyclip.ingest.generate.llm_prompts import load_prompt
from whyclip.ingest.generate.pairs import confused_pairs, generate_pairs
from whyclip.ingest.services.fudd import pair_texts
from whyclip.ingest.services.pair_ingest import PairsFile, pairs_from_images, plan_pairs, read_pairs_file, store_pairs
from whyclip.store import AGGREGATES, BASELINE, FUDD, InputError, find_run, load_run, rerank_with_pairs
from whyclip.ui.cli.context import open_store
from whyclip.ui.cli.progress import progress_bar

FLAG_STEPS = [s for s, a in DEFAULT_ACTIONS.items() if a == "flagged"]
DROP_STEPS = [s for s, a in DEFAULT_ACTIONS.items() if a == "dropped"]


def cleaning_options(f):
    for option in reversed(
        [
            click.option(
                "--keep",
                multiple=True,
                type=click.Choice(STEPS),
                metavar="STEP",
                help=(
                    "A cleaning step that only flags instead of dropping (repeatable): "
                    f"{', '.join(DROP_STEPS)} drop by default."
                ),
            ),
            click.option(
                "--drop",
                multiple=True,
                type=click.Choice(STEPS),
                metavar="STEP",
                help=(
                    f"A cleaning step that drops instead of flagging (repeatable): {', '.join(FLAG_STEPS)} "
                    "only flag by default."
                ),
            ),
            click.option(
                "--max-words",
                default=15,
                show_default=True,
                type=click.IntRange(1),
                help="Lines with more words are 'long'.",
            ),
            click.option(
                "--shared-min",
                default=10,
                show_default=True,
                type=click.IntRange(2),
                help="Lines in at least this many classes are 'shared'.",
            ),
            click.option(
                "--report",
                "report_path",
                type=click.Path(dir_okay=False),
                default=None,
                help="Also write the cleaning report here (JSON when the name ends in .json, else text).",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print the cleaning report as JSON instead of text."),
        ]
    ):
        f = option(f)
    return f


def _settings(keep, drop, max_words, shared_min) -> CleanSettings:
    return CleanSettings.with_overrides(keep=keep, drop=drop, max_words=max_words, shared_min=shared_min)


def _emit_report(report, report_path, as_json) -> None:
    if report_path:
        path = Path(report_path)
        body = (
            json.dumps(report.to_json(), indent=2, ensure_ascii=False)
            if path.suffix.lower() == ".json"
            else report.to_text()
        )
        path.write_text(body + "\n", encoding="utf-8")
    click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False) if as_json else report.to_text())


@click.command()
@click.argument("classes", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="The library to write (.json); its provenance goes to OUT.provenance.json beside it.",
)
@click.option(
    "--base-url",
    envvar="OPENAI_BASE_URL",
    default=None,
    help="The server's OpenAI-compatible API, e.g. http://localhost:11434/v1 (Ollama) [env OPENAI_BASE_URL; default: https://api.openai.com/v1].",
)
@click.option("--model", "-m", default="gpt-4o-mini", show_default=True, help="The model name the server knows.")
@click.option(
    "--prompt",
    "prompt_name",
    default="default",
    show_default=True,
    metavar="NAME|FILE",
    help="A built-in prompt (default, zero-shot) or a text file with a {class} placeholder.",
)
@click.option(
    "--n",
    "n",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Answers asked for per class (merged; repeats dropped).",
)
@click.option(
    "--concurrency", "-c", default=4, show_default=True, type=click.IntRange(1), help="Requests in flight at a time."
)
@click.option(
    "--temperature", default=0.0, show_default=True, type=click.FloatRange(0, 2), help="Sampling temperature."
)
@click.option("--max-tokens", default=300, show_default=True, type=click.IntRange(1), help="Longest answer, in tokens.")
@click.option(
    "--structured",
    is_flag=True,
    help=(
        "Ask for a JSON list through response_format (JSON schema); falls back to list parsing, saying so, "
        "where the server refuses."
    ),
)
@click.option(
    "--api-key-env",
    default="OPENAI_API_KEY",
    show_default=True,
    metavar="VAR",
    help="The environment variable holding the API key (never written anywhere; local servers need none).",
)
@click.option(
    "--more",
    is_flag=True,
    help="CLASSES is a library: ask for more descriptors for every class, not only the empty ones.",
)
@click.option(
    "--empty-retries",
    default=2,
    show_default=True,
    type=click.IntRange(0),
    help="Times an empty answer is asked again, each at a higher temperature (+0.4).",
)
@click.option(
    "--timeout", default=60.0, show_default=True, type=click.FloatRange(0.01), help="Seconds to wait for one answer."
)
@click.option(
    "--retries",
    default=4,
    show_default=True,
    type=click.IntRange(0),
    help="Retries with backoff after a 429, a 5xx, a timeout or a dropped connection.",
)
@cleaning_options
@click.pass_context
def generate(
    ctx,
    classes,
    out,
    base_url,
    model,
    prompt_name,
    n,
    concurrency,
    temperature,
    max_tokens,
    structured,
    api_key_env,
    more,
    empty_retries,
    timeout,
    retries,
    keep,
    drop,
    max_words,
    shared_min,
    report_path,
    as_json,
):
    """Generate descriptors for CLASSES with an LLM and write a cleaned library.

    CLASSES is a text file (one class a line), a JSON list, a CSV (first column) or a library
    (.json/.jsonl/.csv), whose empty classes are filled (all classes with --more). Every answer
    is cached in the store, so a rerun sends no request.
    """
    out_path = check_output(out)
    clean = _settings(keep, drop, max_words, shared_min)
    prompt = load_prompt(prompt_name)
    class_list = read_classes(classes)
    if more and class_list.library is None:
        raise InputError(f"--more adds descriptors to a library, and {classes} is a list of names: drop --more")
    for w in class_list.warnings:
        click.echo(f"warning: {w}", err=True)
    if n > 1 and temperature == 0:
        click.echo(
            f"warning: --n {n} at temperature 0 asks for the same answer {n} times: raise --temperature", err=True
        )
    base_url = base_url or DEFAULT_BASE_URL
    client = ChatClient(base_url, model, resolve_api_key(api_key_env, base_url), timeout=timeout, max_retries=retries)
    settings = GenerateSettings(
        model=model,
        prompt=prompt,
        n=n,
        temperature=temperature,
        max_tokens=max_tokens,
        structured=structured,
        more=more,
        empty_retries=empty_retries,
        concurrency=concurrency,
    )
    store = open_store(ctx, create=True)
    with progress_bar("asking the LLM", unit="answer") as bar:
        result = generate_library(store, class_list, client, settings, clean, progress=bar)
    side = write_outputs(out_path, result)
    if client.structured_refused:
        click.echo(
            f"warning: the server refused response_format ({client.structured_refused}): the answers were "
            "parsed as lists",
            err=True,
        )
    _emit_report(result.report, report_path, as_json)
    n_lines = sum(len(lines) for _, lines in result.classes)
    click.echo(
        f"wrote {out_path}: {len(result.classes)} classes ({len(result.targets)} asked), {n_lines} descriptors; "
        f"{result.n_sent} requests sent, {result.n_cached} answers from the cache; provenance in {side}",
        err=as_json,
    )


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--prompt",
    "prompt_name",
    default="default",
    show_default=True,
    metavar="NAME|FILE",
    help="The prompt the library was generated with: its example lines are the 'copied' ones.",
)
@click.option(
    "--out", "-o", type=click.Path(dir_okay=False), default=None, help="Write the cleaned library here (.json)."
)
@cleaning_options
def clean(file, prompt_name, out, keep, drop, max_words, shared_min, report_path, as_json):
    """Clean an existing library FILE and report every line dropped or flagged, and why."""
    out_path = check_output(out) if out else None
    settings = _settings(keep, drop, max_words, shared_min)
    prompt = load_prompt(prompt_name)
    cleaned, report = clean_classes(read_raw_library(file), prompt.examples, settings)
    if out_path is not None:
        write_json_atomic(out_path, dict(cleaned))
    _emit_report(report, report_path, as_json)


def _report_stored(lib, written, warnings, n_prompts) -> None:
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    parts = (
        [f"{len(written.added)} added"]
        + ([f"{len(written.replaced)} replaced"] if written.replaced else [])
        + ([f"{len(written.unchanged)} already stored as they are"] if written.unchanged else [])
    )
    click.echo(
        f"stored pair descriptors into library {lib.info.name} v{lib.info.version}: {', '.join(parts)} "
        f"({n_prompts} descriptions embedded or found in the cache); they are kept apart from the classes' "
        f"own descriptors: use them with 'whyclip eval DATASET --library {lib.info.name} --method fudd' "
        f"and 'whyclip explain --compare A B'",
        err=True,
    )


def _encoder_for(store, lib, model, device):

    encoder = ingest.load_encoder(model or lib.info.encoder_name, device)
    check_library_encoder(lib, encoder, store)
    return encoder


@click.command("generate-pairs")
@click.option("--library", "-l", required=True, help="The library whose confusions or ambiguous images pick the pairs.")
@click.option(
    "--pairs-from-run",
    "run_name",
    default=None,
    metavar="RUN",
    help="Pairs an evaluation run confuses most [default, with the library's newest run].",
)
@click.option(
    "--pairs-from-images",
    "images",
    default=None,
    metavar="DIR|CSV",
    type=click.Path(exists=True),
    help="Instead: pairs these (unlabelled) images are ambiguous between under the class-name baseline (a folder, "
    "searched recursively, or a CSV whose first column is an image path).",
)
@click.option(
    "--top-k",
    default=3,
    show_default=True,
    type=click.IntRange(2),
    help="With --pairs-from-images: the top classes of an image whose pairs can be ambiguous.",
)
@click.option(
    "--margin",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0),
    help="With --pairs-from-images: an image is ambiguous between those of its top-k classes whose baseline score "
    "is within this much S (similarity x logit scale) of its best; each pair of them counts.",
)
@click.option(
    "--version",
    "lib_version",
    type=int,
    default=None,
    help="With --pairs-from-images: the library version [default: newest; a run uses its own].",
)
@click.option(
    "--pairs",
    "n_pairs",
    default=10,
    show_default=True,
    type=click.IntRange(1),
    help="How many of the most confused pairs.",
)
@click.option(
    "--aggregate",
    "-a",
    default="mean",
    show_default=True,
    type=click.Choice([*AGGREGATES, BASELINE, FUDD]),
    help="The run's scoring method whose confusions count: an aggregate of the descriptors, the class-name "
    "baseline, or fudd (a run re-ranked with pair descriptors).",
)
@click.option("--out", "-o", default=None, type=click.Path(dir_okay=False), help="The pairs file to write (.json).")
@click.option(
    "--store",
    "store_them",
    is_flag=True,
    help="Also store the pairs into the library version as pair descriptors (as 'whyclip ingest-pairs' does).",
)
@click.option("--replace", is_flag=True, help="With --store: replace a pair already stored with other descriptions.")
@click.option(
    "--base-url",
    envvar="OPENAI_BASE_URL",
    default=None,
    help="The server's OpenAI-compatible API [env OPENAI_BASE_URL; default: https://api.openai.com/v1].",
)
@click.option("--model", "-m", default="gpt-4o-mini", show_default=True, help="The model name the server knows.")
@click.option(
    "--clip-model",
    default=None,
    help="CLIP model for images and --store [default: the one the library was built with].",
)
@click.option("--device", default=None, help="torch device for the CLIP model (default: a GPU when there is one).")
@click.option(
    "--api-key-env",
    default="OPENAI_API_KEY",
    show_default=True,
    metavar="VAR",
    help="The environment variable holding the API key (never written anywhere; local servers need none).",
)
@click.option(
    "--concurrency", "-c", default=4, show_default=True, type=click.IntRange(1), help="Requests in flight at a time."
)
@click.option(
    "--timeout", default=60.0, show_default=True, type=click.FloatRange(0.01), help="Seconds to wait for one answer."
)
@click.option(
    "--retries",
    default=4,
    show_default=True,
    type=click.IntRange(0),
    help="Retries with backoff after a 429, a 5xx, a timeout or a dropped connection.",
)
@click.pass_context
def generate_pairs_cmd(
    ctx,
    library,
    run_name,
    images,
    top_k,
    margin,
    lib_version,
    n_pairs,
    aggregate,
    out,
    store_them,
    replace,
    base_url,
    model,
    clip_model,
    device,
    api_key_env,
    concurrency,
    timeout,
    retries,
):
    """Ask an LLM what tells apart the class pairs an evaluation run confuses most, or that
    a set of images is ambiguous between (FuDD's differential descriptions); write them to a
    pairs file with provenance (--out) and/or store them with the library version (--store)."""
    if not out and not store_them:
        raise click.UsageError("say where the pairs go: --out PAIRS.json, --store, or both")
    if images and run_name:
        raise click.UsageError(
            "choose the pairs from a run (--pairs-from-run) or from images (--pairs-from-images), not both"
        )
    if lib_version is not None and not images:
        raise click.UsageError(
            "--version is for --pairs-from-images: a run's pairs belong to the run's library version"
        )
    out_path = check_output(out) if out else None
    store = open_store(ctx, create=False, migrate=store_them)
    encoder = None
    if images:
        lib = store.load(library, lib_version)
        encoder = _encoder_for(store, lib, clip_model, device)
        with progress_bar("embedding images", unit="image") as bar:
            found: list[str] = []  # the folder's image count, said once the images are read
            pairs, chosen = pairs_from_images(
                store, lib, encoder, images, top_k=top_k, margin=margin, k=n_pairs, progress=bar, report=found.append
            )
        for line in found:
            click.echo(line, err=True)
        where = {"images": chosen}
        none_found = (
            f"no image of {images} is ambiguous between two of its top {top_k} classes within {margin} S: "
            "raise --margin or --top-k"
        )
    else:
        info = find_run(store.engine, library, run_name)
        run = load_run(store.engine, info)
        if aggregate not in run.results:
            raise InputError(
                f"run {info.name!r} has no method {aggregate!r}: choose from {', '.join(sorted(run.results))}"
            )
        lib = store.load(library, info.library_version)
        pairs = confused_pairs(run.labels, run.results[aggregate].predicted, lib.class_names, n_pairs)
        where = {
            "run": {"library": library, "version": info.library_version, "name": info.name, "aggregate": aggregate}
        }
        none_found = "the run confuses no pair of classes: there is nothing to tell apart"
    if store_them and encoder is None:
        encoder = _encoder_for(store, lib, clip_model, device)  # before any request: a wrong model costs nothing
    base_url = base_url or DEFAULT_BASE_URL
    client = ChatClient(base_url, model, resolve_api_key(api_key_env, base_url), timeout=timeout, max_retries=retries)
    with progress_bar("asking the LLM", unit="pair") as bar:
        result = generate_pairs(
            store, client, pairs, model=model, concurrency=concurrency, progress=bar, none_found=none_found
        )
    result.update(where)
    if out_path is not None:
        write_json_atomic(out_path, result)
    for p in result["pairs"]:
        what = "confused" if "run" in where else "ambiguous images"
        click.echo(f"{p['a']} / {p['b']} ({p['confusions']} {what}): {len(p['features'])} features")
    r = result["requests"]
    click.echo(
        f"{'wrote ' + str(out_path) if out_path else 'asked'}: {len(result['pairs'])} pairs; "
        f"{r['sent']} requests sent, {r['cached']} from the cache",
        err=True,
    )
    if store_them:
        written, warnings, n = store_pairs(
            store, lib, PairsFile(str(out_path or "generate-pairs"), result, result["pairs"]), encoder, replace=replace
        )
        _report_stored(lib, written, warnings, n)


@click.command("ingest-pairs")
@click.argument("pairs_file", metavar="PAIRS", type=click.Path(dir_okay=False, exists=True))
@click.option("--library", "-l", required=True, help="The library to store the pair descriptors with.")
@click.option("--version", "lib_version", type=int, default=None, help="Library version [default: newest].")
@click.option(
    "--replace", is_flag=True, help="Replace a pair already stored with other descriptions (else it is refused)."
)
@click.option("--model", "-m", default=None, help="CLIP model [default: the one the library was built with].")
@click.option("--device", default=None, help="torch device (default: a GPU when there is one).")
@click.pass_context
def ingest_pairs_cmd(ctx, pairs_file, library, lib_version, replace, model, device):
    """Store a PAIRS file (from 'whyclip generate-pairs') with a library version as
    contrastive pair descriptors: each side's descriptions rendered with the library's
    template, embedded through the cache, kept apart from the classes' own descriptors."""
    pf = read_pairs_file(pairs_file)
    store = open_store(ctx, create=False, migrate=True)
    lib = store.load(library, lib_version)
    plan_pairs(lib, pf)  # every class checked before the model loads
    encoder = _encoder_for(store, lib, model, device)
    written, warnings, n = store_pairs(store, lib, pf, encoder, replace=replace)
    _report_stored(lib, written, warnings, n)


@click.command("eval-pairs")
@click.argument("pairs_file", metavar="PAIRS", type=click.Path(dir_okay=False, exists=True))
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(2), help="Candidates re-ranked per image.")
@click.option("--model", "-m", default=None, help="CLIP model [default: the one the library was built with].")
@click.option("--device", default=None, help="torch device (default: a GPU when there is one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_context
def eval_pairs_cmd(ctx, pairs_file, top_k, model, device, as_json):
    """Re-rank the images of the run a PAIRS file came from with its differential
    descriptions (FuDD) and report top-1 accuracy beside the run's own method."""
    pf = read_pairs_file(pairs_file)
    where, pairs = pf.data.get("run"), pf.pairs
    if not isinstance(where, dict):
        raise InputError(
            f"{pairs_file}: its pairs come from images, not a run: store them ('whyclip ingest-pairs') and "
            "run 'whyclip eval DATASET --library NAME --method fudd'"
        )
    store = open_store(ctx, create=False)
    run = load_run(store.engine, find_run(store.engine, where["library"], where["name"]))
    lib = store.load(where["library"], where["version"])
    encoder = ingest.load_encoder(model or lib.info.encoder_name, device)
    lib.check_encoder(encoder.info.id)
    method = run.results[where["aggregate"]]
    before = method.predicted
    after = rerank_with_pairs(run.vectors, method.top, pair_texts(store, lib, pairs, encoder), top_k)
    n = len(run.labels)
    names = lib.class_names
    changed = [
        {"image": run.paths[i], "true": names[run.labels[i]], "before": names[before[i]], "after": names[after[i]]}
        for i in np.flatnonzero(before != after)
    ]
    out = {
        "run": where,
        "n_images": n,
        "top_k": top_k,
        "accuracy": {
            where["aggregate"]: float((before == run.labels).mean()),
            "fudd": float((after == run.labels).mean()),
        },
        "fixed": int(((after == run.labels) & (before != run.labels)).sum()),
        "broken": int(((after != run.labels) & (before == run.labels)).sum()),
        "changed": changed,
    }
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    acc = out["accuracy"]
    click.echo(f"run {where['name']} of {where['library']} v{where['version']}: {n} images, top-{top_k} re-ranked")
    click.echo(
        f"top-1 {where['aggregate']}: {acc[where['aggregate']]:.3f}   fudd: {acc['fudd']:.3f}   "
        f"({out['fixed']} fixed, {out['broken']} broken)"
    )
    for c in changed:
        click.echo(f"  {c['image']}: {c['before']} -> {c['after']} (true: {c['true']})")


@click.command("pairs")
@click.option("--library", "-l", required=True, help="The library whose stored pair descriptors to list.")
@click.option("--version", "lib_version", type=int, default=None, help="Library version [default: newest].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every description, its prompt and the provenance).")
@click.pass_context
def pairs_cmd(ctx, library, lib_version, as_json):
    """List the contrastive pair descriptors (FuDD) stored with a library version: each pair,
    its features as A's look | B's look, and where they came from."""
    lib = open_store(ctx, create=False).load(library, lib_version)
    stored = lib.stored_pairs()
    names = lib.class_names
    if as_json:
        out = []
        for p in stored:
            features: dict[int, dict[str, Any]] = {}
            for d in p.descriptions:
                side = "a" if d.class_position == p.class_a else "b"
                f = features.setdefault(d.feature, {"attribute": d.attribute})
                f[side], f["prompt_" + side] = d.text, d.prompt
            out.append(
                {"a": names[p.class_a], "b": names[p.class_b], "features": list(features.values()), **p.provenance()}
            )
        click.echo(
            json.dumps(
                {"library": lib.info.name, "version": lib.info.version, "pairs": out}, indent=2, ensure_ascii=False
            )
        )
        return
    if not stored:
        click.echo(
            f"library {lib.info.name} v{lib.info.version} has no pair descriptors: store some with "
            f"'whyclip ingest-pairs PAIRS --library {lib.info.name}' or 'whyclip generate-pairs --library "
            f"{lib.info.name} --store'",
            err=True,
        )
        return
    for p in stored:
        a, b = names[p.class_a], names[p.class_b]
        when = p.generated_at.strftime("%Y-%m-%d") if p.generated_at else "?"
        click.echo(
            f"{a} / {b}  (LLM {p.model or '?'}, generated {when}, stored {p.stored_at.strftime('%Y-%m-%d %H:%M')})"
        )
        for k in dict.fromkeys(d.feature for d in p.descriptions):
            by_class = {d.class_position: d for d in p.descriptions if d.feature == k}
            label = by_class[p.class_a].attribute or by_class[p.class_b].attribute
            click.echo(f"  {label + ': ' if label else ''}{by_class[p.class_a].text} | {by_class[p.class_b].text}")
