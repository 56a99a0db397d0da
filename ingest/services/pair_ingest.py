"""Store a pairs file (``whyclip generate-pairs``) into a library version as contrastive pair
descriptors: every class checked first, each side's descriptions rendered with the
version's template, embedded through the cache, then written in one transaction with the
LLM's provenance (:mod:`whyclip.store.db.pair_descriptors`). Also the images side of choosing pairs:
the classes a set of unlabelled images is ambiguous between under the baseline.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whyclip.ingest.embedding import embed_image_files_cached, embed_prompts
from whyclip.ingest.generate.pairs import PAIR_PROMPT, ambiguous_pairs, render_pair
from whyclip.ingest.images import list_images
from whyclip.store import InputError, Library, PairDescription, PairDraft, PairsWritten, Store, Template, write_pairs


@dataclass(frozen=True)
class PairsFile:
    path: str
    data: dict
    pairs: list[dict]


def read_pairs_file(path: str | Path) -> PairsFile:
    """A pairs file written by ``whyclip generate-pairs``, or one line saying what is wrong."""
    p = Path(path)
    fix = "write one with 'whyclip generate-pairs'"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise InputError(f"{p}: not a pairs file (not JSON: {exc}): {fix}") from None
    pairs = data.get("pairs") if isinstance(data, dict) else None
    if not isinstance(pairs, list):
        raise InputError(f'{p}: not a pairs file (no "pairs" list): {fix}')
    for n, pair in enumerate(pairs, start=1):
        ok = (
            isinstance(pair, dict)
            and isinstance(pair.get("a"), str)
            and isinstance(pair.get("b"), str)
            and isinstance(pair.get("features"), list)
            and all(
                isinstance(f, dict) and isinstance(f.get("a"), str) and isinstance(f.get("b"), str)
                for f in pair["features"]
            )
        )
        if not ok:
            raise InputError(
                f'{p}: pair {n} is not {{"a": class, "b": class, "features": [{{"a": ..., "b": ...}}]}}: {fix}'
            )
    return PairsFile(str(p), data, pairs)


def _generated_at(data: dict) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(str(data.get("created_at")))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def plan_pairs(lib: Library, pf: PairsFile) -> tuple[list[tuple[int, int, dict]], list[str]]:
    """(class position of A, of B, the pair) for every pair with features, and warnings for
    those left out; an unknown class or a pair of a class with itself is one line, before
    anything is embedded or written."""
    planned, warnings, seen = [], [], {}
    for pair in pf.pairs:
        positions = []
        for name in (pair["a"], pair["b"]):
            try:
                positions.append(lib.class_position(name))
            except InputError as exc:
                raise InputError(
                    f"{pf.path}: pair {pair['a']!r} / {pair['b']!r}: {exc}; store the pairs into the library "
                    "they were made for, or edit the file"
                ) from None
        a, b = positions
        if a == b:
            raise InputError(
                f"{pf.path}: pair {pair['a']!r} / {pair['b']!r} names one class twice: a pair needs two classes"
            )
        key = (min(a, b), max(a, b))
        if key in seen:
            raise InputError(
                f"{pf.path}: the pair {lib.class_names[key[0]]!r} / {lib.class_names[key[1]]!r} appears twice: keep one"
            )
        seen[key] = True
        if not pair["features"]:
            warnings.append(f"pair {pair['a']!r} / {pair['b']!r} has no features (the answer gave none): left out")
            continue
        planned.append((a, b, pair))
    return planned, warnings


def store_pairs(
    store: Store, lib: Library, pf: PairsFile, encoder, *, replace: bool = False
) -> tuple[PairsWritten, list[str], int]:
    """Embed and store a pairs file's pairs into ``lib``'s version. Returns what was
    written, the warnings, and the number of descriptions embedded or found in the cache."""
    planned, warnings = plan_pairs(lib, pf)
    if not planned:
        raise InputError(f"{pf.path}: no pair with features to store" + (f" ({warnings[0]})" if warnings else ""))
    template = Template(lib.info.template)
    data = pf.data
    prompt = data.get("prompt")
    question_template = prompt if isinstance(prompt, str) else PAIR_PROMPT
    source = {k: data[k] for k in ("run", "images") if k in data}
    source["file"] = Path(pf.path).name
    drafts, prompts = [], []
    for a, b, pair in planned:
        descriptions = []
        for k, f in enumerate(pair["features"]):
            for pos, text in ((a, f["a"]), (b, f["b"])):
                descriptions.append(
                    PairDescription(
                        k, pos, str(f.get("attribute", "")), text, template.build(lib.class_names[pos], text)
                    )
                )
        drafts.append((a, b, pair, descriptions))
        prompts += [d.prompt for d in descriptions]
    vectors, norms = embed_prompts(store, encoder, prompts)
    out, row = [], 0
    for a, b, pair, descriptions in drafts:
        n = len(descriptions)
        out.append(
            PairDraft(
                a,
                b,
                (lib.class_names[a], lib.class_names[b]),
                descriptions,
                vectors[row : row + n],
                norms[row : row + n],
                source={**source, "confusions": pair.get("confusions")},
                base_url=str(data.get("base_url", "")),
                model=str(data.get("model", "")),
                question=render_pair(pair["a"], pair["b"], question_template),
                request_sha256=str(pair.get("request_sha256", "")),
                generated_at=_generated_at(data),
            )
        )
        row += n
    written = write_pairs(store.engine, lib.info.id, encoder.cache_key, out, replace=replace)
    return written, warnings, len(prompts)


def image_files(path: str | Path, report: Callable[[str], None] | None = None) -> list[Path]:
    """The images of a folder (:func:`~whyclip.ingest.images.list_images`: recursively,
    sorted; ``report`` is given its count) or of a CSV's first column (relative to the CSV's
    folder; a "path" header is skipped)."""
    p = Path(path).expanduser()
    if p.is_dir():
        listing = list_images(p)
        if not listing.files:
            raise InputError(listing.summary)
        if report is not None:
            report(listing.summary)
        return listing.files
    if p.suffix.lower() != ".csv" or not p.is_file():
        raise InputError(f"{p}: give a folder of images or a CSV whose first column is an image path")
    out = []
    with open(p, newline="", encoding="utf-8-sig") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not row[0].strip() or (line == 1 and row[0].strip().lower() == "path"):
                continue
            out.append((p.parent / row[0].strip()).resolve())
    if not out:
        raise InputError(f"{p}: no image paths in its first column")
    return out


def pairs_from_images(
    store: Store,
    lib: Library,
    encoder,
    path: str | Path,
    *,
    top_k: int,
    margin: float,
    k: int,
    progress=None,
    report: Callable[[str], None] | None = None,
) -> tuple[list[tuple[str, str, int]], dict]:
    """The ``k`` class pairs the images at ``path`` are most often ambiguous between under
    the baseline (class-name prompts): pairs within an image's ``top_k`` whose scores differ
    by at most ``margin`` (in S, similarity times the logit scale). Returns the pairs and
    what the pairs file records about how they were chosen. ``report`` is given a folder's
    image count."""
    files = image_files(path, report)
    kept, _, vectors, skipped, _ = embed_image_files_cached(store, encoder, files, progress)
    if not kept:
        raise InputError(f"none of the {len(files)} images at {path} could be read: {skipped[0] if skipped else ''}")
    scale = lib.info.logit_scale
    scores = vectors @ np.asarray(lib.matrices.baseline).T * scale
    pairs = ambiguous_pairs(scores, lib.class_names, top_k, margin, k)
    return pairs, {
        "source": str(path),
        "n_images": len(kept),
        "skipped": len(skipped),
        "top_k": top_k,
        "margin": margin,
        "scored_by": "baseline (class-name prompt)",
        "library": lib.info.name,
        "version": lib.info.version,
    }
