"""Differential descriptions for confused pairs (after FuDD: Esfandiarpoor & Bach, ICLR 2024),
first step: choose the pairs an evaluation run confuses most and ask the LLM, per pair, for
the features that tell the two apart, as paired descriptions ("bill: a slim, straight bill |
a heavy, curved bill"). The answers go through the same answer cache as ``generate`` and are
written to a pairs file with provenance; they are kept apart from the classes' own lists.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from whyclip.ingest.generate.generation import ask_round
from whyclip.ingest.generate.llm_client import ChatClient, ChatRequest, public_url
from whyclip.ingest.generate.parsing import BULLET, tidy
from whyclip.store import InputError, Store

# The question and its one example (crocodile / alligator) are written for this project.
PAIR_PROMPT = """\
Q: What visual features tell a {a} apart from a {b} in a photo? Answer one feature a line, as
- <feature>: <how it looks on a {a}> | <how it looks on a {b}>
For example, for a crocodile and an alligator:
- snout: a narrow, pointed V-shaped snout | a broad, rounded U-shaped snout
- teeth: lower teeth visible with the mouth closed | only upper teeth visible with the mouth closed
A:"""


@dataclass(frozen=True)
class PairFeature:
    attribute: str
    a: str
    b: str


def confused_pairs(
    labels: np.ndarray, predicted: np.ndarray, class_names: list[str], k: int
) -> list[tuple[str, str, int]]:
    """The ``k`` unordered class pairs with the most images of one predicted as the other
    (both directions counted), most first, ties in label order; names in label order."""
    counts: Counter = Counter()
    for y, p in zip(labels.tolist(), predicted.tolist(), strict=True):
        if y != p:
            counts[(min(y, p), max(y, p))] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [(class_names[a], class_names[b], n) for (a, b), n in ranked]


def render_pair(a: str, b: str, template: str = PAIR_PROMPT) -> str:
    return template.replace("{a}", a.replace("_", " ")).replace("{b}", b.replace("_", " "))


def parse_pair_answer(answer: str) -> list[PairFeature]:
    """Bulleted "feature: A's look | B's look" lines; lines without a "|" are not pairs."""
    out = []
    for line in answer.splitlines():
        m = BULLET.match(line)
        if not m or "|" not in m.group(1):
            continue
        left, right = (part.strip() for part in m.group(1).split("|", 1))
        attribute, _, a_text = left.partition(":") if ":" in left else ("", "", left)
        a_text, b_text = tidy(a_text), tidy(right)
        if a_text and b_text:
            out.append(PairFeature(attribute.strip(), a_text, b_text))
    return out


def generate_pairs(
    store: Store,
    client: ChatClient,
    pairs: list[tuple[str, str, int]],
    *,
    model: str,
    temperature: float = 0.0,
    max_tokens: int = 400,
    concurrency: int = 4,
    progress: Callable[[int, int], None] | None = None,
    none_found: str = "the run confuses no pair of classes: there is nothing to tell apart",
) -> dict:
    """Ask for each pair's differential features; returns the pairs file's content (with provenance)."""
    if not pairs:
        raise InputError(none_found)
    requests = [ChatRequest(f"{a} / {b}", render_pair(a, b), temperature, max_tokens, False) for a, b, _ in pairs]
    counts = {"sent": 0, "cached": 0, "done": 0, "total": len(requests)}
    got = ask_round(store, client, requests, counts, concurrency, progress)
    out = []
    for (a, b, n), req in zip(pairs, requests, strict=True):
        answer, _mode, cached, key = got[req]
        features = parse_pair_answer(answer)
        out.append(
            {
                "a": a,
                "b": b,
                "confusions": n,
                "features": [vars(f) for f in features],
                "answer": answer,
                "request_sha256": key,
                "cached": cached,
            }
        )
    return {
        "generated_by": "whyclip generate-pairs",
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "base_url": public_url(client.base_url),
        "model": model,
        "prompt": PAIR_PROMPT,
        "parameters": {"temperature": temperature, "max_tokens": max_tokens},
        "requests": {"sent": counts["sent"], "cached": counts["cached"]},
        "pairs": out,
    }


def ambiguous_pairs(
    scores: np.ndarray, class_names: list[str], top_k: int, margin: float, k: int
) -> list[tuple[str, str, int]]:
    """The ``k`` unordered class pairs most images are ambiguous between: an image's
    ambiguous classes (``scores`` rows are its class scores under the baseline) are those of
    its ``top_k`` that score within ``margin`` of its best; every pair of them counts once
    (classes far below the best never pair up, however close to each other). Most first,
    ties in label order; names in label order (the shape of :func:`confused_pairs`)."""
    scores = np.asarray(scores, dtype=np.float64)
    top_k = min(top_k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    counts: Counter = Counter()
    for row, top in zip(scores, order, strict=True):
        close = [int(c) for c in top if row[top[0]] - row[c] <= margin]
        for i in range(len(close)):
            for j in range(i + 1, len(close)):
                a, b = close[i], close[j]
                counts[(min(a, b), max(a, b))] += 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [(class_names[a], class_names[b], n) for (a, b), n in ranked]
