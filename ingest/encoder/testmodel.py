"""Offline CLIP test models with random weights, for plumbing and speed checks.

``make_test_model`` writes a plain transformers CLIP folder that ``SentenceTransformer`` loads.
The tiny model's CLIP-format byte-level BPE is learned here from a built-in English corpus;
the full-size model (and the tiny one on request) uses CLIP's real vocabulary.
"""

from __future__ import annotations

import gzip
import heapq
import importlib.util
import itertools
import json
import logging
import os
import re
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPConfig, CLIPTokenizer

logger = logging.getLogger(__name__)

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_NUM_MERGES = 49152 - 256 - 2  # lines [1 : 49152-256-2+1] of CLIP's BPE file
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CHECK_TEXT = "a photo of a tree frog."
CHECK_IDS = [49406, 320, 1125, 539, 320, 2677, 11438, 269, 49407]
NOTE = "random weights: for plumbing and speed checks, explanations mean nothing"
META_FILE = "whyclip_test_model.json"
HOW_TO_GET = (
    f"CLIP's {BPE_FILE} not found; get it with `pip download --no-deps clip-anytorch -d DIR` and pass `--vocab DIR`"
)

# Built-in corpus: weight -> words; a weight acts as the word's frequency in BPE training.
_CORPUS: dict[int, str] = {
    12: """a an the of and or with which has have is are in on at to for by from its it this that photo picture
image close up view small large long short""",
    6: """red orange yellow green blue purple violet pink brown black white grey gray silver gold golden beige tan
cream dark light bright pale vivid colour color colours colors coloured colored striped spotted dotted patterned
plain shiny glossy matte smooth rough fuzzy furry hairy feathered scaly wet dry soft hard round square oval
triangular rectangular circular pointed curved straight flat thin thick wide narrow tall tiny huge big little head
eye eyes ear ears nose mouth beak bill teeth tooth tongue face neck body back belly chest tail wing wings leg legs
foot feet paw paws claw claws hoof hooves horn horns fin fins scales feathers fur hair skin shell spine spines
whiskers antenna antennae stripe stripes spot spots patch patches pattern marking markings crest mane snout trunk
tusk bird dog cat fish frog tree flower leaf leaves branch grass water sky car bus truck boat plane house building
road animal insect snake lizard turtle bear horse cow sheep""",
    3: """about above across after again against all almost along also always among another any around as away be
because been before behind being below between both but can could day did do does down during each even every few
first found get give go good great had he her here high him his how if into just kind know last like made make
many may me more most much must my near never new next no not now often old once one only other our out over own
part people place same see she should show side since so some still such take than their them then there these
they thing things think those through time together too two three four five six seven eight nine ten under until
upon us use used very was way we well were what when where while who why will without work world would year years
you your animals birds dogs cats trees flowers plants plant fruit fruits vegetable seed seeds stem stems root
roots bark petal petals bloom blossom forest field garden river lake sea ocean beach sand rock rocks stone
mountain hill snow ice cloud clouds sun shadow background foreground ground wood wooden metal metallic plastic
glass paper cloth fabric leather rubber brick concrete surface edge edges corner corners sides top bottom front
rear left right center centre middle inside outside upper lower shape shapes size sized texture textured line
lines dot dots ring rings band bands circle circles squares cross crossed row rows layer layers cluster clusters
pair pairs group groups single double multiple several numerous mammal reptile amphibian bug beetle butterfly moth
bee ant spider crab shrimp shark whale dolphin seal penguin owl eagle hawk parrot duck goose swan chicken rooster
pigeon crow sparrow robin finch jay mouse rat rabbit squirrel fox wolf deer lion tiger leopard cheetah zebra
giraffe elephant monkey ape gorilla pig goat camel kangaroo toad salamander newt tortoise crocodile alligator
iguana gecko chameleon python cobra oak pine maple palm rose tulip daisy lily sunflower orchid mushroom cactus
fern moss vine bush shrub apple banana lemon cherry grape berry berries pear peach bicycle motorcycle train ship
airplane helicopter wheel wheels window windows door doors roof wall walls floor table chair bed lamp clock phone
computer screen keyboard bottle cup mug plate bowl spoon fork knife bag box basket ball toy book sign person man
woman child hand hands arm arms finger fingers nail nails hat shirt shoe shoes dress coat jacket glasses mask
helmet handle button buttons pocket strap sharp blunt hooked webbed slender stout stocky sleek slim fat heavy
delicate sturdy transparent translucent opaque reflective iridescent spiky bumpy wrinkled ridged grooved banded
mottled speckled streaked barred ringed blotched solid faint webbing sucker suckers toe toes toepads pads pad
whisker tuft crown throat forehead cheek cheeks chin jaw jaws lip lips eyebrow eyelid pupil iris nostril nostrils
shoulder hip knee ankle wrist elbow tip tips base bases outline contrast typically usually sometimes mostly partly
partially slightly highly living lives sitting standing flying swimming running perched climbing resting hanging
growing covered attached surrounded shaped looking appearing retriever terrier spaniel poodle bulldog shepherd
hound puppy kitten tabby ferret hamster otter beaver raccoon skunk badger hedgehog bat bats lobster octopus squid
jellyfish starfish coral snail slug worm caterpillar dragonfly grasshopper cricket ladybug wasp hornet fly
mosquito flamingo heron stork pelican peacock ostrich hummingbird woodpecker toucan gull albatross vulture falcon
kingfisher warbler oriole cardinal bluebird floppy fluffy curly wavy drooping upright erect pointy bushy muscular
lean compact elongated broad tapered forked notched serrated lobed veined hollow fleshy waxy velvety silky
leathery papery woody grassy sandy muddy rocky snowy icy sunny cloudy rainy misty foggy shallow deep calm flowing
stripy patchy blotchy glowing sparkling shimmering dull muted neon pastel rusty dusty dirty clean polished crimson
scarlet maroon navy teal turquoise cyan magenta lavender lilac olive khaki ivory amber bronze copper chrome
tortoiseshell brindle tawny chestnut russet charcoal ebony jet emerald ruby sapphire vehicle engine headlight
headlights bumper tire tires windshield mirror seat seats sail mast deck hull propeller cockpit tower bridge
tunnel street sidewalk fence gate lawn bench pole poles wire wires cable tank instrument guitar piano violin drum
trumpet camera lens television radio speaker fan oven stove sink toilet bathtub sofa couch pillow blanket curtain
carpet rug shelf drawer cabinet desk candle vase pot pan kettle teapot jar lid cap label logo letter letters
number numbers text word words symbol arrow""",
}


def _b2u() -> dict[int, str]:
    """CLIP's byte -> printable unicode map (its order is CLIP's byte-alphabet order)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def corpus_word_counts() -> dict[str, int]:
    """Word -> weight of the built-in corpus, pre-tokenized like CLIP (lowercase letter runs).

    Inflections (-s, -ed, -ing, -er, -ly, -y) of the content words are added with weight 1,
    so the learned merges also cover suffixes of words the corpus lacks.
    """
    counts: dict[str, int] = {}
    for weight, text in _CORPUS.items():
        for word in re.findall(r"[a-z]+", text.lower()):
            counts[word] = counts.get(word, 0) + weight
    for weight, text in _CORPUS.items():
        for word in re.findall(r"[a-z]{3,}", text.lower()) if weight < 12 else ():
            for suffix in ("s", "ed", "ing", "er", "ly", "y"):
                counts.setdefault(word + suffix, 1)
    return counts


def _merge_word(syms: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(syms):
        if i + 1 < len(syms) and syms[i] == pair[0] and syms[i + 1] == pair[1]:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(syms[i])
            i += 1
    return out


def train_bpe(word_counts: dict[str, int], num_merges: int = 4000, min_count: int = 2) -> list[tuple[str, str]]:
    """Learn up to ``num_merges`` CLIP-style BPE merges (a word's last symbol carries ``</w>``).

    Stops once the most frequent pair occurs fewer than ``min_count`` times. Ties break on
    the lexicographically smallest pair, so the result is deterministic.
    """
    b2u = _b2u()
    words = [[b2u[b] for b in w.encode("utf-8")] for w in sorted(word_counts)]
    for syms in words:
        syms[-1] += "</w>"
    freqs = [word_counts[w] for w in sorted(word_counts)]
    counts: dict[tuple[str, str], int] = {}
    where: dict[tuple[str, str], set[int]] = {}
    for i, syms in enumerate(words):
        for pair in itertools.pairwise(syms):
            counts[pair] = counts.get(pair, 0) + freqs[i]
            where.setdefault(pair, set()).add(i)
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap and len(merges) < num_merges:
        neg, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg:
            continue  # stale heap entry; the pair's current count was pushed later
        if -neg < min_count:
            break
        merges.append(pair)
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            old, new = words[i], _merge_word(words[i], pair)
            for p in itertools.pairwise(old):
                counts[p] -= freqs[i]
                changed.add(p)
            for p in itertools.pairwise(new):
                counts[p] = counts.get(p, 0) + freqs[i]
                where.setdefault(p, set()).add(i)
                changed.add(p)
            words[i] = new
        for p in sorted(changed):
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
    logger.debug("learned %d BPE merges from %d words", len(merges), len(words))
    return merges


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary layout: bytes, bytes+``</w>``, merge results, then the two specials."""
    alphabet = list(_b2u().values())
    vocab: dict[str, int] = {}
    for tok in alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [BOS, EOS]:
        vocab.setdefault(tok, len(vocab))  # a learned merge may repeat an earlier string
    return vocab


def _bpe_text_from(path: Path) -> str | None:
    """CLIP's BPE text from a ``.txt.gz``/``.txt`` file, a wheel/zip holding it, or a folder."""
    if path.is_dir():
        for cand in sorted(path.rglob(BPE_FILE)):
            return gzip.decompress(cand.read_bytes()).decode("utf-8")
        for cand in sorted([*path.rglob("*.whl"), *path.rglob("*.zip")]):
            if (text := _bpe_text_from(cand)) is not None:
                return text
        return None
    if path.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(path) as zf:
            names = sorted(n for n in zf.namelist() if n.rsplit("/", 1)[-1] == BPE_FILE)
            return gzip.decompress(zf.read(names[0])).decode("utf-8") if names else None
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")


def load_clip_merges(vocab: str | Path | None = None) -> list[tuple[str, str]]:
    """CLIP's 48894 merges, read as its SimpleTokenizer reads them, from ``vocab`` or an
    installed ``clip``/``open_clip`` package (located with find_spec, never imported)."""
    text = None
    if vocab is not None:
        if not Path(vocab).expanduser().exists():
            raise FileNotFoundError(f"{vocab} does not exist. {HOW_TO_GET}")
        text = _bpe_text_from(Path(vocab).expanduser())
    else:
        for pkg in ("clip", "open_clip"):
            try:
                spec = importlib.util.find_spec(pkg)  # a top-level lookup imports nothing
            except (ImportError, ValueError):
                spec = None
            for loc in (spec.submodule_search_locations or []) if spec else []:
                if text is None and (Path(loc) / BPE_FILE).is_file():
                    logger.info("using CLIP's vocabulary from the installed %s package", pkg)
                    text = _bpe_text_from(Path(loc) / BPE_FILE)
    if text is None:
        raise FileNotFoundError(HOW_TO_GET)
    merges = [tuple(line.split()) for line in text.split("\n")[1 : CLIP_NUM_MERGES + 1]]
    if len(merges) != CLIP_NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"not CLIP's BPE file: expected {CLIP_NUM_MERGES} merge lines")
    return merges  # type: ignore[return-value]


def build_tokenizer(merges: list[tuple[str, str]], workdir: Path) -> CLIPTokenizer:
    """Write vocab.json/merges.txt into ``workdir``; return a ``CLIPTokenizer`` (max length 77)."""
    from transformers import CLIPTokenizer

    (workdir / "vocab.json").write_text(json.dumps(clip_vocab(merges), ensure_ascii=False), "utf-8")
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (workdir / "merges.txt").write_text(merges_txt, "utf-8")
    return CLIPTokenizer(vocab=str(workdir / "vocab.json"), merges=str(workdir / "merges.txt"), model_max_length=77)


def clip_config(full_size: bool, vocab_size: int) -> CLIPConfig:
    """A ``CLIPConfig``: ViT-B/32's defaults, or the tiny 32-wide 2-layer model.

    The special tokens are the last two ids (bos, eos; eos also pads), as in CLIP's vocabulary.
    """
    from transformers import CLIPConfig

    special = {
        "vocab_size": vocab_size,
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1,
    }
    if full_size:
        return CLIPConfig(projection_dim=512, text_config=special)
    tower = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "projection_dim": 32,
    }
    return CLIPConfig(
        projection_dim=32,
        text_config={**tower, **special, "max_position_embeddings": 77},
        vision_config={**tower, "image_size": 32, "patch_size": 8},
    )


def make_test_model(
    directory: str | Path, *, full_size: bool = False, vocab: str | Path | None = None, seed: int = 0
) -> Path:
    """Write a random-weight CLIP model folder into ``directory`` and return its path.

    Tiny by default, with a learned BPE unless ``vocab`` is given; ``full_size`` builds
    ViT-B/32 with CLIP's real vocabulary. Raises ``FileExistsError`` for a non-empty
    ``directory`` and ``FileNotFoundError`` when the real vocabulary cannot be found.
    The folder is built beside ``directory`` and renamed into place when complete.
    """
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPVisionConfig

    directory = Path(directory).expanduser().absolute()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(
            f"{directory} already exists and is not an empty folder; pick a new path or remove it first"
        )
    real = full_size or vocab is not None
    merges = load_clip_merges(vocab) if real else train_bpe(corpus_word_counts())
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tokenizer = build_tokenizer(merges, tmp)
        if real and tokenizer(CHECK_TEXT)["input_ids"] != CHECK_IDS:
            raise ValueError(f"the converted CLIP vocabulary tokenizes {CHECK_TEXT!r} wrongly")
        config = clip_config(full_size, len(tokenizer))
        vision = config.vision_config
        assert isinstance(vision, CLIPVisionConfig)  # CLIPConfig turns the dict it is given into one
        side = vision.image_size
        assert isinstance(side, int)  # clip_config gives one number
        processor = CLIPProcessor(
            tokenizer=tokenizer,
            image_processor=CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPModel(config).eval()
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        meta = {
            "kind": "full-size" if full_size else "tiny",
            "seed": seed,
            "tokenizer": "clip-bpe" if real else "learned-bpe",
            "note": NOTE,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", "utf-8")
        if directory.exists():
            directory.rmdir()  # empty, checked above
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "wrote a %s random-weight CLIP (%d parameters, vocabulary %d) to %s",
        meta["kind"],
        sum(p.numel() for p in model.parameters()),
        len(tokenizer),
        directory,
    )
    return directory
