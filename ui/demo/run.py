"""``whyclip demo``: ingest the bundled demo library, explain drawn samples, point onward."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable
from pathlib import Path

from whyclip import ingest
from whyclip.ingest import ingest_library
from whyclip.ingest.encoder.legacy_ids import adopt_legacy_ids
from whyclip.ingest.services.explain import ExplainOptions, ImageFailure, plan_explain
from whyclip.store import LibraryNotFound, ModelLoadError, Store, StoreVerdicts, WhyclipError
from whyclip.ui.cli.progress import progress_bar
from whyclip.ui.demo.samples import SAMPLE_CLASSES, draw_samples

DEMO_LIBRARY = Path(__file__).with_name("library.json")
DEMO_NAME = "demo"


def next_steps(first: Path, home: Path, whyclip: str = "whyclip", model_flags: str = "") -> str:
    """What to try next, as commands that run as they stand: ``whyclip`` carries the user's
    global options (``--home``) and ``model_flags`` the model they chose."""
    m = model_flags
    steps = [
        (f"{whyclip} explain YOUR_IMAGE.jpg --library demo{m}", "explain your own image"),
        (
            f'{whyclip} explain {shlex.quote(str(first))} --library demo{m} --compare "tree frog" "tailed frog" --json',
            "",
        ),
        (f"{whyclip} ingest descriptors.json --library mine{m}", "your own descriptor library (.json/.jsonl/.csv)"),
        (f"{whyclip} libraries", f"what is in the store ({home})"),
    ]
    width = max(len(c) for c, note in steps if note) + 2
    return "Next:\n" + "\n".join(f"  {c:<{width}}{note}".rstrip() for c, note in steps)


def run_demo(
    open_store: Callable[[], Store],
    model: str | None,
    device: str | None,
    echo: Callable[[str], None] = print,
    precision: str = "auto",
    whyclip: str = "whyclip",
) -> None:
    """``whyclip`` is the command as the user typed it, global options included, for the
    hints at the end."""
    try:
        encoder = ingest.load_encoder(model, device, precision)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{exc} (the demo runs on any local model: whyclip demo --model DIR)") from None
    store = open_store()  # only once a model is loaded is anything written
    encoder.verdicts = StoreVerdicts(store)
    lib = _demo_library(store, encoder)
    paths = draw_samples(store.home / "demo-images")
    plan = plan_explain(store, DEMO_NAME, lib.info.version, ExplainOptions(top=3, retrieve=5), load=lambda _n, _v: lib)
    for n, exp in enumerate(plan.with_encoder(encoder, split=False).explain_files(paths)):  # no eval: no split
        if isinstance(exp, ImageFailure):  # the samples are drawn here: a failure is a bug, said plainly
            raise WhyclipError(f"demo sample {exp.image}: {exp.error}")
        truth = SAMPLE_CLASSES.get(Path(exp.image).name, "?")
        echo(("\n" if n else "") + f"[drawn sample of: {truth}]")
        echo(exp.to_text(max_descriptors=4, max_rows=6))
    echo("")
    model_flags = "".join(
        f" {flag} {shlex.quote(value)}"
        for flag, value in (("--model", model), ("--device", device), ("--precision", precision))
        if value and not (flag == "--precision" and value == "auto")
    )
    echo(next_steps(paths[0], store.home, whyclip, model_flags))


def _demo_library(store: Store, encoder):
    """Reuse the demo library when it was built from this file with this encoder."""
    sha = hashlib.sha256(DEMO_LIBRARY.read_bytes()).hexdigest()
    adopt_legacy_ids(store, encoder)
    try:
        info = store.library(DEMO_NAME)
        if info.encoder_id == encoder.info.id and info.source_sha256 == sha:
            return store.load(DEMO_NAME, info.version)
    except LibraryNotFound:
        pass
    with progress_bar("embedding the demo library", unit="prompt") as bar:
        report = ingest_library(store, DEMO_LIBRARY, DEMO_NAME, encoder, progress=bar)
    return store.load(DEMO_NAME, report.info.version)
