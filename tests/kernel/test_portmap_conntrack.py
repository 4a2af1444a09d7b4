"""The stdlib netlink helpers of splice.libnet.conntrack, checked with the conntrack/ip/nft tools."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from splice.libnet import conntrack
from splice.libnet.netns import Netns

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]


def run(ns, fn, *args):
    with Netns.open(ns.path) as n:
        return n.run(fn, *args)


def test_flush_udp_deletes_only_udp_entries_of_the_ports(host_ns):
    host_ns.sh("nft", "add", "table", "inet", "ct_on")  # conntrack is only active with a hook using it
    host_ns.sh("nft", "add", "chain", "inet", "ct_on", "c", "{ type filter hook prerouting priority 0; }")
    host_ns.sh("nft", "add", "rule", "inet", "ct_on", "c", "ct", "state", "new")
    made = [
        ("-p", "udp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "1111", "--dport", "5353"),
        ("-p", "udp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "1112", "--dport", "5354"),
        ("-p", "udp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "1113", "--dport", "9999"),
        ("-p", "tcp", "-s", "192.0.2.9", "-d", "192.0.2.1", "--sport", "1114", "--dport", "5353",
         "--state", "ESTABLISHED"),
        ("-p", "udp", "-s", "2001:db8::9", "-d", "2001:db8::1", "--sport", "1115", "--dport", "5353"),
    ]
    for args in made:
        host_ns.sh("conntrack", "-I", *args, "--timeout", "100")
    assert run(host_ns, conntrack.flush_udp, [5353, 5354], 4) == 2
    left4 = host_ns.sh("conntrack", "-L", "-f", "ipv4").stdout
    assert "dport=9999" in left4 and "tcp" in left4 and "sport=1111" not in left4 and "sport=1112" not in left4
    assert "sport=1115" in host_ns.sh("conntrack", "-L", "-f", "ipv6").stdout  # other family untouched
    assert run(host_ns, conntrack.flush_udp, [5353], 6) == 1
    assert "sport=1115" not in host_ns.sh("conntrack", "-L", "-f", "ipv6").stdout
    assert run(host_ns, conntrack.flush_udp, [5353], 4) == 0  # nothing left: fine
    assert run(host_ns, conntrack.flush_udp, [], 4) == 0
    host_ns.sh("conntrack", "-F")


def test_route_oif_and_ifname(host_ns):
    host_ns.sh("ip", "link", "add", "rt0", "type", "veth", "peer", "name", "rt1")
    host_ns.sh("ip", "addr", "add", "10.61.0.1/24", "dev", "rt0")
    host_ns.sh("ip", "addr", "add", "fd61::1/64", "dev", "rt0", "nodad")
    host_ns.sh("ip", "link", "set", "rt0", "up")
    host_ns.sh("ip", "link", "set", "rt1", "up")

    def lookup(a):
        oif = conntrack.route_oif(ip_address(a))
        return conntrack.ifname(oif) if oif else None

    assert run(host_ns, lookup, "10.61.0.7") == "rt0"
    assert run(host_ns, lookup, "fd61::7") == "rt0"
    assert run(host_ns, lookup, "127.0.0.1") == "lo"
    assert run(host_ns, lookup, "198.51.100.1") is None  # no route


def test_nft_use_counts(host_ns):
    host_ns.sh("nft", "-f", "-", input="""table inet pmtest {
        counter c1 { }
        counter c2 { }
        map m { type ipv4_addr : counter; elements = { 10.0.0.1 : "c1", 10.0.0.2 : "c1" } }
        chain x { }
        chain y { jump x; }
    }""")
    assert run(host_ns, conntrack.nft_object_uses, 1, "pmtest") == {"c1": 2, "c2": 0}
    uses = run(host_ns, conntrack.nft_chain_uses, 1, "pmtest")
    assert uses["x"] == 1 and uses["y"] == 1  # x: one jump to it; y: one rule in it
    assert run(host_ns, conntrack.nft_object_uses, 1, "nope") == {}
    host_ns.sh("nft", "delete", "table", "inet", "pmtest")


def test_shared_netfilter_socket_is_reused_per_namespace(host_ns):
    def body():
        conntrack.share_sockets(True)
        try:
            with conntrack.netfilter() as a:
                pass
            with conntrack.netfilter() as b:
                pass
            return a is b, conntrack.prune_sockets(0)
        finally:
            conntrack.share_sockets(False)

    same, pruned = run(host_ns, body)
    assert same and pruned == 1
