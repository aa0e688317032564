"""A real Matrix homeserver on loopback for tests: Synapse (``matrix-synapse`` from PyPI, in its own
virtualenv ``.venv-synapse`` so its pins never meet ours; .ci/run installs it) with SQLite, no federation,
no open registration, one plain HTTP listener and one TLS listener with a certificate from a test CA.

    with MatrixServer() as synapse:
        token = synapse.register("reader", "pw")          # the shared-secret admin API
        room = synapse.create_room(token, invite=["@bot:digest.test"])
        synapse.messages(token, room)                     # every m.room.message, oldest first

Every user but those left ``throttled`` is exempt from rate limits; the others meet ``rc_message`` below
(a burst of RC_BURST, then one message every 1/RC_PER_SECOND seconds), which makes Synapse answer
M_LIMIT_EXCEEDED with a ``retry_after_ms`` on purpose.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import time
import urllib.parse
from pathlib import Path

import requests
from loopback import free_port
from server_process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
SYNAPSE_PYTHON = Path(os.environ.get("DIGEST_SYNAPSE_PYTHON") or ROOT / ".venv-synapse" / "bin" / "python")
SERVER_NAME = "digest.test"
SECRET = "digest-test-registration-secret"
RC_PER_SECOND = 0.5
RC_BURST = 2


def synapse_missing() -> str | None:
    """Why Synapse cannot run here, or None when it can."""
    if not SYNAPSE_PYTHON.exists():
        return (f"Synapse is not installed ({SYNAPSE_PYTHON} is missing; .ci/run installs it: "
                f"python3 -m venv .venv-synapse && .venv-synapse/bin/pip install matrix-synapse)")
    probe = subprocess.run([str(SYNAPSE_PYTHON), "-c", "import synapse.app.homeserver"], capture_output=True,
                           text=True)
    if probe.returncode:
        return f"Synapse does not import: {probe.stderr.strip().splitlines()[-1:]}"
    return None


class MatrixServer(ServerProcess):
    name = "Synapse"
    log_name = "homeserver.log"
    start_timeout = 60.0
    stop_timeout = 20.0

    def __init__(self):
        super().__init__(prefix="digest-synapse-")
        self.port = free_port()
        self.tls_port = free_port()
        self.cert.cert_chain_pems[0].write_to_path(str(self.dir / "cert.pem"))
        self.cert.private_key_pem.write_to_path(str(self.dir / "key.pem"))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        d = self.dir
        listener = ("  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: {tls}\n"
                    "    resources:\n      - names: [client]\n        compress: false\n")
        config = d / "homeserver.yaml"
        config.write_text(f"""server_name: "{SERVER_NAME}"
pid_file: {d}/homeserver.pid
listeners:
{listener.format(port=self.port, tls='false')}{listener.format(port=self.tls_port, tls='true')}
tls_certificate_path: {d}/cert.pem
tls_private_key_path: {d}/key.pem
database:
  name: sqlite3
  args:
    database: {d}/homeserver.db
log_config: {d}/log.yaml
media_store_path: {d}/media
signing_key_path: {d}/signing.key
registration_shared_secret: "{SECRET}"
enable_registration: false
report_stats: false
macaroon_secret_key: "digest-test-macaroon"
form_secret: "digest-test-form"
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
url_preview_enabled: false
rc_message:
  per_second: {RC_PER_SECOND}
  burst_count: {RC_BURST}
rc_login:
  address: {{per_second: 1000, burst_count: 1000}}
  account: {{per_second: 1000, burst_count: 1000}}
  failed_attempts: {{per_second: 1000, burst_count: 1000}}
rc_joins:
  local: {{per_second: 1000, burst_count: 1000}}
""")
        (d / "log.yaml").write_text(f"""version: 1
formatters:
  plain: {{format: '%(asctime)s %(name)s %(levelname)s %(message)s'}}
handlers:
  file: {{class: logging.FileHandler, filename: {d}/homeserver.log, formatter: plain}}
root: {{level: WARNING, handlers: [file]}}
loggers:
  synapse.access: {{level: INFO}}
disable_existing_loggers: false
""")
        return config

    def start(self) -> "MatrixServer":
        config = self._config()
        subprocess.run([str(SYNAPSE_PYTHON.parent / "generate_signing_key"), "-o", str(self.dir / "signing.key")],
                       check=True)
        self.launch([str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(config)], self._answers,
                    poll=0.2, cwd=self.dir)
        return self

    def _answers(self) -> bool:
        """Up once the client API answers and the admin user it needs for registering others is made."""
        if not requests.get(f"{self.base}/_matrix/client/versions", timeout=2).ok:
            return False
        self._admin = self.register("admin", "admin-password", admin=True, throttled=True)
        return True

    # -- users and rooms -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, token: str | None = None, **kwargs) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        reply = requests.request(method, self.base + path, headers=headers, timeout=30, **kwargs)
        reply.raise_for_status()
        return reply.json()

    def register(self, user: str, password: str, *, admin: bool = False, throttled: bool = False) -> str:
        """A new user through the shared-secret admin API; returns its access token."""
        nonce = self._call("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(SECRET.encode(), "\0".join([nonce, user, password, "admin" if admin else "notadmin"]).encode(),
                       hashlib.sha1).hexdigest()
        token = self._call("POST", "/_synapse/admin/v1/register",
                           json={"nonce": nonce, "username": user, "password": password, "admin": admin,
                                 "mac": mac})["access_token"]
        if not throttled:
            self.unthrottle(user)
        return token

    def unthrottle(self, user: str) -> None:
        """Exempt a user from rc_message (Synapse's admin API: 0 means no limit)."""
        self._call("POST", f"/_synapse/admin/v1/users/{self.user_id(user)}/override_ratelimit", self._admin,
                   json={"messages_per_second": 0, "burst_count": 0})

    @staticmethod
    def user_id(user: str) -> str:
        return f"@{user}:{SERVER_NAME}"

    def create_room(self, token: str, *, invite: list[str] = (), alias: str | None = None) -> str:
        body = {"preset": "private_chat", "invite": list(invite), "name": "arXiv digest"}
        if alias:
            body["room_alias_name"] = alias
        return self._call("POST", "/_matrix/client/v3/createRoom", token, json=body)["room_id"]

    def messages(self, token: str, room_id: str) -> list[dict]:
        """Every m.room.message event of the room, oldest first, as the reader's client fetches them."""
        events, since = [], None
        while True:
            params = {"dir": "f", "limit": 100, **({"from": since} if since else {})}
            page = self._call("GET", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/messages", token,
                              params=params)
            events += [e for e in page["chunk"] if e["type"] == "m.room.message"]
            if not page["chunk"] or not page.get("end"):
                return events
            since = page["end"]

    def download(self, token: str, mxc: str) -> bytes:
        server, media = mxc.removeprefix("mxc://").split("/", 1)
        reply = requests.get(f"{self.base}/_matrix/client/v1/media/download/{server}/{media}",
                             headers={"Authorization": f"Bearer {token}"}, timeout=30)
        reply.raise_for_status()
        return reply.content

    def event_size(self, token: str, room_id: str, event_id: str) -> int:
        """The event's size as the server stores it (JSON, UTF-8): Matrix refuses more than 65,536 bytes."""
        reply = requests.get(f"{self.base}/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/event/"
                             f"{urllib.parse.quote(event_id)}", headers={"Authorization": f"Bearer {token}"},
                             timeout=30)
        reply.raise_for_status()
        return len(reply.content)


if __name__ == "__main__":  # by hand: a homeserver with a bot, a reader and a room, until Ctrl-C
    with MatrixServer() as synapse:
        reader = synapse.register("reader", "reader-password")
        synapse.register("bot", "bot-password")
        room = synapse.create_room(reader, invite=[synapse.user_id("bot")])
        print(f'[chat.matrix]\nurl = "matrix://bot:bot-password@127.0.0.1:{synapse.port}/{room}"\n'
              f"reader: reader / reader-password at {synapse.base}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
