"""CLIP's image tower and image preprocessing in plain torch and PIL, read from a
transformers CLIP folder without importing transformers' models (used by :mod:`.clipmodel`).

Why: a one-image ``whyclip explain`` is mostly start-up. Measured here (2 cores, full-size
ViT-B/32 folder): ``import torch`` 3.5 s; ``from transformers import
CLIPVisionModelWithProjection`` 10.4 s; ``AutoImageProcessor.from_pretrained`` 7.8 s in a
fresh process (transformers 5.24 pulls in most of its modelling stack for either). The
tower is a plain ViT and the processor four array steps, so both are written here and
checked against transformers (``tests/test_vision.py``: the same pixels, bit for bit, on
images of many shapes and modes; the same embeddings to float32 rounding).

Only what is known is taken: a folder whose vision config, activation, weights layout
(safetensors, one file or an index) or processor settings are anything else is answered
by transformers as before (:func:`unsupported_reason` says why). So is every folder when
torchvision is installed, because transformers then preprocesses with its torchvision
backend, whose resizing differs from PIL's in the last bits.

The module names mirror ``CLIPVisionModelWithProjection`` (``vision_model.encoder.layers.0
.self_attn.q_proj.weight``, ...), so parameter names are the checkpoint's.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"quick_gelu": lambda x: x * torch.sigmoid(1.702 * x), "gelu": F.gelu}
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3
# processor settings this module computes; any other key that changes pixels sends the folder to transformers
PROCESSOR_KEYS = {
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
}
PROCESSOR_IGNORED = {"image_processor_type", "processor_class", "feature_extractor_type", "default_to_square"}
PROCESSOR_TYPES = {"CLIPImageProcessor", "CLIPImageProcessorPil", "CLIPFeatureExtractor", None}
VISION_KEYS = {
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_hidden_layers",
    "image_size",
    "patch_size",
    "num_channels",
    "layer_norm_eps",
    "hidden_act",
    "projection_dim",
}
# vision config keys that do not change an inference forward pass
VISION_INERT = {
    "model_type",
    "attention_dropout",
    "dropout",
    "initializer_factor",
    "initializer_range",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "_name_or_path",
    "architectures",
    "id2label",
    "label2id",
}


# -- the folder ------------------------------------------------------------------------------


def _vision_config(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text())
    vision = dict(config.get("vision_config") or {})
    vision.setdefault("projection_dim", config.get("projection_dim", 512))
    return vision


def _weight_files(folder: Path) -> dict[str, Path] | None:
    """Checkpoint key -> safetensors file, or None when the weights are not safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        mapping = json.loads(index.read_text()).get("weight_map") or {}
        return {k: folder / v for k, v in mapping.items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        return dict.fromkeys(f.keys(), single)


def _processor_settings(folder: Path) -> dict | None:
    """The image processor's saved settings (``preprocessor_config.json``, or the
    ``image_processor`` part of ``processor_config.json``); None when there are none."""
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        return json.loads(pre.read_text())
    proc = folder / "processor_config.json"
    if proc.is_file():
        got = json.loads(proc.read_text()).get("image_processor")
        return dict(got) if isinstance(got, dict) else None
    return None


def unsupported_reason(folder: Path) -> str | None:
    """Why this module cannot compute ``folder``'s image tower and preprocessing exactly as
    transformers does (None when it can)."""
    if importlib.util.find_spec("torchvision") is not None:
        return "torchvision is installed: transformers preprocesses with it"
    try:
        vision = _vision_config(folder)
        settings = _processor_settings(folder)
        files = _weight_files(folder)
    except (OSError, ValueError) as exc:
        return f"unreadable model folder ({exc})"
    act = vision.get("hidden_act", "quick_gelu")
    if act not in ACTIVATIONS:
        return f"activation {act!r}"
    unknown = sorted(set(vision) - VISION_KEYS - VISION_INERT)
    if unknown:
        return f"vision config keys {unknown}"
    if settings is None:
        return "no image processor settings"
    extra = sorted(set(settings) - PROCESSOR_KEYS - PROCESSOR_IGNORED)
    if extra:
        return f"image processor settings {extra}"
    if settings.get("image_processor_type", settings.get("feature_extractor_type")) not in PROCESSOR_TYPES:
        return f"image processor {settings.get('image_processor_type')!r}"
    try:
        ImageProcessor.from_settings(settings)
    except (TypeError, ValueError, KeyError) as exc:
        return f"image processor settings ({exc})"
    if files is None:
        return "weights are not safetensors"
    layers = int(vision.get("num_hidden_layers", 12))
    missing = [k for k in _names(layers) if k not in files]
    if missing:
        return f"no {missing[0]} in the weights"
    return None


# -- preprocessing ---------------------------------------------------------------------------


def _square(value, key: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict) and set(value) == {"height", "width"}:
        return int(value["height"]), int(value["width"])
    raise ValueError(f"{key} {value!r}")


@dataclass(frozen=True)
class ImageProcessor:
    """transformers' ``CLIPImageProcessorPil``: RGB (transparency over white), the shortest
    edge resized with PIL, a centre crop (zero-padded when too small), x / 255 via float64
    to float32, then (x - mean) / std; (N, 3, H, W), float32 unless both are off."""

    shortest_edge: int | None = 224
    resample: int = BICUBIC
    crop: tuple[int, int] | None = (224, 224)
    rescale_factor: float | None = 1 / 255
    mean: tuple[float, ...] | None = OPENAI_CLIP_MEAN
    std: tuple[float, ...] | None = OPENAI_CLIP_STD
    convert_rgb: bool = True

    @classmethod
    def from_settings(cls, s: dict) -> ImageProcessor:
        size = s.get("size", {"shortest_edge": 224})
        if isinstance(size, int):
            size = {"shortest_edge": size}
        if not isinstance(size, dict) or set(size) != {"shortest_edge"}:
            raise ValueError(f"size {size!r}")
        crop = _square(s.get("crop_size", {"height": 224, "width": 224}), "crop_size")
        return cls(
            shortest_edge=int(size["shortest_edge"]) if s.get("do_resize", True) else None,
            resample=int(s.get("resample", BICUBIC)),
            crop=crop if s.get("do_center_crop", True) else None,
            rescale_factor=float(s.get("rescale_factor", 1 / 255)) if s.get("do_rescale", True) else None,
            mean=tuple(s.get("image_mean", OPENAI_CLIP_MEAN)) if s.get("do_normalize", True) else None,
            std=tuple(s.get("image_std", OPENAI_CLIP_STD)) if s.get("do_normalize", True) else None,
            convert_rgb=bool(s.get("do_convert_rgb", True)),
        )

    def one(self, image) -> np.ndarray:
        from PIL import Image

        if self.convert_rgb:
            if "A" in image.getbands() or image.info.get("transparency") is not None:
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
            elif image.mode != "RGB":  # (converting RGB to RGB copies the whole picture: same pixels)
                image = image.convert("RGB")
        if self.shortest_edge is not None:
            w, h = image.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(self.shortest_edge * long / short)
            size = (self.shortest_edge, new_long) if w <= h else (new_long, self.shortest_edge)
            image = image.resize(size, resample=self.resample)
        x = np.array(image)
        x = x[None] if x.ndim == 2 else np.moveaxis(x, -1, 0)  # (C, H, W)
        if self.crop is not None:
            x = _centre_crop(x, *self.crop)
        if self.rescale_factor is not None:
            x = (x.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.mean is not None:
            if not np.issubdtype(x.dtype, np.floating):
                x = x.astype(np.float32)
            mean = np.array(self.mean, dtype=x.dtype)[:, None, None]
            std = np.array(self.std, dtype=x.dtype)[:, None, None]
            x = (x - mean) / std
        return x

    def __call__(self, images, return_tensors: str = "pt") -> dict:
        images = images if isinstance(images, (list, tuple)) else [images]
        return {"pixel_values": torch.from_numpy(np.stack([self.one(im) for im in images]))}


def _centre_crop(x: np.ndarray, ch: int, cw: int) -> np.ndarray:
    h, w = x.shape[-2:]
    top, left = (h - ch) // 2, (w - cw) // 2
    if top >= 0 and left >= 0 and top + ch <= h and left + cw <= w:
        return x[..., top : top + ch, left : left + cw]
    nh, nw = max(ch, h), max(cw, w)
    padded = np.zeros((*x.shape[:-2], nh, nw), dtype=x.dtype)
    tp, lp = math.ceil((nh - h) / 2), math.ceil((nw - w) / 2)
    padded[..., tp : tp + h, lp : lp + w] = x
    top, left = top + tp, left + lp
    return padded[..., max(0, top) : min(nh, top + ch), max(0, left) : min(nw, left + cw)]


def image_processor(folder: Path) -> ImageProcessor:
    return ImageProcessor.from_settings(_processor_settings(Path(folder)) or {})


# -- the tower -------------------------------------------------------------------------------


def _names(layers: int) -> list[str]:
    """The checkpoint keys of the image tower."""
    out = [
        "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.position_embedding.weight",
        "visual_projection.weight",
    ]
    for norm in ("pre_layrnorm", "post_layernorm"):
        out += [f"vision_model.{norm}.weight", f"vision_model.{norm}.bias"]
    for i in range(layers):
        out += layer_keys(f"vision_model.encoder.layers.{i}.")
    return out


def layer_keys(prefix: str) -> list[str]:
    """The checkpoint keys of one CLIP transformer layer (either tower's) under ``prefix``."""
    out = []
    for part in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.out_proj",
        "mlp.fc1",
        "mlp.fc2",
    ):
        out += [f"{prefix}{part}.weight", f"{prefix}{part}.bias"]
    for norm in ("layer_norm1", "layer_norm2"):
        out += [f"{prefix}{norm}.weight", f"{prefix}{norm}.bias"]
    return out


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (
            p(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = F.scaled_dot_product_attention(q, k, v, scale=(d // self.heads) ** -0.5)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(dim, hidden), nn.Linear(hidden, dim), act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, eps: float, act):
        super().__init__()
        self.self_attn = _Attention(dim, heads)
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps)
        self.mlp = _Mlp(dim, hidden, act)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Table(nn.Module):
    """An embedding table read whole (``nn.Embedding``'s initialisation on the meta device
    imports torch._dynamo, 2.5 s)."""

    def __init__(self, n: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, dim))


class _Embeddings(nn.Module):
    def __init__(self, dim: int, channels: int, patch: int, image: int):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.empty(dim))
        self.patch_embedding = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch, bias=False)
        self.position_embedding = _Table((image // patch) ** 2 + 1, dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(len(pixels), 1, -1), patches], dim=1)
        return x + self.position_embedding.weight[: x.shape[1]]


class _Encoder(nn.Module):
    def __init__(self, layers: list[_Layer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class _VisionModel(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        dim, eps, act = (
            int(c.get("hidden_size", 768)),
            float(c.get("layer_norm_eps", 1e-5)),
            ACTIVATIONS[c.get("hidden_act", "quick_gelu")],
        )
        self.embeddings = _Embeddings(
            dim, int(c.get("num_channels", 3)), int(c.get("patch_size", 32)), int(c.get("image_size", 224))
        )
        self.pre_layrnorm = nn.LayerNorm(dim, eps=eps)  # sic: the checkpoint's name
        self.encoder = _Encoder(
            [
                _Layer(dim, int(c.get("num_attention_heads", 12)), int(c.get("intermediate_size", 3072)), eps, act)
                for _ in range(int(c.get("num_hidden_layers", 12)))
            ]
        )
        self.post_layernorm = nn.LayerNorm(dim, eps=eps)


@dataclass
class ImageOutput:
    image_embeds: torch.Tensor


class VisionTower(nn.Module):
    """``CLIPVisionModelWithProjection``'s computation: patches + class token + positions,
    pre-norm, pre-norm transformer layers, the class token's post-norm, the projection."""

    def __init__(self, config: dict):
        super().__init__()
        self.vision_model = _VisionModel(config)
        self.visual_projection = nn.Linear(
            int(config.get("hidden_size", 768)), int(config["projection_dim"]), bias=False
        )

    def forward(self, pixel_values: torch.Tensor) -> ImageOutput:
        v = self.vision_model
        x = v.pre_layrnorm(v.embeddings(pixel_values))
        for layer in v.encoder.layers:
            x = layer(x)
        return ImageOutput(self.visual_projection(v.post_layernorm(x[:, 0])))


def load_vision_tower(folder: Path) -> VisionTower:
    """The image tower of ``folder`` in float32 (built on the meta device, then given the
    checkpoint's tensors: no random initialisation)."""

    folder = Path(folder)
    config = _vision_config(folder)
    files = _weight_files(folder)
    if files is None:  # unsupported_reason says so first
        raise ValueError(f"{folder}: the image tower's weights are not safetensors")
    with torch.device("meta"):
        tower = VisionTower(config)
    tower.load_state_dict(
        read_tensors(files, _names(int(config.get("num_hidden_layers", 12)))), strict=True, assign=True
    )
    return tower.eval()


def read_tensors(files: dict[str, Path], names: list[str]) -> dict[str, torch.Tensor]:
    """The checkpoint tensors ``names`` (float32), each file opened once (``files``: where
    each name lies, from :func:`_weight_files`)."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for path in dict.fromkeys(files[n] for n in names):
        with safe_open(str(path), framework="pt") as f:
            for n in names:
                if files[n] == path:
                    state[n] = f.get_tensor(n).to(torch.float32)
    return state
