"""Whole-process speed benchmarks of issue 13, side by side in one run (bench/run.py calls
these; run alone: ``python bench/speed.py --model DIR``):

* cold start: a one-image ``whyclip explain`` process against the bare floor, a process
  that imports torch and transformers, loads the same CLIP folder (``CLIPModel`` and
  ``CLIPProcessor``, as the transformers documentation shows) and embeds one image;
  ``whyclip --help``. Interleaved repeats, medians.
* ingest: ``whyclip ingest`` of the paper's seven files in one process (model load and
  store writes included) against a process that loads ``SentenceTransformer`` and runs a
  plain fp32 ``encode`` of the same distinct prompts; one ``whyclip ingest`` process per
  ``--precisions`` entry (``auto``: what a user gets, bf16 where the CPU computes it
  natively; ``fp32``: like for like with the plain encode), interleaved with the plain one.
* image pace: ``embed_image_files_cached`` (read, decode and preprocess in a background
  thread, encode, cache) and batch explain, in images/s, against the model's bare batch-32
  encode of already-preprocessed pixels in the same process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "descriptors"
sys.path.insert(0, str(ROOT))

FLOOR = """
import sys
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

model = CLIPModel.from_pretrained(sys.argv[1]).eval()
processor = CLIPProcessor.from_pretrained(sys.argv[1])
with torch.inference_mode():
    features = model.get_image_features(**processor(images=Image.open(sys.argv[2]).convert("RGB"), return_tensors="pt"))
print(getattr(features, "pooler_output", features).shape)
"""

PLAIN_ENCODE = """
import json, sys
from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")
model.max_seq_length = 77
prompts = json.load(open(sys.argv[2]))
print(model.encode(prompts).shape)
"""


# `whyclip ingest` as it ran before issue 23: transformers' config, tokenizer and text tower
# (the plain-torch ones refused), for a before-and-after in one run
TRANSFORMERS_PATH = """
import sys
from whyclip.ingest.encoder import config, texttower, tokenizer
from whyclip.ui.cli.main import main

config.read_config = lambda folder: None
tokenizer.unsupported_reason = texttower.unsupported_reason = lambda folder: "the transformers path, for comparison"
sys.argv = ["whyclip", *sys.argv[1:]]
main()
"""


def _env() -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    env["PYTHONPATH"] = str(ROOT.parent) + os.pathsep + env.get("PYTHONPATH", "")
    return env


CPU: dict[str, list[float]] = {}  # label -> CPU seconds (user + system) of each timed process


def _cpu_children() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(args: list[str], label: str | None = None, logs: dict | None = None, key: str = "") -> float:
    """Wall seconds of a process; its CPU seconds go to ``CPU[label]`` (CPU time is far
    less sensitive than wall time to other work on a shared machine), its output to
    ``logs[key]``."""
    cpu = _cpu_children()
    t = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env=_env(), cwd=ROOT)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])}...: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")
    if label:
        CPU.setdefault(label, []).append(_cpu_children() - cpu)
    if logs is not None:
        logs[key] = r.stdout + "\n" + r.stderr.replace("\r", "\n")
    return wall


def _cli(home: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "whyclip.ui.cli.main", "--home", home, *args]


def _small_library(path: Path) -> None:
    path.write_text(json.dumps({f"thing {c}": [f"part {c}", f"colour {c}"] for c in range(20)}))


def bench_cold_start(model: str, repeats: int, results: dict) -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        home = str(Path(tmp) / "home")
        lib = Path(tmp) / "lib.json"
        _small_library(lib)
        _timed(_cli(home, "ingest", str(lib), "--library", "lib", "--model", model))
        image = Path(tmp) / "image.jpg"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((640, 480)).save(image, quality=90)
        commands = {
            "floor": [sys.executable, "-c", FLOOR, model, str(image)],
            "explain": _cli(home, "explain", str(image), "--library", "lib", "--model", model, "--json"),
            "help": [sys.executable, "-m", "whyclip.ui.cli.main", "--help"],
        }
        for args in commands.values():  # warm the page cache and the stored precision verdict
            _timed(args)
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(repeats):  # interleaved, so load on the machine hits each alike
            for name, args in commands.items():
                times[name].append(_timed(args, f"cold:{name}"))
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(CPU[f"cold:{k}"]) for k in commands}
    row = {
        "repeats": repeats,
        **{f"{k}_median_s": v for k, v in med.items()},
        **{f"{k}_cpu_median_s": v for k, v in cpu.items()},
        "explain_cpu_over_floor": cpu["explain"] / cpu["floor"],
        **{f"{k}_all_s": v for k, v in times.items()},
        "explain_over_floor": med["explain"] / med["floor"],
    }
    results["cold_start"] = row
    print(
        f"cold start: explain {med['explain']:.2f}s vs floor {med['floor']:.2f}s ({row['explain_over_floor']:.2f}x; "
        f"CPU {cpu['explain']:.2f}s vs {cpu['floor']:.2f}s, {row['explain_cpu_over_floor']:.2f}x); --help "
        f"{med['help']:.2f}s (CPU {cpu['help']:.2f}s)",
        file=sys.stderr,
    )


def seven_files() -> list[Path]:
    return sorted(SHARED.glob("descriptors_*.json"))


def bench_ingest_processes(
    model: str,
    repeats: int,
    results: dict,
    only: list[str] | None = None,
    precisions: tuple[str, ...] = ("auto",),
    before: bool = False,
) -> None:
    """The seven files, whole processes: one ``whyclip ingest`` of all seven (a fresh store
    each time) per precision in ``precisions`` against a plain fp32
    ``SentenceTransformer.encode`` of the same prompts, interleaved. ``only``: a subset by
    dataset name (``dtd``, ``pets``: descriptors_dtd.json, ...). ``before``: the first
    precision also as it ran before (transformers' tokenizer and text tower). The first
    precision's figures are the headline (``whyclip_median_s``, ``speedup``); each run's
    are under ``by_precision``, with where its process spent its time (the encoder's
    ``-v`` line)."""
    files = seven_files()
    if len(files) != 7:
        print(f"ingest (whole processes): skipped, the paper's seven files are not in {SHARED}", file=sys.stderr)
        return
    if only:
        files = [f for f in files if f.stem.removeprefix("descriptors_") in only]
    from whyclip.ingest.readers import read_library
    from whyclip.ingest.services.library_ingest import build_prompts
    from whyclip.store.method.templates import DEFAULT_BASELINE, Template

    prompts: list[str] = []
    for f in files:
        classes = build_prompts(read_library(f), Template("paper"), DEFAULT_BASELINE)
        prompts += list(dict.fromkeys([p for c in classes for p in c.prompts] + [c.baseline_prompt for c in classes]))
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "prompts.json"
        listing.write_text(json.dumps(prompts))
        runs: dict[str, list[str]] = {p: [] for p in precisions} | (
            {f"{precisions[0]}, before": ["before"]} if before else {}
        )
        times: dict[str, list[float]] = {"plain": [], **{k: [] for k in runs}}
        work: dict[str, str] = {}
        for r in range(repeats):
            times["plain"].append(_timed([sys.executable, "-c", PLAIN_ENCODE, model, str(listing)], "ingest:plain"))
            for k, how in runs.items():
                home = str(Path(tmp) / f"home-{k}-{r}")  # a fresh store: every prompt embedded
                args = _cli(home, "-v", "ingest", *map(str, files), "--model", model, "--precision", k.split(",")[0])
                if how:  # the same command through the transformers path
                    args = [sys.executable, "-c", TRANSFORMERS_PATH, *args[3:]]
                times[k].append(_timed(args, f"ingest:{k}", work, k))
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(CPU[f"ingest:{k}"]) for k in times}
    by_precision = {
        p: {
            "median_s": med[p],
            "speedup": med["plain"] / med[p],
            "cpu_median_s": cpu[p],
            "cpu_speedup": cpu["plain"] / cpu[p],
            "all_s": times[p],
            "ran_in": _precision_run(work.get(p, "")),
            "encoder_work": _encoder_line(work.get(p, "")),
        }
        for p in runs
    }
    head = precisions[0]
    med["whyclip"], cpu["whyclip"], times["whyclip"] = med[head], cpu[head], times[head]
    results["ingest_processes"] = {
        "files": [f.stem for f in files],
        "prompts": len(prompts),
        "repeats": repeats,
        "plain_median_s": med["plain"],
        "whyclip_median_s": med["whyclip"],
        "speedup": med["plain"] / med["whyclip"],
        "plain_all_s": times["plain"],
        "whyclip_all_s": times["whyclip"],
        "plain_cpu_median_s": cpu["plain"],
        "whyclip_cpu_median_s": cpu["whyclip"],
        "cpu_speedup": cpu["plain"] / cpu["whyclip"],
        "headline_precision": head,
        "by_precision": by_precision,
    }
    for p, row in by_precision.items():
        print(
            f"ingest, {len(files)} files, whole processes: whyclip --precision {p} (ran in {row['ran_in']}) "
            f"{row['median_s']:.1f}s vs plain fp32 encode {med['plain']:.1f}s ({row['speedup']:.2f}x wall, "
            f"{row['cpu_speedup']:.2f}x CPU); {row['encoder_work']}",
            file=sys.stderr,
        )


def _precision_run(log: str) -> str:
    """The precision an ingest's libraries were embedded in (its summary lines end "dim N, P)")."""
    found = [line.rsplit(", ", 1)[-1].rstrip(")") for line in log.splitlines() if line.startswith("library ")]
    return ", ".join(dict.fromkeys(found)) or "?"


def _encoder_line(log: str) -> str:
    """The last ``-v`` line on where the encoder's time went (load, tokenize, check, passes)."""
    lines = [line.split("encoder (", 1)[1] for line in log.splitlines() if "encoder (" in line]
    return f"encoder ({lines[-1]}" if lines else ""


def bench_image_pace(model: str, n_images: int, results: dict) -> None:
    """Images/s of the cached image path (eval's) and of batch explain against the bare
    batch-32 encode of preprocessed pixels, same process, same encoder."""
    from PIL import Image

    from whyclip.ingest.embedding import embed_image_files_cached
    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.store import Store

    enc = load_encoder(model)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(1)
        files = []
        for i in range(n_images):
            small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
            path = Path(tmp) / f"{i:04d}.jpg"
            Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC).save(path, quality=90)
            files.append(path)
        pictures = [Image.open(p).convert("RGB") for p in files[:32]]
        prepared = enc.prepare_images(pictures)
        enc.embed_images(prepared)  # warm-up (and the precision check)
        t = time.perf_counter()
        rounds = max(1, n_images // 32)
        for _ in range(rounds):
            enc.embed_images(prepared)
        bare = rounds * 32 / (time.perf_counter() - t)
        store = Store.open(str(Path(tmp) / "home"))
        t = time.perf_counter()
        kept = embed_image_files_cached(store, enc, files)[0]
        cached_path = len(kept) / (time.perf_counter() - t)
        home = str(Path(tmp) / "home2")
        lib = Path(tmp) / "lib.json"
        _small_library(lib)
        _timed(_cli(home, "ingest", str(lib), "--library", "lib", "--model", model))
        one = _timed(_cli(home, "explain", str(files[0]), "--library", "lib", "--model", model, "--json"))
        many = _timed(_cli(home, "explain", *map(str, files), "--library", "lib", "--model", model, "--json"))
        explain_rate = (n_images - 1) / max(many - one, 1e-9)  # the process start-up taken out
    row = {
        "images": n_images,
        "bare_batch32_per_s": bare,
        "cached_path_per_s": cached_path,
        "batch_explain_per_s": explain_rate,
        "cached_path_over_bare": bare / cached_path,
        "batch_explain_over_bare": bare / explain_rate,
        "precision": enc.precisions["image"],
    }
    results["image_pace"] = row
    print(
        f"images: bare batch-32 encode {bare:.1f}/s, eval's path {cached_path:.1f}/s ({bare / cached_path:.2f}x), "
        f"batch explain {explain_rate:.1f}/s ({bare / explain_rate:.2f}x)",
        file=sys.stderr,
    )


def markdown(results: dict) -> list[str]:
    out = []
    if "cold_start" in results:
        r = results["cold_start"]
        out += [
            "\n## Cold start (whole processes, medians of interleaved runs)\n",
            "| process | wall median s | ratio to the floor | CPU median s | CPU ratio |",
            "|---|---:|---:|---:|---:|",
            "| bare floor: import torch + transformers, load the CLIP folder, embed one image | "
            f"{r['floor_median_s']:.2f} | 1.00x | {r['floor_cpu_median_s']:.2f} | 1.00x |",
            f"| `whyclip explain IMAGE --library L --json` | {r['explain_median_s']:.2f} | "
            f"{r['explain_over_floor']:.2f}x | {r['explain_cpu_median_s']:.2f} | "
            f"{r['explain_cpu_over_floor']:.2f}x |",
            f"| `whyclip --help` | {r['help_median_s']:.2f} | - | {r['help_cpu_median_s']:.2f} | - |",
            f"\n{r['repeats']} runs each.",
        ]
    if "ingest_processes" in results:
        r = results["ingest_processes"]
        out += [
            f"\n## Ingest, the paper's files ({', '.join(r['files'])}; whole processes, model load included)\n",
            "| process | prompts | wall median s | speedup | CPU median s | CPU speedup |",
            "|---|---:|---:|---:|---:|---:|",
            f"| plain fp32 `SentenceTransformer.encode` | {r['prompts']:,} | {r['plain_median_s']:.1f} | 1.00x "
            f"| {r['plain_cpu_median_s']:.1f} | 1.00x |",
            *(
                f"| one `whyclip ingest --precision {p.split(',')[0]}` of all the files "
                f"(fresh store; ran in {g['ran_in']}"
                f"{'; transformers tokenizer and text tower' if 'before' in p else ''}) | "
                f"{r['prompts']:,} | {g['median_s']:.1f} | {g['speedup']:.2f}x | {g['cpu_median_s']:.1f} | "
                f"{g['cpu_speedup']:.2f}x |"
                for p, g in r["by_precision"].items()
            ),
            f"\n{r['repeats']} runs each, interleaved.",
            *(f"\n`--precision {p}`, last run: {g['encoder_work']}" for p, g in r["by_precision"].items()),
        ]
    if "image_pace" in results:
        r = results["image_pace"]
        out += [
            "\n## Images at the encoder's pace (images/s)\n",
            "| path | images/s | bare encode / path |",
            "|---|---:|---:|",
            f"| bare batch-32 encode of preprocessed pixels | {r['bare_batch32_per_s']:.1f} | 1.00x |",
            "| eval's image path (read, decode and preprocess ahead, encode, cache) | "
            f"{r['cached_path_per_s']:.1f} | {r['cached_path_over_bare']:.2f}x |",
            f"| batch `whyclip explain` ({r['images']} images, start-up taken out) | "
            f"{r['batch_explain_per_s']:.1f} | {r['batch_explain_over_bare']:.2f}x |",
            f"\n{r['images']} JPEG images 500x375, {r['precision']}.",
        ]
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--skip", default="", help="comma-separated: cold, ingest, images")
    ap.add_argument("--files", default="", help="ingest only these of the seven files, comma-separated (dtd,pets,...)")
    ap.add_argument(
        "--precisions", default="auto,fp32", help="one whyclip ingest process per precision, comma-separated"
    )
    ap.add_argument(
        "--before", action="store_true", help="the first precision also through transformers (as before issue 23)"
    )
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {}
    if "cold" not in skip:
        bench_cold_start(args.model, args.repeats, results)
    if "ingest" not in skip:
        bench_ingest_processes(
            args.model,
            max(1, args.repeats // 2),
            results,
            list(filter(None, args.files.split(","))),
            tuple(filter(None, args.precisions.split(","))),
            args.before,
        )
    if "images" not in skip:
        bench_image_pace(args.model, args.images, results)
    print("\n".join(markdown(results)))
    print(json.dumps(results, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
