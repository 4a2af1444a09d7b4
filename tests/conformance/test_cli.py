"""The command line: table + summary line, --json, exit status, --list, --config templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from splice.conformance import kit

from ..conftest import REFERENCE_PLUGINS, bin_dir, require, require_root
from .conftest import BROKEN, kernel_has

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


def test_master_usage_errors():
    assert run(*SPLICE, "--master", "spcm0").returncode == 2  # the bridge class has no master
    p = run("--cni-path", str(bin_dir()), "--plugin", "splice-macvlan", "--master", "x" * 16)
    assert p.returncode == 2 and "longer than 15" in p.stderr


@pytest.mark.root
def test_macvlan_class_by_name_with_a_master():
    require_root()
    p = run("--cni-path", str(bin_dir()), "--plugin", "splice-macvlan", "--ipam", "splice-ipam",
            "--master", "spcm7", "-k", "RES-1.0.0", "-k", "CHK-09", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert rep["class"] == "macvlan" and rep["master"] == "spcm7"
    assert rep["summary"] == {"passed": 1, "failed": 0, "skipped": 1}
    assert "no firewall/NAT state" in {r["id"]: r for r in rep["results"]}["CHK-09"]["reason"]


@pytest.mark.root
def test_ipvlan_class_says_when_the_kernel_lacks_ipvlan():
    """On a kernel without ipvlan (this machine's) the run stops before any check, saying so; on
    one with it (the UML guest) it runs."""
    require_root()
    require(os.access(os.path.join(REFERENCE_PLUGINS, "ipvlan"), os.X_OK),
            f"the Go reference ipvlan in {REFERENCE_PLUGINS} (Debian containernetworking-plugins)")
    p = run("--cni-path", REFERENCE_PLUGINS, "--plugin", "ipvlan", "-k", "VER-01")
    if kernel_has("ipvlan"):
        assert p.returncode == 0 and p.stdout.splitlines()[-1].startswith("1 passed"), p.stdout + p.stderr
    else:
        assert p.returncode == 1 and "VER-01" not in p.stdout, p.stdout
        assert "lacks ipvlan" in p.stderr and "vm-run.sh" in p.stderr, p.stderr


@pytest.mark.root
def test_a_kernel_without_the_class_link_kind_stops_the_run(monkeypatch):
    require_root()
    monkeypatch.setattr(kit.PLUGIN_CLASSES["macvlan"], "kind", "spcnosuchkind")
    try:
        kit.run(kit.KitConfig(cni_path=[str(bin_dir())], plugin="splice-macvlan"), ["VER-01"])
    except SystemExit as e:
        assert "lacks spcnosuchkind" in str(e)
    else:
        raise AssertionError("the run went on without the class's link kind")
