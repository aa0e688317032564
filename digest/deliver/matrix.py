"""What apprise's Matrix plugin (``matrix://``, ``matrixs://``) leaves to us, found against a real Synapse.

- A room alias that does not exist is *created* by apprise (a private room only the bot is in), and the
  digest goes there as if delivered. :func:`missing_rooms` looks each alias up first (the room directory
  answers without a login), so an unknown room fails for good instead.
- A wrong password shows in apprise's warnings as "Invalid Token., error=403": :func:`failure` says which
  step failed (the login, or the room) from what the plugin holds after the attempt.
- `digest check` logs in, asks ``whoami``, looks the rooms up and logs out again (:func:`check`): a wrong
  password or room shows before the first digest, and nothing is posted.
"""

from __future__ import annotations

import urllib.parse

import requests

SCHEMES = ("matrix", "matrixs")
API = "/_matrix/client/v3"


def is_matrix(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def _base(plugin) -> str:
    """The homeserver's URL as apprise reaches it (``.well-known`` discovery included for matrixs://).
    Where discovery fails, the URL's own host: asking it shows why (refused, an untrusted certificate)."""
    try:
        return plugin.base_url.rstrip("/")
    except Exception:  # apprise's MatrixDiscoveryException, which says no more than "failed"
        port = f":{plugin.port}" if plugin.port else ""
        return f"{'https' if plugin.secure else 'http'}://{plugin.host}{port}"


def _aliases(plugin) -> list[str]:
    """The rooms written as ``#name:server``: the only ones apprise would create, and the only ones the
    directory can answer for without knowing the bot's server (an alias without one is left to apprise)."""
    return [room for room in plugin.rooms if room.startswith("#") and ":" in room]


def missing_rooms(plugin, timeout: float) -> list[str]:
    """Aliases of the URL that name no room on the homeserver. Network errors raise (the caller retries)."""
    missing = []
    for alias in _aliases(plugin):
        reply = requests.get(f"{_base(plugin)}{API}/directory/room/{urllib.parse.quote(alias, safe='')}",
                             timeout=timeout, verify=plugin.verify_certificate)
        if reply.status_code == 404:
            missing.append(alias)
    return missing


def failure(plugin, status: int | None) -> str | None:
    """A plainer line than apprise's warning where the plugin's state shows what failed."""
    if status in (401, 403) and plugin.access_token is None:
        return f"the homeserver refused the login as {plugin.user} (HTTP {status}): check the user and password"
    if status == 413:
        return "the homeserver refused a message as too large (HTTP 413)"
    return None


def check(plugin, timeout: float) -> tuple[bool, str]:
    """Log in, ``whoami``, look up the rooms, log out: (worked, what happened). Sends no message."""
    base, verify = _base(plugin), plugin.verify_certificate
    if not (plugin.user and plugin.password):
        return True, f"{base}: a token URL; not contacted (only a login can be tried without posting)"
    login = requests.post(f"{base}{API}/login", timeout=timeout, verify=verify, allow_redirects=False, json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": plugin.user},
        "password": plugin.password, "initial_device_display_name": "digest check"})
    if login.status_code != 200:
        return False, f"{base}: login as {plugin.user} refused: {_error(login)}"
    token = login.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    try:
        who = requests.get(f"{base}{API}/account/whoami", headers=headers, timeout=timeout, verify=verify)
        if who.status_code != 200:
            return False, f"{base}: whoami after login failed: {_error(who)}"
        missing = missing_rooms(plugin, timeout)
        if missing:
            return False, (f"{base}: logged in as {who.json()['user_id']}, but no room {', '.join(missing)} "
                           f"(apprise would create it, and nobody would read it)")
        rooms = ", ".join(plugin.rooms) or "the rooms it has joined"
        return True, f"{base}: logged in as {who.json()['user_id']}, posting to {rooms} (nothing sent)"
    finally:
        requests.post(f"{base}{API}/logout", headers=headers, json={}, timeout=timeout, verify=verify)


def _error(reply: requests.Response) -> str:
    try:
        body = reply.json()
    except ValueError:
        body = {}
    code = body.get("errcode") if isinstance(body, dict) else None
    return f"HTTP {reply.status_code}" + (f" {code}" if code else "")
