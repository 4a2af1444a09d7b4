"""The prerequisite policy of tests/conftest.py: skip locally, FAIL under SPLICE_STRICT=1.

Runs pytest on a generated test module (with tests/conftest.py loaded as a plugin) once
without and once with the switch, and compares the outcomes. No root needed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from ..conftest import REPO

MODULE = textwrap.dedent('''
    import os

    import pytest

    import tests.conftest as c

    c.IS_ROOT = False  # as if not root, whoever runs this
    c.REFERENCE_PLUGINS = "/nonexistent-spt"  # as if containernetworking-plugins were missing

    REAL_EXISTS = os.path.exists


    def test_require_false():
        c.require(False, "the moon")


    def test_require_true():
        c.require(True, "the sun")


    def test_missing_tool():
        c.require_tool("no-such-tool-spt")


    def test_missing_module():
        c.require_module("no_such_module_spt")


    @pytest.mark.root
    def test_marked_root():
        pass


    def test_namespace_fixture(make_ns):
        pass


    def test_reference_plugins(reference_plugins):
        pass


    def test_ipv6_as_well(monkeypatch):
        monkeypatch.setattr(os.path, "exists", lambda p: p != "/proc/sys/net/ipv6" and REAL_EXISTS(p))
        if c.has_ipv6():
            raise AssertionError("has_ipv6() without /proc/sys/net/ipv6")
        # a local run goes on without the IPv6 assertions


    def test_ipv6_only(monkeypatch):
        monkeypatch.setattr(os.path, "exists", lambda p: p != "/proc/sys/net/ipv6" and REAL_EXISTS(p))
        c.require_ipv6()
''')

LOCAL = {"test_require_false": "SKIPPED", "test_require_true": "PASSED", "test_missing_tool": "SKIPPED",
         "test_missing_module": "SKIPPED", "test_marked_root": "SKIPPED", "test_namespace_fixture": "SKIPPED",
         "test_reference_plugins": "SKIPPED", "test_ipv6_as_well": "PASSED", "test_ipv6_only": "SKIPPED"}
# strict: every missing prerequisite is a failure (an error when a fixture found it)
STRICT = {"test_require_false": "FAILED", "test_require_true": "PASSED", "test_missing_tool": "FAILED",
          "test_missing_module": "FAILED", "test_marked_root": "ERROR", "test_namespace_fixture": "ERROR",
          "test_reference_plugins": "ERROR", "test_ipv6_as_well": "FAILED", "test_ipv6_only": "FAILED"}


def outcomes(tmp_path, strict: str | None) -> tuple[dict[str, str], str]:
    mod = tmp_path / "test_generated_prereqs.py"
    mod.write_text(MODULE)
    env = {k: v for k, v in os.environ.items() if k != "SPLICE_STRICT"}
    if strict is not None:
        env["SPLICE_STRICT"] = strict
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                        "-p", "no:randomly", "-v", "--rootdir", str(tmp_path), "-c", os.devnull, str(mod)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    got = {}
    for m in re.finditer(r"::(test_\w+) (PASSED|FAILED|SKIPPED|ERROR)\b", p.stdout):
        got.setdefault(m.group(1), m.group(2))
    return got, p.stdout + p.stderr


@pytest.mark.parametrize("strict, want", [(None, LOCAL), ("0", LOCAL), ("1", STRICT)])
def test_missing_prerequisites_skip_locally_and_fail_under_strict(tmp_path, strict, want):
    got, log = outcomes(tmp_path, strict)
    assert got == want, log
    if strict == "1":
        assert "missing prerequisite (SPLICE_STRICT=1 makes this a failure): the moon" in log


def test_test_sh_and_ci_are_strict():
    test_sh = (REPO / "scripts" / "test.sh").read_text()
    assert re.search(r"^export SPLICE_STRICT=", test_sh, re.M), "scripts/test.sh must export SPLICE_STRICT"
    assert re.search(r"^export SPLICE_STRICT=1$", (REPO / ".ci" / "run").read_text(), re.M)
