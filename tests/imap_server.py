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
import ssl
from pathlib import Path

from loopback import free_port
from server_process import ServerProcess, port_answers

DOVECOT = shutil.which("dovecot") or (os.path.exists("/usr/sbin/dovecot") and "/usr/sbin/dovecot") or None
MAIL_UID = 65534  # nobody: dovecot refuses to give mail access as root


class ImapServer(ServerProcess):
    name = "dovecot"
    log_name = "dovecot.log"

    def __init__(self, users: dict[str, str]):
        super().__init__(prefix="digest-dovecot-")
        self.users = users
        self.host = "127.0.0.1"
        self.port = free_port()
        os.chmod(self.dir, 0o755)
        self.cert.private_key_and_cert_chain_pem.write_to_path(str(self.dir / "server.pem"))
        (self.dir / "users").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()))

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
        self.launch([DOVECOT, "-F", "-c", str(self._config())], lambda: port_answers(self.host, self.port))
        return self

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
