"""CLIP's tokenizer from the ``tokenizers`` library alone, read from a transformers CLIP
folder without importing transformers (used by :mod:`.clipmodel`).

transformers 5's ``CLIPTokenizer`` is a ``tokenizers`` pipeline it builds itself: the
folder's vocabulary and merges (from ``tokenizer.json``, else ``vocab.json`` and
``merges.txt``) in a byte-level BPE whose words end in ``</w>``; NFC, runs of whitespace as
one space and lower case; CLIP's word pattern, then byte-level; the start and end tokens
added around each text (and as special tokens). :class:`ClipTokenizer` builds the same
pipeline and answers the calls the encoder makes (ids, truncation to 77 tokens with the end
token kept, padding with the pad token), without the 0.4 s transformers takes to load it
and the seconds its import costs. Checked against transformers on every prompt of the
paper's files and on hostile texts (``tests/test_texttower.py``).

A folder whose tokenizer settings are anything else (other special tokens, added tokens,
another tokenizer class) is left to transformers: :func:`unsupported_reason` says why.
"""

from __future__ import annotations

import json
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIPTokenizer's defaults; a folder naming others goes to transformers
SPECIALS = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
WORDS = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
TOKENIZER_CLASSES = {"CLIPTokenizer", "CLIPTokenizerFast", None}
# tokenizer_config.json keys that do not change the ids of the calls made here
CONFIG_INERT = {
    "tokenizer_class",
    "processor_class",
    "backend",
    "model_max_length",
    "add_prefix_space",
    "clean_up_tokenization_spaces",
    "do_lower_case",
    "errors",
    "name_or_path",
    "special_tokens_map_file",
    "model_input_names",
    "padding_side",
    "truncation_side",
    "added_tokens_decoder",  # checked below: only the start and end tokens
    "extra_special_tokens",  # checked below: none
}


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _vocab_and_merges(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The BPE vocabulary and merges as transformers reads them: from ``tokenizer.json``
    when there is one, else from ``vocab.json`` and ``merges.txt``."""
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        model = json.loads(tokenizer_json.read_text("utf-8")).get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(f"tokenizer.json holds a {model.get('type')} model, not BPE")
        vocab = model.get("vocab")
        if isinstance(vocab, list):
            vocab = {t[0] if isinstance(t, list) else t: i for i, t in enumerate(vocab)}
        if not isinstance(vocab, dict):
            raise ValueError("tokenizer.json holds no BPE vocabulary")
        pairs = [m.split(" ") if isinstance(m, str) else m for m in model.get("merges") or []]
        return vocab, [(str(a), str(b)) for a, b in pairs]
    from tokenizers.models import BPE

    read = BPE.read_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    return read[0], [(str(a), str(b)) for a, b in read[1]]


def unsupported_reason(folder: Path) -> str | None:
    """Why :class:`ClipTokenizer` cannot give ``folder``'s ids exactly as transformers'
    ``AutoTokenizer`` does (None when it can)."""
    folder = Path(folder)
    try:
        import tokenizers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - a dependency of transformers
        return f"no tokenizers library ({exc})"
    has_json = (folder / "tokenizer.json").is_file()
    if not has_json and not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        return "no tokenizer.json, nor vocab.json and merges.txt"
    try:
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text("utf-8")) if config_file.is_file() else {}
        special_file = folder / "special_tokens_map.json"
        special = json.loads(special_file.read_text("utf-8")) if special_file.is_file() else {}
        tokenizer_json = json.loads((folder / "tokenizer.json").read_text("utf-8")) if has_json else {}
    except (OSError, ValueError) as exc:
        return f"unreadable tokenizer files ({exc})"
    if config.get("tokenizer_class") not in TOKENIZER_CLASSES:
        return f"tokenizer class {config.get('tokenizer_class')!r}"
    for source in (special, config):
        for key, want in SPECIALS.items():
            if key in source and _token_text(source[key]) != want:
                return f"{key} {_token_text(source[key])!r}"
    extra = sorted(set(config) - CONFIG_INERT - set(SPECIALS))
    if extra:
        return f"tokenizer settings {extra}"
    if config.get("extra_special_tokens") or special.get("additional_special_tokens"):
        return "extra special tokens"
    added = {_token_text(t) for t in (config.get("added_tokens_decoder") or {}).values()}
    added |= {t.get("content") for t in tokenizer_json.get("added_tokens") or []}
    if added - {BOS, EOS}:
        return f"added tokens {sorted(map(str, added - {BOS, EOS}))[:3]}"
    try:
        vocab, _ = _vocab_and_merges(folder)
    except (OSError, ValueError, TypeError, Exception) as exc:  # tokenizers raises its own exception type
        return f"unreadable vocabulary ({str(exc).strip().splitlines()[0][:120] if str(exc).strip() else exc!r})"
    if not isinstance(vocab, dict) or BOS not in vocab or EOS not in vocab:
        return "the vocabulary lacks the start or end token"
    return None


class ClipTokenizer:
    """transformers' ``CLIPTokenizer`` for the calls the encoder makes: ``tokenizer(texts,
    truncation=..., max_length=..., padding=..., return_tensors=...)``."""

    def __init__(self, folder: Path):
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
        from tokenizers.models import BPE

        vocab, merges = _vocab_and_merges(Path(folder))
        tok = Tokenizer(
            BPE(
                vocab=vocab,
                merges=merges,
                dropout=None,
                continuing_subword_prefix="",
                end_of_word_suffix="</w>",
                fuse_unk=False,
                unk_token=EOS,
            )
        )
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(WORDS), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (BOS, EOS)])
        bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
        if bos is None or eos is None:  # unsupported_reason says so first
            raise ValueError(f"{folder}: the vocabulary lacks {BOS} or {EOS}")
        self.bos_token_id: int = bos
        self.eos_token_id: int = eos
        self.pad_token_id: int = eos
        tok.post_processor = processors.RobertaProcessing(
            (EOS, self.eos_token_id), (BOS, self.bos_token_id), False, False
        )
        self.backend_tokenizer = tok

    def __call__(
        self,
        texts: str | list[str],
        add_special_tokens: bool = True,
        truncation: bool | str = False,
        max_length: int | None = None,
        padding: bool = False,
        return_attention_mask: bool = True,
        return_tensors: str | None = None,
    ) -> dict:
        """``input_ids`` (and ``attention_mask``) as transformers gives them: truncation
        keeps the first ``max_length - 2`` tokens of the text between the start and end
        tokens; padding fills with the pad token to the longest in the batch."""
        one = isinstance(texts, str)
        encodings = self.backend_tokenizer.encode_batch(
            [texts] if one else list(texts), add_special_tokens=add_special_tokens
        )
        ids = [e.ids for e in encodings]
        if truncation and max_length is not None:
            keep = max_length - 1 if add_special_tokens else max_length  # the end token stays last
            ids = [x if len(x) <= max_length else x[:keep] + x[len(x) - (max_length - keep) :] for x in ids]
        mask = [[1] * len(x) for x in ids]
        if padding:
            width = max(map(len, ids), default=0)
            mask = [m + [0] * (width - len(m)) for m in mask]
            ids = [x + [self.pad_token_id] * (width - len(x)) for x in ids]
        out: dict = {"input_ids": ids[0] if one else ids}
        if return_attention_mask:
            out["attention_mask"] = mask[0] if one else mask
        if return_tensors == "pt":
            import torch

            out = {k: torch.tensor([v] if one else v, dtype=torch.long) for k, v in out.items()}
        return out
