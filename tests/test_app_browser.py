"""The demo served for real on 127.0.0.1: a headless-Chromium session, and a bounded load test.

The browser test drives Debian's ``chromium`` through Playwright (never Playwright's own browser
download) and is skipped, saying why, where either is missing; ``scripts/test.sh`` installs both
where it can. The load test needs no browser: 20 concurrent API requests, all valid, memory flat.
"""
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints"
PROMPT = "a large red circle at the top left"
N = 4
SIDE = 2 * (32 * 4 + 2) + 2  # the live grid of 4 samples: 2x2 cells of 32 px shown 4x, 2-px gaps
pytestmark = pytest.mark.skipif(not (SHIPPED / "shapes-var" / "config.json").is_file(), reason="needs the shipped checkpoints")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mmgen demo`` in a subprocess; yields (url, pid); stopped at the end."""
    port = _free_port()
    log = tmp_path_factory.mktemp("demo") / "server.log"
    # Two malloc arenas: glibc otherwise gives threads new arenas as gradio's pool grows and shrinks,
    # which moves RSS by +-40 MB between identical bursts and hides (or fakes) a real leak.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "MALLOC_ARENA_MAX": "2"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mmgen.cli", "demo", "--port", str(port), "--models-dir", str(SHIPPED), "--concurrency", "2"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the demo exited early:\n{log.read_text()}")
            try:
                if urlopen(url, timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"the demo was not serving after 120 s:\n{log.read_text()}")
            time.sleep(0.5)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _chromium() -> str | None:
    return os.environ.get("MMGEN_CHROMIUM") or next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


def _check_image(data: bytes, size: tuple[int, int]) -> None:
    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert img.shape[:2] == size[::-1], f"image is {img.shape[1]}x{img.shape[0]}, expected {size[0]}x{size[1]}"
    assert img.std() > 5, "the image is blank"


def test_browser_generates_and_shows_errors(request):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("pip playwright is not installed (bash scripts/test.sh installs it)")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no system Chromium (apt-get install -y chromium; bash scripts/test.sh does it when root)")
    url, _ = request.getfixturevalue("server")  # started only once there is a browser to drive it
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            page.goto(url)
            page.locator("#t2i-prompt textarea").fill(PROMPT)
            page.locator("#t2i-n input").fill(str(N))
            page.locator("#t2i-generate").click()
            expect(page.locator("#t2i-status")).to_contain_text("done", timeout=45_000)
            src = page.locator("#t2i-result img").get_attribute("src")
            _check_image(page.request.get(src).body(), (SIDE, SIDE))
            expect(page.locator("#t2i-gallery img")).to_have_count(N)
            # an invalid value: a clear message in the page, and the page keeps working
            page.locator("#t2i-top-p input").fill("1.5")
            page.locator("#t2i-generate").click()
            expect(page.get_by_text("top-p must be in (0, 1]").first).to_be_visible(timeout=20_000)
            page.locator("#t2i-top-p input").fill("1")
            page.locator("#t2i-prompt textarea").fill("")
            page.locator("#t2i-generate").click()
            expect(page.get_by_text("the prompt is empty").first).to_be_visible(timeout=20_000)
        finally:
            browser.close()


def _rss_mb(pid: int) -> float | None:
    status = Path(f"/proc/{pid}/status")
    return int(re.search(r"VmRSS:\s+(\d+)", status.read_text()).group(1)) / 1024 if status.exists() else None


def test_twenty_concurrent_requests_complete_with_flat_memory(server):
    from gradio_client import Client

    url, pid = server
    client = Client(url, verbose=False, download_files=False)  # fetch only what is checked

    def burst(seed0: int, k: int = 20) -> list:
        args = lambda seed: ("shapes-var", PROMPT, "", 0, seed, N, 1.5, "constant", 0.6, 0, 1.0, 25, 0, 8)  # noqa: E731
        jobs = [client.submit(*args(seed0 + i), api_name="/generate_image") for i in range(k)]
        return [j.result(timeout=120) for j in jobs]

    # Warm-up with the same load as the measured burst: the first one fills gradio's caches and the
    # allocator's pools once; a leak grows on every burst.
    burst(0)
    before = _rss_mb(pid)
    peak = [before or 0.0]
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(burst, 100)
        while not running.done():  # the page stays responsive while the queue is busy
            t0 = time.perf_counter()
            assert urlopen(url, timeout=10).status == 200 and time.perf_counter() - t0 < 5
            peak[0] = max(peak[0], _rss_mb(pid) or 0.0)
            time.sleep(0.3)
        results = running.result()
    after = _rss_mb(pid)
    assert len(results) == 20
    for i, (status, live, gallery, settings, _file) in enumerate(results):
        assert status.startswith("**done") and settings["sampler"]["seed"] == 100 + i and len(gallery) == N
        _check_image(urlopen(live["url"], timeout=10).read(), (SIDE, SIDE))
    if before is not None:
        print(f"server RSS: {before:.0f} MB before, {after:.0f} MB after, peak {peak[0]:.0f} MB")
        assert after - before < 64, f"server memory grew from {before:.0f} to {after:.0f} MB over 20 requests after a warm-up of 20"
