"""The kit's checks can fail: each deliberately broken plugin (tests/conformance/broken/) is
caught by the check(s) covering what it breaks, and passes the others run alongside."""

from __future__ import annotations

import pytest

from ..conftest import bin_dir, require_root
from .conftest import BROKEN, assert_caught, run_kit

pytestmark = [pytest.mark.root, pytest.mark.slow]

# (main plugin, IPAM, checks run, checks that must fail (-> reason fragment), checks that must pass)
CASES = {
    "second DEL fails": ("broken-del-twice", "splice-ipam", {"DEL-01": "second DEL"},
                         ["RES-1.1.0", "DEL-02", "IPM-03", "ENV-09"]),
    "drops ips[].interface": ("broken-no-ifindex", "splice-ipam", {"ADD-02": "no 'interface' index"},
                              ["ADD-01", "ADD-03", "RES-1.1.0"]),
    "leaks the veth": ("broken-leaky", "splice-ipam",
                       {"DEL-01": "links left in host", "DEL-05": "links left in host",
                        "RES-1.0.0": "links left in sandbox"},
                       ["ENV-01", "VER-01", "DEL-06"]),
    "wrong cniVersion": ("broken-wrong-version", "splice-ipam",
                         {"RES-0.4.0": "cniVersion '1.0.0' != config's '0.4.0'",
                          "RES-1.1.0": "cniVersion '0.4.0' != config's '1.1.0'"},
                         ["ENV-03", "DEL-06"]),
    "logs on stdout": ("broken-stdout-logs", "splice-ipam",
                       {"OUT-01": "stdout is not JSON", "CHK-02": "CHECK printed on stdout"},
                       ["DEL-01", "ENV-03", "RES-1.1.0"]),
    "CHECK checks nothing": ("broken-check-noop", "splice-ipam",
                             {"CHK-04": "CHECK succeeded although", "CHK-06": "CHECK succeeded although",
                              "CHK-08": "CHECK succeeded although", "CHK-03": "exit 0"},
                             ["CHK-02", "DEL-01"]),
    "accepts a missing CNI_IFNAME": ("broken-lax-env", "splice-ipam", {"ENV-04": "without CNI_IFNAME: exit 0"},
                                     ["ENV-03", "ENV-05", "RES-1.1.0"]),
    "IPAM without locking": ("splice-bridge", "broken-racy-ipam", {"CON-01": "duplicate addresses"},
                             ["RES-1.0.0", "DEL-01"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_plugin_is_caught(case):
    require_root()
    plugin, ipam, must_fail, must_pass = CASES[case]
    outcomes = run_kit(plugin, ipam, [BROKEN, bin_dir()], [*must_fail, *must_pass])
    assert_caught(outcomes, must_fail, must_pass)
