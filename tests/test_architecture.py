"""The house: digest's modules as floors, every import of one module of ours by another pointing down or
across, never up, and no circle. Read from the source with ``ast`` (imports at the top and inside
functions alike), so a lazy import cannot hide an arrow. Imports under ``if TYPE_CHECKING:`` are left
out: they never run, and only name a type in an annotation.

A module that is not on a floor below fails the test: a new module is placed here, on purpose."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "digest"

# Bottom to top. A module may import modules on its own floor or below.
FLOORS: list[tuple[str, set[str]]] = [
    ("ground: plain records and small rules, nothing of ours but each other", {
        "records", "text", "taxonomy", "secrets", "logs", "atomic", "locks", "quiet", "http_retry", "http_bounds",
        "cutoff", "arxiv.ids", "arxiv.calendar", "learn", "service", "deliver.errors", "deliver.matrix", "prompt",
        "answers",
        "digest", "arxiv", "feedback", "storage", "history"}),  # the packages' own __init__ files: no imports
    ("configuration", {"config_rules", "config"}),
    ("the tables' owners", {
        "storage.schema", "storage.db", "storage.papers", "storage.runs", "storage.outbox", "storage.ledger",
        "storage.feedback", "storage.summaries", "library"}),
    ("the stages", {
        "arxiv.atom", "arxiv.http", "arxiv.feed", "arxiv.api", "arxiv.days", "arxiv.fulltext", "embed_onnx",
        "embed", "rank", "profiles", "summarize", "feedback.links", "render", "deliver", "deliver.email",
        "deliver.chat", "deliver.files"}),
    ("a run, and what watches runs", {
        "notices", "pipeline", "schedule", "readiness", "feedback.web", "feedback.replies", "backup"}),
    ("what the reading commands read", {
        "history.search", "history.vectors", "history.export", "history.status", "history.health", "history.views"}),
    ("the processes", {"daemon", "demo"}),
    ("the commands", {"cli.common", "cli.setup", "cli.runs", "cli.history", "cli.keep", "cli", "__main__"}),
]

# Arrows that point up on purpose, each with its reason. Empty today; an entry is a debt, not a rule.
ALLOWED_UPWARD: set[tuple[str, str]] = set()

LONG_MODULE = 450  # lines; a longer module says in its docstring why it is one module, in a sentence
WHY_LONG = "Longer than most modules on purpose"  # ... followed by the reason


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or "digest"


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            skipped |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return skipped


def _ours(dotted: str) -> str | None:
    """The module of ours that ``dotted`` (a module, or a name in one) lives in, without ``digest.``."""
    if dotted != "digest" and not dotted.startswith("digest."):
        return None
    name = dotted.removeprefix("digest.") if dotted != "digest" else "digest"
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or "digest"


def imports_of(name: str) -> set[str]:
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree)
    package = name.split(".") if path.name == "__init__.py" and name != "digest" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["digest", *package][: len(package) + 2 - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            ours = _ours(target)
            if ours and ours != name:
                found.add(ours)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}
FLOOR_OF = {module: n for n, (_, modules) in enumerate(FLOORS) for module in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_reads_the_modules_it_should():
    assert {"digest.storage.ledger"} - {f"digest.{m}" for m in GRAPH} == set()
    assert "storage.outbox" in GRAPH["storage.ledger"] and "records" in GRAPH["storage.ledger"]
    assert GRAPH["cli.history"] >= {"cli.common", "history.search"}  # an import inside a function counts


def test_no_module_imports_another_that_imports_it_back():
    assert _cycles(GRAPH) == []


def test_every_module_stands_on_a_floor():
    assert sorted(set(MODULES) - set(FLOOR_OF)) == []
    assert sorted(set(FLOOR_OF) - set(MODULES)) == []  # a floor names no module that is gone


def test_every_import_points_down_or_across():
    upward = sorted(
        f"{name} ({FLOORS[FLOOR_OF[name]][0]}) imports {target} ({FLOORS[FLOOR_OF[target]][0]})"
        for name, targets in GRAPH.items() for target in targets
        if FLOOR_OF[target] > FLOOR_OF[name] and (name, target) not in ALLOWED_UPWARD)
    assert upward == []


def test_the_ground_floor_imports_nothing_above_it():
    ground = FLOORS[0][1]
    assert {name: GRAPH[name] - ground for name in ground if GRAPH[name] - ground} == {}


def test_records_import_nothing_of_ours():
    assert GRAPH["records"] == set()


@pytest.mark.parametrize("module", ["digest.storage.ledger", "digest.storage.outbox", "digest.records",
                                    "digest.history.search"])
def test_a_record_or_a_table_owner_loads_no_renderer(module):
    """Importing ``Digest`` or the ledger must not load jinja2: the reading commands never render."""
    loaded = subprocess.run([sys.executable, "-c", f"import sys, {module}; print('jinja2' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"


def test_a_long_module_says_why_it_is_one_module():
    unexplained = []
    for name, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > LONG_MODULE:
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if WHY_LONG not in " ".join(docstring.split()):
                unexplained.append(f"{name}: {text.count(chr(10))} lines")
    assert unexplained == []
