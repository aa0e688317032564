"""The manual cannot drift: the generated reference matches the code, every link lands, README stays a front door.

docs/cli.md and docs/config.md are written by cog from the code (docs/reference.py); these tests regenerate
them in memory and fail, naming the command that regenerates them, when a command's help or a setting changed
without them (issue 25).
"""

from __future__ import annotations

import difflib
import re

import pytest
from cogapp import Cog

from conftest import ROOT

DOCS = ROOT / "docs"
GENERATED = ["cli.md", "config.md"]
REGENERATE = "make docs  (or: .venv/bin/cog -r -I docs docs/cli.md docs/config.md)"
README_MOST_LINES = 260
# [text](target) in Markdown, and src="target" in the HTML Markdown allows (README's screenshot).
LINK = re.compile(r"\]\(([^)\s]+)\)|\bsrc=\"([^\"]+)\"")


def regenerated(name: str, monkeypatch) -> str:
    monkeypatch.syspath_prepend(str(DOCS))
    path = DOCS / name
    return Cog().process_string(path.read_text(encoding="utf-8"), str(path))


@pytest.mark.parametrize("name", GENERATED)
def test_the_generated_reference_is_what_the_code_says_today(name, monkeypatch):
    written = (DOCS / name).read_text(encoding="utf-8")
    fresh = regenerated(name, monkeypatch)
    diff = "".join(list(difflib.unified_diff(written.splitlines(True), fresh.splitlines(True),
                                             f"docs/{name}", "regenerated", n=1))[:40])
    assert fresh == written, f"docs/{name} is out of date; regenerate it with: {REGENERATE}\n{diff}"


def test_the_cli_reference_has_every_visible_command_and_no_hidden_one():
    from digest.cli import cli

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name, command in cli.commands.items():
        assert (f"### digest {name}\n" in text) is not command.hidden, name


def test_the_config_reference_shows_each_secret_with_its_env_and_file_spellings():
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    for table, key in (("llm", "api_key"), ("email", "password"), ("chat.NAME", "url"), ("feedback", "key"),
                       ("feedback.imap", "password")):
        section = text.split(f"## `[{table}]`\n", 1)[1].split("\n## ", 1)[0]
        assert f"| `{key}` / `{key}_env` / `{key}_file` |" in section, table


def links(path) -> list[str]:
    """Every relative link of a Markdown file (``file#anchor``, or ``#anchor`` within it); code is not links."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    found = [a or b for a, b in LINK.findall(text)]
    return [target for target in found if not re.match(r"[a-z]+:", target)]


def anchors(path) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
            for title in re.findall(r"^#+ (.+)$", text, re.M)}


def broken_links(page) -> list[str]:
    broken = []
    for target in links(page):
        file, _, anchor = target.partition("#")
        path = (page.parent / file) if file else page
        if not path.exists():
            broken.append(f"{page.name}: {target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{page.name}: {target}: no such heading in {path.name}")
    return broken


def test_every_relative_link_in_readme_and_docs_points_at_a_file_and_heading_that_exist():
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    assert len(pages) > 5
    assert [problem for page in pages for problem in broken_links(page)] == []


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# The model's top\n[ok](page.md#the-models-top) [gone](gone.md#x) [web](https://x.org) "
                    "[here](#nowhere)\n```\n[code](no.md)\n```\n")
    assert broken_links(page) == ["page.md: gone.md#x: no such file",
                                  "page.md: #nowhere: no such heading in page.md"]


def test_readme_stays_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MOST_LINES, f"README.md has {len(lines)} lines: move the detail into docs/"
    assert lines[2:6] == ["```sh",
                          "make run     # set up .venv (CPU torch), write a starter config if there is none, and "
                          "run today's digest",
                          "make test    # set up .venv and run the test suite", "```"]


def test_readmes_minimal_configuration_is_valid():
    from digest.config import parse_settings

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## A minimal configuration\n.*?```toml\n(.*?)```", readme, re.S)
    assert block, "README lost its minimal configuration"
    settings = parse_settings(block[1], "README.md", environ={}, resolve=False)
    assert settings.profiles["me"].email_to and settings.llm.enabled
