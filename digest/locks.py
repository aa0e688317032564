"""Process locks beside the database: flock on a file that names its holder's pid.

The kernel drops a flock when its holder dies, so a SIGKILLed process never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from .config import Settings  # annotations only: pydantic is for validating

log = logging.getLogger("digest.pipeline")  # the run's own logger: the wait is part of a run


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (an outbox sender, a quantising child). A zombie is not: a
    process SIGKILLed with its parent is re-parented to PID 1, and a container's PID 1 often never reaps it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):  # no procfs (not Linux): trust kill()
        return True
    return state not in ("Z", "X")


class LockBusy(Exception):
    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is held by pid {holder}")
        self.path = path
        self.holder = holder


@contextmanager
def pid_lock(path: Path, *, wait: bool, on_wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold ``path`` exclusively. Busy: raise :class:`LockBusy`, or (``wait``) block after calling
    ``on_wait(holder_pid)`` so the caller can say what it is waiting for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            if not wait:
                raise LockBusy(path, holder) from None
            if on_wait:
                on_wait(holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield path


@contextmanager
def run_lock(settings: Settings):
    """One run at a time per database, across processes: a daemon's run and a manual `digest run`
    wait for each other instead of racing, and so do a run and `digest restore`. flock is released by the
    kernel if the holder dies."""
    with pid_lock(settings.database_path().with_suffix(".lock"), wait=True,
                  on_wait=lambda pid: log.info("waiting for another digest run (pid %s) to finish", pid)):
        yield
