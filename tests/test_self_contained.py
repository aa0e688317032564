"""A clone tests on its own: no test reads anything from beside the repository.

The project was started next to a ``shared`` directory of recorded arXiv data; a clone from the project's
public home has no such neighbour, so the recordings the tests use live in tests/data/ (issue 14).
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import DATA, ROOT

# What a path outside the repository looks like in a test: the old shared data directory, by any spelling,
# the repository's parent, or the machine's own /work. ("../etc/passwd" as a bad CLI argument is fine.)
OUTSIDE = re.compile(r"""\.\./shared|\bshared/data\b|["']shared["']|\bROOT\.parent\b|/work/""")
# Not data: the systemd sandbox tool a machine may have beside the project; the live test skips without it.
TOOL = re.compile(r"systemd-sandbox")


def lines_reaching_outside(root: Path, paths: list[Path]) -> list[str]:
    """``file:line: text`` for every line of ``paths`` that names a path outside ``root``."""
    return [f"{path.relative_to(root)}:{number}: {line.strip()}"
            for path in paths
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if OUTSIDE.search(line) and not TOOL.search(line)]


def test_no_test_file_reads_a_path_outside_the_repository():
    this_file = Path(__file__).resolve()
    sources = [p for p in sorted((ROOT / "tests").rglob("*.py")) if p.resolve() != this_file]
    assert len(sources) > 10  # the scan sees the suite, not an empty directory
    assert lines_reaching_outside(ROOT, sources) == []


def test_the_check_catches_the_old_shared_paths(tmp_path):
    """The scan would have caught what conftest.py read before the data moved into tests/data/."""
    old = tmp_path / "tests" / "conftest.py"
    old.parent.mkdir()
    old.write_text('SHARED = ROOT.parent / "shared" / "data" / "arxiv"\nok = "../etc/passwd"\n', encoding="utf-8")
    assert lines_reaching_outside(tmp_path, [old]) == [
        'tests/conftest.py:1: SHARED = ROOT.parent / "shared" / "data" / "arxiv"']
    for spelling in ('Path("../shared/data/arxiv/api")', "open('/work/shared/data/ranking/x.gz')"):
        old.write_text(spelling + "\n", encoding="utf-8")
        assert lines_reaching_outside(tmp_path, [old]) == [f"tests/conftest.py:1: {spelling}"]


def test_the_recorded_data_is_inside_the_repository():
    assert DATA.resolve().is_relative_to(ROOT.resolve())
    assert (DATA / "README.md").is_file()
