"""The numbered CNI statements and the checks cannot drift apart.

Every statement number a check claims exists in splice.conformance.statements and in
docs/cni-statements.md (generated from it, and current); every plugin statement (1-53) is
covered by some check; the statements cite only upstream sources; the kit and its docs cite
nothing outside the repository.

    .venv/bin/pytest -q -p no:randomly conformance/tests
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from splice.conformance import kit, statements

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "cni-statements.md"


def _doc_numbers() -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"^(\d+)\. \*\*", DOC.read_text(), re.M)]


def test_statements_are_numbered_1_to_54():
    assert sorted(statements.STATEMENTS) == list(range(1, 55))
    assert statements.PLUGIN_STATEMENTS == frozenset(range(1, 54))
    assert all(s.number == n and s.text and s.sources for n, s in statements.STATEMENTS.items())
    groups = [n for g in statements.GROUPS for n in range(g.first, g.last + 1)]
    assert groups == list(range(1, 55))


def test_every_claimed_statement_exists_in_the_statements_file():
    doc = set(_doc_numbers())
    assert _doc_numbers() == list(range(1, 55))
    for c in kit.select(None):
        for n in c.statements:
            assert n in statements.STATEMENTS, (c.id, n)
            assert n in doc, (c.id, n)


def test_every_plugin_statement_is_covered_by_a_check():
    checks = kit.select(None)
    assert statements.problems(checks) == []
    covered = {n for c in checks for n in c.statements}
    assert set(range(1, 54)) <= covered, sorted(set(range(1, 54)) - covered)


def test_problems_reports_drift():
    class Fake:
        def __init__(self, id, nums):
            self.id, self.statements = id, tuple(nums)

    p = statements.problems([Fake("X-01", [1, 99])])
    assert "X-01 claims statement 99, which does not exist" in p
    assert "statement 2 is covered by no check" in p and "statement 54 is covered by no check" not in p


def test_a_check_naming_an_unknown_statement_is_refused():
    with pytest.raises(ValueError, match="no statement"):
        kit.check("ZZ-01", "t", [55], "q")


def test_the_statements_doc_is_generated_and_current():
    want = statements.markdown(kit.select(None))
    assert DOC.read_text() == want, ("docs/cni-statements.md is stale: "
                                     "python -m splice.conformance.statements > docs/cni-statements.md")
    p = subprocess.run([sys.executable, "-m", "splice.conformance", "--statements"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout == want, p.stderr


def test_statements_cite_only_upstream_sources():
    for s in statements.STATEMENTS.values():
        for src in s.sources:
            assert src.startswith(("SPEC.md", "CNI CONVENTIONS.md", "cni ", "plugins ")), (s.number, src)


def test_no_citation_outside_the_repository():
    files = [*(REPO / "conformance").rglob("*.py"), REPO / "docs" / "conformance.md", DOC]
    # the team's notes files outside the repository (spelled in pieces so this file does not match)
    bad = re.compile("|".join(["REFER" + "ENCE", "perf" + "-notes", re.escape(".." + "/shared")]))
    hits = [f"{f.relative_to(REPO)}:{i}" for f in files
            for i, line in enumerate(f.read_text().splitlines(), 1) if bad.search(line)]
    assert hits == []
