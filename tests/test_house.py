"""The tests' own house: a fixture name means one thing in the whole suite. pytest lets a module define a
fixture that conftest.py or a plugin (world.py, filled_history.py) already defines, and silently uses the
module's own there: `smtp` was once a server with a login in one module and without one in the next. Read
with ``ast`` from the files in tests/, so a fixture counts wherever it is defined."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def fixture_name(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The name a function is known by as a fixture (its own, or ``name=``), or None when it is none."""
    for decorator in node.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call else decorator
        if ast.unparse(target) not in ("pytest.fixture", "fixture"):
            continue
        named = [k.value.value for k in (call.keywords if call else []) if k.arg == "name"]
        return named[0] if named else node.name
    return None


def fixtures_defined(source: str) -> list[str]:
    """Every fixture a module defines, at its top level or in a class."""
    functions = (n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return [name for name in map(fixture_name, functions) if name]


def where_defined() -> dict[str, list[str]]:
    places = defaultdict(list)
    for path in sorted(TESTS.glob("*.py")):
        for name in fixtures_defined(path.read_text(encoding="utf-8")):
            places[name].append(path.stem)
    return places


def fixtures_imported(source: str, places: dict[str, list[str]]) -> list[str]:
    """The fixtures a module imports from the module that defines them, as ``module.name``."""
    imports = (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.level == 0)
    return [f"{node.module}.{alias.name}" for node in imports for alias in node.names
            if node.module in places.get(alias.name, ())]


def test_the_reader_finds_fixtures_however_they_are_declared():
    source = ("import pytest\nfrom pytest import fixture\n@pytest.fixture\ndef a(): ...\n"
              "@pytest.fixture(scope='session')\ndef b(): ...\n@fixture\nasync def c(): ...\n"
              "@pytest.fixture(name='d')\ndef make_d(): ...\nclass T:\n    @pytest.fixture\n    def e(self): ...\n"
              "def helper(): ...\n@pytest.mark.slow\ndef test_f(): ...\n")
    assert fixtures_defined(source) == ["a", "b", "c", "d", "e"]


def test_no_fixture_name_is_defined_twice_across_the_tests():
    places = where_defined()
    assert {"smtp", "world", "template", "db", "http_server"} <= places.keys()  # the reader reads the suite
    twice = {name: files for name, files in places.items() if len(files) > 1}
    assert twice == {}, ("a fixture name means one thing: give the different ones names of their own, "
                         "and move a shared one to conftest.py or a plugin it loads")


def test_a_shared_fixture_is_taken_by_name_not_imported():
    """An imported fixture hides where it comes from and breaks when its module moves it (test_matrix once
    imported test_deliver's `db`): a shared one lives in conftest.py or a plugin, and every module sees it."""
    places = where_defined()
    imported = {path.name: found for path in sorted(TESTS.glob("*.py"))
                if (found := fixtures_imported(path.read_text(encoding="utf-8"), places))}
    assert imported == {}
