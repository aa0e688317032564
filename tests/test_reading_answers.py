"""Issue 24, row 17 and row 15: the reading commands answer without creating a database; a seed, a like
and a `show` of an id arXiv does not have (or cannot be asked about) say so in one line; a health check
never answers `ok` from a database that is not there."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
from click.testing import CliRunner
from feeds import api_feed_xml, arxiv_section, listing_papers
from loopback import Reply

from digest.cli import cli
from digest.storage import db as dbm

KNOWN = listing_papers()[0]  # a real paper the loopback API has
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused


def digest(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def fresh(tmp_path, write_config, http_server):
    """A configuration whose database does not exist yet; arXiv's API on loopback knows one paper."""

    def answer(request):
        asked = request.query.get("id_list", [""])[0].split(",")
        return Reply(body=api_feed_xml([(KNOWN, dt.datetime(2026, 6, 20, 12, tzinfo=dt.timezone.utc))]
                                       if KNOWN["id"] in asked else []))

    http_server.routes["/api/query"] = answer
    path = tmp_path / "state" / "digest.db"
    write_config(arxiv_section(http_server.url) + f'[storage]\npath = "{path}"\n'
                 '[profiles.me]\ninterests = ["spiking neural networks"]\n')
    return path


def test_a_reading_command_on_a_fresh_path_answers_and_creates_nothing(fresh):
    gone = digest("search", "x", "--profile", "gone")
    assert gone.exit_code == 2
    assert gone.output.startswith('Error: --profile: no profile named "gone" in ')
    assert len(gone.output.splitlines()) == 1
    assert digest("search", "x").output == "No paper matches.\n"
    assert digest("feedback", "--profile", "me").output == "No feedback yet; `digest like ID` records one.\n"
    assert not fresh.parent.exists()


def test_status_check_says_there_is_no_database_instead_of_ok(fresh):
    check = digest("status", "--check")  # a reason longer than the line continues further in
    assert (check.exit_code, " ".join(check.output.split())) == (
        2, f"Health: failing no database at {fresh}: nothing has run with this configuration as "
           f"this user (the service's own: `sudo digest status --service`)")
    assert check.output.startswith("Health:      failing\n             no database at")  # the path may wrap
    assert not fresh.parent.exists()
    dbm.open_db(fresh).conn.close()  # a database that exists, and no run in it
    empty = digest("status", "--check")
    assert (empty.exit_code, " ".join(empty.output.split())) == (  # a long path may wrap
        1, f"Health: degraded no run recorded yet in {fresh}")


def test_a_seed_that_is_not_an_arxiv_id_fails_config_check_naming_the_key(write_config):
    config = write_config('[profiles.me]\nseed_papers = ["2401.01234", "hello world"]\n')
    checked = digest("--config", str(config), "config", "--check")
    assert (checked.exit_code, checked.output) == (
        2, f'Error: {config}: profiles.me.seed_papers: "hello world" is not an arXiv id (expected e.g. '
           '2401.01234 or hep-th/9901001)\n')


def test_liking_a_paper_arxiv_does_not_have_is_refused_and_records_nothing(fresh):
    refused = digest("like", KNOWN["id"], "2606.99999")
    assert (refused.exit_code, refused.output) == (
        2, "Error: 2606.99999: not in your history, and arXiv has no such paper; nothing recorded\n")
    with sqlite3.connect(fresh) as conn:
        assert conn.execute("SELECT COUNT(*) FROM feedback").fetchone() == (0,)
    liked = digest("like", KNOWN["id"])  # not in the history, but on arXiv: fetched, stored, liked
    assert liked.exit_code == 0, liked.output
    # One sentence, wrapped to the width of the output (120 columns into a pipe)
    assert " ".join(liked.output.split()) == f"Liked {KNOWN['id']} ({' '.join(KNOWN['title'].split())}) for every profile."
    assert max(len(line) for line in liked.output.splitlines()) <= 120
    exported = digest("export", "--liked", "--format", "json")
    assert KNOWN["id"] in exported.stdout and exported.stderr == ""


def test_liking_while_arxiv_is_unreachable_says_why_in_one_line(fresh, write_config):
    write_config(arxiv_section(UNREACHABLE, timeout=1.0) + f'[storage]\npath = "{fresh}"\n'
                 '[profiles.me]\ninterests = ["spiking neural networks"]\n')
    refused = digest("like", "2606.99999")
    assert refused.exit_code == 1
    error = refused.output.splitlines()[-1]  # after the retry's warning
    assert error.startswith("Error: 2606.99999: not in your history, and arXiv cannot be reached to look it up (")
    assert error.endswith("connection refused after 2 attempts); nothing recorded")


def test_show_of_a_paper_not_in_the_history_says_so_when_arxiv_is_unreachable(fresh, write_config):
    write_config(arxiv_section(UNREACHABLE, timeout=1.0) + f'[storage]\npath = "{fresh}"\n'
                 '[profiles.me]\ninterests = ["spiking neural networks"]\n')
    shown = digest("show", "2401.01234")
    assert shown.exit_code == 1
    assert shown.output.splitlines()[-1] == ("Error: 2401.01234: not in your history, and arXiv cannot be reached "
                                             f"to look it up ({UNREACHABLE}/api/query: connection refused after 2 "
                                             "attempts)")
    assert not fresh.parent.exists()


def test_export_liked_names_the_liked_papers_it_cannot_export(fresh):
    from digest.storage.feedback import set_feedback

    db = dbm.open_db(fresh)
    set_feedback(db, "2401.99999", 1)  # liked before `digest like` checked ids with arXiv
    db.conn.close()
    exported = digest("export", "--liked", "--format", "json")
    assert exported.exit_code == 0
    assert exported.stderr == ("Skipped 1 liked paper not in your history (no title or authors to export): "
                               "2401.99999\n")
