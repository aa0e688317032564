"""Rendering and sending a digest as it grows: 50 papers (the baseline), a real 500-paper day, and a
1,500-paper catch-up, all from the real listing in tests/data/.

  render     render.render_digest: HTML, text, Markdown and JSON
  email      build the MIME message and send it over loopback SMTP (aiosmtpd, STARTTLS + AUTH, test CA)
  size       the message as sent (quoted-printable, multipart/alternative)

Each figure is also given as a ratio to the 50-paper baseline measured in the same run, so a
non-linear step shows as a ratio far above the size ratio.

    .venv/bin/python bench/bench_deliver.py
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from smtp_server import SMTPServer  # noqa: E402
from test_render import all_papers, announced, make_view, settings_for  # noqa: E402

from digest import render  # noqa: E402
from digest.config import parse_settings  # noqa: E402
from digest.deliver import email as email_channel  # noqa: E402
from digest.storage.ledger import Digest

REPEATS = 5


class _Claim:
    target = "reader@example.org"

    def sent(self):
        pass


def timed(fn, repeats: int = REPEATS) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    big_day = announced(dt.date(2026, 6, 22))
    cases = [("50 papers (baseline)", all_papers()[:50]), (f"{len(big_day)} papers (2026-06-22)", big_day),
             ("1,500 papers (catch-up)", all_papers()[:1500])]
    rows = []
    with SMTPServer(users={"bench": "bench-password"}) as smtp:
        settings = parse_settings(smtp.settings_toml("bench", "bench-password")
                                  + '[profiles.me]\ninterests = ["x"]\nemail_to = ["reader@example.org"]\n')
        for label, papers in cases:
            view = make_view(papers)
            rendered = render.render_digest(view, settings_for())
            render_s = timed(lambda: render.render_digest(view, settings_for()))
            digest = Digest(1, "me", dt.date(2026, 6, 22), (dt.date(2026, 6, 22),), len(papers), 0, rendered.subject)
            email_s = timed(lambda: email_channel.send_email(_Claim(), rendered, digest, settings))
            size = len(smtp.messages[-1].raw)
            rows.append((label, len(papers), render_s, email_s, size))
    base = rows[0]
    print(f"{'digest':<26}{'render':>10}{'x base':>8}{'email':>10}{'x base':>8}{'size':>10}{'x base':>8}"
          f"{'papers x':>10}")
    for label, n, render_s, email_s, size in rows:
        print(f"{label:<26}{render_s * 1000:>8.1f}ms{render_s / base[2]:>8.1f}{email_s * 1000:>8.1f}ms"
              f"{email_s / base[3]:>8.1f}{size / 1e6:>8.2f}MB{size / base[4]:>8.1f}{n / base[1]:>10.1f}")


if __name__ == "__main__":
    main()
