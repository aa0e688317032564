"""Every test runs with config, state and credentials in a temporary directory, and may open sockets
only to loopback: a test that tried to reach arXiv, an LLM API or an SMTP server would fail here."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Real recorded arXiv answers, kept in the repository so that a clone tests on its own (data/README.md says
# where each file came from). The listing is gzipped; the XML answers are served byte for byte as recorded.
DATA = Path(__file__).resolve().parent / "data"
LISTING = DATA / "listing_2026-06-22_to_06-30.jsonl.gz"

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Fixtures every module may take by name: the World's (template, smtp, world) and the filled history's
# (filled_template, filled_history). A fixture name means one thing in the whole suite: test_house.py
# fails when two modules define the same one.
pytest_plugins = ["world", "filled_history"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def onnx_exports(tmp_path_factory):
    """The embedding model's ONNX export, made once for the whole session, as a user's cache keeps it across
    runs: exporting imports torch and takes half a minute. Tests of the export itself use a cache of their own."""
    return tmp_path_factory.mktemp("onnx-exports")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch, onnx_exports):
    """Point every directory digest reads or writes at tmp, as llm's tests do with LLM_USER_PATH."""
    home = tmp_path / "home"
    for name, sub in (("HOME", ""), ("XDG_CONFIG_HOME", ".config"), ("XDG_STATE_HOME", ".local/state"),
                      ("XDG_CACHE_HOME", ".cache")):
        path = home / sub if sub else home
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(path))
    (home / ".cache" / "digest").mkdir()
    (home / ".cache" / "digest" / "onnx").symlink_to(onnx_exports)
    for name in ("DIGEST_CONFIG", "STATE_DIRECTORY", "CONFIGURATION_DIRECTORY", "CREDENTIALS_DIRECTORY",
                 "CACHE_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM", "OPENAI_API_KEY",
                 "COLUMNS", "LINES"):  # pytest-xdist sets COLUMNS in its workers: tables are 120 wide here
        monkeypatch.delenv(name, raising=False)
    return home


def _is_loopback(address) -> bool:
    if isinstance(address, (str, bytes)) and not isinstance(address, tuple):
        return True  # AF_UNIX paths (sd_notify sockets in tests)
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any test that connects anywhere but loopback (or a local Unix socket)."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guard(address):
        if not _is_loopback(address):
            raise AssertionError(f"test tried to reach a non-loopback address: {address!r}")

    def connect(self, address):
        guard(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        guard(address)
        return real_connect_ex(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost") and not _is_loopback((host,)):
            raise AssertionError(f"test tried to resolve a non-loopback host: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def write_config(isolated_home):
    """Write a config file at the default path and return it. ``body`` is TOML."""

    def write(body: str, path: Path | None = None) -> Path:
        target = path or isolated_home / ".config" / "digest" / "config.toml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
        return target

    return write


@pytest.fixture
def db(tmp_path):
    """A new, empty database with every migration applied, as the first run makes it."""
    from digest.storage.db import open_db

    database = open_db(tmp_path / "digest.db")
    yield database
    database.close()


@pytest.fixture
def http_server():
    """A scripted loopback HTTP server (see tests/loopback.py)."""
    from loopback import LoopbackServer

    with LoopbackServer() as server:
        yield server
