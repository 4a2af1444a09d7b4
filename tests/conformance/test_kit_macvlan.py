"""The kit's macvlan class: every applicable check passes on splice-macvlan + splice-ipam; the Go
reference (Debian containernetworking-plugins 1.1.1 macvlan + host-local) fails exactly the
checks docs/conformance.md lists, each for its documented reason; the master the kit makes is
the only host link the leak check allows, and nothing of a run is left behind."""

from __future__ import annotations

import os

import pytest

from splice.conformance import harness, kit

from ..conftest import REFERENCE_PLUGINS, bin_dir, require, require_root
from .conftest import BROKEN, failed, run_kit

pytestmark = [pytest.mark.root, pytest.mark.slow]

MASTER = "spcmv0"
# checks that do not apply to the class: skipped with this reason fragment
NOT_APPLICABLE = {"DEL-07": "no firewall/NAT state", "CHK-09": "no firewall/NAT state"}
# check id -> a fragment of the reason (docs/conformance.md, "macvlan")
REFERENCE_FAILURES = {
    "ENV-01": "exit 0",  # skel prints its "about" text and exits 0 without CNI_COMMAND
    "ENV-11": "succeeded",  # no ErrInvalidNetNS check in the 1.1.1 skel
    "VER-02": "lacks 1.1.0",
    "ADD-06": "drops prevResult",  # with ipam, the result is the IPAM result + the macvlan only
    "ADD-09": "sandbox keeps ['eth0']",  # `r, err := ipam.ExecAdd` shadows err: the deferred DelLink never runs
    "CHK-11": "Expected Route",  # plugins#886, fixed in v1.3.0
    "CFG-03": "failed to allocate all requested IPs",
    "IPM-02": "lacks 1.1.0",
}
REFERENCE_SKIPS = {"RES-1.1.0", "STA-01", "STA-02", "STA-03", "STA-04", "STA-05", "GC-01", "GC-02", "GC-03",
                   "GC-04", "GC-05", "GC-06", "IPM-04", *NOT_APPLICABLE}


def _own_namespaces() -> set[str]:
    prefix = f"{harness.PREFIX}{os.getpid()}-"
    return {n for n in os.listdir(harness.NETNS_DIR) if n.startswith(prefix)} if os.path.isdir(
        harness.NETNS_DIR) else set()


@pytest.fixture(scope="module")
def splice_macvlan() -> dict[str, kit.Outcome]:
    require_root()
    outcomes = run_kit("splice-macvlan", "splice-ipam", [bin_dir()], master=MASTER)
    assert not _own_namespaces(), "the kit left namespaces (a master's switch namespace?)"
    return outcomes


@pytest.fixture(scope="module")
def reference_macvlan() -> dict[str, kit.Outcome]:
    require_root()
    require(os.access(os.path.join(REFERENCE_PLUGINS, "macvlan"), os.X_OK),
            f"the Go reference macvlan in {REFERENCE_PLUGINS} (Debian containernetworking-plugins)")
    return run_kit("macvlan", "host-local", [REFERENCE_PLUGINS], master=MASTER)


def _skips(outcomes: dict[str, kit.Outcome]) -> dict[str, str]:
    return {i: o.reason for i, o in outcomes.items() if o.result == "skip"}


def test_every_applicable_check_passes_on_splice_macvlan(splice_macvlan):
    assert set(splice_macvlan) == {c.id for c in kit.select(None)}
    assert failed(splice_macvlan) == {}
    skips = _skips(splice_macvlan)
    assert set(skips) == set(NOT_APPLICABLE), skips
    for check_id, fragment in NOT_APPLICABLE.items():
        assert fragment in skips[check_id] and "macvlan" in skips[check_id], skips[check_id]


def test_reference_macvlan_fails_exactly_the_documented_checks(reference_macvlan):
    got = failed(reference_macvlan)
    assert set(got) == set(REFERENCE_FAILURES), got
    for check_id, fragment in REFERENCE_FAILURES.items():
        assert fragment in got[check_id], f"{check_id}: {got[check_id]}"
    assert set(_skips(reference_macvlan)) == REFERENCE_SKIPS


def test_leak_check_allows_the_master_and_nothing_the_plugin_left():
    """broken-macvlan-leaky moves the container's macvlan to the host before DEL: caught in the
    host namespace, while checks that leave only the master pass."""
    outcomes = run_kit("broken-macvlan-leaky", "splice-ipam", [BROKEN, bin_dir()],
                       ["DEL-01", "DEL-05", "RES-1.0.0", "DEL-02", "ENV-09", "CHK-02"], master=MASTER)
    got = failed(outcomes)
    assert set(got) == {"DEL-01", "DEL-05", "RES-1.0.0", "CHK-02"}, got
    for check_id in got:
        assert "links left in host: spcleak" in got[check_id], got[check_id]
        assert MASTER not in got[check_id], got[check_id]
    # DEL with the namespace gone: nothing to move; ENV-09 makes nothing: only the master is there
    assert outcomes["DEL-02"].result == "pass", outcomes["DEL-02"].reason
    assert outcomes["ENV-09"].result == "pass", outcomes["ENV-09"].reason
    assert not _own_namespaces()
