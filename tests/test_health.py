"""Issue 19: digest speaks up. `digest status --check` tells a monitor ok (0), degraded (1) or failing (2)
with the reasons, each state reached through a whole run against real servers on loopback."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from llm_server import LLMServer, error
from loopback import Reply
from world import DAY, day_feed, make_due

from digest.cli import cli

pytestmark = pytest.mark.slow




def check(world) -> tuple[int, str, dict]:
    """`digest status --check` and `digest status --check --json`, as a monitor runs them."""
    runner = CliRunner()
    text = runner.invoke(cli, ["--config", world.settings.source, "status", "--check"])
    data = runner.invoke(cli, ["--config", world.settings.source, "status", "--check", "--json"])
    assert text.exit_code == data.exit_code
    return text.exit_code, text.stdout, json.loads(data.stdout)


def test_a_digest_that_went_out_is_ok_and_exits_0(world):
    world.configure()
    db, result = world.run()
    assert result.status == "sent", result.error
    code, text, health = check(world)
    assert (code, text, health) == (0, "Health:      ok\n", {"state": "ok", "reasons": []})
    status = json.loads(CliRunner().invoke(cli, ["--config", world.settings.source, "status", "--json"]).stdout)
    assert status["health"] == health


def test_a_delivery_waiting_for_a_retry_is_degraded_and_exits_1_until_it_goes_out(world, smtp):
    smtp.fail_data("451 4.3.0 temporary failure", times=1)
    world.configure()
    db, result = world.run()
    assert result.status == "pending"
    code, text, health = check(world)
    assert code == 1 and health["state"] == "degraded"
    assert health["reasons"] == [f"1 delivery waiting for a retry, the first {DAY} email to reader@example.org: "
                                 f"127.0.0.1:{smtp.port}: message refused: 451 4.3.0 temporary failure"]
    assert text.startswith("Health:      degraded\n             1 delivery waiting")  # a long reason wraps
    assert " ".join(text.split()) == "Health: degraded " + " ".join(health["reasons"][0].split())
    make_due(db)
    world.run()
    assert check(world)[0] == 0


def test_a_delivery_failed_for_good_is_failing_and_exits_2_until_it_is_resent(world, smtp):
    smtp.fail_data("550 5.7.1 message rejected", times=1)
    world.configure()
    world.run()
    code, text, health = check(world)
    assert code == 2 and health["state"] == "failing"
    assert health["reasons"][0].startswith(f"1 delivery failed for good, the first {DAY} email to "
                                           f"reader@example.org: 127.0.0.1:{smtp.port}: message refused: 550")
    assert health["reasons"][0].endswith("(fix it, then `digest resend`)")
    assert world.resend(DAY.isoformat()).exit_code == 0
    assert check(world) == (0, "Health:      ok\n", {"state": "ok", "reasons": []})


def test_a_run_that_could_not_reach_arxiv_is_failing_until_the_next_run_sends(world):
    world.feeds.by_day = lambda day, categories: Reply(500, "Internal Server Error", content_type="text/plain")
    world.configure(arxiv_timeout=0.5)
    db, result = world.run()
    assert result.status == "failed"
    code, text, health = check(world)
    assert code == 2
    assert health["reasons"] == [f"the last run (#1, no day yet) failed: {result.error}"]
    world.feeds.by_day = lambda day, categories: day_feed()
    db, again = world.run()
    assert again.status == "sent", again.error
    assert check(world)[0] == 0


def test_an_llm_that_answered_nothing_in_a_whole_run_is_degraded(world):
    with LLMServer() as llm:
        llm.script(*[error(401)] * 20)  # a wrong key: every request of the run is refused
        world.configure(llm=f'[llm]\nmodel = "gpt-test"\nbase_url = "{llm.url}"\napi_key = "sk-test"\nsummarize = 3\n')
        db, result = world.run()
    assert result.status == "sent", result.error
    code, text, health = check(world)
    assert code == 1
    assert health["reasons"] == ["the last run (#1, 2026-06-26): the LLM summarized none of its 3 papers; the "
                                 "digest showed their abstracts (see the last error)"]
