"""A server a test runs as a process of its own (dovecot for IMAP, Synapse for Matrix): a throw-away folder
with a certificate from a test CA (trustme), the process started and waited for until it answers, then
stopped and the folder removed however the test ended. A subclass writes its configuration, says how it
starts and what answering means."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import trustme
from loopback import Started


def port_answers(host: str, port: int) -> bool:
    """Whether something accepts a connection there (raises OSError while nothing does)."""
    with socket.create_connection((host, port), timeout=1):
        return True


class ServerProcess(Started):
    name = "the server"  # for the error when it does not start
    log_name = "server.log"  # its log file, in its folder
    start_timeout = 20.0
    stop_timeout = 10.0

    def __init__(self, prefix: str):
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        ca = trustme.CA()
        self.cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = self.dir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.process: subprocess.Popen | None = None

    def launch(self, command: list[str], answers: Callable[[], bool], poll: float = 0.1, **popen) -> None:
        """Start ``command`` and return once ``answers()`` is true (an OSError, requests' errors too, counts as
        not yet); a process that exits first, or the start timeout, is an error that quotes its stderr and log."""
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                if answers():
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                if self.process.poll() is None:
                    self.process.kill()  # so that its stderr ends
                    self.process.wait()
                why = f"{self.name} did not start: {self.process.stderr.read().decode()[-800:]} {self.log()[-800:]}"
                self.stop()  # no `with` block will: the folder goes now
                raise RuntimeError(why)
            time.sleep(poll)

    def log(self) -> str:
        path = self.dir / self.log_name
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
