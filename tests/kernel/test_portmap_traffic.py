"""Port mappings carry real traffic (splice.libnet.portmap.publisher in throwaway namespaces).

The lab (test_portmap_net.py): a client namespace on the host's uplink, a host with a
bridge, containers ``ca``/``cb`` on it running small TCP/UDP servers that answer with
their name and the peer address they saw. Every reachability case of the issue, for tcp
and udp, IPv4 and IPv6, with br_netfilter on and off (off: the hairpin replies would be
bridged without conntrack, so only the masquerade makes them work).
"""

from __future__ import annotations

import time
from ipaddress import ip_interface

import pytest

from splice.libnet.portmap.model import PortConflict
from splice.plugins.portmap.mapping import PortMapping

from .portmap_help import pub

from .test_portmap_net import (
    A4, A6, B4, B6, BRIDGE, GW4, GW6, UP4_CLIENT, UP4_HOST, UP6_CLIENT, UP6_HOST,
    Servers, assert_no_portmap_elements, build_lab, call, conntrack_udp, route_localnet,
)

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

OWNER_A, OWNER_B = "n1 c-aaa eth0", "n1 c-bbb eth0"
A_ADDRS = [ip_interface(f"{A4}/24"), ip_interface(f"{A6}/64")]
B_ADDRS = [ip_interface(f"{B4}/24"), ip_interface(f"{B6}/64")]


@pytest.fixture
def servers():
    s = Servers()
    yield s
    s.stop()


def _lab(make_ns, servers, br_netfilter=True):
    lab = build_lab(make_ns, br_netfilter=br_netfilter)
    servers.start(lab.ca, "A")
    servers.start(lab.cb, "B")
    return lab


def _leak_check(lab) -> None:
    assert_no_portmap_elements(lab.host)
    assert route_localnet(lab.host, BRIDGE) == "0"


@pytest.mark.parametrize("br_netfilter", [True, False], ids=["br_netfilter", "no-br_netfilter"])
def test_every_reachability_case(make_ns, servers, br_netfilter):
    lab = _lab(make_ns, servers, br_netfilter)
    maps = [PortMapping(8080, 80, "tcp"), PortMapping(8080, 80, "udp")]
    pub(lab.host, "publish", OWNER_A, maps, A_ADDRS)
    assert route_localnet(lab.host, BRIDGE) == "1"
    # (who, where) -> the peer address the container must see. A neighbour on the bridge is
    # masqueraded when its DNATed packet is routed back out of the bridge; with
    # br_netfilter the packet is bridged and the reply de-NATed on the bridge: its own
    # address is kept. A container reaching itself is always masqueraded.
    nb4, nb6 = (B4, B6) if br_netfilter else (GW4, GW6)
    cases = {
        "client v4 -> host uplink address": (lab.client, UP4_HOST, UP4_CLIENT),
        "client v6 -> host uplink address": (lab.client, UP6_HOST, UP6_CLIENT),
        "host -> 127.0.0.1 (route_localnet, masquerade)": (lab.host, "127.0.0.1", GW4),
        "host -> own uplink address v4": (lab.host, UP4_HOST, UP4_HOST),
        "host -> own uplink address v6": (lab.host, UP6_HOST, UP6_HOST),
        "host -> bridge address v4": (lab.host, GW4, GW4),
        "container B -> bridge address v4 (hairpin)": (lab.cb, GW4, nb4),
        "container B -> bridge address v6 (hairpin)": (lab.cb, GW6, nb6),
        "container B -> host uplink address v4 (hairpin)": (lab.cb, UP4_HOST, nb4),
        "container B -> host uplink address v6 (hairpin)": (lab.cb, UP6_HOST, nb6),
        "container A -> its own published port v4": (lab.ca, UP4_HOST, GW4),
        "container A -> its own published port v6": (lab.ca, UP6_HOST, GW6),
    }
    failures = []
    for proto in ("tcp", "udp"):
        for label, (ns, target, peer) in cases.items():
            r = call(ns, proto, target, 8080)
            if not (r.ok and r.server == "A" and r.peer == peer):
                failures.append(f"{proto} {label}: {r}")
    assert not failures, "\n".join(failures)
    # documented limitation: the kernel never routes ::1 off the host, so no IPv6 localhost
    assert not call(lab.host, "tcp", "::1", 8080, timeout=0.5).ok

    pub(lab.host, "unpublish", OWNER_A, maps, A_ADDRS)
    _leak_check(lab)
    for ns, target in ((lab.client, UP4_HOST), (lab.client, UP6_HOST), (lab.host, "127.0.0.1"), (lab.cb, GW4)):
        r = call(ns, "tcp", target, 8080, timeout=0.5)
        assert not r.ok, f"{target} still answers after unpublish: {r}"


def test_host_ip_mappings_match_that_address_only(make_ns, servers):
    lab = _lab(make_ns, servers)
    a = [PortMapping(8080, 80, host_ip=UP4_HOST), PortMapping(8080, 80, "udp", host_ip=UP6_HOST)]
    b = [PortMapping(8080, 80, host_ip=GW4), PortMapping(8080, 80, "udp", host_ip="127.0.0.1")]
    pub(lab.host, "publish", OWNER_A, a, A_ADDRS)
    pub(lab.host, "publish", OWNER_B, b, B_ADDRS)  # same port, other given addresses: no conflict
    assert call(lab.client, "tcp", UP4_HOST, 8080).server == "A"
    assert call(lab.client, "udp", UP6_HOST, 8080).server == "A"
    assert call(lab.cb, "tcp", GW4, 8080).server == "B"  # B reaching itself through the bridge address
    r = call(lab.host, "udp", "127.0.0.1", 8080)
    assert (r.server, r.peer) == ("B", GW4)
    assert not call(lab.client, "tcp", UP6_HOST, 8080, timeout=0.5).ok  # tcp only given on the v4 address
    assert not call(lab.host, "tcp", "127.0.0.1", 8080, timeout=0.5).ok
    with pytest.raises(PortConflict, match="c-aaa"):
        pub(lab.host, "publish", OWNER_B, [PortMapping(8080, 80)], B_ADDRS)  # every address overlaps A's
    pub(lab.host, "unpublish", OWNER_A, a, A_ADDRS)
    pub(lab.host, "unpublish", OWNER_B, b, B_ADDRS)
    _leak_check(lab)


def test_a_conflict_leaves_the_first_container_serving(make_ns, servers):
    lab = _lab(make_ns, servers)
    pub(lab.host, "publish", OWNER_A, [PortMapping(8080, 80)], A_ADDRS)
    with pytest.raises(PortConflict, match="already published by 'n1 c-aaa eth0'"):
        pub(lab.host, "publish", OWNER_B, [PortMapping(9090, 80), PortMapping(8080, 80)], B_ADDRS)
    assert call(lab.client, "tcp", UP4_HOST, 8080).server == "A"  # the reference would now answer B
    assert not call(lab.client, "tcp", UP4_HOST, 9090, timeout=0.5).ok  # nothing of B's ADD stayed
    pub(lab.host, "unpublish", OWNER_A, [PortMapping(8080, 80)], A_ADDRS)
    _leak_check(lab)


def test_conditions_gate_the_network(make_ns, servers):
    lab = _lab(make_ns, servers)
    cond = {"conditions_v4": [f"ip saddr {UP4_CLIENT}"], "conditions_v6": [f"ip6 saddr {UP6_CLIENT}"]}
    pub(lab.host, "publish", OWNER_A, [PortMapping(8080, 80)], A_ADDRS, **cond)
    pub(lab.host, "publish", OWNER_B, [PortMapping(8081, 80)], B_ADDRS)  # another network, unconditional
    assert call(lab.client, "tcp", UP4_HOST, 8080).server == "A"
    assert call(lab.client, "tcp", UP6_HOST, 8080).server == "A"
    assert not call(lab.cb, "tcp", GW4, 8080, timeout=0.5).ok  # source not allowed: not DNATed
    assert not call(lab.host, "tcp", "127.0.0.1", 8080, timeout=0.5).ok
    assert call(lab.ca, "tcp", GW4, 8081).server == "B"  # B's network is not affected
    pub(lab.host, "unpublish", OWNER_A, [PortMapping(8080, 80)], A_ADDRS, **cond)
    pub(lab.host, "unpublish", OWNER_B, [PortMapping(8081, 80)], B_ADDRS)
    _leak_check(lab)


def test_masq_all_and_snat_off(make_ns, servers):
    lab = _lab(make_ns, servers)
    pub(lab.host, "publish", OWNER_A, [PortMapping(8080, 80, "udp")], A_ADDRS, masq_all=True)
    r = call(lab.client, "udp", UP4_HOST, 8080)
    assert (r.server, r.peer) == ("A", GW4)  # masqueraded although it comes from outside
    r = call(lab.client, "udp", UP6_HOST, 8080)
    assert (r.server, r.peer) == ("A", GW6)
    pub(lab.host, "unpublish", OWNER_A, [PortMapping(8080, 80, "udp")], A_ADDRS)
    _leak_check(lab)

    pub(lab.host, "publish", OWNER_B, [PortMapping(8080, 80)], B_ADDRS, snat=False)
    assert route_localnet(lab.host, BRIDGE) == "0"
    r = call(lab.client, "tcp", UP4_HOST, 8080)
    assert (r.server, r.peer) == ("B", UP4_CLIENT)
    assert not call(lab.host, "tcp", "127.0.0.1", 8080, timeout=0.5).ok  # localhost needs snat
    pub(lab.host, "unpublish", OWNER_B, [PortMapping(8080, 80)], B_ADDRS, snat=False)
    _leak_check(lab)


def test_stale_udp_conntrack_entries_are_flushed(make_ns, servers):
    """The classic case: container A had udp/5353 and is gone, a client keeps sending from
    one source port, and its conntrack entry still DNATs to A. Publishing the port for B
    flushes the UDP entries of that port (as the reference does), so the client reaches B."""
    lab = _lab(make_ns, servers)
    udp = [PortMapping(5353, 80, "udp")]
    sport = 40404
    pub(lab.host, "publish", OWNER_A, udp, A_ADDRS)
    for target in (UP4_HOST, UP6_HOST):
        assert call(lab.client, "udp", target, 5353, sport=sport).server == "A"
    pub(lab.host, "unpublish", OWNER_A, udp, A_ADDRS)
    assert conntrack_udp(lab.host, 5353)  # the entries the test relies on

    pub(lab.host, "publish", OWNER_B, udp, B_ADDRS, flush_udp=False)
    assert call(lab.client, "udp", UP4_HOST, 5353, sport=sport).server == "A"  # what a missing flush does
    pub(lab.host, "unpublish", OWNER_B, udp, B_ADDRS)

    pub(lab.host, "publish", OWNER_B, udp, B_ADDRS)
    for target in (UP4_HOST, UP6_HOST):
        r = call(lab.client, "udp", target, 5353, sport=sport)
        assert (r.server, r.peer) == ("B", UP4_CLIENT if target == UP4_HOST else UP6_CLIENT)
    pub(lab.host, "unpublish", OWNER_B, udp, B_ADDRS)
    _leak_check(lab)


def test_sctp_mapping_is_programmed(make_ns, servers):
    """SCTP has no test server here: the element and the DNAT rule path are checked with
    the oracle (the key type is the same inet_proto . inet_service)."""
    lab = _lab(make_ns, servers)
    pub(lab.host, "publish", OWNER_A, [PortMapping(3868, 3868, "sctp")], A_ADDRS)
    assert pub(lab.host, "check", OWNER_A, [PortMapping(3868, 3868, "sctp")], A_ADDRS) == []
    pub(lab.host, "unpublish", OWNER_A, [PortMapping(3868, 3868, "sctp")], A_ADDRS)
    _leak_check(lab)


def test_gc_stops_the_traffic_of_removed_attachments(make_ns, servers):
    lab = _lab(make_ns, servers)
    pub(lab.host, "publish", OWNER_A, [PortMapping(8080, 80)], A_ADDRS)
    pub(lab.host, "publish", OWNER_B, [PortMapping(8081, 80)], B_ADDRS)
    assert pub(lab.host, "gc", "n1 ", lambda o: o == OWNER_B) == [OWNER_A]
    deadline = time.monotonic() + 2
    while call(lab.client, "tcp", UP4_HOST, 8080, timeout=0.3).ok and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not call(lab.client, "tcp", UP4_HOST, 8080, timeout=0.3).ok
    assert call(lab.host, "tcp", "127.0.0.1", 8081).server == "B"  # route_localnet kept for B
    pub(lab.host, "gc", "n1 ", lambda o: False)
    _leak_check(lab)
