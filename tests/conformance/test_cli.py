"""The command line: table + summary line, --json, exit status, --list, --config templates."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..conftest import bin_dir, require_root
from .conftest import BROKEN

CLI = [str(bin_dir() / "splice-conformance")]
SPLICE = ["--cni-path", str(bin_dir()), "--plugin", "splice-bridge", "--ipam", "splice-ipam"]


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_list_needs_no_root():
    p = run("--list")
    assert p.returncode == 0
    assert "ENV-01" in p.stdout and "GC-04" in p.stdout and "RES-1.1.0" in p.stdout


def test_usage_errors_exit_2():
    assert run().returncode == 2
    assert run(*SPLICE, "-k", "NOPE-99").returncode == 2


@pytest.mark.root
def test_table_and_summary():
    require_root()
    p = run(*SPLICE, "-k", "ENV-0[12]", "-k", "VER-01")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert any(line.startswith("ENV-01") and " PASS " in line and "[3]" in line for line in lines)
    assert lines[-1].startswith("3 passed, 0 failed, 0 skipped")


@pytest.mark.root
def test_json_and_failure_exit_status():
    require_root()
    p = run("--cni-path", str(BROKEN), "--cni-path", str(bin_dir()), "--plugin", "broken-lax-env",
            "--ipam", "splice-ipam", "-k", "ENV-04", "-k", "ENV-03", "--json")
    assert p.returncode == 1, p.stderr
    rep = json.loads(p.stdout)
    assert rep["summary"] == {"passed": 1, "failed": 1, "skipped": 0}
    by = {r["id"]: r for r in rep["results"]}
    assert by["ENV-04"]["result"] == "fail" and "CNI_IFNAME" in by["ENV-04"]["reason"]
    assert by["ENV-04"]["spec"] == "4" and by["ENV-04"]["level"] == "MUST"
    assert "1.1.0" in rep["supportedVersions"]["plugin"]


@pytest.mark.root
def test_python_dash_m_and_a_config_template(tmp_path):
    require_root()
    tmpl = tmp_path / "net.conflist"
    tmpl.write_text(json.dumps({"cniVersion": "1.0.0", "name": "ignored", "plugins": [{
        "type": "splice-bridge", "bridge": "spctpl0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
        "ipam": {"type": "splice-ipam", "ranges": [[{"subnet": "10.9.9.0/24"}]]}}]}))
    p = subprocess.run([sys.executable, "-m", "splice.conformance", *SPLICE, "--config", str(tmpl),
                        "-k", "RES-1.0.0", "-k", "ADD-07", "-k", "CHK-07", "-k", "GC-06"],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1].startswith("4 passed")
