"""The kit on the Go reference plugins (Debian containernetworking-plugins 1.1.1): exactly the
failures documented in docs/conformance.md, each for its documented reason."""

from __future__ import annotations

import pytest

from .conftest import failed

pytestmark = [pytest.mark.root, pytest.mark.slow]

# check id -> a fragment of the reason (the gap, see docs/conformance.md)
REFERENCE_FAILURES = {
    "ENV-01": "exit 0",  # skel prints its "about" text and exits 0 without CNI_COMMAND
    "ENV-11": "succeeded",  # no ErrInvalidNetNS check in the 1.1.1 skel
    "VER-02": "lacks 1.1.0",  # predates spec 1.1.0
    "ADD-06": "drops prevResult",  # bridge ignores prevResult
    "ADD-09": "not rolled back",  # veth stays when IPAM fails
    "DEL-02": "nftables state left",  # ipMasq teardown needs the container's addresses
    "DEL-03": "nftables state left",
    "DEL-04": "nftables state left",
    "DEL-07": "failed",  # DEL errors when its NAT chain is already gone
    "CHK-09": "CHECK succeeded although",  # CHECK ignores ipMasq rules
    "CHK-11": "Expected Route",  # plugins#886, fixed in v1.3.0
    "CFG-03": "failed to allocate all requested IPs",  # host-local merges args.cni.ips and CNI_ARGS IP
    "IPM-02": "lacks 1.1.0",
}
# checks the reference cannot run: no spec 1.1.0 (STATUS, GC)
REFERENCE_SKIPS = {"RES-1.1.0", "STA-01", "STA-02", "STA-03", "STA-04", "STA-05", "GC-01", "GC-02", "GC-03",
                   "GC-04", "GC-05", "GC-06", "IPM-04"}


def test_reference_fails_exactly_the_documented_checks(reference_outcomes):
    got = failed(reference_outcomes)
    assert set(got) == set(REFERENCE_FAILURES), got
    for check_id, fragment in REFERENCE_FAILURES.items():
        assert fragment in got[check_id], f"{check_id}: {got[check_id]}"


def test_reference_skips_what_it_does_not_support(reference_outcomes):
    skipped = {i for i, o in reference_outcomes.items() if o.result == "skip"}
    assert skipped == REFERENCE_SKIPS
    assert "1.1.0" in reference_outcomes["STA-01"].reason
