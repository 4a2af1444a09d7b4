"""Masquerade registrations are keyed by interface (defect 1), and tables made by the
previous version (registrations keyed ``addr . addr`` in ``refs4``/``refs6``) keep working.

Two bridges with overlapping subnets in one throwaway host namespace: a container on each
with the same address. Asserted with nft -j (test_portmap_net helpers) and sysctls.
"""

from __future__ import annotations

import hashlib
import json
from ipaddress import ip_interface

import pytest

from splice.conformance import oracle
from splice.libnet.netns import Netns
from splice.plugins.model import Attachment, Interface
from splice.plugins.owners import owner_tag
from splice.plugins.portmap.driver import PortmapDriver, host_interfaces
from splice.plugins.portmap.mapping import PortMapping

from .portmap_help import pub
from .test_portmap_net import assert_no_portmap_elements, elements, route_localnet

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

A, B = "n1 c-aaa eth0", "n2 c-bbb eth0"
SAME = [ip_interface("10.47.0.2/24")]  # the address of both containers
IF_A, IF_B = ["spbr1", "vA"], ["spbr2", "vB"]  # the attachments' host interfaces, bridge first


@pytest.fixture
def host(host_ns):
    """spbr1 and spbr2, both 10.47.0.1/24 (overlapping subnets), each with a port up."""
    for br, port in (("spbr1", "vA"), ("spbr2", "vB")):
        for cmd in (f"ip link add {br} type bridge", f"ip addr add 10.47.0.1/24 dev {br}",
                    f"ip link add {port} type veth peer name {port}p", f"ip link set {port} master {br}",
                    f"ip link set {port} up", f"ip link set {port}p up", f"ip link set {br} up"):
            host_ns.sh(*cmd.split())
    yield host_ns
    assert_no_portmap_elements(host_ns)
    assert route_localnet(host_ns, "spbr1") == route_localnet(host_ns, "spbr2") == "0"


def refs(ns) -> dict:
    return {k: v for k, v in elements(ns).get("ifrefs4", {}).items()}


def test_same_address_on_two_bridges_keeps_its_own_entries(host):
    pub(host, "publish", A, [PortMapping(8080, 80)], SAME, ifaces=IF_A)
    pub(host, "publish", B, [PortMapping(8081, 80)], SAME, ifaces=IF_B)
    assert refs(host) == {("spbr1", "10.47.0.2", "10.47.0.2"): ("users4:spbr1", A),
                          ("spbr2", "10.47.0.2", "10.47.0.2"): ("users4:spbr2", B)}
    e = elements(host)
    assert set(e["hairpin"]) == {("spbr1", "spbr1"), ("spbr2", "spbr2")}
    assert set(e["localhost"]) == set(e["localnet"]) == {"spbr1", "spbr2"}
    assert route_localnet(host, "spbr1") == route_localnet(host, "spbr2") == "1"
    assert pub(host, "check", A, [PortMapping(8080, 80)], SAME, ifaces=IF_A) == []
    assert pub(host, "check", B, [PortMapping(8081, 80)], SAME, ifaces=IF_B) == []
    assert "ct status dnat oifname . ip saddr . ip daddr @ifrefs4 masquerade" in oracle.nft_text(host.name)

    # B's DEL leaves A everything: its registration, its bridge's entries, route_localnet
    pub(host, "unpublish", B, [PortMapping(8081, 80)], SAME, ifaces=IF_B)
    assert refs(host) == {("spbr1", "10.47.0.2", "10.47.0.2"): ("users4:spbr1", A)}
    e = elements(host)
    assert set(e["hairpin"]) == {("spbr1", "spbr1")} and set(e["localnet"]) == {"spbr1"}
    assert route_localnet(host, "spbr1") == "1" and route_localnet(host, "spbr2") == "0"
    assert pub(host, "check", A, [PortMapping(8080, 80)], SAME, ifaces=IF_A) == []

    # and the other way round
    pub(host, "publish", B, [PortMapping(8081, 80)], SAME, ifaces=IF_B)
    pub(host, "unpublish", A, [PortMapping(8080, 80)], SAME, ifaces=IF_A)
    assert refs(host) == {("spbr2", "10.47.0.2", "10.47.0.2"): ("users4:spbr2", B)}
    assert pub(host, "check", B, [PortMapping(8081, 80)], SAME, ifaces=IF_B) == []
    pub(host, "unpublish", B, [PortMapping(8081, 80)], SAME, ifaces=IF_B)


def test_the_service_takes_the_host_interfaces_of_the_result(host):
    """PortmapDriver with host_ifaces from a CNI result's interfaces (bridge, veth, sandbox)."""
    result_a = [{"name": "spbr1", "mac": "02:00:00:00:00:01"}, {"name": "vA"}, {"name": "eth0", "sandbox": "/x"}]
    wiring_b = [Interface("spbr2"), Interface("vB"), Interface("eth0", sandbox="/y")]
    assert host_interfaces(result_a) == IF_A and host_interfaces(wiring_b) == IF_B
    att_a, att_b = Attachment("n1", "c-aaa", "eth0"), Attachment("n2", "c-bbb", "eth0")
    with Netns.open(host.path) as ns:
        svc = PortmapDriver(ns)
        svc.publish(att_a, [PortMapping(8080, 80)], SAME, host_ifaces=host_interfaces(result_a))
        svc.publish(att_b, [PortMapping(8081, 80)], SAME, host_ifaces=host_interfaces(wiring_b))
        svc.unpublish(att_b, [PortMapping(8081, 80)], SAME, host_ifaces=host_interfaces(wiring_b))
        assert refs(host) == {("spbr1", "10.47.0.2", "10.47.0.2"): ("users4:spbr1", owner_tag("n1", "c-aaa", "eth0"))}
        svc.check(att_a, [PortMapping(8080, 80)], SAME, host_ifaces=host_interfaces(result_a))
        svc.unpublish(att_a)  # without mappings: by owner


# -- a table made by the previous version ------------------------------------------------------
L = "n0 c-old eth0"  # published before the upgrade
L_ADDR = [ip_interface("10.47.0.5/24")]
LEGACY_TEXT = """
table inet splice_portmap {
    map dnat4 { type inet_proto . inet_service : ipv4_addr . inet_service; }
    map dnat4_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
    map cond4 { type inet_proto . inet_service : verdict; }
    map cond4_ip { type ipv4_addr . inet_proto . inet_service : verdict; }
    map claim4 { type inet_proto . inet_service : mark; }
    map refs4 { type ipv4_addr . ipv4_addr : counter; }
    map dnat6 { type inet_proto . inet_service : ipv6_addr . inet_service; }
    map dnat6_ip { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }
    map cond6 { type inet_proto . inet_service : verdict; }
    map cond6_ip { type ipv6_addr . inet_proto . inet_service : verdict; }
    map claim6 { type inet_proto . inet_service : mark; }
    map refs6 { type ipv6_addr . ipv6_addr : counter; }
    set owners { type ifname . ifname; }
    set hairpin { type ifname . ifname; }
    set localhost { type ifname; }
    set masq_all { type ifname; }
    set localnet { type ifname; }
    chain hostports {
        ip daddr . meta l4proto . th dport vmap @cond4_ip
        dnat ip to ip daddr . meta l4proto . th dport map @dnat4_ip
        ip6 daddr . meta l4proto . th dport vmap @cond6_ip
        dnat ip6 to ip6 daddr . meta l4proto . th dport map @dnat6_ip
        fib daddr type != local return
        meta nfproto ipv4 meta l4proto . th dport vmap @cond4
        meta nfproto ipv4 dnat ip to meta l4proto . th dport map @dnat4
        meta nfproto ipv6 meta l4proto . th dport vmap @cond6
        meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @dnat6
    }
    chain prerouting { type nat hook prerouting priority dstnat; policy accept; jump hostports; }
    chain output { type nat hook output priority -100; policy accept; jump hostports; }
    chain postrouting { type nat hook postrouting priority srcnat; policy accept;
        ct status dnat oifname @masq_all masquerade
        ct status dnat iifname . oifname @hairpin masquerade
        ct status dnat ip saddr . ip daddr @refs4 masquerade
        ct status dnat ip6 saddr . ip6 daddr @refs6 masquerade
        ct status dnat ip saddr 127.0.0.0/8 oifname @localhost masquerade
    }
    chain localnet_guard { type filter hook prerouting priority filter; policy accept;
        iifname @localnet ip daddr 127.0.0.0/8 ct status ! dnat drop
    }
}
"""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:15]


def make_legacy_table(ns) -> None:
    """The previous version's table with container L (tcp/8085 -> 10.47.0.5:80, snat on
    spbr1), written with nft (its maps in text, the counter and elements in JSON:
    a counter named ``users4:spbr1`` has no text syntax)."""
    ns.sh("nft", "-f", "-", input=LEGACY_TEXT)

    def el(name, val, comment=None, data=None):
        key = {"elem": {"val": val, "comment": comment}} if comment else val
        return {"add": {"element": {"family": "inet", "table": "splice_portmap", "name": name,
                                    "elem": [key if data is None else [key, data]]}}}

    o = _digest(L)
    cmds = [
        {"add": {"counter": {"family": "inet", "table": "splice_portmap", "name": "users4:spbr1"}}},
        el("dnat4", {"concat": ["tcp", 8085]}, L, {"concat": ["10.47.0.5", 80]}),
        el("claim4", {"concat": ["tcp", 8085]}, L, 1),
        el("refs4", {"concat": ["10.47.0.5", "10.47.0.5"]}, L, "users4:spbr1"),
        el("owners", {"concat": [_digest('dnat4 ["tcp", 8085]'), o]}, L),
        el("owners", {"concat": [_digest('refs4 ["10.47.0.5", "10.47.0.5"]'), o]}, L),
        el("hairpin", {"concat": ["spbr1", "spbr1"]}), el("localhost", "spbr1"), el("localnet", "spbr1"),
    ]
    ns.sh("nft", "-j", "-f", "-", input=json.dumps({"nftables": cmds}))
    ns.sh("sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/spbr1/route_localnet")


def maps(ns) -> set[str]:
    return {m["name"] for m in oracle.nft_objects(ns.name, "map") if m["table"] == "splice_portmap"}


def test_a_table_of_the_previous_version_keeps_working(host):
    make_legacy_table(host)
    # a new container: the table gets the interface-keyed maps, postrouting looks up both
    pub(host, "publish", B, [PortMapping(8086, 80)], [ip_interface("10.47.0.6/24")], ifaces=IF_A)
    assert {"refs4", "refs6", "ifrefs4", "ifrefs6"} <= maps(host)
    text = oracle.nft_text(host.name)
    assert "ct status dnat oifname . ip saddr . ip daddr @ifrefs4 masquerade" in text
    assert "ct status dnat ip saddr . ip daddr @refs4 masquerade" in text  # L's registration still works
    e = elements(host)
    assert e["refs4"] == {("10.47.0.5", "10.47.0.5"): ("users4:spbr1", L)}
    assert pub(host, "check", L, [PortMapping(8085, 80)], L_ADDR, ifaces=IF_A) == []
    assert pub(host, "check", B, [PortMapping(8086, 80)], [ip_interface("10.47.0.6/24")], ifaces=IF_A) == []
    # L's DEL (made before the upgrade) removes all of L, and only L
    assert [str(p) for p in pub(host, "unpublish", L, [PortMapping(8085, 80)], L_ADDR, ifaces=IF_A)] == [
        "*:8085/tcp -> 10.47.0.5:80"]
    e = elements(host)
    assert "refs4" not in e and {c for _, c in e["owners"].values()} == {B}
    assert route_localnet(host, "spbr1") == "1"  # B still needs it
    # once the legacy maps are empty, GC drops them and their rules
    assert pub(host, "gc", "n2 ", lambda o: True) == []
    assert not {"refs4", "refs6"} & maps(host)
    assert "@refs4" not in oracle.nft_text(host.name)
    pub(host, "unpublish", B, [PortMapping(8086, 80)], [ip_interface("10.47.0.6/24")], ifaces=IF_A)


def test_del_and_gc_of_containers_published_before_the_upgrade(host):
    make_legacy_table(host)
    # DEL before any new ADD (the table never upgraded): everything of L goes
    pub(host, "unpublish", L, [PortMapping(8085, 80)], L_ADDR)
    assert_no_portmap_elements(host)
    assert route_localnet(host, "spbr1") == "0"
    # GC of a container published before the upgrade
    host.sh("nft", "delete", "table", "inet", "splice_portmap")
    make_legacy_table(host)
    assert pub(host, "gc", "n0 ", lambda o: False) == [L]
    assert_no_portmap_elements(host)
    assert not {"refs4", "refs6"} & maps(host)
