"""Tests for ingest.testmodel: offline random-weight CLIP folders that SentenceTransformer loads."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from whyclip.ingest.encoder import testmodel
from whyclip.ingest.encoder.testmodel import (
    CHECK_IDS,
    CHECK_TEXT,
    META_FILE,
    clip_config,
    corpus_word_counts,
    load_clip_merges,
    make_test_model,
    train_bpe,
)

PROMPTS = [
    "tree frog, which has bright green colour",
    "zebra, which has black and white stripes",
    "a photo of a bird, which has a long curved beak",
    "owl, which has large round eyes and brown speckled feathers",
]
_VOCAB_ENV = os.environ.get("WHYCLIP_CLIP_VOCAB")
needs_real_vocab = pytest.mark.skipif(
    not (_VOCAB_ENV and Path(_VOCAB_ENV).exists()),
    reason="real-vocabulary tests need CLIP's BPE file: `pip download --no-deps clip-anytorch -d DIR` "
    "and set WHYCLIP_CLIP_VOCAB=DIR/clip_anytorch-*.whl",
)


def _load(path: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


def _image(seed: int = 0, size: tuple[int, int] = (48, 64)):
    from PIL import Image

    pixels = np.random.RandomState(seed).randint(0, 256, (*size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_st(tiny: Path):
    return _load(tiny)


@pytest.mark.slow
def test_tiny_folder_layout(tiny: Path) -> None:
    names = {p.name for p in tiny.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        META_FILE,
    } <= names
    assert not [p for p in tiny.parent.iterdir() if ".partial-" in p.name]
    meta = json.loads((tiny / META_FILE).read_text())
    assert meta["kind"] == "tiny"
    assert meta["seed"] == 0
    assert "random weights" in meta["note"]
    assert json.loads((tiny / "tokenizer_config.json").read_text())["model_max_length"] == 77
    assert (tiny / "merges.txt").read_text().startswith("#version: 0.2\n")
    config = json.loads((tiny / "config.json").read_text())
    assert config["projection_dim"] == 32
    assert config["vision_config"]["image_size"] == 32
    assert config["vision_config"]["patch_size"] == 8


@pytest.mark.slow
def test_tiny_encodes_text_and_images(tiny_st) -> None:
    text = tiny_st.encode(PROMPTS, show_progress_bar=False)
    images = tiny_st.encode([_image(0), _image(1, (100, 30))], show_progress_bar=False)
    assert text.shape == (len(PROMPTS), 32)
    assert images.shape == (2, 32)
    assert np.all(np.linalg.norm(text, axis=1) > 0)
    assert np.all(np.linalg.norm(images, axis=1) > 0)
    assert np.all(np.isfinite(text))
    assert np.all(np.isfinite(images))


@pytest.mark.slow
def test_descriptor_prompts_tokenize_to_about_one_token_per_word(tiny_st) -> None:
    for prompt in PROMPTS:
        ids = tiny_st.tokenizer(prompt)["input_ids"]
        n_words = len(prompt.replace(",", " ,").split())
        assert len(ids) <= n_words + 4, (prompt, tiny_st.tokenizer.convert_ids_to_tokens(ids))
        assert len(ids) < len(prompt) / 3


@pytest.mark.slow
def test_long_text_is_truncated_to_77_tokens(tiny_st) -> None:
    words = " ".join(["green", "frog", "stripes", "which", "has"] * 60)  # 300 words
    assert tiny_st.preprocess([words])["input_ids"].shape[1] == 77
    emb = tiny_st.encode([words], show_progress_bar=False)
    assert emb.shape == (1, 32)
    assert np.all(np.isfinite(emb))


@pytest.mark.slow
def test_same_seed_gives_identical_files_and_embeddings(tiny: Path, tiny_st, tmp_path: Path) -> None:
    again = make_test_model(tmp_path / "again", seed=0)
    for path in sorted(tiny.iterdir()):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    other = _load(again)
    np.testing.assert_array_equal(
        tiny_st.encode(PROMPTS, show_progress_bar=False), other.encode(PROMPTS, show_progress_bar=False)
    )
    np.testing.assert_array_equal(
        tiny_st.encode([_image()], show_progress_bar=False), other.encode([_image()], show_progress_bar=False)
    )
    seed1 = make_test_model(tmp_path / "seed1", seed=1)
    assert (seed1 / "model.safetensors").read_bytes() != (tiny / "model.safetensors").read_bytes()
    assert (seed1 / "vocab.json").read_bytes() == (tiny / "vocab.json").read_bytes()


def test_refuses_non_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        make_test_model(target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(FileExistsError):
        make_test_model(tmp_path / "a-file")


@pytest.mark.slow
def test_empty_directory_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert (make_test_model(tmp_path / "empty") / "model.safetensors").is_file()


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(testmodel, "clip_config", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        make_test_model(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_bpe_trainer_is_deterministic_and_clip_shaped() -> None:
    counts = corpus_word_counts()
    merges = train_bpe(counts)
    assert merges == train_bpe(dict(reversed(list(counts.items()))))
    assert 1500 <= len(merges) <= 4000
    vocab = testmodel.clip_vocab(merges)
    ids = sorted(vocab.values())
    assert ids == list(range(len(vocab)))
    assert vocab["!"] == 0
    assert vocab["!</w>"] == 256
    assert vocab["<|startoftext|>"] == len(vocab) - 2
    assert vocab["<|endoftext|>"] == len(vocab) - 1
    for word in ("which", "has", "photo", "of", "green", "colour", "stripes", "beak"):
        assert word + "</w>" in vocab, word


def test_clip_config_full_size_is_vit_b32() -> None:
    config = clip_config(True, 49408)
    text, vision = config.text_config, config.vision_config
    assert config.projection_dim == 512
    assert text.projection_dim == 512
    assert (text.vocab_size, text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (49408, 512, 12, 8)
    assert (text.bos_token_id, text.eos_token_id, text.max_position_embeddings) == (49406, 49407, 77)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (768, 12, 12)
    assert (vision.image_size, vision.patch_size) == (224, 32)
    tiny = clip_config(False, 1000)
    assert tiny.projection_dim == 32
    assert tiny.text_config.eos_token_id == 999


def test_missing_vocabulary_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testmodel.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip download --no-deps clip-anytorch -d DIR"):
        make_test_model(tmp_path / "full", full_size=True)
    with pytest.raises(FileNotFoundError, match=r"--vocab DIR"):
        load_clip_merges(tmp_path)  # an existing folder without the file
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip_merges(tmp_path / "nowhere.whl")
    assert list(tmp_path.iterdir()) == []


@needs_real_vocab
def test_real_vocabulary_sources_agree(tmp_path: Path) -> None:
    wheel = Path(_VOCAB_ENV)  # type: ignore[arg-type]
    merges = load_clip_merges(wheel)
    assert len(merges) == 48894
    if wheel.suffix == ".whl":
        with zipfile.ZipFile(wheel) as zf:
            name = next(n for n in zf.namelist() if n.endswith(testmodel.BPE_FILE))
            (tmp_path / testmodel.BPE_FILE).write_bytes(zf.read(name))
        assert load_clip_merges(tmp_path / testmodel.BPE_FILE) == merges
        (tmp_path / "plain.txt").write_bytes(gzip.decompress((tmp_path / testmodel.BPE_FILE).read_bytes()))
        assert load_clip_merges(tmp_path / "plain.txt") == merges
        folder = tmp_path / "wheels" / "nested"
        folder.mkdir(parents=True)
        shutil.copy(wheel, folder / wheel.name)
        assert load_clip_merges(tmp_path / "wheels") == merges


@needs_real_vocab
def test_real_vocabulary_found_in_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "clip"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    with zipfile.ZipFile(_VOCAB_ENV) as zf:  # type: ignore[arg-type]
        name = next(n for n in zf.namelist() if n.endswith(testmodel.BPE_FILE))
        (package / testmodel.BPE_FILE).write_bytes(zf.read(name))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "clip", raising=False)
    assert len(load_clip_merges()) == 48894


@needs_real_vocab
@pytest.mark.slow
def test_real_vocabulary_tokenizes_like_clip(tmp_path: Path) -> None:
    path = make_test_model(tmp_path / "tiny-real", vocab=_VOCAB_ENV)
    assert json.loads((path / META_FILE).read_text())["kind"] == "tiny"
    model = _load(path)
    assert model.tokenizer(CHECK_TEXT)["input_ids"] == CHECK_IDS
    assert len(model.tokenizer) == 49408
    assert json.loads((path / "config.json").read_text())["text_config"]["vocab_size"] == 49408
    emb = model.encode(PROMPTS, show_progress_bar=False)
    assert emb.shape == (len(PROMPTS), 32)
    assert np.all(np.linalg.norm(emb, axis=1) > 0)
    ids = model.tokenizer("tree frog, which has bright green colour")["input_ids"]
    assert len(ids) == 10
