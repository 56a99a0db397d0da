"""The prefix-sharing text path: its radix-tree plan (pure, exact) and its vectors against
the plain sentence-transformers path on the tiny random CLIP."""

from __future__ import annotations

import numpy as np
import pytest

from whyclip.ingest.encoder.prefixes import plan_tree

LONG = "a tree frog with " + " and ".join(f"spot {i}" for i in range(40))  # over 77 tokens
PROMPTS = [
    "tree frog, which has protruding eyes",  # the paper's template: '{class}, which' shared
    "tree frog, which has bright green colour",
    "tree frog, which is a small animal",
    "tree frog, which often sits on leaves",
    "tree frog, which",  # the whole prompt but its end token is the others' prefix
    "tailed frog, which has a tail",
    "tailed frog, which has a tail",  # a duplicate
    "a photo of a tree frog.",
    "a photo of a tailed frog.",
    "dog",  # nothing shared but the start token
    "x",
    "",
    "red",
    "a very long prompt about a frog that keeps going with many many words in it",
    LONG,
    LONG + " more",  # differs only after the truncation point
]


def _walk(plan, node):
    tokens = []
    while node >= 0:
        tokens[:0] = plan.nodes[node].tokens
        node = plan.nodes[node].parent
    return tuple(tokens)


def test_plan_tree_exact_small_example():
    seqs = [(1, 2, 3, 9), (1, 2, 4, 9), (1, 2, 9), (5, 9), (1, 2, 3, 9), (1, 2)]
    plan = plan_tree(seqs)
    segments = {(n.start, n.tokens, tuple(sorted(n.ends)), n.has_children) for n in plan.nodes}
    assert segments == {
        (0, (1, 2), (5,), True),  # (1, 2) ends where the others share it
        (2, (3, 9), (0, 4), False),  # the duplicate ends on the same node
        (2, (4, 9), (1,), False),
        (2, (9,), (2,), False),
        (0, (5, 9), (3,), False),
    }
    assert [len(level) for level in plan.levels] == [2, 3]
    assert (plan.shared_tokens, plan.own_tokens) == (2, 7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plan_tree_computes_each_distinct_prefix_once(seed):
    rng = np.random.default_rng(seed)
    stems = [tuple(rng.integers(0, 4, size=rng.integers(1, 5))) for _ in range(6)]
    seqs = [stems[rng.integers(len(stems))] + tuple(rng.integers(0, 4, size=rng.integers(1, 6))) for _ in range(60)]
    plan = plan_tree(seqs)
    ended = sorted(i for n in plan.nodes for i in n.ends)
    assert ended == list(range(len(seqs)))  # every sequence ends once
    for idx, node in enumerate(plan.nodes):
        for i in node.ends:
            assert _walk(plan, idx) == seqs[i]
        assert node.tokens
        assert node.start == (plan.nodes[node.parent].end if node.parent >= 0 else 0)
    depth = {i: d for d, level in enumerate(plan.levels) for i in level}
    assert all(depth[i] == (depth[n.parent] + 1 if n.parent >= 0 else 0) for i, n in enumerate(plan.nodes))
    distinct_prefixes = {s[:k] for s in seqs for k in range(1, len(s) + 1)}
    assert plan.shared_tokens + plan.own_tokens == len(distinct_prefixes)


def test_pooled_position_follows_transformers():
    from whyclip.ingest.encoder.textpath import pooled_position

    assert pooled_position([7, 3, 99, 5, 99], eos_token_id=99) == 2  # the first end token
    assert pooled_position([7, 3, 5], eos_token_id=99) == 0  # none: transformers reads position 0
    assert pooled_position([7, 120, 99, 120], eos_token_id=2) == 1  # old configs: the highest id


def _plain(enc, texts):
    """The plain path: sentence-transformers fp32, one text at a time (no batch effects)."""
    raw = np.concatenate([enc._encode([t], 1, enc._st) for t in texts])
    return raw / np.linalg.norm(raw, axis=1, keepdims=True), np.linalg.norm(raw, axis=1)


def test_prefix_path_matches_the_plain_path_fp32(tiny_model):
    from whyclip.ingest.encoder.clip_encoder import load_encoder

    enc = load_encoder(str(tiny_model), precision="fp32")
    counts = enc.count_tokens(PROMPTS)
    assert max(counts) > enc.max_tokens
    assert counts[PROMPTS.index("dog")] < counts[0]
    vectors, norms = enc.embed_texts(PROMPTS)
    assert enc._text is not None  # the prefix path, built on first use
    ref, ref_norms = _plain(enc, PROMPTS)
    assert np.min(np.sum(vectors * ref, axis=1)) >= 0.9999
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-4)
    assert enc.checked["text"] >= 0.9999
    stats = enc._text.stats
    assert stats.shared_tokens > 0
    assert stats.shared_tokens + stats.own_tokens < stats.plain_tokens
    np.testing.assert_array_equal(vectors[5], vectors[6])  # duplicates: one vector
    assert float(vectors[-1] @ vectors[-2]) > 0.99999  # the same once truncated


def test_prefix_path_matches_the_plain_path_bf16(tiny_model):
    from whyclip.ingest.encoder.clip_encoder import load_encoder

    enc = load_encoder(str(tiny_model), precision="bf16")
    if enc.precision != "bf16":
        pytest.skip("this CPU has no native bf16")
    vectors, _ = enc.embed_texts(PROMPTS)
    ref, _ = _plain(enc, PROMPTS)
    assert str(enc._text.dtype) == "torch.bfloat16"
    assert np.min(np.sum(vectors * ref, axis=1)) >= 0.9999
    assert enc.cache_key.endswith("/bf16")


def test_old_configs_pool_at_the_highest_token_id(tiny_model):
    """Configs from before transformers' PR #24773 say eos_token_id 2 and pool at the
    argmax of the ids; the prefix path follows whichever rule the model uses."""
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.ingest.encoder.textpath import PrefixTextPath

    enc = load_encoder(str(tiny_model), precision="fp32")
    enc._clip.text_model.eos_token_id = 2
    enc._text = PrefixTextPath.from_clip(enc._clip)
    texts = PROMPTS[:8]
    vectors, _ = enc.embed_texts(texts)
    ref, _ = _plain(enc, texts)
    assert np.min(np.sum(vectors * ref, axis=1)) >= 0.9999


def test_each_text_is_tokenized_once(tiny_model):
    from whyclip.ingest.encoder.clip_encoder import load_encoder

    enc = load_encoder(str(tiny_model), precision="fp32")
    seen: list[str] = []
    tokenize = enc.tokenizer.__class__.__call__

    def counting(self, texts, *args, **kwargs):
        seen.extend([texts] if isinstance(texts, str) else texts)
        return tokenize(self, texts, *args, **kwargs)

    short = [p for p in PROMPTS if len(p) < 100]
    enc.count_tokens(short)
    enc.checked["text"] = 1.0  # skip the check: its plain-path reference tokenizes on its own
    enc.tokenizer.__class__.__call__ = counting
    try:
        enc.count_tokens(short)
        enc.embed_texts(short)
    finally:
        enc.tokenizer.__class__.__call__ = tokenize
    assert seen == []


def test_unknown_architectures_take_the_plain_path(tiny_model, monkeypatch):
    import whyclip.ingest.encoder.clip_encoder as encoder_module

    monkeypatch.setattr(encoder_module, "unsupported_reason", lambda clip: "not a CLIP this path knows")
    enc = encoder_module.load_encoder(str(tiny_model), precision="fp32")
    vectors, _ = enc.embed_texts(PROMPTS[:6])
    assert enc._text is None
    ref, _ = _plain(enc, PROMPTS[:6])
    assert np.min(np.sum(vectors * ref, axis=1)) >= 0.9999


def test_a_wrong_prefix_path_is_caught_by_the_check(tiny_model, monkeypatch, caplog):
    import whyclip.ingest.encoder.clip_encoder as encoder_module
    from whyclip.ingest.encoder.textpath import PrefixTextPath

    real = PrefixTextPath.embed
    monkeypatch.setattr(PrefixTextPath, "embed", lambda self, seqs: real(self, seqs)[::-1].copy())
    enc = encoder_module.load_encoder(str(tiny_model), precision="fp32")
    with caplog.at_level("WARNING"):
        vectors, _ = enc.embed_texts(PROMPTS[:6])
    assert enc._text is None
    assert "using the plain path" in caplog.text
    ref, _ = _plain(enc, PROMPTS[:6])
    assert np.min(np.sum(vectors * ref, axis=1)) >= 0.9999
