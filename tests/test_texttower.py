"""The text side without transformers (ingest/encoder/texttower.py, tokenizer.py, config.py)
against its oracle, transformers: the same token ids on the paper's prompts and on hostile
texts, the same tokenizer pipeline; the same text embeddings as ``CLIPTextModelWithProjection``
and the same vectors through the prefix path; an ingest stores the vectors, encoder id and
cache key the transformers path stores; folders it does not know go to transformers; and a
fresh ingest process never imports transformers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import shared_file
from tests.helpers.fakes import lively_copy
from whyclip.ingest.encoder import texttower, tokenizer
from whyclip.ingest.encoder.clip_encoder import ClipEncoder
from whyclip.ingest.encoder.clipmodel import TransformersClip

PAPER_FILES = ("cub", "dtd", "eurosat", "food101", "imagenet", "pets", "places365")
HOSTILE = [
    "",
    " ",
    "   ",
    "a photo of a tree frog.",
    "  A   photo\tof\n\na   FROG  ",
    "Café naïve résumé à la crème brûlée",
    "e\u0301cole vs \u00e9cole (combining accent, NFC)",
    "ÉCOLE İstanbul ß ẞ ǅ",
    "ﬁne ligature ﬀ",
    "中文 日本語のテキスト 한국어",
    "Ελληνικά кириллица עברית العربية",
    "emoji 😀 dog 🐶🐶 flag 🇫🇷 family 👨‍👩‍👧",
    "it's they're I'LL we've she'd you'RE",
    "3.14159 12,000 1e-5 ½ ² ٣ 10th",
    "hello!!!???... ---- ___ *** ###",
    "(parens) [brackets] {braces} <angle> \"quotes\" 'single'",
    "<|endoftext|> inside <|startoftext|> text",
    "no\u00a0break\u2003em\u200bzero width",
    "tab\tnew\nline\rreturn\x0bvertical",
    "a\u0000null and \x7f delete",
    "über-long " * 60,
    "x" * 400,
    " ".join(str(i) for i in range(120)),
    "word " * 74 + "end",  # the limit, give or take the start and end tokens
    "word " * 75 + "end",
    "word " * 76 + "end",
]


def _paper_prompts() -> list[str]:
    from whyclip.ingest.readers import read_library
    from whyclip.ingest.services.library_ingest import build_prompts
    from whyclip.store.method.templates import DEFAULT_BASELINE, Template

    prompts: list[str] = []
    for name in PAPER_FILES:
        classes = build_prompts(
            read_library(shared_file(f"descriptors_{name}.json")), Template("paper"), DEFAULT_BASELINE
        )
        prompts += [p for c in classes for p in c.prompts] + [c.baseline_prompt for c in classes]
    return list(dict.fromkeys(prompts))


@pytest.fixture(scope="module")
def lively(tiny_model, tmp_path_factory):
    """The tiny model with every bias and norm parameter random too (its own are zeros and
    ones, under which a misplaced norm or bias could go unnoticed)."""
    return lively_copy(tiny_model, tmp_path_factory.mktemp("lively") / "tiny", seed=11)


def _without_tokenizer_json(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "vocab-merges"
    shutil.copytree(folder, copy)
    (copy / "tokenizer.json").unlink()
    return copy


# -- the tokenizer ---------------------------------------------------------------------------


@pytest.mark.parametrize("files", ["tokenizer.json", "vocab.json + merges.txt"])
def test_the_tokenizer_is_transformers_pipeline(tiny_model, tmp_path, files):
    from transformers import AutoTokenizer

    folder = tiny_model if files == "tokenizer.json" else _without_tokenizer_json(tiny_model, tmp_path)
    assert tokenizer.unsupported_reason(folder) is None
    ours, oracle = tokenizer.ClipTokenizer(folder), AutoTokenizer.from_pretrained(folder)
    assert ours.backend_tokenizer.to_str() == oracle.backend_tokenizer.to_str()
    for kwargs in (
        {"add_special_tokens": True, "truncation": False, "return_attention_mask": False},
        {"add_special_tokens": True, "truncation": "longest_first", "max_length": 77, "return_attention_mask": False},
    ):
        assert ours(HOSTILE, **kwargs) == dict(oracle(HOSTILE, **kwargs))
    for batch in (HOSTILE, HOSTILE[3:6], ["one text"]):
        got = ours(batch, padding=True, truncation=True, max_length=77, return_tensors="pt")
        want = oracle(batch, padding=True, truncation=True, max_length=77, return_tensors="pt")
        assert set(got) == {"input_ids", "attention_mask"}
        for key in got:
            assert torch.equal(got[key], want[key]), key
    ids = ours(HOSTILE, truncation="longest_first", max_length=77)["input_ids"]
    assert max(map(len, ids)) == 77
    assert ids[0] == [ours.bos_token_id, ours.eos_token_id]


@pytest.mark.parametrize("vocabulary", ["learned", "CLIP's"])
def test_the_paper_prompts_get_transformers_ids(tiny_model, tmp_path, vocabulary):
    from transformers import AutoTokenizer

    from whyclip.ingest.encoder.testmodel import make_test_model

    prompts = _paper_prompts()
    assert len(prompts) > 10_000
    folder = tiny_model
    if vocabulary == "CLIP's":
        wheel = os.environ.get("WHYCLIP_CLIP_VOCAB")
        if not (wheel and Path(wheel).exists()):
            pytest.skip(
                "CLIP's vocabulary is not here: `pip download --no-deps clip-anytorch -d DIR` and set "
                "WHYCLIP_CLIP_VOCAB=DIR/clip_anytorch-*.whl"
            )
        folder = make_test_model(tmp_path / "real", vocab=wheel)
    ours, oracle = tokenizer.ClipTokenizer(folder), AutoTokenizer.from_pretrained(folder)
    kwargs = {"add_special_tokens": True, "truncation": False, "return_attention_mask": False}
    got, want = ours(prompts, **kwargs)["input_ids"], oracle(prompts, **kwargs)["input_ids"]
    assert [p for p, a, b in zip(prompts, got, want, strict=True) if a != b] == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda f: _edit(f / "tokenizer_config.json", lambda c: c.update(bos_token="<s>")), "bos_token '<s>'"),
        (lambda f: _edit(f / "tokenizer_config.json", lambda c: c.update(tokenizer_class="BertTokenizer")), "class"),
        (lambda f: _edit(f / "tokenizer_config.json", lambda c: c.update(add_bos_token=False)), "add_bos_token"),
        (
            lambda f: _edit(
                f / "tokenizer.json",
                lambda c: c["added_tokens"].append({**c["added_tokens"][0], "id": 5, "content": "<mask>"}),
            ),
            "added tokens ['<mask>']",
        ),
        (lambda f: [(f / n).unlink() for n in ("tokenizer.json", "merges.txt")], "no tokenizer.json"),
    ],
)
def test_tokenizers_it_does_not_know_go_to_transformers(tiny_model, tmp_path, change, reason):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    change(folder)
    assert reason in tokenizer.unsupported_reason(folder)
    clip = TransformersClip(folder)
    assert clip.plain_tokenizer_reason is not None
    if (folder / "merges.txt").exists():
        assert type(clip.tokenizer).__name__ != "ClipTokenizer"


# -- the tower -------------------------------------------------------------------------------


def _oracle(folder):
    from transformers import CLIPTextModelWithProjection

    return CLIPTextModelWithProjection.from_pretrained(folder, dtype=torch.float32).eval()


def test_the_tower_computes_transformers_embeddings(lively):
    oracle, ours = _oracle(lively), texttower.load_text_tower(lively)
    assert {n for n, _ in ours.named_parameters()} == {n for n, _ in oracle.named_parameters()}
    tok = tokenizer.ClipTokenizer(lively)
    for batch in (HOSTILE[3:9], HOSTILE[3:4], ["two words", "and two"], HOSTILE):  # padded, one, equal lengths
        inputs = tok(batch, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.inference_mode():
            want = oracle(**inputs).text_embeds
            got = ours(**inputs).text_embeds
        assert torch.equal(got, want), (got - want).abs().max()
    assert not torch.allclose(got[3], got[4])  # many texts, many answers ("" and " " are alike)


def test_old_configs_pool_at_the_highest_token_id_too(lively):
    oracle, ours = _oracle(lively), texttower.load_text_tower(lively)
    oracle.text_model.eos_token_id = ours.text_model.eos_token_id = 2
    inputs = tokenizer.ClipTokenizer(lively)(HOSTILE[3:9], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(ours(**inputs).text_embeds, oracle(**inputs).text_embeds)


def test_gelu_towers_too(lively, tmp_path):
    folder = tmp_path / "gelu"
    shutil.copytree(lively, folder)
    _edit(folder / "config.json", lambda c: c["text_config"].update(hidden_act="gelu"))
    assert texttower.unsupported_reason(folder) is None
    inputs = tokenizer.ClipTokenizer(folder)(HOSTILE[3:7], padding=True, return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(
            texttower.load_text_tower(folder)(**inputs).text_embeds, _oracle(folder)(**inputs).text_embeds
        )


def test_the_prefix_path_gives_the_same_vectors_on_either_tower(lively):
    from whyclip.ingest.encoder.textpath import PrefixTextPath, unsupported_reason

    ours, oracle = texttower.load_text_tower(lively), _oracle(lively)
    assert unsupported_reason(ours) is None
    seqs = tokenizer.ClipTokenizer(lively)(
        ["a photo of a frog", "a photo of a frog, which has spots", "a photo of a toad", *HOSTILE],
        truncation=True,
        max_length=77,
    )["input_ids"]
    got = PrefixTextPath.from_clip(ours).embed(seqs)
    np.testing.assert_array_equal(got, PrefixTextPath.from_clip(oracle).embed(seqs))
    low = PrefixTextPath.from_clip(ours, torch.bfloat16).embed(seqs)
    np.testing.assert_array_equal(low, PrefixTextPath.from_clip(oracle, torch.bfloat16).embed(seqs))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c: c["text_config"].update(hidden_act="relu"), "activation 'relu'"),
        (lambda c: c["text_config"].update(use_rotary=True), "text config keys ['use_rotary']"),
        (lambda c: c["text_config"].update(_attn_implementation="eager"), "text config keys"),
        (lambda c: c.update(text_config_dict={"hidden_size": 32}), "text_config_dict"),
    ],
)
def test_towers_it_does_not_know_go_to_transformers(tiny_model, tmp_path, change, reason):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    _edit(folder / "config.json", change)
    assert reason in texttower.unsupported_reason(folder)
    clip = TransformersClip(folder)
    assert clip.plain_text_reason is not None
    if "relu" not in reason:
        assert type(clip.tower("text")).__name__ == "CLIPTextModelWithProjection"


def test_weights_that_are_not_safetensors_go_to_transformers(tiny_model, tmp_path):
    folder = tmp_path / "bin"
    shutil.copytree(tiny_model, folder)
    (folder / "model.safetensors").unlink()  # as a folder holding only pytorch_model.bin
    assert "not safetensors" in texttower.unsupported_reason(folder)
    assert "not safetensors" in TransformersClip(folder).plain_text_reason


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


# -- the encoder and an ingest ---------------------------------------------------------------


def _through_transformers(monkeypatch) -> None:
    """The encoder as it was: transformers' config, tokenizer and text tower."""
    from whyclip.ingest.encoder import config

    monkeypatch.setattr(config, "read_config", lambda folder: None)
    monkeypatch.setattr(tokenizer, "unsupported_reason", lambda folder: "the old path, for comparison")
    monkeypatch.setattr(texttower, "unsupported_reason", lambda folder: "the old path, for comparison")


def test_the_config_read_gives_transformers_architecture(lively, tiny_model):
    from transformers import CLIPConfig

    from whyclip.ingest.encoder.config import read_config
    from whyclip.ingest.encoder.fingerprint import architecture

    for folder in (lively, tiny_model):
        assert architecture(read_config(folder)) == architecture(CLIPConfig.from_pretrained(folder))


def test_a_config_missing_keys_is_read_by_transformers(tiny_model, tmp_path):
    from whyclip.ingest.encoder.config import read_config

    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    _edit(folder / "config.json", lambda c: c["text_config"].pop("hidden_act"))
    assert read_config(folder) is None
    assert type(TransformersClip(folder).config).__name__ == "CLIPConfig"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_ingest_stores_what_the_transformers_path_stored(lively, tmp_path, monkeypatch, precision):
    from whyclip.ingest import ingest_library
    from whyclip.ingest.readers import read_library
    from whyclip.ingest.services.library_ingest import build_prompts
    from whyclip.store import Store
    from whyclip.store.db import embedding_cache
    from whyclip.store.method.templates import DEFAULT_BASELINE, Template

    library = tmp_path / "lib.json"
    library.write_text(
        json.dumps(
            {
                "tree frog": ["bright green skin", "large toe pads", "a photo taken at night"],
                "Café crème": ["a cup", "foam on top 😀", "word " * 90],
                "toad": ["bumpy skin", "a photo taken at night"],
            }
        )
    )
    classes = build_prompts(read_library(library), Template("paper"), DEFAULT_BASELINE)
    prompts = list(dict.fromkeys([p for c in classes for p in c.prompts] + [c.baseline_prompt for c in classes]))
    stored = {}
    for way in ("plain", "transformers"):
        with monkeypatch.context() as m:
            if way == "transformers":
                _through_transformers(m)
            enc = ClipEncoder(str(lively), precision=precision)
            enc.precisions["text"] = precision  # this CPU's own choice aside: both ways in one precision
            store = Store.open(tmp_path / way)
            ingest_library(store, library, "lib", enc, template="paper")
            lib = store.load("lib")
            cached = embedding_cache.lookup(store.engine, enc.cache_key, prompts)
            stored[way] = (lib.info.encoder_id, enc.cache_key, np.array(lib.vectors), cached, enc._st)
    plain, old = stored["plain"], stored["transformers"]
    assert type(plain[4].tower("text")).__name__ == "TextTower"
    assert type(old[4].tower("text")).__name__ == "CLIPTextModelWithProjection"
    assert type(old[4].config).__name__ == "CLIPConfig"
    assert plain[0] == old[0]  # the encoder id
    assert plain[1] == old[1]  # the cache key
    np.testing.assert_array_equal(plain[2], old[2])
    assert set(plain[3]) == set(old[3]) == set(prompts)
    for prompt, (vector, norm) in plain[3].items():
        np.testing.assert_array_equal(vector, old[3][prompt][0])
        assert norm == old[3][prompt][1]


def test_the_plain_path_fallback_gives_transformers_vectors(lively, monkeypatch):
    """Where the prefix path is refused, texts take the tower's own forward: the same
    vectors either way."""
    import whyclip.ingest.encoder.clip_encoder as encoder_module

    texts = HOSTILE[3:12]
    monkeypatch.setattr(encoder_module, "unsupported_reason", lambda clip: "refused, for this test")
    got = ClipEncoder(str(lively), precision="fp32").embed_texts(texts)
    _through_transformers(monkeypatch)
    want = ClipEncoder(str(lively), precision="fp32").embed_texts(texts)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_a_fresh_ingest_process_imports_no_transformers(tiny_model, tmp_path):
    """A whole ``whyclip ingest``, in a new process: neither transformers' CLIP modelling
    nor its tokenizers nor its config are imported (seconds of start-up)."""
    library = tmp_path / "lib.json"
    library.write_text(json.dumps({"tree frog": ["green skin", "toe pads"], "owl": ["big eyes"]}))
    code = (
        "import sys\n"
        "from whyclip.ui.cli.main import main\n"
        f"sys.argv = ['whyclip', '--home', {str(tmp_path / 'home')!r}, 'ingest', {str(library)!r},"
        f" '--model', {str(tiny_model)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('transformers.models.clip.modeling_clip' in sys.modules)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('transformers', 'sentence_transformers'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert "library lib" in out[0] or "library lib" in "\n".join(out[:-2]), out
    assert out[-2:] == ["False", "[]"], out
