"""The dashboard in a real browser: ``streamlit run dashboard`` + Debian's headless Chromium.

Playwright drives ``/usr/bin/chromium`` (never a browser that Playwright downloads). The server
reads the fixture studies (``$BNPROBE_RESULTS_DIR``) and a fixture report
(``$BNPROBE_REPORT_DIR``); every page is visited, must show no exception and no error box, and
must draw its main chart. Screenshots go to ``$BNPROBE_SCREENSHOTS`` (or a temporary folder).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
CHART = '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg'
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'

#: url path -> (page title, number of charts that must be drawn, seconds to wait for them).
PAGES = {
    "overview": ("Overview", 2, 120),
    "block_explorer": ("Block explorer", 4, 120),
    "topology": ("Topology", 3, 120),
    "embeddings": ("Embeddings", 2, 300),
    "spiral_lab": ("Spiral lab", 1, 180),
    "reports": ("Reports", 2, 120),
    "keeps": ("What each design keeps", 1, 400),
    "claims": ("Claims of the notes", 1, 120),
}
#: the page with ``default=True`` in dashboard/streamlit_app.py
DEFAULT_PAGE = "overview"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"streamlit did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("BNPROBE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def server(shipped, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``streamlit run dashboard`` from the repository root on a free port; always stopped."""
    from dashboard.views.reports import REPORT_ENV, REPORT_ROOT_ENV
    from dashboard.state import RESULTS_ENV

    work = tmp_path_factory.mktemp("server")
    report = work / "report"
    report.mkdir()
    shipped.metrics.to_parquet(report / "metrics.parquet", index=False)
    port = _free_port()
    env = {**os.environ, RESULTS_ENV: str(shipped.results_dir), REPORT_ENV: str(report), REPORT_ROOT_ENV: str(work),
           "BNPROBE_CACHE": str(work / "cache")}
    log = work / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _open(browser, url: str):
    # Tall: Streamlit scrolls inside the page, so a full-page screenshot is the viewport.
    page = browser.new_page(viewport={"width": 1440, "height": 2200})
    page.set_default_timeout(60_000)
    page.goto(url)
    return page


def _settle(page, timeout_s: float) -> None:
    """Wait until the script has finished running (and a moment for the charts to paint)."""
    page.wait_for_selector(IDLE, timeout=timeout_s * 1000)
    page.wait_for_timeout(1500)
    page.wait_for_selector(IDLE, timeout=timeout_s * 1000)


@pytest.mark.parametrize("path", list(PAGES))
def test_page_draws_its_charts_without_errors(server: str, browser, screenshots: Path, path: str) -> None:
    title, n_charts, timeout_s = PAGES[path]
    # the default page is served at the root; Streamlit answers its url_path with "Page not found"
    page = _open(browser, f"{server}/" if path == DEFAULT_PAGE else f"{server}/{path}")
    try:
        page.get_by_role("heading", name=title).first.wait_for(timeout=timeout_s * 1000)
        # Stop waiting as soon as an error box appears: the assertion below then shows it.
        page.wait_for_function(
            "([sel, n, err]) => document.querySelectorAll(sel).length >= n || document.querySelector(err)",
            arg=[CHART, n_charts, ERRORS], timeout=timeout_s * 1000)
        _settle(page, timeout_s)
        page.screenshot(path=str(screenshots / f"{path}.png"), full_page=True)
        errors = page.locator(ERRORS)
        assert errors.count() == 0, errors.first.inner_text()
        assert page.get_by_text("Page not found").count() == 0
        drawn = page.locator(CHART)
        assert drawn.count() >= n_charts
        box = drawn.first.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50
    finally:
        page.close()


def test_bad_upload_gives_a_readable_message(server: str, browser, screenshots: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a checkpoint")
    page = _open(browser, f"{server}/probe_checkpoint")
    try:
        page.get_by_role("heading", name="Probe a checkpoint").first.wait_for()
        _settle(page, 60)
        page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(bad))
        page.get_by_text("broken.pt").first.wait_for()
        _settle(page, 60)
        page.get_by_role("button", name="Run the study").click()
        message = page.locator('[data-testid="stAlertContentError"]').first
        message.wait_for(timeout=60_000)
        _settle(page, 60)
        page.screenshot(path=str(screenshots / "probe_checkpoint.png"), full_page=True)
        assert "Could not load the checkpoint" in message.inner_text()
        assert "broken.pt" in message.inner_text()
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        page.close()
