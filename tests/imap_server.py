"""A real IMAP server on loopback for tests: Debian's dovecot (dovecot-imapd) started with a throw-away
configuration, STARTTLS with a certificate from a test CA (trustme), plaintext login refused before TLS,
one user with a maildir.

    with ImapServer(users={"me": "secret"}) as imap:     # 127.0.0.1:<free port>
        imap.append("me", message_bytes)                 # a message arrives in INBOX
        imap.flags("me")                                 # {Message-ID: {"\\Seen", ...}}

dovecot drops privileges to its own users (dovecot, dovenull) and the mail user (nobody), so everything it
reads lives under a folder of its own in /tmp that those users can enter.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import trustme

DOVECOT = shutil.which("dovecot") or (os.path.exists("/usr/sbin/dovecot") and "/usr/sbin/dovecot") or None
MAIL_UID = 65534  # nobody: dovecot refuses to give mail access as root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ImapServer:
    def __init__(self, users: dict[str, str]):
        self.users = users
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="digest-dovecot-"))
        os.chmod(self.dir, 0o755)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = self.dir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.dir / "server.pem"))
        (self.dir / "users").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()))
        self.process: subprocess.Popen | None = None

    def _config(self) -> Path:
        d = self.dir
        config = d / "dovecot.conf"
        config.write_text(f"""
base_dir = {d}/run
state_dir = {d}/state
instance_name = digest-test-{self.port}
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{d}/server.pem
ssl_key = <{d}/server.pem
disable_plaintext_auth = yes
auth_mechanisms = plain login
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_UID} home={d}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
        return config

    def start(self) -> "ImapServer":
        for user in self.users:
            home = self.dir / "home" / user
            home.mkdir(parents=True)
            for path in (self.dir / "home", home):
                os.chown(path, MAIL_UID, MAIL_UID)
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", str(self._config())], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dovecot did not start: {self.process.stderr.read().decode()[-500:]} "
                                       f"{self.log()[-500:]}")
                time.sleep(0.1)

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "ImapServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what a test does to the mailbox -------------------------------------------------------------

    def client(self, user: str) -> imaplib.IMAP4:
        imap = imaplib.IMAP4(self.host, self.port, timeout=10)
        imap.starttls(ssl.create_default_context(cafile=str(self.ca_file)))
        imap.login(user, self.users[user])
        return imap

    def append(self, user: str, message: bytes, folder: str = "INBOX") -> None:
        imap = self.client(user)
        try:
            imap.append(folder, "", None, message)
        finally:
            imap.logout()

    def flags(self, user: str, folder: str = "INBOX") -> dict[str, set[str]]:
        """Each message's flags, by its Message-ID."""
        imap = self.client(user)
        try:
            imap.select(folder, readonly=True)
            _, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        finally:
            imap.logout()
        found = {}
        for item in data:
            if isinstance(item, tuple):
                flags = imaplib.ParseFlags(item[0])
                header = email.message_from_bytes(item[1], policy=email.policy.default)
                found[str(header["Message-ID"])] = {f.decode() for f in flags}
        return found
