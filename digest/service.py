"""digest as a systemd service: the notify protocol (READY=1, STATUS=, WATCHDOG=1) the daemon speaks
without any dependency, and whether digest.service can run this installation (`digest check --service`).

The unit runs digest as a ``DynamicUser=`` (a user with no home, in no group) with ``ProtectHome=yes``,
which makes /root, /home and /run/user inaccessible to it. A venv made from an interpreter there (pyenv,
conda, a Python built in a home directory) fails at start with ``status=203/EXEC``, however its modes
are set; elsewhere every directory on the way must let others through and the files must be readable.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import sys
import sysconfig
from pathlib import Path

log = logging.getLogger("digest.daemon")

HIDDEN_FROM_THE_SERVICE = (Path("/root"), Path("/home"), Path("/run/user"))  # ProtectHome=yes


def installation_paths() -> dict[str, Path]:
    """What the service executes or imports: the interpreter the venv points at, the venv, the packages
    installed in it and digest itself (an editable install imports it from the clone)."""
    import digest

    return {
        "the interpreter": Path(sys.executable).resolve(),
        "the venv": Path(sys.prefix),
        "its packages": Path(sysconfig.get_path("purelib")),
        "the digest package": Path(digest.__file__).resolve().parent,
    }


def service_problems(paths: dict[str, Path] | None = None) -> list[str]:
    """One line per place the service's dynamic user could not reach; empty when it can run digest."""
    problems = []
    for what, path in (paths or installation_paths()).items():
        problem = _unreachable(path)
        if problem:
            problems.append(f"{what} ({path}) {problem}")
    return problems


def _unreachable(path: Path) -> str | None:
    for hidden in HIDDEN_FROM_THE_SERVICE:
        if path == hidden or hidden in path.parents:
            return (f"is under {hidden}, which ProtectHome= hides from digest.service (status=203/EXEC); "
                    f"build the venv from the system python: make install-service")
    for step in [*reversed(path.parents), path]:
        mode = step.stat().st_mode
        needed = stat.S_IXOTH | (stat.S_IROTH if step == path else 0)
        if mode & needed != needed:
            return (f"cannot be reached by digest.service's dynamic user: {step} is mode "
                    f"{stat.S_IMODE(mode):04o}; make it readable by others (umask 022 when installing)")
    return None


# -- asking the service ----------------------------------------------------------------------------

SERVICE_PROPERTIES = ("User=digest", "DynamicUser=yes", "StateDirectory=digest", "CacheDirectory=digest",
                      "ConfigurationDirectory=digest", "ProtectHome=yes", "ProtectSystem=strict", "UMask=0077")


def as_the_service(args: list[str]) -> list[str]:
    """The command line that runs ``digest ARGS`` as digest.service does: its (dynamic) user, its state,
    cache and configuration directories; so an administrator reads the service's database, and root
    creates or upgrades nothing under /var/lib/digest. The properties are those of systemd/*.service."""
    return ["systemd-run", "--quiet", "--pipe", "--wait", "--collect",
            *(f"--property={p}" for p in SERVICE_PROPERTIES), sys.executable, "-m", "digest", *args]


# -- the notify protocol ------------------------------------------------------------------------

def sd_notify(message: str, environ=None) -> bool:
    """Send one notify message to ``$NOTIFY_SOCKET`` (a path, or '@' for the abstract namespace).

    A few lines instead of a dependency; False when not under systemd or the socket is gone.
    """
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", environ.get("NOTIFY_SOCKET"), exc.strerror or exc)
        return False
    return True


def watchdog_interval(environ=None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when the watchdog is meant for this process."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None
