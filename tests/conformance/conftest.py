"""Fixtures for the conformance kit's own tests: run the kit in-process on a plugin pair."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from splice.conformance import kit

from ..conftest import REFERENCE_PLUGINS, bin_dir, require, require_root

BROKEN = Path(__file__).resolve().parent / "broken"


def run_kit(plugin: str, ipam: str | None, cni_path: list, checks: list[str] | None = None, *,
            master: str | None = None, plugin_class: str | None = None) -> dict[str, kit.Outcome]:
    """Run the kit (all checks, or the ids/globs in ``checks``): outcomes by check id. The
    plugin class follows the plugin's name unless ``plugin_class`` is given."""
    cfg = kit.KitConfig(cni_path=[str(p) for p in cni_path], plugin=plugin, ipam=ipam, master=master,
                        plugin_class=plugin_class)
    _, outcomes = kit.run(cfg, checks)
    return {o.id: o for o in outcomes}


def kernel_has(kind: str) -> bool:
    """Probe independent of the kit: can ``ip link add`` make a ``kind`` link on a veth in a
    throwaway namespace?"""
    name = f"spt-{os.getpid()}-kind"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        sh = ["ip", "-n", name, "link", "add"]
        subprocess.run([*sh, "v0", "type", "veth", "peer", "name", "v1"], check=True, capture_output=True)
        return subprocess.run([*sh, "k0", "link", "v0", "type", kind], capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def failed(outcomes: dict) -> dict[str, str]:
    """The failed checks and their reasons (CNI kit or CNM kit outcomes alike)."""
    return {i: o.reason for i, o in outcomes.items() if o.result == "fail"}


def assert_caught(outcomes: dict, must_fail: dict[str, str], must_pass) -> None:
    """Exactly ``must_fail`` failed, each reason containing its fragment; ``must_pass`` passed."""
    got = failed(outcomes)
    assert set(got) == set(must_fail), got
    for check_id, fragment in must_fail.items():
        assert fragment in got[check_id], f"{check_id}: {got[check_id]}"
    for check_id in must_pass:
        assert outcomes[check_id].result == "pass", f"{check_id}: {outcomes[check_id].reason}"


@pytest.fixture(scope="session")
def splice_outcomes() -> dict[str, kit.Outcome]:
    require_root()
    return run_kit("splice-bridge", "splice-ipam", [bin_dir()])


@pytest.fixture(scope="session")
def reference_outcomes() -> dict[str, kit.Outcome]:
    require_root()
    require(os.access(os.path.join(REFERENCE_PLUGINS, "bridge"), os.X_OK),
            f"the Go reference plugins in {REFERENCE_PLUGINS} (Debian containernetworking-plugins)")
    return run_kit("bridge", "host-local", [REFERENCE_PLUGINS])


@pytest.fixture(scope="session", autouse=True)
def _broken_state():
    """The broken plugins keep markers under $TMPDIR/spc-broken-state; remove them afterwards."""
    yield
    import tempfile

    shutil.rmtree(os.path.join(tempfile.gettempdir(), "spc-broken-state"), ignore_errors=True)
