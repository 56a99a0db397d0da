"""A real browser: `whyclip ui` on loopback, headless Chromium driven over WebDriver,
an image uploaded, the explanation waited for, checked, and a screenshot saved."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image

from tests.helpers import ROOT
from tests.helpers.screenshots import browser

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT = ROOT / "test-artifacts" / "dashboard.png"
WHATIF_SCREENSHOT = SCREENSHOT.with_name("audit-whatif.png")
CALIBRATION_SCREENSHOT = SCREENSHOT.with_name("audit-calibration.png")
MAPS_SCREENSHOT = SCREENSHOT.with_name("dashboard-maps.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def served(tiny_model, tmp_path):
    """A store with one library (tiny CLIP) and `whyclip ui` serving it."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Chromium and ChromeDriver (Debian: apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="needs selenium (pip install selenium)")
    home = tmp_path / "home"
    lib = ROOT / "ui" / "demo" / "library.json"
    env = {**os.environ, "WHYCLIP_HOME": str(home)}
    cli = [sys.executable, "-m", "whyclip.ui.cli.main"]
    subprocess.run(
        [*cli, "ingest", str(lib), "-l", "demo", "-m", str(tiny_model)],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    port = free_port()
    server = subprocess.Popen(
        [*cli, "ui", "--port", str(port), "--library", "demo"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(
                        f"whyclip ui did not start: {server.stderr.read1().decode() if server.stderr else ''}"
                    ) from None
                time.sleep(0.5)
        yield url, home, tiny_model
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and anything it started
        server.wait(timeout=20)
        assert not _alive(port), "the dashboard kept serving after it was stopped"


def test_upload_an_image_and_see_the_explanation(served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from whyclip.ingest.encoder.clip_encoder import load_encoder
    from whyclip.ingest.services.explain import ExplainOptions, plan_explain
    from whyclip.ingest.services.maps import MapOptions
    from whyclip.store import Store

    url, home, model = served
    frog = tmp_path / "my_frog.png"
    Image.new("RGB", (120, 90), (30, 180, 40)).save(frog)
    # as the page explains: with maps, the image's vector from the decomposition's fp32 pass
    plan = plan_explain(Store.open(home, create=False), "demo", options=ExplainOptions(maps=MapOptions()))
    (exp,) = plan.with_encoder(load_encoder(str(model))).explain_files([frog])
    expected_class, expected_descriptor = exp.predicted, exp.classes[0].descriptors[0].descriptor

    driver = browser(tmp_path / "chrome")
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 90, poll_frequency=0.5)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "input[type='file']"))
        upload.send_keys(str(frog))
        wait.until(
            lambda d: (
                "my_frog.png" in d.find_element(By.TAG_NAME, "body").text
                and f"Predicted: {expected_class}" in d.find_element(By.TAG_NAME, "body").text
            )
        )
        wait.until(lambda d: expected_descriptor in d.find_element(By.TAG_NAME, "body").text)
        time.sleep(1.5)  # let the charts draw before the screenshot
        SCREENSHOT.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
        body = driver.find_element(By.TAG_NAME, "body").text
        assert f"Why {expected_class}: its descriptors, ranked" in body
        assert "descriptor by descriptor" in body
        # the map section (issue 22): the predicted class's best descriptor mapped, no click needed
        assert "Where in the image: each descriptor's map" in body
        assert f"{expected_descriptor} ({expected_class}): S " in body  # the picked map's line
        exact = wait.until(
            lambda d: d.find_elements(
                By.XPATH,
                "//*[@data-testid='stImageContainer'][.//*[@data-testid='stImageCaption']"
                "[starts-with(normalize-space(.), 'exact, last')]]//img",
            )
        )
        assert len(exact) == 3  # the picked descriptor's, then the contrast's two classes'
        assert all(
            driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth;", i) for i in exact
        )
        assert driver.execute_script("return arguments[0].naturalWidth;", exact[0]) >= 224
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", exact[0])
        time.sleep(1.0)
        driver.save_screenshot(str(MAPS_SCREENSHOT))
        print(f"maps screenshot: {MAPS_SCREENSHOT}")
    finally:
        driver.quit()
    assert SCREENSHOT.stat().st_size > 10_000


def test_the_audit_page_shows_a_run(served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from whyclip.store import Store
    from whyclip.store.analysis.whatif import WhatIf, plan_edit
    from whyclip.store.db.runs import find_run, load_run
    from whyclip.ui.demo.samples import SAMPLE_CLASSES, draw_samples

    url, home, _model = served
    data = tmp_path / "samples"
    for path in draw_samples(tmp_path / "drawn"):
        (data / SAMPLE_CLASSES[path.name]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / SAMPLE_CLASSES[path.name] / path.name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "whyclip.ui.cli.main",
            "--home",
            str(home),
            "eval",
            str(data),
            "-l",
            "demo",
            "--name",
            "drawn",
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    driver = browser(tmp_path / "chrome")
    try:
        driver.get(f"{url}/audit_page")
        wait = WebDriverWait(driver, 90, poll_frequency=0.5)
        wait.until(lambda d: "Random-word control" in d.find_element(By.TAG_NAME, "body").text)
        wait.until(lambda d: "Descriptor hygiene" in d.find_element(By.TAG_NAME, "body").text)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Audit of demo" in body
        assert "Run drawn: 6 images" in body.replace("**", "")
        time.sleep(1.5)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT.with_name("audit.png")))

        # the calibration section: ECE and the reliability diagram (no calibration stored yet:
        # the library's own probabilities, and how to fit one)
        heading = driver.find_element(By.XPATH, "//h3[contains(., 'Calibration')] | //h2[contains(., 'Calibration')]")
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", heading)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "ECE" in body
        assert "whyclip calibrate --library demo" in body
        time.sleep(1.0)
        driver.save_screenshot(str(CALIBRATION_SCREENSHOT))
        print(f"calibration screenshot: {CALIBRATION_SCREENSHOT}")

        # the what-if: untick the first class's first descriptor; the answer updates in place
        lib = Store.open(home, create=False).load("demo")
        first = lib.class_texts(0)[0][0]
        session = WhatIf(
            load_run(
                Store.open(home, create=False).engine, find_run(Store.open(home, create=False).engine, "demo", "drawn")
            ),
            lib,
        )
        want = session.answer(plan_edit(lib, [(lib.class_names[0], first)]))
        heading = wait.until(
            lambda d: d.find_element(By.XPATH, '//*[contains(text(), "What-if: edit a class\'s descriptors")]')
        )
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", heading)
        try:
            box = wait.until(
                lambda d: d.find_element(By.XPATH, f"//*[@data-testid='stCheckbox'][.//*[text()={first!r}]]//label")
            )
        except Exception:
            (tmp_path / "page.html").write_text(driver.page_source)
            print(f"page source: {tmp_path / 'page.html'}")
            raise
        box.click()
        wait.until(lambda d: want["statement"] in d.find_element(By.TAG_NAME, "body").text)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "top-1 before" in body
        assert "top-1 after" in body
        assert "Save as new version" in body
        time.sleep(1.0)
        driver.execute_script(
            "arguments[0].scrollIntoView({block: 'start'});",
            driver.find_element(By.XPATH, '//*[contains(text(), "What-if: edit a class\'s descriptors")]'),
        )
        time.sleep(0.5)
        driver.save_screenshot(str(WHATIF_SCREENSHOT))
        print(f"what-if screenshot: {WHATIF_SCREENSHOT}")
    finally:
        driver.quit()
    assert WHATIF_SCREENSHOT.stat().st_size > 10_000
