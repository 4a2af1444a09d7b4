"""BridgeDriver in throwaway namespaces (host_ns stands for the host), asserted with the oracle."""

from __future__ import annotations

import ipaddress
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from splice.conformance import oracle
from splice.libnet import rtnl, sandbox
from splice.libnet.errors import NetError
from splice.libnet.netns import Netns
from splice.plugins.bridge.config import parse_bridge_config
from splice.plugins.bridge.driver import BridgeDriver, host_veth_name, owner_tag
from splice.plugins.errors import CheckFailed, ConfigError, InterfaceExists, InvalidEnvironment, KernelError
from splice.plugins.model import Attachment, Interface, IPConfig, Route, Wiring

from ..conftest import (has_ipv6, missing_kernel_feature, require_ipv6, require_module, require_nft,
                        vlan_filtering_supported)

pytestmark = [pytest.mark.root, pytest.mark.timeout(30)]

BR = "br-t"
NETWORK = "net1"
IF = ipaddress.ip_interface
NET = ipaddress.ip_network
ADDR = ipaddress.ip_address


@pytest.fixture
def host(host_ns):
    with Netns.open(host_ns.path) as h:
        yield h


def make_driver(host: Netns, **conf) -> BridgeDriver:
    return BridgeDriver(parse_bridge_config({"name": NETWORK, "type": "splice-bridge", "bridge": BR, **conf}), host)


def attachment(ns, cid: str = "c1", ifname: str = "eth0", mac: str | None = None, network: str = NETWORK) -> Attachment:
    return Attachment(network=network, container_id=cid, ifname=ifname, netns=ns.path, mac=mac)


def ip4(n: int, subnet: str = "10.77.0") -> IPConfig:
    return IPConfig(address=IF(f"{subnet}.{n}/24"))


def assert_clean(host_ns, *sandboxes, bridge: str | None = BR) -> None:
    """Leak check: the host holds only lo (+ the bridge, which DEL never removes); sandboxes only lo."""
    want = {"lo"} | ({bridge} if bridge else set())
    assert oracle.link_names(host_ns.name) == want, f"host leaks: {oracle.link_names(host_ns.name) - want}"
    for sb in sandboxes:
        assert oracle.link_names(sb.name) == {"lo"}, f"sandbox {sb.name} leaks: {oracle.link_names(sb.name)}"


def slave_data(host_ns, name: str) -> dict:
    return oracle.link(host_ns.name, name)["linkinfo"]["info_slave_data"]


def sandbox_sysctl(ns, path: str) -> str:
    return ns.sh("cat", f"/proc/sys/net/{path}").stdout.strip()


def port_vlans(host_ns, port: str) -> dict[int, set[str]]:
    """``bridge -j vlan show`` of one port: vid -> flags (ranges expanded)."""
    out: dict[int, set[str]] = {}
    for p in oracle.bridge_vlans(host_ns.name):
        if p["ifname"] == port:
            for v in p["vlans"]:
                for vid in range(v["vlan"], v.get("vlanEnd", v["vlan"]) + 1):
                    out[vid] = set(v.get("flags", []))
    return out


def require_vlan_filtering(host_ns, make_ns, host) -> None:
    """Without bridge VLAN filtering: check the clean failure, then skip (fail in the VM)."""
    if vlan_filtering_supported(host_ns):
        return
    sb = make_ns()
    with pytest.raises(NetError, match="VLAN filtering"):
        make_driver(host, vlan=100).add(attachment(sb), [ip4(2)], [])
    assert oracle.link_names(sb.name) == {"lo"}
    missing_kernel_feature("bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING): clean failure checked")


PVID_UNTAGGED = {"PVID", "Egress Untagged"}


# ============================================================================ ADD
def test_add_wires_everything(host_ns, sandbox_ns, host):
    d = make_driver(host, isDefaultGateway=True, mtu=1400, hairpinMode=True)
    att = attachment(sandbox_ns, mac="02:42:0a:4d:00:02")
    w = d.add(att, [ip4(2)], [Route(dst=NET("192.168.50.0/24"))])
    veth = host_veth_name(NETWORK, "c1", "eth0")

    # the result
    assert [i.name for i in w.interfaces] == [BR, veth, "eth0"]
    assert w.interfaces[2] == Interface("eth0", "02:42:0a:4d:00:02", sandbox_ns.path, 1400)
    assert w.ips == [IPConfig(IF("10.77.0.2/24"), ADDR("10.77.0.1"), 2)]
    assert w.routes == [Route(NET("192.168.50.0/24")), Route(NET("0.0.0.0/0"), ADDR("10.77.0.1"))]

    # the bridge
    br = oracle.link(host_ns.name, BR)
    assert br["linkinfo"]["info_kind"] == "bridge" and "UP" in br["flags"] and br["mtu"] == 1400
    assert br["address"] == w.interfaces[0].mac
    assert "PROMISC" not in br["flags"]
    assert oracle.addresses(host_ns.name, BR) == ["10.77.0.1/24"]
    assert oracle.sysctl(host_ns.name, "net.ipv4.ip_forward") == "1"
    if has_ipv6():
        assert sandbox_sysctl(host_ns, f"ipv6/conf/{BR}/accept_ra") == "0"

    # the host end
    h = oracle.link(host_ns.name, veth)
    assert h["master"] == BR and "UP" in h["flags"] and h["mtu"] == 1400
    assert h["ifalias"] == f"splice:{NETWORK}:c1:eth0"
    assert h["address"] == w.interfaces[1].mac and h["linkinfo"]["info_kind"] == "veth"
    assert slave_data(host_ns, veth)["hairpin"] is True
    assert slave_data(host_ns, veth)["isolated"] is False

    # the sandbox end
    c = oracle.link(sandbox_ns.name, "eth0")
    assert c["address"] == "02:42:0a:4d:00:02" and c["mtu"] == 1400 and "UP" in c["flags"]
    assert c["linkinfo"]["info_kind"] == "veth" and c["link_index"] == h["ifindex"]
    assert oracle.addresses(sandbox_ns.name, "eth0") == ["10.77.0.2/24"]
    routes = {r["dst"]: r for r in oracle.routes(sandbox_ns.name)}
    assert routes["default"]["gateway"] == "10.77.0.1" and routes["default"]["dev"] == "eth0"
    assert routes["192.168.50.0/24"]["gateway"] == "10.77.0.1"  # no gw: the family's gateway, as the reference
    assert sandbox_sysctl(sandbox_ns, "ipv4/conf/eth0/arp_notify") == "1"
    if has_ipv6():
        assert sandbox_sysctl(sandbox_ns, "ipv6/conf/eth0/accept_dad") == "0"
    assert oracle.link_names(sandbox_ns.name) == {"lo", "eth0"}  # no temporary name left

    d.check(att, w)
    d.delete(att, w.ips)
    assert_clean(host_ns, sandbox_ns)
    assert oracle.addresses(host_ns.name, BR) == ["10.77.0.1/24"]  # the bridge and its gateway stay


def test_ping_between_sandboxes_and_gateway(host_ns, make_ns, host):
    d = make_driver(host, isDefaultGateway=True)
    a, b = make_ns(), make_ns()
    wa = d.add(attachment(a, "ca"), [ip4(2)], [])
    wb = d.add(attachment(b, "cb"), [ip4(3)], [])
    assert wa.interfaces[0].mac == wb.interfaces[0].mac  # the bridge MAC is pinned
    assert oracle.ping(a.name, "10.77.0.3")
    assert oracle.ping(b.name, "10.77.0.2")
    assert oracle.ping(a.name, "10.77.0.1")
    d.delete(attachment(a, "ca"), None)
    d.delete(attachment(b, "cb"), None)
    assert_clean(host_ns, a, b)


def test_dual_stack(host_ns, sandbox_ns, host):
    require_ipv6()
    d = make_driver(host, isDefaultGateway=True)
    att = attachment(sandbox_ns)
    w = d.add(att, [ip4(2), IPConfig(IF("fd00:77::2/64"))], [])
    assert [ip.gateway for ip in w.ips] == [ADDR("10.77.0.1"), ADDR("fd00:77::1")]
    assert set(oracle.addresses(host_ns.name, BR)) == {"10.77.0.1/24", "fd00:77::1/64"}
    assert oracle.sysctl(host_ns.name, "net.ipv6.conf.all.forwarding") == "1"
    v6 = oracle.ip_json(sandbox_ns.name, "addr", "show", "dev", "eth0")[0]["addr_info"]
    g = next(a for a in v6 if a["local"] == "fd00:77::2")
    assert not g.get("tentative") and not g.get("dadfailed")
    assert any(r["dst"] == "default" and r["gateway"] == "fd00:77::1" for r in oracle.routes(sandbox_ns.name, "-6"))
    assert oracle.ping(sandbox_ns.name, "fd00:77::1")
    d.check(att, w)
    d.delete(att, w.ips)
    assert_clean(host_ns, sandbox_ns)


def test_ipam_gateway_and_default_route_from_ipam_win(host_ns, sandbox_ns, host):
    d = make_driver(host, isDefaultGateway=True)
    ips = [IPConfig(IF("10.77.0.9/24"), gateway=ADDR("10.77.0.254"))]
    dflt = Route(NET("0.0.0.0/0"), ADDR("10.77.0.254"))
    w = d.add(attachment(sandbox_ns), ips, [dflt])
    assert w.routes == [dflt]  # no second default route
    assert oracle.addresses(host_ns.name, BR) == ["10.77.0.254/24"]
    d.delete(attachment(sandbox_ns), None)
    assert_clean(host_ns, sandbox_ns)


def test_no_gateway_by_default(host_ns, sandbox_ns, host):
    d = make_driver(host)
    w = d.add(attachment(sandbox_ns), [ip4(2)], [])
    assert w.ips[0].gateway is None and w.routes == []
    assert oracle.addresses(host_ns.name, BR) == []
    assert [r["dst"] for r in oracle.routes(sandbox_ns.name)] == ["10.77.0.0/24"]
    d.delete(attachment(sandbox_ns), None)
    assert_clean(host_ns, sandbox_ns)


def test_l2_only_and_disabled_interface(host_ns, make_ns, host):
    a, b = make_ns(), make_ns()
    w = make_driver(host).add(attachment(a, "ca"), [], [])
    assert "UP" in oracle.link(a.name, "eth0")["flags"] and w.ips == [] and w.routes == []
    d = make_driver(host, disableContainerInterface=True)
    d.add(attachment(b, "cb"), [], [])
    assert "UP" not in oracle.link(b.name, "eth0")["flags"]
    d.delete(attachment(a, "ca"), None)
    d.delete(attachment(b, "cb"), None)
    assert_clean(host_ns, a, b)


def test_promisc_and_port_isolation(host_ns, make_ns, host):
    d = make_driver(host, isGateway=True, promiscMode=True, portIsolation=True)
    a, b = make_ns(), make_ns()
    wa = d.add(attachment(a, "ca"), [ip4(2)], [])
    d.add(attachment(b, "cb"), [ip4(3)], [])
    assert "PROMISC" in oracle.link(host_ns.name, BR)["flags"]
    assert slave_data(host_ns, wa.interfaces[1].name)["isolated"] is True
    assert oracle.ping(a.name, "10.77.0.1")  # the bridge itself is not an isolated port
    assert not oracle.ping(a.name, "10.77.0.3", timeout=1)  # isolated ports do not see each other
    d.check(attachment(a, "ca"), wa)
    d.delete(attachment(a, "ca"), None)
    d.delete(attachment(b, "cb"), None)
    assert_clean(host_ns, a, b)


def test_existing_bridge_is_used(host_ns, sandbox_ns, host):
    host_ns.sh("ip", "link", "add", BR, "type", "bridge")  # down, MAC not pinned, no alias
    d = make_driver(host, isGateway=True)
    w = d.add(attachment(sandbox_ns), [ip4(2)], [])
    br = oracle.link(host_ns.name, BR)
    assert "UP" in br["flags"] and w.interfaces[0].mac == br["address"]
    assert oracle.addresses(host_ns.name, BR) == ["10.77.0.1/24"]
    d.check(attachment(sandbox_ns), w)
    d.delete(attachment(sandbox_ns), None)
    assert_clean(host_ns, sandbox_ns)


def test_name_taken_by_a_non_bridge(host_ns, sandbox_ns, host):
    host_ns.sh("ip", "link", "add", BR, "type", "veth", "peer", "name", "br-peer")
    d = make_driver(host)
    with pytest.raises(KernelError, match="not a bridge"):
        d.add(attachment(sandbox_ns), [ip4(2)], [])
    with pytest.raises(KernelError, match="not a bridge"):
        d.status()
    assert oracle.link_names(sandbox_ns.name) == {"lo"}
    assert oracle.link_names(host_ns.name) == {"lo", BR, "br-peer"}


def test_address_conflict_and_force_address(host_ns, make_ns, host):
    a, b = make_ns(), make_ns()
    host_ns.sh("ip", "link", "add", BR, "type", "bridge")
    host_ns.sh("ip", "addr", "add", "10.77.0.254/24", "dev", BR)
    with pytest.raises(KernelError, match="already has an IP address different from 10.77.0.1/24"):
        make_driver(host, isGateway=True).add(attachment(a, "ca"), [ip4(2)], [])
    assert oracle.link_names(host_ns.name) == {"lo", BR} and oracle.link_names(a.name) == {"lo"}
    assert oracle.addresses(host_ns.name, BR) == ["10.77.0.254/24"]
    d = make_driver(host, isGateway=True, forceAddress=True)
    d.add(attachment(b, "cb"), [ip4(2)], [])
    assert oracle.addresses(host_ns.name, BR) == ["10.77.0.1/24"]
    d.delete(attachment(b, "cb"), None)
    assert_clean(host_ns, a, b)


@pytest.mark.needs_vm
def test_vlan_access_and_trunk(host_ns, make_ns, host):
    require_vlan_filtering(host_ns, make_ns, host)
    a, b = make_ns(), make_ns()
    d = make_driver(host, vlan=100, preserveDefaultVlan=False)
    wa = d.add(attachment(a, "ca"), [ip4(2)], [])
    t = make_driver(host, vlanTrunk=[{"id": 5}, {"minID": 10, "maxID": 12}], preserveDefaultVlan=False)
    wb = t.add(attachment(b, "cb"), [ip4(3)], [])
    assert oracle.link(host_ns.name, BR)["linkinfo"]["info_data"]["vlan_filtering"] == 1
    # vlan: the access VLAN is the port's PVID, egress untagged, and nothing else
    assert port_vlans(host_ns, wa.interfaces[1].name) == {100: PVID_UNTAGGED}
    # vlanTrunk: every id of the list and of the range, tagged; no PVID
    assert port_vlans(host_ns, wb.interfaces[1].name) == {5: set(), 10: set(), 11: set(), 12: set()}
    # no isGateway: no <bridge>.<vlan> interface
    assert [i.name for i in wa.interfaces] == [BR, wa.interfaces[1].name, "eth0"]
    d.check(attachment(a, "ca"), wa)
    t.check(attachment(b, "cb"), wb)
    d.delete(attachment(a, "ca"), None)
    t.delete(attachment(b, "cb"), None)
    assert_clean(host_ns, a, b)


@pytest.mark.needs_vm
@pytest.mark.parametrize("preserve", [True, False])
def test_preserve_default_vlan(host_ns, make_ns, host, preserve):
    require_vlan_filtering(host_ns, make_ns, host)
    a, b = make_ns(), make_ns()
    wa = make_driver(host, vlan=100, preserveDefaultVlan=preserve).add(attachment(a, "ca"), [ip4(2)], [])
    wb = make_driver(host, vlanTrunk=[{"id": 7}], vlan=0, preserveDefaultVlan=preserve).add(
        attachment(b, "cb"), [ip4(3)], [])
    access, trunk = port_vlans(host_ns, wa.interfaces[1].name), port_vlans(host_ns, wb.interfaces[1].name)
    if preserve:  # VLAN 1 stays (untagged); the access VLAN takes over the PVID
        assert access == {1: {"Egress Untagged"}, 100: PVID_UNTAGGED}
        assert trunk == {1: PVID_UNTAGGED, 7: set()}
    else:
        assert access == {100: PVID_UNTAGGED}
        assert trunk == {7: set()}
    for drv, ns, cid in ((make_driver(host, vlan=100), a, "ca"), (make_driver(host, vlanTrunk=[{"id": 7}]), b, "cb")):
        drv.delete(attachment(ns, cid), None)
    assert_clean(host_ns, a, b)


def l2_ping(src, dst_ip: str) -> bool:
    return src.sh("ping", "-n", "-q", "-c", "1", "-W", "1", dst_ip, check=False).returncode == 0


@pytest.mark.needs_vm
def test_vlan_gateway_and_isolation(host_ns, make_ns, host):
    require_vlan_filtering(host_ns, make_ns, host)
    a, b, c = make_ns(), make_ns(), make_ns()
    gw100 = make_driver(host, vlan=100, isGateway=True, preserveDefaultVlan=False)
    wa = gw100.add(attachment(a, "ca"), [ip4(2)], [])
    wb = gw100.add(attachment(b, "cb"), [ip4(3)], [])
    # same subnet, other VLAN, no gateway: only VLAN isolation keeps it from a and b
    v200 = make_driver(host, vlan=200, preserveDefaultVlan=False)
    wc = v200.add(attachment(c, "cc"), [ip4(4)], [])

    gw_if = f"{BR}.100"
    gw_port = next(n for n in oracle.link_names(host_ns.name) if n.startswith("vethg"))
    # the result lists <bridge>.<vlan> after the container interface, as the reference
    assert [i.name for i in wa.interfaces] == [BR, wa.interfaces[1].name, "eth0", gw_if]
    assert wa.ips[0].gateway == ADDR("10.77.0.1")
    # the gateway address is on <bridge>.<vlan>, not on the bridge
    assert oracle.addresses(host_ns.name, gw_if) == ["10.77.0.1/24"]
    assert oracle.addresses(host_ns.name, BR) == []
    assert "UP" in oracle.link(host_ns.name, gw_if)["flags"]
    assert oracle.link(host_ns.name, gw_port)["master"] == BR
    for port in (gw_port, wa.interfaces[1].name, wb.interfaces[1].name):
        assert port_vlans(host_ns, port) == {100: PVID_UNTAGGED}, port
    assert port_vlans(host_ns, wc.interfaces[1].name) == {200: PVID_UNTAGGED}

    assert l2_ping(a, "10.77.0.3") and l2_ping(b, "10.77.0.2")  # same VLAN
    assert l2_ping(a, "10.77.0.1")  # the gateway, through its access port
    assert not l2_ping(a, "10.77.0.4") and not l2_ping(c, "10.77.0.3")  # across VLANs
    assert not l2_ping(c, "10.77.0.1")  # VLAN 200 does not reach VLAN 100's gateway

    gw100.check(attachment(a, "ca"), wa)
    gw100.delete(attachment(a, "ca"), None)
    gw100.delete(attachment(b, "cb"), None)
    v200.delete(attachment(c, "cc"), None)
    # the shared gateway interface stays (as the reference), everything else goes
    assert oracle.link_names(host_ns.name) == {"lo", BR, gw_if, gw_port}
    for ns in (a, b, c):
        assert oracle.link_names(ns.name) == {"lo"}


def test_interface_exists(host_ns, sandbox_ns, host):
    sandbox_ns.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    d = make_driver(host, isGateway=True)
    with pytest.raises(InterfaceExists, match="'eth0' already exists"):
        d.add(attachment(sandbox_ns), [ip4(2)], [])
    # nothing of ours is left: no host veth, no temporary interface, no gateway address
    assert oracle.link_names(host_ns.name) == {"lo", BR}
    assert oracle.link_names(sandbox_ns.name) == {"lo", "eth0", "other0"}
    assert oracle.addresses(host_ns.name, BR) == []
    # the runtime's cleanup DEL must not take the interface that is not ours
    d.delete(attachment(sandbox_ns), None)
    assert oracle.link_names(sandbox_ns.name) == {"lo", "eth0", "other0"}
    assert oracle.link_names(host_ns.name) == {"lo", BR}


def test_add_twice_is_interface_exists(host_ns, sandbox_ns, host):
    d = make_driver(host)
    att = attachment(sandbox_ns)
    d.add(att, [ip4(2)], [])
    with pytest.raises(InterfaceExists, match="already exists"):
        d.add(att, [ip4(2)], [])
    assert oracle.link_names(sandbox_ns.name) == {"lo", "eth0"}
    d.delete(att, None)
    assert_clean(host_ns, sandbox_ns)


def test_invalid_attachment(host, sandbox_ns):
    d = make_driver(host)
    with pytest.raises(InvalidEnvironment, match="interface name"):
        d.add(attachment(sandbox_ns, ifname="a" * 16), [], [])
    with pytest.raises(ConfigError, match="MAC"):
        d.add(attachment(sandbox_ns, mac="01:00:5e:00:00:01"), [], [])
    with pytest.raises(ConfigError, match="namespace"):
        d.add(Attachment(NETWORK, "c1", "eth0", None), [], [])


def test_missing_sandbox(host, host_ns):
    from splice.libnet.errors import NetnsNotFound

    with pytest.raises(NetnsNotFound):
        make_driver(host).add(Attachment(NETWORK, "c1", "eth0", "/run/netns/spt-does-not-exist"), [], [])
    assert oracle.link_names(host_ns.name) == {"lo"}


# ============================================================================ rollback
def test_rollback_after_a_failure_in_the_sandbox(host_ns, sandbox_ns, host, monkeypatch):
    def boom(self, *a, **kw):
        raise NetError("injected route failure")

    monkeypatch.setattr(rtnl.Rtnl, "_add_route_op", boom)  # single and batched paths
    d = make_driver(host, isDefaultGateway=True)
    with pytest.raises(NetError, match="injected"):
        d.add(attachment(sandbox_ns), [ip4(2)], [])
    assert_clean(host_ns, sandbox_ns)
    assert oracle.addresses(host_ns.name, BR) == []  # added by this ADD, no other port: removed


def test_rollback_after_a_failure_on_the_host(host_ns, sandbox_ns, host, monkeypatch):
    def boom(self, *a, **kw):
        raise NetError("injected port failure")

    monkeypatch.setattr(rtnl.Rtnl, "_set_brport_op", boom)  # single and batched paths
    with pytest.raises(NetError, match="injected"):
        make_driver(host, isGateway=True).add(attachment(sandbox_ns), [ip4(2)], [])
    assert_clean(host_ns, sandbox_ns)


def test_rollback_keeps_a_gateway_address_others_use(host_ns, make_ns, host, monkeypatch):
    a, b = make_ns(), make_ns()
    d = make_driver(host, isGateway=True)
    d.add(attachment(a, "ca"), [ip4(2)], [])
    host_ns.sh("ip", "addr", "flush", "dev", BR)  # as if this ADD were the one adding it

    def boom(self, *a, **kw):
        raise NetError("injected")

    monkeypatch.setattr(sandbox, "configure", boom)
    with pytest.raises(NetError):
        d.add(attachment(b, "cb"), [ip4(3)], [])
    assert oracle.addresses(host_ns.name, BR) == ["10.77.0.1/24"]  # container ca relies on it
    assert oracle.link_names(b.name) == {"lo"}
    monkeypatch.undo()
    d.delete(attachment(a, "ca"), None)
    assert_clean(host_ns, a, b)


# ============================================================================ DEL
def test_delete_twice_and_without_netns(host_ns, sandbox_ns, host):
    d = make_driver(host)
    att = attachment(sandbox_ns)
    d.add(att, [ip4(2)], [])
    d.delete(att, None)
    d.delete(att, None)
    assert_clean(host_ns, sandbox_ns)
    # no netns path: the deterministic host veth is still found and removed
    d.add(att, [ip4(2)], [])
    d.delete(Attachment(NETWORK, "c1", "eth0", None), None)
    assert_clean(host_ns, sandbox_ns)
    d.delete(Attachment(NETWORK, "c1", "eth0", None), None)


def test_delete_after_the_sandbox_is_gone(host_ns, make_ns, host):
    sb = make_ns()
    d = make_driver(host)
    att = attachment(sb)
    d.add(att, [ip4(2)], [])
    subprocess.run(["ip", "netns", "del", sb.name], check=True)
    d.delete(att, None)
    d.delete(att, None)
    deadline = time.monotonic() + 5  # the kernel tears a dead namespace down asynchronously
    while oracle.link_names(host_ns.name) != {"lo", BR} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert oracle.link_names(host_ns.name) == {"lo", BR}


def test_delete_when_the_interface_is_gone(host_ns, sandbox_ns, host):
    d = make_driver(host)
    att = attachment(sandbox_ns)
    d.add(att, [ip4(2)], [])
    sandbox_ns.sh("ip", "link", "del", "eth0")
    d.delete(att, None)
    assert_clean(host_ns, sandbox_ns)


def test_delete_removes_a_crashed_add(host_ns, sandbox_ns, host):
    """A host veth whose peer never got renamed (ADD killed half-way): DEL still finds it."""
    veth = host_veth_name(NETWORK, "c1", "eth0")
    with Netns.open(sandbox_ns.path) as sb:
        rtnl.run(host, lambda rt: rt.add_veth(veth, "sp0badc0de", peer_netns_fd=sb.fd))
    make_driver(host).delete(attachment(sandbox_ns), None)
    assert_clean(host_ns, sandbox_ns, bridge=None)


# ============================================================================ races
def test_concurrent_first_add_threads(host_ns, make_ns, host):
    n = 4
    sbs = [make_ns() for _ in range(n)]
    d = make_driver(host, isDefaultGateway=True, mtu=1450)
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = d.add(attachment(sbs[i], f"c{i}"), [ip4(10 + i)], [])
        except BaseException as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert all(isinstance(r, Wiring) for r in results), results
    ports = [l for l in oracle.links(host_ns.name) if l.get("master") == BR]
    assert len(ports) == n
    assert oracle.addresses(host_ns.name, BR) == ["10.77.0.1/24"]
    for i, sb in enumerate(sbs):
        assert oracle.addresses(sb.name, "eth0") == [f"10.77.0.{10 + i}/24"]
    assert oracle.ping(sbs[0].name, "10.77.0.13")
    for i, sb in enumerate(sbs):
        d.delete(attachment(sb, f"c{i}"), None)
    assert_clean(host_ns, *sbs)


def test_concurrent_first_add_processes(host_ns, make_ns):
    n = 3
    sbs = [make_ns() for _ in range(n)]
    script = textwrap.dedent(
        f"""
        import ipaddress, sys, time
        from splice.libnet.netns import Netns
        from splice.plugins.bridge.config import parse_bridge_config
        from splice.plugins.bridge.driver import BridgeDriver
        from splice.plugins.model import Attachment, IPConfig
        i, path, start = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
        d = BridgeDriver(parse_bridge_config({{"bridge": "{BR}", "isGateway": True}}), Netns.open("{host_ns.path}"))
        while time.time() < start:
            pass
        d.add(Attachment("{NETWORK}", f"p{{i}}", "eth0", path), [IPConfig(ipaddress.ip_interface(f"10.77.0.{{20 + i}}/24"))], [])
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    start = time.time() + 1.0
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(i), sb.path, str(start)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, sb in enumerate(sbs)
    ]
    outs = [p.communicate(timeout=20) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, outs
    assert len([l for l in oracle.links(host_ns.name) if l.get("master") == BR]) == n
    with Netns.open(host_ns.path) as h:
        d = make_driver(h, isGateway=True)
        for i, sb in enumerate(sbs):
            d.delete(attachment(sb, f"p{i}"), None)
    assert_clean(host_ns, *sbs)


# ============================================================================ CHECK
def test_check(host_ns, sandbox_ns, host):
    d = make_driver(host, isDefaultGateway=True)
    att = attachment(sandbox_ns)
    w = d.add(att, [ip4(2)], [Route(NET("192.168.9.0/24"), ADDR("10.77.0.254"))])
    d.check(att, w)

    sandbox_ns.sh("ip", "addr", "del", "10.77.0.2/24", "dev", "eth0")
    with pytest.raises(CheckFailed, match="address 10.77.0.2/24 not found"):
        d.check(att, w)
    sandbox_ns.sh("ip", "addr", "add", "10.77.0.2/24", "dev", "eth0")
    with pytest.raises(CheckFailed, match="route .* not found"):  # the routes went with the address
        d.check(att, w)
    sandbox_ns.sh("ip", "route", "add", "default", "via", "10.77.0.1")
    sandbox_ns.sh("ip", "route", "add", "192.168.9.0/24", "via", "10.77.0.254")
    d.check(att, w)

    sandbox_ns.sh("ip", "link", "set", "eth0", "address", "02:00:00:00:99:99")
    with pytest.raises(CheckFailed, match="MAC 02:00:00:00:99:99"):
        d.check(att, w)
    sandbox_ns.sh("ip", "link", "set", "eth0", "address", w.interfaces[2].mac)
    d.check(att, w)

    host_ns.sh("ip", "link", "set", w.interfaces[1].name, "nomaster")
    with pytest.raises(CheckFailed, match="not a port of bridge"):
        d.check(att, w)
    host_ns.sh("ip", "link", "set", w.interfaces[1].name, "master", BR)
    d.check(att, w)

    with pytest.raises(CheckFailed, match="promiscuous"):
        make_driver(host, isDefaultGateway=True, promiscMode=True).check(att, w)
    with pytest.raises(CheckFailed, match="hairpin"):
        make_driver(host, isDefaultGateway=True, hairpinMode=True).check(att, w)
    with pytest.raises(CheckFailed, match="no interface 'eth1'"):
        d.check(attachment(sandbox_ns, ifname="eth1"), w)

    sandbox_ns.sh("ip", "link", "del", "eth0")
    with pytest.raises(CheckFailed, match="not found in sandbox"):
        d.check(att, w)
    d.delete(att, None)
    assert_clean(host_ns, sandbox_ns)


# ============================================================================ GC / STATUS
def test_gc_removes_stale_host_veths(host_ns, make_ns, host):
    a, b, c = make_ns(), make_ns(), make_ns()
    d = make_driver(host)
    d.add(attachment(a, "keep"), [ip4(2)], [])
    d.add(attachment(b, "stale"), [ip4(3)], [])
    other = make_driver(host)
    other.add(attachment(c, "x", network="net2"), [ip4(4)], [])
    host_ns.sh("ip", "link", "add", "foreign0", "type", "veth", "peer", "name", "foreign1")  # not ours

    d.gc(NETWORK, {("keep", "eth0")})
    names = oracle.link_names(host_ns.name)
    assert host_veth_name(NETWORK, "keep", "eth0") in names
    assert host_veth_name(NETWORK, "stale", "eth0") not in names
    assert host_veth_name("net2", "x", "eth0") in names  # another network is not touched
    assert {"foreign0", "foreign1"} <= names
    assert oracle.link_names(b.name) == {"lo"}  # the peer went with it
    d.gc(NETWORK, set())
    assert oracle.link_names(a.name) == {"lo"}
    other.delete(attachment(c, "x", network="net2"), None)
    host_ns.sh("ip", "link", "del", "foreign0")
    assert_clean(host_ns, a, b, c)


def test_status(host, host_ns):
    make_driver(host).status()  # no bridge yet: fine
    host_ns.sh("ip", "link", "add", BR, "type", "bridge")
    make_driver(host).status()
    with pytest.raises(KernelError, match="VLAN filtering off"):
        make_driver(host, vlan=5).status()


# ============================================================================ nftables options
def test_ip_masq(host_ns, sandbox_ns, host):
    require_module("splice.libnet.masq")
    require_nft(host_ns)
    d = make_driver(host, isDefaultGateway=True, ipMasq=True)
    att = attachment(sandbox_ns)
    w = d.add(att, [ip4(2)], [])
    owner = owner_tag(NETWORK, "c1", "eth0")
    text = oracle.nft_text(host_ns.name)
    assert "10.77.0.2" in text and owner in text
    d.check(att, w)
    host_ns.sh("nft", "flush", "set", "inet", "splice_nat", "src4")
    with pytest.raises(CheckFailed, match="masquerade"):
        d.check(att, w)
    d.add(attachment(sandbox_ns, "c2", "eth1"), [ip4(3)], [])
    d.delete(att, w.ips)
    d.gc(NETWORK, set())
    text = oracle.nft_text(host_ns.name)
    assert "10.77.0.3" not in text and owner_tag(NETWORK, "c2", "eth1") not in text
    assert_clean(host_ns, sandbox_ns)


def test_mac_spoof_check(host_ns, sandbox_ns, host):
    require_module("splice.libnet.spoofchk")
    require_nft(host_ns)
    d = make_driver(host, macspoofchk=True)
    att = attachment(sandbox_ns, mac="02:42:0a:4d:00:02")
    w = d.add(att, [ip4(2)], [])
    text = oracle.nft_text(host_ns.name)
    assert w.interfaces[1].name in text and "02:42:0a:4d:00:02" in text
    d.check(att, w)
    d.delete(att, None)
    text = oracle.nft_text(host_ns.name)
    assert w.interfaces[1].name not in text and "02:42:0a:4d:00:02" not in text
    assert_clean(host_ns, sandbox_ns)


# ============================================================================ performance
def test_add_delete_latency(host_ns, sandbox_ns, host):
    """In-process add+delete of one attachment (no masquerade); p50 printed with -s."""
    d = make_driver(host, isDefaultGateway=True)
    att = attachment(sandbox_ns)
    d.add(att, [ip4(2)], [])  # creates the bridge
    d.delete(att, None)
    adds, dels = [], []
    for i in range(30):
        t0 = time.perf_counter()
        d.add(att, [ip4(2)], [])
        t1 = time.perf_counter()
        d.delete(att, None)
        adds.append(t1 - t0)
        dels.append(time.perf_counter() - t1)
    p50_add, p50_del = statistics.median(adds) * 1e3, statistics.median(dels) * 1e3
    print(f"\nbridge driver in-process: add p50 {p50_add:.2f} ms, delete p50 {p50_del:.2f} ms, "
          f"add+delete p50 {statistics.median(a + b for a, b in zip(adds, dels)) * 1e3:.2f} ms")
    assert p50_add < 100 and p50_del < 200  # generous: catches only pathologies (e.g. a netns move)
    assert_clean(host_ns, sandbox_ns)
