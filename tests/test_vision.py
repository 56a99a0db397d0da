"""The plain-torch image tower and PIL preprocessing (ingest/encoder/vision.py) against their oracle,
transformers: the same pixels bit for bit on images of many shapes and modes, the same
embeddings to float32 rounding, the same parameter names; folders it does not know go to
transformers; and a cold explain process never imports transformers' models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from whyclip.ingest.encoder import vision


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for h, w in [(480, 640), (640, 480), (224, 224), (17, 300), (300, 17), (5, 5), (1000, 333), (225, 224)]:
        out.append(Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)))
    rgba = rng.integers(0, 255, (90, 120, 4), dtype=np.uint8)
    out.append(Image.fromarray(rgba, "RGBA"))
    out.append(Image.fromarray(rng.integers(0, 255, (120, 90), dtype=np.uint8), "L"))
    out.append(Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), "L").convert("P"))
    pal = Image.fromarray(rng.integers(0, 4, (40, 50), dtype=np.uint8), "P")
    pal.info["transparency"] = 2
    out.append(pal)
    return out


@pytest.mark.parametrize(
    "settings",
    [
        None,  # the folder's own
        {"size": {"shortest_edge": 64}, "crop_size": {"height": 48, "width": 56}},
        {"size": 100, "crop_size": 96, "resample": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.2, 0.3, 0.4]},
        {"do_center_crop": False, "size": {"shortest_edge": 32}},
        {"do_normalize": False, "do_rescale": False},
        {"crop_size": {"height": 300, "width": 300}},  # larger than the resized image: zero padding
    ],
)
def test_pixels_are_the_image_processors_bit_for_bit(tiny_model, tmp_path, settings):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tiny_model
    if settings is not None:
        folder = tmp_path / "m"
        shutil.copytree(tiny_model, folder)
        saved = json.loads((folder / "processor_config.json").read_text())
        saved["image_processor"].update(settings)
        (folder / "processor_config.json").write_text(json.dumps(saved))
    assert vision.unsupported_reason(folder) is None
    oracle = CLIPImageProcessorPil(
        **{
            k: v
            for k, v in json.loads((folder / "processor_config.json").read_text())["image_processor"].items()
            if k != "image_processor_type"
        }
    )
    ours = vision.image_processor(folder)
    for image in _images():
        want = oracle(images=image, return_tensors="pt")["pixel_values"]
        got = ours(images=image, return_tensors="pt")["pixel_values"]
        assert got.dtype == want.dtype, (image.size, image.mode)
        assert got.shape == want.shape, (image.size, image.mode)
        assert torch.equal(got, want), (image.size, image.mode)


def test_the_tower_computes_transformers_embeddings(tiny_model):
    from transformers import CLIPVisionModelWithProjection

    oracle = CLIPVisionModelWithProjection.from_pretrained(tiny_model, dtype=torch.float32).eval()
    ours = vision.load_vision_tower(tiny_model)
    assert {n for n, _ in ours.named_parameters()} == {n for n, _ in oracle.named_parameters()}
    pixels = torch.randn(
        5, 3, oracle.config.image_size, oracle.config.image_size, generator=torch.Generator().manual_seed(1)
    )
    with torch.inference_mode():
        want = oracle(pixel_values=pixels).image_embeds
        got = ours(pixels).image_embeds
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[0], got[1])  # five images, five answers
    with torch.inference_mode():  # the bf16 copy is what the precision check compares
        low = ours.to(torch.bfloat16)(pixels).image_embeds.float()
    cos = torch.nn.functional.cosine_similarity(low, want)
    assert cos.min() > 0.98


def test_gelu_towers_too(tiny_model, tmp_path):
    from transformers import CLIPVisionModelWithProjection

    folder = tmp_path / "gelu"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["hidden_act"] = "gelu"
    (folder / "config.json").write_text(json.dumps(config))
    oracle = CLIPVisionModelWithProjection.from_pretrained(folder, dtype=torch.float32).eval()
    pixels = torch.randn(
        2, 3, oracle.config.image_size, oracle.config.image_size, generator=torch.Generator().manual_seed(2)
    )
    with torch.inference_mode():
        torch.testing.assert_close(
            vision.load_vision_tower(folder)(pixels).image_embeds,
            oracle(pixel_values=pixels).image_embeds,
            rtol=1e-5,
            atol=1e-5,
        )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda f: _edit(f / "config.json", lambda c: c["vision_config"].update(hidden_act="relu")),
            "activation 'relu'",
        ),
        (lambda f: _edit(f / "processor_config.json", lambda c: c["image_processor"].update(do_pad=True)), "do_pad"),
        (
            lambda f: _edit(
                f / "processor_config.json", lambda c: c["image_processor"].update(size={"height": 9, "width": 9})
            ),
            "size",
        ),
        (lambda f: (f / "model.safetensors").unlink(), "not safetensors"),
        (
            lambda f: _edit(f / "config.json", lambda c: c["vision_config"].update(use_rotary=True)),
            "vision config keys ['use_rotary']",
        ),
    ],
)
def test_folders_it_does_not_know_go_to_transformers(tiny_model, tmp_path, change, reason):
    from whyclip.ingest.encoder.clipmodel import TransformersClip

    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    change(folder)
    assert reason in vision.unsupported_reason(folder)
    clip = TransformersClip(folder)
    assert clip.plain_vision_reason is not None
    if (folder / "model.safetensors").exists():
        assert type(clip.tower("image")).__name__ == "CLIPVisionModelWithProjection"


def test_torchvision_sends_the_folder_to_transformers(tiny_model, monkeypatch):
    real = vision.importlib.util.find_spec
    monkeypatch.setattr(
        vision.importlib.util, "find_spec", lambda name, *a: object() if name == "torchvision" else real(name, *a)
    )
    assert "torchvision" in vision.unsupported_reason(tiny_model)


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_encoder_embeds_images_as_transformers_does(tiny_model):
    """The whole image path (processor + tower) of the encoder against transformers'."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from whyclip.ingest.encoder.clip_encoder import ClipEncoder

    enc = ClipEncoder(str(tiny_model), precision="fp32")
    assert type(enc._st.tower("image")).__name__ == "VisionTower"
    images = _images()[:4]
    got, _ = enc.embed_images(images)
    oracle = CLIPVisionModelWithProjection.from_pretrained(tiny_model, dtype=torch.float32).eval()
    pixels = CLIPImageProcessor.from_pretrained(tiny_model)(
        images=[im.convert("RGB") for im in images], return_tensors="pt"
    )["pixel_values"]
    with torch.inference_mode():
        want = oracle(pixel_values=pixels).image_embeds.numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow  # a fresh process
def test_a_cold_explain_imports_no_transformers_model(tiny_model, tmp_path):
    """A fresh process embedding an image loads neither transformers' CLIP modelling code nor
    its image processors (seconds of start-up)."""
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(image)
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "from whyclip.ingest.encoder.clip_encoder import ClipEncoder\n"
        f"enc = ClipEncoder({str(tiny_model)!r}, precision='fp32')\n"
        f"print(enc.embed_images([Image.open({str(image)!r})])[0].shape)\n"
        "heavy = ('transformers.models.clip.modeling', 'transformers.image_processing',"
        " 'transformers.modeling_utils', 'sentence_transformers')\n"
        "bad = sorted(m for m in sys.modules if m.startswith(heavy))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[-1] == "[]", out
