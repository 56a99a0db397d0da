"""Full-page screenshots of every dashboard page from a real headless Chromium, on a store
built offline: a tiny random-weight CLIP (``whyclip make-test-model``), a small bird library
ingested first, then ``whyclip demo`` (the library a new user has just made) and an eval run
on the demo's drawn samples, so that the Audit page has content.

    python -m tests.helpers.screenshots OUTDIR [--cub descriptors_cub.json]

writes OUTDIR/explain.png, explain-maps.png (the same page with the occlusion check and the
dense map ticked: every kind of map), library.png, audit.png (its first confused pair opened, the
what-if's first class's descriptors unticked), generate.png and timings.json (seconds from a
what-if click until the page stops changing: the rerun's output drawn).
With ``--cub``, that many-class library is ingested first and evaluated on noise images, the
what-if is timed on its run too, and OUTDIR/audit-whatif-cub.png shows its what-if section.
``whyclip ui`` is started without ``--library``: the pages open on the library it chooses.
Needs Debian's ``chromium`` and ``chromedriver`` and selenium; no network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 600_000
WIDTH = 1400
# a library ingested before the demo's, first in alphabetical order (as CUB was for the user)
BIRDS = {
    "Baltimore Oriole": ["bright orange underparts", "black head and back", "white wing bars"],
    "Blue Jay": ["blue crest on the head", "black necklace across the throat", "white face"],
    "Cardinal": ["bright red plumage", "a pointed crest", "a thick orange beak"],
    "Ivory Gull": ["all-white plumage", "black legs", "a small yellow-tipped bill"],
    "Laysan Albatross": ["white head and body", "dark upper wings", "a large pink hooked bill"],
    "Mallard": ["glossy green head", "a yellow bill", "a white neck ring"],
    "Red-winged Blackbird": ["black body", "red and yellow shoulder patches", "a pointed black bill"],
    "Scarlet Tanager": ["scarlet red body", "black wings and tail", "a pale bill"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def whyclip(env: dict, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "whyclip.ui.cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode:
        raise SystemExit(f"whyclip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def build_store(work: Path, env: dict, cub: Path | None = None, per_class: int = 2) -> None:
    """The model, the bird library, the demo, and an eval run on the drawn samples; with
    ``cub`` (a descriptor file of many classes, such as the paper's CUB one), first that
    library as ``cub`` with an eval run on ``per_class`` noise images per class (for timing only)."""
    from whyclip.ui.demo.samples import SAMPLE_CLASSES, draw_samples

    model = work / "tiny-clip"
    whyclip(env, "make-test-model", str(model))
    if cub is not None:
        whyclip(env, "ingest", str(cub), "--library", "cub", "--model", str(model))
        noise = work / "cub-images"
        for k, name in enumerate(json.loads(cub.read_text())):
            (noise / name).mkdir(parents=True)
            for j in range(per_class):
                Image.effect_noise((64, 64), 40 + k % 50 + 10 * j).convert("RGB").save(noise / name / f"{j}.png")
        whyclip(env, "eval", str(noise), "--library", "cub", "--name", "noise")
    birds = work / "birds.json"
    birds.write_text(json.dumps(BIRDS, indent=1))
    whyclip(env, "ingest", str(birds), "--library", "birds", "--model", str(model))
    whyclip(env, "demo", "--model", str(model))
    data = work / "labelled"
    for path in draw_samples(work / "drawn"):  # each sample and three variants, a folder per class
        folder = data / SAMPLE_CLASSES[path.name]
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as picture:
            picture = picture.convert("RGB")
            variants = (
                picture,
                ImageOps.mirror(picture),
                picture.rotate(90),
                picture.crop((30, 30, 194, 194)).resize((224, 224)),
            )
            for n, variant in enumerate(variants):
                variant.save(folder / f"{path.stem}-{n}.png")
    whyclip(env, "eval", str(data), "--library", "demo", "--name", "drawn")


def serve(env: dict, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "whyclip.ui.cli.main", "ui", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                os.killpg(server.pid, signal.SIGTERM)
                raise SystemExit("whyclip ui did not start") from None
            time.sleep(0.5)


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={WIDTH},2400",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)


def body(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def running(driver) -> bool:
    from selenium.webdriver.common.by import By

    return any("Running" in e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']"))


def settle(driver, marker: str, timeout: float = 120) -> None:
    """Until ``marker`` shows and the script has stopped running, then a moment for the charts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in body(driver) and not running(driver):
            time.sleep(2.0)
            if not running(driver):
                return
        time.sleep(0.3)
    print(f"  (gave up waiting for {marker!r})", file=sys.stderr)


def choose_library(driver, name: str) -> None:
    """Pick ``name`` in the sidebar's library box (a page that opened on a library without runs)."""
    choose(driver, "//*[@data-testid='stSidebar']//*[@data-testid='stSelectbox'][1]//input", name)


def choose(driver, box: str, option: str) -> None:
    """Pick ``option`` in the select box that the XPath ``box`` finds."""
    from selenium.webdriver.common.by import By

    found = driver.find_element(By.XPATH, box)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", found)
    found.click()
    time.sleep(0.5)
    driver.find_element(By.XPATH, f"//*[@role='option' and normalize-space(.)={option!r}]").click()


def flipping_class(home: Path, library: str, run: str) -> tuple[str, int]:
    """The class whose descriptors, all unticked, flip the most predictions of ``run`` (so the
    screenshot shows flip tables), and how many descriptors it has; computed here, as the
    what-if computes it."""
    from whyclip.store import Store
    from whyclip.store.analysis.whatif import WhatIf, plan_edit
    from whyclip.store.db.runs import find_run, load_run

    store = Store.open(home, create=False)
    lib = store.load(library)
    session = WhatIf(load_run(store.engine, find_run(store.engine, library, run)), lib)
    best = (lib.class_names[0], len(lib.class_texts(0)), -1)
    for c, name in enumerate(lib.class_names):
        texts = [text for text, _ in lib.class_texts(c)]
        if texts:
            flips = session.answer(plan_edit(lib, [(name, text) for text in texts]))["flips"]
            n = len(flips["wrong_to_right"]) + len(flips["right_to_wrong"])
            if n > best[2]:
                best = (name, len(texts), n)
    store.engine.dispose()
    return best[0], best[1]


def full_page(driver, path: Path) -> None:
    """Grow the window to the page's height, capture, and keep the PNG under MAX_BYTES."""
    driver.set_window_size(WIDTH, 900)  # a short window first: a short page then measures short
    time.sleep(1.5)
    height = driver.execute_script(
        "return Math.max(...[document.body, document.querySelector('[data-testid=\"stMain\"]'),"
        " document.querySelector('[data-testid=\"stAppViewContainer\"]')]"
        ".filter(Boolean).map(e => e.scrollHeight));"
    )
    driver.set_window_size(WIDTH, min(int(height) + 120, 16000))
    time.sleep(2.5)
    driver.save_screenshot(str(path))
    shrink(path)
    driver.set_window_size(WIDTH, 2400)
    print(f"  {path} ({path.stat().st_size // 1000} KB)")


def what_if_shot(driver, path: Path) -> None:
    """The what-if section at the top of a 2400-pixel window (a long page's part worth seeing)."""
    from selenium.webdriver.common.by import By

    heading = driver.find_element(By.XPATH, '//*[contains(text(), "What-if: edit a class\'s descriptors")]')
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", heading)
    time.sleep(1.5)
    driver.save_screenshot(str(path))
    shrink(path)
    print(f"  {path} ({path.stat().st_size // 1000} KB)")


def shrink(path: Path) -> None:
    """Keep a PNG under MAX_BYTES: fewer colours first, then fewer pixels."""
    if path.stat().st_size > MAX_BYTES:
        with Image.open(path) as shot:
            small = shot.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        small.save(path, optimize=True)
    while path.stat().st_size > MAX_BYTES:
        with Image.open(path) as shot:
            shot = shot.convert("RGB")
            shot = shot.resize((shot.width * 4 // 5, shot.height * 4 // 5), Image.Resampling.LANCZOS)
            shot.quantize(colors=128).save(path, optimize=True)


QUIET = 1.5  # seconds without a change to the page that count as "the rerun is done"
WATCH = """
window.whyclipLast = performance.now();
if (!window.whyclipWatch) {
    window.whyclipWatch = new MutationObserver(() => { window.whyclipLast = performance.now(); });
    window.whyclipWatch.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}
return performance.now();
"""


def click_and_wait(driver, box) -> float:
    """Click ``box``; seconds from the click to the page's last change before it stays still
    for QUIET seconds (the rerun's output drawn), measured in the page by a MutationObserver."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    time.sleep(1.0)
    started = driver.execute_script(WATCH)
    box.click()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now, last = driver.execute_script("return [performance.now(), window.whyclipLast];")
        if now - last > QUIET * 1000 and not running(driver):
            break
    return round((last - started) / 1000, 2)


def what_if_box(driver, k: int):
    """The what-if's k-th descriptor checkbox (0: the first)."""
    from selenium.webdriver.common.by import By

    return driver.find_element(
        By.XPATH,
        '//*[contains(text(), "What-if: edit a class\'s descriptors")]'
        f"/following::*[@data-testid='stCheckbox'][{k + 1}]//label",
    )


def what_if_clicks(driver, n: int = 3, more: int = 7, edit: str | None = None) -> list[float]:
    """Untick (and tick again) the what-if's first descriptor, ``n`` times; seconds until the
    page is idle again. Then untick ``more`` descriptors, so that some predictions flip.
    ``edit``: the class to edit (default: the first)."""
    if edit is not None:
        choose(driver, "//*[@data-testid='stSelectbox'][.//label[normalize-space(.)='Class']]//input", edit)
        settle(driver, "Descriptor hygiene")
    times = []
    for _ in range(n):
        times.append(click_and_wait(driver, what_if_box(driver, 0)))
        time.sleep(1.0)
    from selenium.common.exceptions import NoSuchElementException

    for k in range(1, more + 1):
        try:
            click_and_wait(driver, what_if_box(driver, k))
        except NoSuchElementException:  # the class has fewer descriptors
            break
    return times


def maps_shot(driver, path: Path) -> None:
    """The Explain page with every kind of map: the occlusion check and the dense map ticked
    (the map section, then the contrast's two classes side by side), the whole page."""
    from selenium.webdriver.common.by import By

    for label in ("occlusion check", "dense map (ClearCLIP)"):
        box = driver.find_element(By.XPATH, f"//*[@data-testid='stCheckbox'][contains(., {label!r})]//label")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
        time.sleep(0.5)
        box.click()
        time.sleep(1.0)
        settle(driver, "Best-matching descriptors")
    settle(driver, "agreement with occlusion")
    full_page(driver, path)


def open_first_confusion(driver) -> None:
    """Expand the first "N x predicted A for B" expander, to show its evidence."""
    from selenium.common.exceptions import NoSuchElementException
    from selenium.webdriver.common.by import By

    try:
        summary = driver.find_element(By.XPATH, "//summary[contains(., ' x predicted ')]")
    except NoSuchElementException:
        return
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", summary)
    summary.click()
    time.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--cub", type=Path, default=None, help="also time the what-if on this many-class library")
    parser.add_argument("--per-class", type=int, default=2, help="noise images per class of --cub's eval run")
    args = parser.parse_args()
    out = args.outdir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="whyclip-screenshots-"))
    env = {
        **os.environ,
        "WHYCLIP_HOME": str(work / "home"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.pop("WHYCLIP_DB", None)
    try:
        print("building the store ...")
        build_store(work, env, args.cub, args.per_class)
        port = free_port()
        server = serve(env, port)
        driver = browser(work / "chrome")
        try:
            url = f"http://127.0.0.1:{port}"
            timings: dict[str, list[float]] = {}
            for name, path, marker in (
                ("explain", "", "Best-matching descriptors"),
                ("library", "library_page", "Library "),
                ("audit", "audit_page", "Descriptor hygiene"),
                ("generate", "generate_page", "Generate descriptors"),
            ):
                print(name)
                driver.get(f"{url}/{path}")
                settle(driver, marker, timeout=60 if name == "audit" else 120)
                if name == "audit" and "No evaluation runs" in body(driver):  # opened on another library
                    print("  the page opened on a library without runs: choosing 'demo'")
                    choose_library(driver, "demo")
                    settle(driver, marker)
                if name == "audit":
                    edit, n = flipping_class(work / "home", "demo", "drawn")
                    print(f"  what-if: unticking every descriptor of {edit!r}")
                    timings["what-if checkbox, seconds"] = what_if_clicks(driver, more=n - 1, edit=edit)
                    settle(driver, marker)
                    open_first_confusion(driver)
                full_page(driver, out / f"{name}.png")
                if name == "explain":
                    maps_shot(driver, out / "explain-maps.png")
            if args.cub is not None:
                print("timing the what-if on cub")
                driver.get(f"{url}/audit_page")
                settle(driver, "Descriptor hygiene", timeout=60)
                choose_library(driver, "cub")
                settle(driver, "Run noise", timeout=600)
                settle(driver, "Descriptor hygiene", timeout=600)
                timings["what-if checkbox on cub, seconds"] = what_if_clicks(driver, n=5, more=7)
                settle(driver, "Descriptor hygiene", timeout=600)
                what_if_shot(driver, out / "audit-whatif-cub.png")
            (out / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
            print(json.dumps(timings))
        finally:
            driver.quit()
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
