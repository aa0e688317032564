"""Issue 26: each chat service's limits as data. For every apprise service docs/delivery.md's chat table lists, a
500-paper digest of real records is planned as digest would send it (apprise's own plugin object, built
from a URL of that service; nothing is sent, no network): every message fits the service's ``body_maxlen``
(Matrix: the whole event, as apprise builds it, under 64 KiB), every paper reaches the reader, in order,
and docs/delivery.md says what that reader gets."""

from __future__ import annotations

import json
import re

import apprise
import pytest
from apprise.conversion import html_to_text, markdown_to_html
from conftest import ROOT
from test_render import all_papers, html_ids, make_view, settings_for, tagged_ids

from digest import render
from digest.deliver import chat

# service (as docs/delivery.md's table names it) -> a URL of that service, the shape apprise parses (the tokens are
# apprise's own documentation examples)
SERVICES = {
    "Slack (bot token)": "slack://xoxb-1234-1234-4ddbc191d40ee098cbaae6f3523ada2d/#digest",
    "Slack (webhook)": "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#digest",
    "Discord": "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js",
    "Telegram": "tgram://123456789:abcdefg_hijklmnop/12315544/",
    "Mattermost": "mmosts://mattermost.example.org/3ccdd113474722377935511fc85d3dd4",
    "ntfy": "ntfys://ntfy.example.org/digest",
    "Matrix": "matrixs://bot:password@matrix.example.org/%23digest:example.org",
    "JSON webhook": "jsons://hooks.example.org/digest",
}
MATRIX_EVENT_BYTES = 65536 - 4000  # the spec's limit, less what the homeserver adds (apprise's own margin)


@pytest.fixture(scope="module")
def rendered():
    papers = all_papers()[:500]
    return render.render_digest(make_view(papers), settings_for()), [p.id for p in papers]


def readme_rows() -> dict[str, list[str]]:
    text = (ROOT / "docs" / "delivery.md").read_text()
    table = text[text.index("| service | apprise URL |"):].split("\n\n", 1)[0]
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in table.splitlines()[2:])}


@pytest.mark.parametrize("service", SERVICES)
def test_every_message_fits_the_service_and_every_one_of_500_papers_reaches_the_reader(service, rendered):
    digest, ids = rendered
    plugin = apprise.Apprise.instantiate(SERVICES[service])
    for attach in (True, False):
        messages, with_file = chat.plan_messages(plugin, digest.markdown, attach, len(ids), "digest.html")
        assert all(len(m.encode()) <= plugin.body_maxlen for m in messages)
        if plugin.service_name == "Matrix":  # one event holds the text and its HTML
            for m in messages:
                event = {"msgtype": "m.text", "body": html_to_text(m), "format": "org.matrix.custom.html",
                         "formatted_body": markdown_to_html(m, extensions=())}
                assert len(json.dumps(event, ensure_ascii=False).encode()) < MATRIX_EVENT_BYTES
        if with_file:
            assert len(messages) == 1 and "All 500 papers, with every summary, are in the attached" in messages[0]
            assert html_ids(digest.html) == ids
        else:
            assert tagged_ids("\n".join(messages)) == ids  # in order, none cut in two


@pytest.mark.parametrize("service", SERVICES)
def test_readme_says_what_each_services_reader_gets(service, rendered):
    digest, ids = rendered
    plugin = apprise.Apprise.instantiate(SERVICES[service])
    row = readme_rows()[service]
    limit = chat.message_limit(plugin)
    split = len(chat.plan_messages(plugin, digest.markdown, False, len(ids), "digest.html")[0])
    takes_file = chat.plan_messages(plugin, digest.markdown, True, len(ids), "digest.html")[1]
    assert row[1].startswith(f"`{SERVICES[service].split(':')[0]}://")
    assert row[2] == f"{limit:,} bytes"
    assert ("the top section, then the HTML file" if takes_file else f"{split} messages") in row[3]
    assert row[4] == f"{split} messages"
    assert re.fullmatch(r"[\d,]+ bytes", row[2])


def test_a_line_longer_than_a_message_is_cut_between_words_in_bytes_never_inside_a_character():
    line = " ".join(["µ-Transformer 𝜇Match `arXiv:2606.21605`"] * 400)  # 2- and 4-byte characters
    parts = chat.split_message(line, 1000)
    assert all(len(p.encode()) <= 1000 for p in parts) and len(parts) > 10
    assert "".join(parts) == line
    assert tagged_ids("\n".join(parts)) == ["2606.21605"] * 400  # no id cut in two
