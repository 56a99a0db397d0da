"""A hostile or unlucky client against ``whyclip serve``'s memory (issue 20, item 1), on a
real server process on loopback with the tiny CLIP: the worst explain request at the
default limits, alone and sixteen at once, measured as the server's peak resident memory
over its idle level. Images of tens of megapixels that compress to a few KB (1-bit and
translucent PNGs), which every image path decodes to full-size RGB."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.server import serving
from tests.helpers.service import FROG
from whyclip.ui.api.settings import Limits

pytestmark = pytest.mark.slow
GB = 1 << 30
LIMITS = Limits()  # the defaults a plain `whyclip serve` runs with
SIDE = (6000, 6600)  # 39.6 Mpx, just under the per-image limit
assert SIDE[0] * SIDE[1] <= LIMITS.max_image_pixels


def png(mode: str) -> bytes:
    colour = {"1": 1, "RGBA": (40, 160, 60, 128)}[mode]
    out = io.BytesIO()
    Image.new(mode, SIDE, colour).save(out, "PNG", optimize=True)
    return out.getvalue()


def worst_request() -> list[tuple[str, bytes]]:
    """As many near-limit images as one request may carry (the per-request pixel total),
    translucent ones first: compositing them onto white is the costliest path."""
    n = LIMITS.max_request_pixels // (SIDE[0] * SIDE[1])
    kinds = [png("RGBA"), png("1")]
    return [(f"big{i}.png", kinds[i % 2]) for i in range(n)]


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM back to the current RSS


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    from tests.helpers.cli import invoke

    home = tmp_path_factory.mktemp("memory") / "home"
    library = tmp_path_factory.mktemp("lib") / "frogs.json"
    library.write_text('{"tree frog": ["bright green skin", "big round eyes"], "banana": ["yellow peel"]}')
    done = invoke("ingest", library, "--library", "frogs", "--model", tiny_model, home=home)
    assert done.returncode == 0, done.stderr
    with serving(home, tiny_model) as (proc, client):
        warm = client.post("/v1/explain", files=[("image", ("f.png", FROG))], data={"library": "frogs"})
        assert warm.status_code == 200, warm.text
        try:
            reset_peak(proc.pid)
        except OSError as exc:
            pytest.skip(f"cannot reset the server's peak RSS ({exc}): Linux's /proc/PID/clear_refs is needed")
        yield proc, client


def explain(client, files) -> int:
    r = client.post("/v1/explain", files=[("image", f) for f in files], data={"library": "frogs"}, timeout=600)
    if r.status_code == 200:
        assert len(r.json()["explanations"]) == len(files)
    else:  # the one other answer allowed: busy, retry (never a timeout, never an error)
        assert r.status_code == 503, r.text[:300]
        assert r.headers["retry-after"] == "1"
    return r.status_code


def peak_over_idle(proc, run) -> float:
    idle = rss_kb(proc.pid, "VmRSS")
    reset_peak(proc.pid)
    run()
    return (rss_kb(proc.pid, "VmHWM") - idle) / (GB / 1024)


def test_the_worst_request_raises_the_server_by_at_most_1_5_gb(server):
    proc, client = server
    files = worst_request()
    assert len(files) >= 3
    answers: list[int] = []
    over = peak_over_idle(proc, lambda: answers.append(explain(client, files)))
    assert answers == [200]
    print(f"worst request ({len(files)} images of {SIDE[0]}x{SIDE[1]}): peak RSS over idle {over:.2f} GB")
    assert over <= 1.5


def test_sixteen_worst_requests_at_once_raise_it_by_at_most_3_gb(server):
    proc, client = server
    files = worst_request()
    answers: list[int | BaseException] = []

    def one():
        try:
            answers.append(explain(client, files))
        except BaseException as exc:  # collected: every thread's outcome is checked below
            answers.append(exc)

    def sixteen():
        threads = [threading.Thread(target=one) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(900)

    over = peak_over_idle(proc, sixteen)
    print(f"16 worst requests at once: peak RSS over idle {over:.2f} GB; answers {sorted(answers)}")
    assert len(answers) == 16
    assert set(answers) <= {200, 503}, answers  # answered, or told to retry: no 504, no 500
    assert 200 in answers
    assert over <= 3.0
