"""`digest demo` (make demo): the real pipeline against loopback arXiv, LLM and SMTP, offline."""

from __future__ import annotations

import email
import email.policy
import re
import shlex
import subprocess

import pytest
from world import digest_process

from digest import demo


@pytest.mark.slow
def test_demo_ends_with_a_digest_to_open_and_a_history_to_query(tmp_path):
    folder = tmp_path / "demo"
    process = digest_process(["demo", "--dir", str(folder)], timeout=600)
    assert process.returncode == 0, process.stderr
    ids = re.findall(r"<id>oai:arXiv.org:(\d{4}\.\d{5})v\d+</id>", demo.feed_bytes().decode())
    assert len(ids) == 136
    lines = process.stdout.splitlines()
    assert "2026-06-30: sent to me (136 papers, 10 summarized)" in lines
    page = folder / "digests" / "me" / "2026-06-30.html"
    mail = folder / "mail" / "001.eml"
    assert f"The digest as a page:   {page}" in lines
    assert f"The email it sent:      {mail}" in lines
    html = page.read_text()
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()
    assert [i for i in ids if i not in html or i not in text] == []  # rank, never drop: all 136, both ways
    assert "[demo stub]" in text  # the LLM stub's summaries reached the email
    # A newcomer's first digest shows the like/dislike buttons, signed with the demo's own key.
    body = message.get_body(("html",)).get_content()
    assert body.count('class="vote"') >= 30 and "/feedback/" in body
    assert (folder / "feedback.key").stat().st_mode & 0o777 == 0o600
    # The three commands it suggests work as printed.
    commands = [line.strip() for line in lines[lines.index("Try the history it kept:") + 1:]]
    assert len(commands) == 3
    for command in commands:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr)
    assert "Hallucination" in subprocess.run(shlex.split(commands[0]), capture_output=True, text=True).stdout


def test_the_llm_stub_answers_from_the_abstract_and_says_it_is_a_stub():
    answer = demo.stub_summary("Title: x\nAbstract: First. Second! Third? Fourth.\n")
    assert answer["tldr"] == "[demo stub] First."
    assert answer["method"] == "[demo stub] Third?"
    assert answer["further_work"] == "[demo stub] Fourth."
