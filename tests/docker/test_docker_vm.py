"""splice-macvlan and splice-ipvlan under a real dockerd on 802.1Q parents (``-o parent=<wire>.<vid>``).

This machine's kernel lacks 8021q and ipvlan: marked ``needs_vm``, these skip here and run in
the user-mode-linux guest (scripts/test.sh runs ``-m needs_vm`` there; dockerd works in it with
the vfs storage driver, harness.py picks it on an overlay root).
"""

from __future__ import annotations

import pytest

from splice.conformance import oracle

from ..conftest import make_switch, missing_kernel_feature, vlan_supported
from .test_docker_bridge import addr, assert_all_clean, inet4, subnet

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.needs_vm]

WIRE = "spdwire1"


def ipvlan_supported(ns) -> bool:
    """Probe (not a version check): can ``ip link add ... type ipvlan`` be made in ``ns``?"""
    ns.sh("ip", "link", "add", "probe1", "type", "veth", "peer", "name", "probe2")
    try:
        return ns.sh("ip", "link", "add", "link", "probe1", "name", "probe0", "type", "ipvlan", "mode", "l2",
                     check=False).returncode == 0
    finally:
        ns.sh("ip", "link", "del", "probe1")


def test_macvlan_and_ipvlan_on_8021q_parents(dk, make_ns):
    if not vlan_supported(dk.host):
        missing_kernel_feature("8021q (VLAN sub-interfaces)")
    if not ipvlan_supported(dk.host):
        missing_kernel_feature("ipvlan")
    sw = make_switch(dk.host, make_ns, WIRE, "192.0.2.1")
    try:
        for vid, i in ((10, 30), (11, 31)):  # the switch end of each VLAN, with its gateway address
            sw.sh("ip", "link", "add", "link", "sw0", "name", f"sw0.{vid}", "type", "vlan", "id", str(vid))
            sw.sh("ip", "link", "set", f"sw0.{vid}", "up")
            sw.sh("ip", "addr", "add", f"{addr(i, 1)}/24", "dev", f"sw0.{vid}")
        dk.network_create("mvv", "--subnet", subnet(30), "--gateway", addr(30, 1), "-o", f"parent={WIRE}.10",
                          driver="splice-macvlan", ipam="splice")
        dk.network_create("ipv", "--subnet", subnet(31), "--gateway", addr(31, 1), "-o", f"parent={WIRE}.11",
                          "-o", "ipvlan_mode=l2", driver="splice-ipvlan", ipam="splice")
        dk.run("mv1", "mvv")
        dk.run("iv1", "ipv", "--ip", addr(31, 40))
        assert {f"{WIRE}.10", f"{WIRE}.11"} <= dk.links(), f"the driver makes the 802.1Q parents: {dk.links()}"
        assert inet4(dk, "iv1") == [f"{addr(31, 40)}/24"]
        assert dk.ping("mv1", addr(30, 1)), f"macvlan -> switch over VLAN 10\n{dk.driver_log()}"
        assert dk.ping("iv1", addr(31, 1)), f"ipvlan -> switch over VLAN 11\n{dk.driver_log()}"
        assert oracle.ping(sw.name, dk.container_ip("mv1", "mvv"))
        dk("rm", "-f", "mv1", "iv1")
        dk("network", "rm", "mvv", "ipv")
        assert_all_clean(dk, allow_links={WIRE})  # the sub-interfaces it made are gone too
    finally:
        dk.host.sh("ip", "link", "del", WIRE, check=False)
