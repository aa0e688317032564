"""Files: each digest as HTML, Markdown and JSON in ``<files dir>/<profile>/``, and an Atom feed of the
most recent ones that any feed reader can follow. Every file is written whole or not at all."""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from ..atomic import write_atomically
from ..config import Settings
from ..records import Digest, Rendered
from ..storage.outbox import Claim
from ..text import clean_untrusted
from .errors import PermanentFailure, TransientFailure

FEED_ENTRIES = 30
ATOM = "http://www.w3.org/2005/Atom"


def write_files(claim: Claim, rendered: Rendered, digest: Digest, settings: Settings) -> None:
    folder = profile_dir(settings, digest.profile)
    stem = digest.day.isoformat()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for suffix, body in ((".html", rendered.html), (".md", rendered.markdown), (".json", rendered.json)):
            write_atomically(folder / f"{stem}{suffix}", body)
        write_atomically(folder / "feed.atom", atom_feed(folder, digest.profile, settings.files.feed_url))
    except PermissionError as exc:
        raise PermanentFailure(f"{exc.filename or folder}: permission denied")
    except OSError as exc:  # a full disk may be emptied; try again later
        raise TransientFailure(f"{exc.filename or folder}: cannot write: {exc.strerror or exc}")


def write_notice(settings: Settings, name: str, body: str) -> Path:
    """A failure notice as ``<files dir>/notices/<name>.txt``, beside the profiles' folders."""
    path = settings.files_dir() / "notices" / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, body)
    return path


def profile_dir(settings: Settings, profile: str) -> Path:
    return settings.files_dir() / folder_name(profile)


def folder_name(profile: str) -> str:
    # A profile's name is a TOML key and may hold anything; the folder must stay inside the files dir.
    return re.sub(r"[^A-Za-z0-9._-]", "_", profile).lstrip(".") or "_"


def atom_feed(folder: Path, profile: str, feed_url: str) -> str:
    """The latest FEED_ENTRIES digests in the folder, newest first, as an Atom 1.0 document."""
    ET.register_namespace("", ATOM)
    days = sorted((p.stem for p in folder.glob("*.json") if re.fullmatch(r"\d{4}-\d\d-\d\d", p.stem)), reverse=True)
    entries = [_entry_data(folder, day) for day in days[:FEED_ENTRIES]]
    feed = ET.Element(f"{{{ATOM}}}feed")
    _add(feed, "title", f"arXiv digest: {profile}")
    _add(feed, "id", _urn(f"digest:{profile}"))
    _add(feed, "updated", max((e["updated"] for e in entries), default=_rfc3339(dt.datetime.now(dt.timezone.utc))))
    author = ET.SubElement(feed, f"{{{ATOM}}}author")
    _add(author, "name", "digest")
    _add(feed, "generator", "digest")
    if feed_url:
        ET.SubElement(feed, f"{{{ATOM}}}link", rel="self", href=_join(feed_url, profile, "feed.atom"))
    for e in entries:
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        _add(entry, "title", e["title"])
        _add(entry, "id", _urn(f"digest:{profile}:{e['day']}"))
        _add(entry, "updated", e["updated"])
        href = _join(feed_url, profile, f"{e['day']}.html") if feed_url else f"{e['day']}.html"
        ET.SubElement(entry, f"{{{ATOM}}}link", rel="alternate", type="text/html", href=href)
        _add(entry, "summary", e["summary"])
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="unicode") + "\n"


def _entry_data(folder: Path, day: str) -> dict:
    path = folder / f"{day}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    counts = data.get("counts") or {}
    top = [i["title"] for i in data.get("items", []) if i.get("section") == "top"][:5]
    summary = f"{counts.get('announced', 0)} papers, {counts.get('summarized', 0)} summarized."
    if top:
        summary += " Top: " + "; ".join(clean_untrusted(t) for t in top)  # paper text: cleaned as in the email
    updated = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
    return {"day": day, "title": data.get("subject") or f"arXiv digest {day}", "summary": summary,
            "updated": _rfc3339(updated)}


def _add(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}")
    element.text = text
    return element


def _urn(key: str) -> str:
    """A stable, valid Atom id that needs no domain of ours."""
    return uuid.uuid5(uuid.NAMESPACE_URL, key).urn


def _join(prefix: str, profile: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{folder_name(profile)}/{name}"


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_files(settings: Settings) -> tuple[str, bool, str]:
    folder = settings.files_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".check-"):
            pass
    except OSError as exc:
        return "files", False, f"{folder}: not writable: {exc.strerror or exc}"
    return "files", True, f"{folder}: writable"
