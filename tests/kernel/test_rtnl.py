"""splice.libnet.rtnl / sysctl / names in throwaway namespaces, asserted with the oracle."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

from splice.conformance import oracle
from splice.libnet import names, rtnl, sysctl
from splice.libnet.errors import LinkExists, LinkNotFound, NetError, NotSupported
from splice.libnet.netns import Netns

from ..conftest import missing_kernel_feature, vlan_filtering_supported, rtnl_in as run, only_lo

pytestmark = [pytest.mark.root, pytest.mark.timeout(30)]

IF = ipaddress.ip_interface
NET = ipaddress.ip_network
ADDR = ipaddress.ip_address


def in_ns(ns, fn, *args):
    with Netns.open(ns.path) as n:
        return n.run(fn, *args)


def test_the_echo_path_and_the_lookup_fallback(host_ns, monkeypatch):
    """The kernel echoes a created link (NLM_F_ECHO, Linux >= 6.3): no lookup follows.
    Without the echo (older kernels) the link is looked up by name: same answer."""
    from splice.libnet import netlink

    def make(rt):
        br = rt.add_bridge("br-t", mtu=1400)
        v = rt.add_veth("vt-a", "vt-b", master=br.index)
        return br, v

    echoed = run(host_ns, make)
    run(host_ns, lambda rt: (rt.delete_link(name="vt-a"), rt.delete_link(name="br-t")))
    monkeypatch.setattr(netlink, "NLM_F_ECHO", 0)
    looked_up = run(host_ns, make)
    for a, b in zip(echoed, looked_up):
        assert (a.name, a.kind, a.mtu) == (b.name, b.kind, b.mtu)
    # the echo is made before the enslavement: master comes from the request
    assert echoed[1].master == echoed[0].index
    assert looked_up[1].master == looked_up[0].index == oracle.link(host_ns.name, "br-t")["ifindex"]
    run(host_ns, lambda rt: (rt.delete_link(name="vt-a"), rt.delete_link(name="br-t")))
    only_lo(host_ns)


# -- links -----------------------------------------------------------------------------------
def test_get_link(host_ns):
    lo = run(host_ns, lambda rt: rt.get_link("lo"))
    assert lo.index == 1 and lo.name == "lo" and lo.up
    assert run(host_ns, lambda rt: rt.get_link("nope0")) is None
    with pytest.raises(LinkNotFound, match="'nope0'"):
        run(host_ns, lambda rt: rt.require_link("nope0"))
    assert run(host_ns, lambda rt: rt.get_link_by_index(1)).name == "lo"
    assert run(host_ns, lambda rt: rt.get_link_by_index(99999)) is None


def test_add_bridge(host_ns):
    br = run(host_ns, lambda rt: rt.add_bridge("br-t", mtu=1400, mac="02:11:22:33:44:55"))
    assert br is not None and br.name == "br-t" and br.kind == "bridge" and not br.up
    assert br.vlan_filtering is False
    again = run(host_ns, lambda rt: rt.add_bridge("br-t"))
    assert again is None  # EEXIST is an answer, not an error
    o = oracle.link(host_ns.name, "br-t")
    assert o["linkinfo"]["info_kind"] == "bridge"
    assert o["mtu"] == 1400 and o["address"] == "02:11:22:33:44:55" and o["ifindex"] == br.index
    assert run(host_ns, lambda rt: rt.delete_link(name="br-t")) is True
    assert run(host_ns, lambda rt: rt.delete_link(name="br-t")) is False
    only_lo(host_ns)


def test_add_veth_peer_created_in_the_other_namespace(host_ns, sandbox_ns):
    def make(rt, fd):
        br = rt.add_bridge("br-t")
        rt.set_link(br.index, up=True)
        v = rt.add_veth("vt-host", "vt-peer", peer_netns_fd=fd, master=br.index, mtu=1300,
                        mac="02:00:00:00:01:01", peer_mac="02:00:00:00:01:02", up=True)
        return br, v

    with Netns.open(sandbox_ns.path) as sb:
        br, v = run(host_ns, make, sb.fd)
    h = oracle.link(host_ns.name, "vt-host")
    p = oracle.link(sandbox_ns.name, "vt-peer")
    assert h is not None and p is not None
    assert oracle.link(host_ns.name, "vt-peer") is None and oracle.link(sandbox_ns.name, "vt-host") is None
    assert h["master"] == "br-t" and "UP" in h["flags"] and h["mtu"] == 1300 and h["address"] == "02:00:00:00:01:01"
    assert p["mtu"] == 1300 and p["address"] == "02:00:00:00:01:02" and "UP" not in p["flags"]
    # the echoed link: index and the peer's ifindex inside the sandbox
    assert v.index == h["ifindex"] and v.peer_index == p["ifindex"] and v.peer_netnsid is not None
    with pytest.raises(LinkExists):
        with Netns.open(sandbox_ns.path) as sb:
            run(host_ns, lambda rt: rt.add_veth("vt-host", "other", peer_netns_fd=sb.fd))
    assert run(host_ns, lambda rt: rt.delete_link(index=v.index)) is True  # takes the peer with it
    assert run(host_ns, lambda rt: rt.delete_link(name="br-t"))
    only_lo(host_ns)
    only_lo(sandbox_ns)


def test_set_brport_alias_hairpin_isolated(host_ns):
    def make(rt):
        br = rt.add_bridge("br-t")
        v = rt.add_veth("vt-a", "vt-b", master=br.index)
        rt.set_brport(v.index, alias="splice:net:cid:eth0", hairpin=True, isolated=True)
        return rt.get_link("vt-a")

    link = run(host_ns, make)
    assert link.alias == "splice:net:cid:eth0" and link.hairpin and link.isolated and link.master
    o = oracle.link(host_ns.name, "vt-a")
    assert o["ifalias"] == "splice:net:cid:eth0"
    slave = o["linkinfo"]["info_slave_data"]
    assert slave["hairpin"] is True and slave["isolated"] is True
    # by name, switching off again
    run(host_ns, lambda rt: rt.set_brport("vt-a", hairpin=False, isolated=False))
    slave = oracle.link(host_ns.name, "vt-a")["linkinfo"]["info_slave_data"]
    assert slave["hairpin"] is False and slave["isolated"] is False
    # the longest alias the kernel takes (IFALIASZ - 1 bytes, sent without a NUL)
    longest = "splice:" + "a" * 248
    run(host_ns, lambda rt: rt.set_brport("vt-a", alias=longest))
    assert oracle.link(host_ns.name, "vt-a")["ifalias"] == longest and len(longest.encode()) == 255
    run(host_ns, lambda rt: (rt.delete_link(name="vt-a"), rt.delete_link(name="br-t")))
    only_lo(host_ns)


def test_set_link_rename_and_up_in_one_message(host_ns):
    def make(rt):
        v = rt.add_veth("vt-tmp", "vt-other")
        rt.set_link(v.index, name="eth0", up=True, mtu=1280, mac="02:00:00:00:02:02", alias="x")
        return v.index

    idx = run(host_ns, make)
    o = oracle.link(host_ns.name, "eth0")
    assert o["ifindex"] == idx and "UP" in o["flags"] and o["mtu"] == 1280 and o["address"] == "02:00:00:00:02:02"
    with pytest.raises(LinkExists, match="'vt-other'"):  # down: Linux < 6.2 refuses to rename an UP link
        run(host_ns, lambda rt: (rt.set_link(idx, up=False), rt.set_link(idx, name="vt-other")))
    with pytest.raises(LinkNotFound):
        run(host_ns, lambda rt: rt.set_link(99999, up=True))
    run(host_ns, lambda rt: rt.delete_link(name="eth0"))
    only_lo(host_ns)


def test_promisc(host_ns):
    def make(rt):
        br = rt.add_bridge("br-t")
        rt.set_link(br.index, up=True, promisc=True)
        return rt.get_link("br-t")

    br = run(host_ns, make)
    assert br.promisc and br.up
    assert "PROMISC" in oracle.link(host_ns.name, "br-t")["flags"]
    run(host_ns, lambda rt: rt.set_link(br.index, promisc=False))
    assert "PROMISC" not in oracle.link(host_ns.name, "br-t")["flags"]
    assert not run(host_ns, lambda rt: rt.get_link("br-t")).promisc
    run(host_ns, lambda rt: rt.delete_link(name="br-t"))
    only_lo(host_ns)


def test_dump_links_and_ports_of(host_ns):
    def make(rt):
        br = rt.add_bridge("br-t")
        rt.add_veth("vt-a", "vt-b", master=br.index)
        return br.index, {l.name for l in rt.dump_links()}, [l.name for l in rt.ports_of(br.index)]

    _, names_, ports = run(host_ns, make)
    assert names_ == oracle.link_names(host_ns.name) == {"lo", "br-t", "vt-a", "vt-b"}
    assert ports == ["vt-a"]


# -- bridge VLANs ------------------------------------------------------------------------------
@pytest.mark.needs_vm
def test_bridge_vlans(host_ns):
    if not vlan_filtering_supported(host_ns):
        with pytest.raises(NotSupported, match="CONFIG_BRIDGE_VLAN_FILTERING"):
            run(host_ns, lambda rt: rt.add_bridge("br-t", vlan_filtering=True))
        only_lo(host_ns)

        def port(rt):
            br = rt.add_bridge("br-t")
            return rt.add_veth("vt-a", "vt-b", master=br.index).index

        idx = run(host_ns, port)
        # the requests are well-formed (the kernel, not the encoder, refuses them)
        with pytest.raises(NotSupported, match="VLAN 10"):
            run(host_ns, lambda rt: rt.bridge_vlan_add(idx, 10, pvid=True, untagged=True))
        with pytest.raises(NotSupported, match="VLAN 20-22"):
            run(host_ns, lambda rt: rt.bridge_vlan_add(idx, 20, vid_end=22))
        missing_kernel_feature("bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING): NotSupported checked")

    def make(rt):
        br = rt.add_bridge("br-t", vlan_filtering=True)
        v = rt.add_veth("vt-a", "vt-b", master=br.index)
        default = rt.bridge_vlans(v.index)
        assert rt.bridge_vlan_del(v.index, 1) is True
        before = rt.bridge_vlans(v.index)
        rt.bridge_vlan_add(v.index, 10, pvid=True, untagged=True)
        rt.bridge_vlan_add(v.index, 20, vid_end=22)
        # an absent VLAN: the kernel answers the deletion with success, bridge_vlan_del with False
        return br, default, before, rt.bridge_vlan_del(v.index, 999), rt.bridge_vlan_del(v.index, 21), rt.bridge_vlans(v.index)

    br, default, before, removed_absent, removed, after = run(host_ns, make)
    assert default == {1: rtnl.BRIDGE_VLAN_INFO_PVID | rtnl.BRIDGE_VLAN_INFO_UNTAGGED}  # the kernel's default_pvid
    assert br.vlan_filtering is True and before == {} and removed_absent is False and removed is True
    pvid_untagged = rtnl.BRIDGE_VLAN_INFO_PVID | rtnl.BRIDGE_VLAN_INFO_UNTAGGED
    assert after == {10: pvid_untagged, 20: 0, 22: 0}
    run(host_ns, lambda rt: rt.bridge_vlan_add(rt.require_link("vt-a").index, 21))
    port = next(p for p in oracle.bridge_vlans(host_ns.name) if p["ifname"] == "vt-a")
    vids = {}
    for v in port["vlans"]:
        for vid in range(v["vlan"], v.get("vlanEnd", v["vlan"]) + 1):
            vids[vid] = set(v.get("flags", []))
    assert set(vids) == {10, 20, 21, 22}
    assert vids[10] == {"PVID", "Egress Untagged"} and vids[21] == set()


# -- addresses ---------------------------------------------------------------------------------
def test_addresses(host_ns):
    def make(rt):
        br = rt.add_bridge("br-t")
        rt.set_link(br.index, up=True)
        first = rt.add_address(br.index, IF("10.9.0.1/24"))
        again = rt.add_address(br.index, IF("10.9.0.1/24"))
        rt.add_address(br.index, IF("fd00:9::1/64"), nodad=True)
        return br.index, first, again, rt.addresses(br.index), rt.addresses(br.index, socket.AF_INET)

    idx, first, again, both, v4 = run(host_ns, make)
    assert first is True and again is False
    assert {str(a.iface) for a in both if not a.iface.is_link_local} == {"10.9.0.1/24", "fd00:9::1/64"}
    assert [str(a.iface) for a in v4] == ["10.9.0.1/24"]
    v6 = next(a for a in both if str(a.iface) == "fd00:9::1/64")
    assert v6.flags & rtnl.IFA_F_NODAD and not v6.tentative
    assert set(oracle.addresses(host_ns.name, "br-t")) == {"10.9.0.1/24", "fd00:9::1/64"}
    assert run(host_ns, lambda rt: rt.delete_address(idx, IF("10.9.0.1/24"))) is True
    assert run(host_ns, lambda rt: rt.delete_address(idx, IF("10.9.0.1/24"))) is False
    assert oracle.addresses(host_ns.name, "br-t") == ["fd00:9::1/64"]


def test_addresses_report_the_local_address_of_a_point_to_point_link(host_ns):
    """An IPv4 peer address ("ip addr add A peer B"): IFA_LOCAL is the link's address,
    IFA_ADDRESS the peer's. The listing used to report the peer."""
    host_ns.sh("ip", "link", "add", "vt-a", "type", "veth", "peer", "name", "vt-b")
    host_ns.sh("ip", "addr", "add", "10.9.0.1", "peer", "10.9.0.2/32", "dev", "vt-a")
    idx = oracle.link(host_ns.name, "vt-a")["ifindex"]
    got = run(host_ns, lambda rt: [str(a.iface) for a in rt.addresses(idx, socket.AF_INET)])
    assert got == ["10.9.0.1/32"] == [a.split()[0] for a in oracle.addresses(host_ns.name, "vt-a")]
    run(host_ns, lambda rt: rt.delete_link(name="vt-a"))
    only_lo(host_ns)


# -- routes --------------------------------------------------------------------------------------
def test_routes(host_ns):
    def make(rt):
        v = rt.add_veth("vt-a", "vt-b")
        rt.set_link(v.index, up=True)
        rt.add_address(v.index, IF("10.9.0.5/24"))
        rt.add_address(v.index, IF("fd00:9::5/64"), nodad=True)
        out = [
            rt.add_route(NET("0.0.0.0/0"), gw=ADDR("10.9.0.1"), oif=v.index),
            rt.add_route(NET("0.0.0.0/0"), gw=ADDR("10.9.0.1"), oif=v.index),
            rt.add_route(NET("192.168.0.0/16"), gw=ADDR("10.9.0.1"), oif=v.index, mtu=1300, advmss=1200,
                         priority=5, table=100),
            rt.add_route(NET("172.16.0.0/12"), oif=v.index, scope=253),
            rt.add_route(NET("::/0"), gw=ADDR("fd00:9::1"), oif=v.index),
        ]
        return v.index, out, rt.routes(socket.AF_INET), rt.routes(socket.AF_INET6)

    idx, out, r4, r6 = run(host_ns, make)
    assert out == [True, False, True, True, True]
    assert rtnl.RouteEntry(NET("0.0.0.0/0"), ADDR("10.9.0.1"), idx, 254, None, 0) in r4
    assert any(r.dst == NET("192.168.0.0/16") and r.table == 100 and r.priority == 5 for r in r4)
    assert any(r.dst == NET("::/0") and r.gw == ADDR("fd00:9::1") for r in r6)
    main = oracle.routes(host_ns.name)
    assert {"dst": "default", "gateway": "10.9.0.1", "dev": "vt-a"}.items() <= next(
        r for r in main if r["dst"] == "default").items()
    assert any(r["dst"] == "172.16.0.0/12" and r.get("scope") == "link" for r in main)
    t100 = host_ns.sh("ip", "-j", "route", "show", "table", "100").stdout
    assert '"192.168.0.0/16"' in t100 and '"mtu":1300' in t100.replace(" ", "") and '"advmss":1200' in t100
    v6 = oracle.routes(host_ns.name, "-6")
    assert any(r["dst"] == "default" and r.get("gateway") == "fd00:9::1" for r in v6)


def test_routes_in_a_table_above_255(host_ns):
    """rtm_table is 8 bits: a table >= 256 is only in RTA_TABLE (the header says 252,
    RT_TABLE_COMPAT); adding, listing and deleting go by RTA_TABLE."""

    def make(rt):
        v = rt.add_veth("vt-a", "vt-b")
        rt.set_link(v.index, up=True)
        rt.add_address(v.index, IF("10.9.0.5/24"))
        added = rt.add_route(NET("192.168.7.0/24"), gw=ADDR("10.9.0.1"), oif=v.index, table=1000)
        return added, [r for r in rt.routes(socket.AF_INET) if r.dst == NET("192.168.7.0/24")]

    added, found = run(host_ns, make)
    assert added is True and [r.table for r in found] == [1000]
    assert '"192.168.7.0/24"' in host_ns.sh("ip", "-j", "route", "show", "table", "1000").stdout
    assert run(host_ns, lambda rt: rt.delete_route(NET("192.168.7.0/24"), table=1000)) is True
    assert run(host_ns, lambda rt: rt.delete_route(NET("192.168.7.0/24"), table=1000)) is False
    assert "192.168.7.0" not in host_ns.sh("ip", "-j", "route", "show", "table", "1000").stdout
    run(host_ns, lambda rt: rt.delete_link(name="vt-a"))
    only_lo(host_ns)


def test_netlink_errors_are_net_errors(host_ns):
    with pytest.raises(NetError, match="add address"):
        run(host_ns, lambda rt: rt.add_address(99999, IF("10.0.0.1/24")))
    with pytest.raises(NetError, match="add route"):
        run(host_ns, lambda rt: rt.add_route(NET("10.1.0.0/16"), gw=ADDR("10.250.0.1")))


# -- sysctl ----------------------------------------------------------------------------------------
def test_sysctl_follows_the_thread_namespace(host_ns, sandbox_ns):
    mine = sysctl.read("ipv4/ip_forward")  # the machine's value: only read
    in_ns(host_ns, sysctl.write, "ipv4/ip_forward", 1)
    assert oracle.sysctl(host_ns.name, "net.ipv4.ip_forward") == "1"
    assert oracle.sysctl(sandbox_ns.name, "net.ipv4.ip_forward") == "0"
    assert sysctl.read("ipv4/ip_forward") == mine
    assert in_ns(host_ns, sysctl.ensure, "ipv4/ip_forward", 1) is False
    assert in_ns(sandbox_ns, sysctl.ensure, "ipv4/ip_forward", "1") is True
    assert oracle.sysctl(sandbox_ns.name, "net.ipv4.ip_forward") == "1"


def test_sysctl_interface_keys_and_errors(host_ns):
    host_ns.sh("ip", "link", "add", "br-x.5", "type", "bridge")
    key = "ipv6/conf/br-x.5/accept_ra"
    if not os.path.exists("/proc/sys/net/ipv6"):
        pytest.skip("IPv6 disabled")
    assert in_ns(host_ns, sysctl.try_ensure, key, 0) is True
    # the /proc path keeps the dot of the name (the oracle's dotted keys cannot express it)
    assert host_ns.sh("cat", "/proc/sys/net/ipv6/conf/br-x.5/accept_ra").stdout.strip() == "0"
    with pytest.raises(NotSupported, match="no-such-if"):
        in_ns(host_ns, sysctl.read, "ipv6/conf/no-such-if/accept_ra")
    assert in_ns(host_ns, sysctl.try_ensure, "ipv6/conf/no-such-if/accept_ra", 0) is False
    with pytest.raises(NetError, match="invalid value"):
        in_ns(host_ns, sysctl.write, "ipv4/ip_forward", "banana")
    for bad in ("", "../x", "ipv4//ip_forward", "ipv4/./ip_forward", "/ipv4"):
        with pytest.raises(ValueError):
            sysctl.path(bad)


# -- names --------------------------------------------------------------------------------------
def test_names():
    assert names.valid_ifname("eth0") and names.valid_ifname("a" * 15)
    assert not names.valid_ifname("a" * 16) and not names.valid_ifname("a b") and not names.valid_ifname(None)
    assert names.normalize_mac("02-AA-bb-cc-dd-ee") == "02:aa:bb:cc:dd:ee"
    for bad in ("01:00:5e:00:00:01", "00:00:00:00:00:00", "02:00:00:00:00", "zz:00:00:00:00:00"):
        with pytest.raises(ValueError):
            names.normalize_mac(bad)
    for _ in range(50):
        m = names.random_mac()
        first = int(m[:2], 16)
        assert names.normalize_mac(m) == m and first & 0x02 and not first & 0x01
    assert names.truncate_utf8("aé" * 3, 4) == "aé" + "a"
    assert names.truncate_utf8("abc", 10) == "abc"
