"""The command line: commands only. Each parses its options, calls one library function, and prints
with rich or as --json; a user's mistake is one line on stderr and exit status 2, a failed run exit 1.

What every command shares (the group, the settings and database opened on demand, the --json/--csv
output) is in :mod:`.common`; the commands are in :mod:`.setup` (init, demo, config, daemon,
check), :mod:`.runs` (run, resend, doctor, fetch, embed, and the hidden deliver the daemon calls),
:mod:`.history` (search, show, related, digests, like, dislike, feedback, export, stats, status) and
:mod:`.keep` (backup, restore, notify-failure). A command imports the library module it calls
inside its body when that module loads heavy packages (numpy, torch, requests, lxml): `digest --help`
and `digest status` then start in a fraction of a second.
"""

from . import history, keep, runs, setup  # noqa: F401  (each registers its commands on the group)
from .common import cli, main

__all__ = ["cli", "main"]
