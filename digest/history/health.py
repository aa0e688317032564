"""Is digest healthy? One word and its reasons, for `digest status` and for a monitor (`digest status
--check` exits 0, 1 or 2), so a digest that stops arriving is noticed by something other than the reader.

- ``failing``: the reader is missing something: a delivery failed for good, or the latest run failed
  (arXiv unreachable past every retry, a day given up) and its day still has no digest; or the database
  holds a table, index, trigger or view digest does not write (a trigger acts on every write digest
  makes: it can resend every email or rewrite the history).
- ``degraded``: the reader gets digests, but not all is well: a delivery waits for a retry, the latest
  run was interrupted before its day was done, or the LLM summarized none of the run's papers (the
  digest showed abstracts).
- ``ok``: none of these, and at least one run recorded.

Read from the tables' owners only, so it says exactly what `digest status` shows.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from ..storage import ledger, outbox, runs
from ..storage.db import foreign_schema
from ..text import plural

if TYPE_CHECKING:
    from ..config import Settings  # annotations only: pydantic is for validating

EXIT_CODES = {"ok": 0, "degraded": 1, "failing": 2}


def assess(db, settings: Settings, database_exists: bool = True) -> dict:
    """``{"state": "ok" | "degraded" | "failing", "reasons": [...]}``, failing reasons first.

    A database that does not exist is failing and one with no run is degraded, each naming its path: an
    administrator's `digest status --check` as root reads root's database, not the service's, and must
    not answer ``ok`` from nothing."""
    where = settings.database_path()
    if not database_exists:
        return {"state": "failing", "reasons": [
            f"no database at {where}: nothing has run with this configuration as this user (the service's own: "
            f"`sudo digest status --service`)"]}
    failing, degraded = [], []
    failing += [f"the database's schema is not digest's: {line}" for line in foreign_schema(db)]
    not_sent = outbox.not_sent(db)
    failed = [d for d in not_sent if d["status"] == "failed"]
    if failed:
        failing.append(f"{plural(len(failed), 'delivery', 'deliveries')} failed for good, the first "
                       f"{failed[0]['day']} {outbox.where(failed[0])}: {failed[0]['last_error']} "
                       f"(fix it, then `digest resend`)")
    retrying = [d for d in not_sent if d["status"] != "failed" and d["attempts"]]
    if retrying:
        degraded.append(f"{plural(len(retrying), 'delivery', 'deliveries')} waiting for a retry, the first "
                        f"{retrying[0]['day']} {outbox.where(retrying[0])}: {retrying[0]['last_error']}")
    run = runs.last_run(db)
    if run is not None:
        (failing if run["status"] == "failed" else degraded).extend(_run_problems(db, run, settings))
    else:
        degraded.append(f"no run recorded yet in {where}")
    state = "failing" if failing else "degraded" if degraded else "ok"
    return {"state": state, "reasons": failing + degraded}


def _run_problems(db, run: dict, settings: Settings) -> list[str]:
    """What is wrong with the latest run, if anything. A failed or interrupted run whose day has since
    been settled (`digest run` by hand, a resend) is history, not a problem; its deliveries speak for
    themselves through the outbox."""
    what = f"the last run (#{run['id']}, {run['day'] or 'no day yet'})"
    if run["status"] in ("failed", "interrupted"):
        if run["day"] and ledger.day_settled(db, settings, dt.date.fromisoformat(run["day"])):
            return []
        return [f"{what} {run['status']}: {run['error'] or 'no reason recorded'}"]
    papers = runs.llm_summarized_none(run, settings)
    if papers:
        return [f"{what}: the LLM summarized none of its {papers} papers; the digest showed their abstracts "
                f"(see the last error)"]
    return []
