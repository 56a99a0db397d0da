"""``whyclip explain --server URL``: the same explanations from a running ``whyclip serve``.

Images are checked and read here (an unreadable one is reported and skipped, as locally),
sent in batches, and the answers printed exactly as the local command prints them: the
JSON objects as they come, the text rebuilt from them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from whyclip.store.errors import InputError, WhyclipError
from whyclip.store.scoring.explanation import (
    BaselineScore,
    ClassScore,
    Contrast,
    ContrastRow,
    DescriptorScore,
    Explanation,
    Retrieved,
)

BATCH = 32
TIMEOUT_S = 120


def explanation_from_dict(d: dict) -> Explanation:
    """The inverse of :meth:`Explanation.to_dict` (for printing a served answer as text)."""
    classes = [ClassScore(c["class"], c["score"], c["probability"], c["rank"],
                          [DescriptorScore(**x) for x in c["descriptors"]], c["baseline_score"], c["baseline_probability"])
               for c in d["classes"]]  # fmt: skip
    baseline = [BaselineScore(b["class"], b["score"], b["probability"]) for b in d["baseline"]]
    c = d["contrast"]
    contrast = Contrast(c["a"], c["b"], c["score_a"], c["score_b"], [ContrastRow(**r) for r in c["rows"]]) if c else None
    retrieved = [Retrieved(r["class"], r["descriptor"], r["prompt"], r["similarity"], r["descriptor_id"]) for r in d["retrieved"]]
    return Explanation(d["image"], d["library"], d["version"], d["encoder"], d["aggregate"], d["logit_scale"],
                       d["n_classes"], classes, baseline, contrast, retrieved)  # fmt: skip


def _post(client, url: str, files: list, form: dict) -> list[dict]:
    import httpx

    try:
        r = client.post(url.rstrip("/") + "/v1/explain", files=files, data=form)
    except httpx.HTTPError as exc:
        raise WhyclipError(f"cannot reach the whyclip service at {url}: {exc}") from None
    if r.status_code != 200:
        try:
            message = r.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {r.status_code}"
        raise WhyclipError(f"the service at {url} refused the request: {message}")
    return r.json()["explanations"]


def explain_remote(ctx: click.Context, url: str, api_key: str | None, paths: list[Path], form: dict, as_json: bool) -> None:
    """Explain ``paths`` through the service at ``url``; exit 1 if any image was unreadable."""
    import httpx

    from whyclip.ingest.images import read_image

    headers = {"X-API-Key": api_key} if api_key else {}
    failed = shown = 0
    with httpx.Client(timeout=TIMEOUT_S, headers=headers) as client:
        for start in range(0, len(paths), BATCH):
            files = []
            for path in paths[start : start + BATCH]:
                try:
                    read_image(path)  # the local command's checks and messages
                    files.append(("image", (str(path), path.read_bytes())))
                except (InputError, OSError) as exc:
                    click.echo(f"Error: {exc}", err=True)
                    failed += 1
            if not files:
                continue
            for d in _post(client, url, files, form):
                click.echo(json.dumps(d, ensure_ascii=False) if as_json else ("\n" if shown else "") + explanation_from_dict(d).to_text())
                shown += 1
    if failed:
        ctx.exit(1)
