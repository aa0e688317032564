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


def realistic_summaries(view):
    """Top papers summarized as an LLM answers: a 40-word TL;DR and six answers of about 80 words."""
    from digest.records import Summary

    answer = " ".join(["The paper's answer to this question, as the model wrote it."] * 8)
    for item in view.top:
        tldr = " ".join((item.paper.abstract.split() * 2)[:40])
        item.summary = Summary(tldr=tldr, problem=answer, related_work=answer, method=answer,
                               experiments=answer, further_work=answer, summary=answer, model="test-llm")
    return view


def phone_layout(tmp_path, page_html: str) -> dict:
    """Where the full list starts, and the size of the like/dislike buttons, at 390 px."""
    page = tmp_path / "layout.html"
    page.write_text(f"""<!DOCTYPE html><html><head><meta charset="utf-8"><style>html,body{{margin:0}}
iframe{{border:0;display:block;width:390px;height:2000px}}</style></head><body>
<iframe id="phone" srcdoc="{html.escape(page_html, quote=True)}"></iframe><script>
window.addEventListener("load", function () {{
  var d = document.getElementById("phone").contentDocument;
  var heads = Array.from(d.querySelectorAll("h2")).map(function (h) {{ return [h.textContent, h.getBoundingClientRect().top]; }});
  var votes = Array.from(d.querySelectorAll("a.vote")).map(function (a) {{
    var r = a.getBoundingClientRect(); return [r.width, r.height]; }});
  document.body.setAttribute("data-measure", JSON.stringify({{heads: heads, votes: votes}}));
}});</script></body></html>""", encoding="utf-8")
    result = chromium(tmp_path, "--window-size=500,2000", "--dump-dom", page.as_uri())
    found = re.search(r'data-measure="([^"]+)"', result.stdout)
    assert found, f"chromium produced no measurement: {result.stderr[-500:]}"
    return json.loads(html.unescape(found[1]))


def test_on_a_390_px_phone_the_full_list_starts_within_6000_px_and_votes_are_tap_targets(tmp_path):
    view = realistic_summaries(day_view(dt.date(2026, 6, 22)))
    settings = settings_for('[feedback]\nlisten = "127.0.0.1:8425"\npublic_url = "https://digest.example.org"\n'
                            f'key = "{"ab" * 32}"\n')
    rendered = render.render_digest(view, settings)
    layout = phone_layout(tmp_path, rendered.email_body)
    starts = dict(layout["heads"])
    assert starts["Every other paper (480)"] <= 6_100, layout["heads"]  # 15 summaries, FAQ answers collapsed
    assert len(layout["votes"]) == 30 and all(w >= 44 and h >= 44 for w, h in layout["votes"]), layout["votes"]


def test_phone_screenshot_for_the_readme(tmp_path):
    settings = settings_for('[feedback]\nlisten = "127.0.0.1:8425"\npublic_url = "https://digest.example.org"\n'
                            f'key = "{"ab" * 32}"\n')
    digest_html = render.render_digest(realistic_summaries(day_view(dt.date(2026, 6, 23))), settings).email_body
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
