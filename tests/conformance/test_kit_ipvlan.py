"""The kit's ipvlan class, in a kernel with ipvlan (``needs_vm``: the UML guest of
scripts/vm-run.sh; this machine's kernel lacks it): a representative subset of the checks
passes on splice-ipvlan + splice-ipam, and the Go reference (Debian containernetworking-plugins
1.1.1 ipvlan + host-local) fails exactly the checks of that subset docs/conformance.md lists.

The guest has one CPU and every call is slow there (a full run takes ~5 min for splice, ~2 min
for the reference), so the tests run a subset: lifecycle and result shape, DEL idempotence and
DEL without a netns or with the netns gone, CHECK, a duplicate interface, GC, the checks that
do not apply, and the checks the reference fails;
the full tables in docs/conformance.md were produced by hand (commands there)."""

from __future__ import annotations

import os

import pytest

from splice.conformance import kit

from ..conftest import REFERENCE_PLUGINS, bin_dir, missing_kernel_feature, require, require_root
from .conftest import failed, kernel_has, run_kit

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.needs_vm]

MASTER = "spciv0"
NOT_APPLICABLE = {"DEL-07": "no firewall/NAT state", "CHK-09": "no firewall/NAT state",
                  "CHK-05": "shares its master's MAC"}
SPLICE_SUBSET = ["RES-1.1.0", "DEL-01", "DEL-03", "ADD-04", "CHK-11", "GC-02", *NOT_APPLICABLE]
# check id -> a fragment of the reason (docs/conformance.md, "ipvlan"); the subset's failures
REFERENCE_FAILURES = {
    "ENV-10": "links left in sandbox: eth0",  # no rollback of the link when host-local refuses CNI_ARGS
    "ADD-04": "sandbox links now",  # the temporary link stays when the rename to an existing name fails
    "ADD-09": "sandbox keeps ['eth0']",  # no rollback of the link when IPAM fails
    "CHK-11": "Expected Route",  # plugins#886, fixed in v1.3.0
}
REFERENCE_SUBSET = [*REFERENCE_FAILURES, "DEL-02", "CHK-05"]


def _require_ipvlan() -> None:
    require_root()
    if not kernel_has("ipvlan"):
        missing_kernel_feature("ipvlan links (CONFIG_IPVLAN)")


@pytest.fixture(scope="module")
def splice_ipvlan() -> dict[str, kit.Outcome]:
    _require_ipvlan()
    require(os.access(bin_dir() / "splice-ipvlan", os.X_OK),
            f"splice-ipvlan in {bin_dir()} (pip install -e '.[test]')")
    return run_kit("splice-ipvlan", "splice-ipam", [bin_dir()], SPLICE_SUBSET, master=MASTER)


@pytest.fixture(scope="module")
def reference_ipvlan() -> dict[str, kit.Outcome]:
    _require_ipvlan()
    require(os.access(os.path.join(REFERENCE_PLUGINS, "ipvlan"), os.X_OK),
            f"the Go reference ipvlan in {REFERENCE_PLUGINS} (Debian containernetworking-plugins)")
    return run_kit("ipvlan", "host-local", [REFERENCE_PLUGINS], REFERENCE_SUBSET, master=MASTER)


def _skips(outcomes: dict[str, kit.Outcome]) -> dict[str, str]:
    return {i: o.reason for i, o in outcomes.items() if o.result == "skip"}


def test_the_subset_passes_on_splice_ipvlan(splice_ipvlan):
    assert set(splice_ipvlan) == set(SPLICE_SUBSET)
    assert failed(splice_ipvlan) == {}
    skips = _skips(splice_ipvlan)
    assert set(skips) == set(NOT_APPLICABLE), skips
    for check_id, fragment in NOT_APPLICABLE.items():
        assert fragment in skips[check_id], skips[check_id]


def test_reference_ipvlan_fails_exactly_the_documented_checks(reference_ipvlan):
    got = failed(reference_ipvlan)
    assert set(got) == set(REFERENCE_FAILURES), got
    for check_id, fragment in REFERENCE_FAILURES.items():
        assert fragment in got[check_id], f"{check_id}: {got[check_id]}"
    assert set(_skips(reference_ipvlan)) == {"CHK-05"}
