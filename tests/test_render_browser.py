"""The HTML digest of a real day in headless Chromium at phone width: no horizontal scrolling, and the
screenshot the README shows (docs/digest-phone.png, rewritten when DIGEST_UPDATE_SCREENSHOT=1).

Headless Chromium will not make a window narrower than 500 px, so the digest is shown in a 400 px wide
iframe (srcdoc, so the page's script may read the frame's layout) and measured there; the iframe is zoomed
1.25x to fill the 500 px screenshot. Media queries inside the frame see a 400 px viewport.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from test_render import day_view, settings_for

from digest import render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PHONE_WIDTH = 400
SCREENSHOT = ROOT / "docs" / "digest-phone.png"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--disable-features=MediaRouter,OptimizationHints", "--virtual-time-budget=5000"]


def phone_page(digest_html: str, height: int) -> str:
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><style>
html, body {{ margin: 0; padding: 0; }}
iframe {{ border: 0; display: block; width: {PHONE_WIDTH}px; height: {height}px; zoom: 1.25; }}
</style></head><body><iframe id="phone" srcdoc="{html.escape(digest_html, quote=True)}"></iframe>
<script>
window.addEventListener("load", function () {{
  var frame = document.getElementById("phone");
  var root = frame.contentDocument.documentElement;
  document.body.setAttribute("data-measure", JSON.stringify(
    {{scrollWidth: root.scrollWidth, viewport: frame.contentWindow.innerWidth}}));
}});
</script></body></html>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-{len(list(tmp_path.glob('chromium-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def digest_html():
    """A real day (2026-06-23) with a long unbreakable title and LaTeX, the worst case for wrapping."""
    view = day_view(dt.date(2026, 6, 23))
    view.items[1].paper.title = "Scaling " + "SelfSupervised" * 12 + " $\\mathcal{O}(n^{2})\\to\\mathcal{O}(n\\log n)$"
    view.items[20].paper.title = "https://example.org/" + "a" * 150
    return render.render_digest(view, settings_for()).html


def test_no_horizontal_overflow_at_phone_width(tmp_path, digest_html):
    page = tmp_path / "phone.html"
    page.write_text(phone_page(digest_html, 900), encoding="utf-8")
    result = chromium(tmp_path, "--window-size=500,900", "--dump-dom", page.as_uri())
    found = re.search(r'data-measure="([^"]+)"', result.stdout)
    assert found, f"chromium produced no measurement: {result.stderr[-500:]}"
    measure = json.loads(html.unescape(found[1]))
    assert measure["viewport"] == PHONE_WIDTH
    assert measure["scrollWidth"] <= PHONE_WIDTH


def test_phone_screenshot_for_the_readme(tmp_path):
    digest_html = render.render_digest(day_view(dt.date(2026, 6, 23)), settings_for()).html
    page = tmp_path / "shot.html"
    page.write_text(phone_page(digest_html, 1400), encoding="utf-8")
    shot = tmp_path / "phone.png"
    chromium(tmp_path, "--window-size=500,1750", f"--screenshot={shot}", page.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (500, 1750)
    if os.environ.get("DIGEST_UPDATE_SCREENSHOT"):  # a test run leaves the checkout as it found it
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(data)
