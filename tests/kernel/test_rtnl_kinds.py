"""rtnl.add_link for every link kind a driver needs, move_link, in throwaway namespaces.

Kernel state is read with the oracle (``ip -j -d``). vlan (8021q) and ipvlan are missing
from some kernels: those tests are ``needs_vm`` (skip on such a host, run in the UML guest,
whose 6.1 kernel does not echo RTM_NEWLINK: the lookup fallback runs there).
"""

from __future__ import annotations

import ipaddress

import pytest

from splice.conformance import oracle
from splice.libnet import rtnl
from splice.libnet.errors import LinkExists, NetError, NotSupported
from splice.libnet.netns import Netns

from ..conftest import missing_kernel_feature, rtnl_in as run, only_lo

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

ADDR = ipaddress.ip_address



def info(ns, name: str) -> dict:
    o = oracle.link(ns.name, name)
    assert o is not None, f"{name} not in {ns.name}"
    return o


def vlan_supported(ns) -> bool:
    """Probe (not a version check): can ``ip link add`` make an 802.1Q link here?"""
    ns.sh("ip", "link", "add", "probe1", "type", "veth", "peer", "name", "probe2")
    try:
        return ns.sh("ip", "link", "add", "link", "probe1", "name", "probe0", "type", "vlan", "id", "5",
                     check=False).returncode == 0
    finally:
        ns.sh("ip", "link", "del", "probe1")  # takes probe0 with it


def parent(rt) -> int:
    """A veth end to stack links on (its peer gives the stacked links a lower device)."""
    return rt.add_veth("lower0", "lower1", up=True).index


# -- macvlan ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["bridge", "private", "vepa", "passthru"])
def test_macvlan_modes(host_ns, mode):
    def make(rt):
        p = parent(rt)
        link = rt.add_link("macvlan", "mv0", parent=p, mtu=1400, mac="02:00:00:00:0a:01",
                           data=rtnl.Macvlan(mode=mode))
        return p, link, rt.get_link("mv0")

    p, echoed, looked = run(host_ns, make)
    o = info(host_ns, "mv0")
    assert o["linkinfo"]["info_kind"] == "macvlan" and o["linkinfo"]["info_data"]["mode"] == mode
    assert o["link"] == "lower0" and o["mtu"] == 1400
    if mode != "passthru":  # a passthru macvlan takes its lower device's MAC
        assert o["address"] == "02:00:00:00:0a:01"
    for link in (echoed, looked):
        assert link.kind == "macvlan" and link.index == o["ifindex"] and link.parent_index == p
        assert link.data == rtnl.Macvlan(mode=mode)
    run(host_ns, lambda rt: (rt.delete_link(name="mv0"), rt.delete_link(name="lower0")))
    only_lo(host_ns)


def test_macvlan_created_directly_in_another_namespace(host_ns, sandbox_ns):
    """IFLA_NET_NS_FD on creation: the kernel registers the link in the target namespace
    (its parent stays here); nothing is echoed to this namespace, so the answer is None."""
    with Netns.open(sandbox_ns.path) as sb:
        def make(rt):
            p = parent(rt)
            first = rt.add_link("macvlan", "sp0000aa", parent=p, netns_fd=sb.fd, data=rtnl.Macvlan())
            with pytest.raises(LinkExists):  # the name is taken in the target namespace
                rt.add_link("macvlan", "sp0000aa", parent=p, netns_fd=sb.fd, data=rtnl.Macvlan())
            return first, rt.get_link("sp0000aa")

        created, here = run(host_ns, make)
    assert created is None and here is None
    o = info(sandbox_ns, "sp0000aa")
    assert o["linkinfo"]["info_data"]["mode"] == "bridge" and "UP" not in o["flags"]
    assert o.get("link_netnsid") is not None  # its parent lives in another namespace
    in_sb = run(sandbox_ns, lambda rt: rt.get_link("sp0000aa"))
    assert in_sb.kind == "macvlan" and in_sb.peer_netnsid is not None and in_sb.data == rtnl.Macvlan("bridge")
    # rename inside the sandbox: the second half of "temporary name, then rename"
    run(sandbox_ns, lambda rt: rt.set_link(in_sb.index, name="eth0", up=True))
    o = info(sandbox_ns, "eth0")
    assert o["ifindex"] == in_sb.index and "UP" in o["flags"]
    run(host_ns, lambda rt: rt.delete_link(name="lower0"))  # takes the macvlan with it
    only_lo(host_ns, sandbox_ns)


# -- vxlan -------------------------------------------------------------------------------------
def test_vxlan_ipv4(host_ns):
    def make(rt):
        p = parent(rt)
        rt.add_address(p, ipaddress.ip_interface("10.0.0.1/24"))
        data = rtnl.Vxlan(vni=42, port=4789, local=ADDR("10.0.0.1"), dev=p, learning=False, ttl=64, udp_csum=True)
        return p, rt.add_link("vxlan", "vx0", mtu=1450, data=data), rt.get_link("vx0")

    p, echoed, looked = run(host_ns, make)
    d = info(host_ns, "vx0")["linkinfo"]["info_data"]
    assert (d["id"], d["port"], d["local"], d["link"], d["learning"], d["ttl"], d["udp_csum"]) == (
        42, 4789, "10.0.0.1", "lower0", False, 64, True)
    for link in (echoed, looked):
        v = link.data
        assert isinstance(v, rtnl.Vxlan) and link.mtu == 1450
        assert (v.vni, v.port, v.local, v.dev, v.learning, v.ttl, v.udp_csum, v.group) == (
            42, 4789, ADDR("10.0.0.1"), p, False, 64, True, None)
    run(host_ns, lambda rt: (rt.delete_link(name="vx0"), rt.delete_link(name="lower0")))
    only_lo(host_ns)


def test_vxlan_ipv6_and_defaults(host_ns):
    def make(rt):
        a = rt.add_link("vxlan", "vx6", data=rtnl.Vxlan(vni=7, local="fd00::1", udp6_zero_csum_tx=True,
                                                        udp6_zero_csum_rx=True))
        b = rt.add_link("vxlan", "vxd", data=rtnl.Vxlan(vni=8))
        return a, b

    v6, dflt = run(host_ns, make)
    d = info(host_ns, "vx6")["linkinfo"]["info_data"]
    assert d["id"] == 7 and d["local6"] == "fd00::1" and d["udp_zero_csum6_tx"] and d["udp_zero_csum6_rx"]
    assert v6.data.local == ADDR("fd00::1") and v6.data.udp6_zero_csum_tx is True
    # the kernel's defaults, read back: port 8472, learning on
    assert dflt.data.port == info(host_ns, "vxd")["linkinfo"]["info_data"]["port"] == 8472
    assert dflt.data.learning is True and dflt.data.local is None and dflt.data.dev is None
    run(host_ns, lambda rt: (rt.delete_link(name="vx6"), rt.delete_link(name="vxd")))
    only_lo(host_ns)


# -- vlan, ipvlan (needs_vm) -------------------------------------------------------------------
@pytest.mark.needs_vm
def test_vlan_8021q_and_8021ad(host_ns, sandbox_ns):
    if not vlan_supported(host_ns):
        with pytest.raises(NotSupported, match="vlan"):
            run(host_ns, lambda rt: rt.add_link("vlan", "v0", parent=1, data=rtnl.Vlan(5)))
        only_lo(host_ns)
        missing_kernel_feature("802.1Q VLAN links (8021q): NotSupported checked")

    with Netns.open(sandbox_ns.path) as sb:
        def make(rt):
            p = parent(rt)
            q = rt.add_link("vlan", "lower0.10", parent=p, data=rtnl.Vlan(10))
            ad = rt.add_link("vlan", "lower0.20", parent=p, data=rtnl.Vlan(20, protocol=rtnl.ETH_P_8021AD), up=True)
            moved = rt.add_link("vlan", "sp0000bb", parent=p, netns_fd=sb.fd, data=rtnl.Vlan(30))
            return p, q, ad, moved

        p, q, ad, moved = run(host_ns, make)
    assert q.data == rtnl.Vlan(10, rtnl.ETH_P_8021Q) and q.parent_index == p
    assert ad.data == rtnl.Vlan(20, rtnl.ETH_P_8021AD) and ad.up
    d10 = info(host_ns, "lower0.10")["linkinfo"]["info_data"]
    d20 = info(host_ns, "lower0.20")["linkinfo"]["info_data"]
    assert (d10["protocol"], d10["id"]) == ("802.1Q", 10) and (d20["protocol"], d20["id"]) == ("802.1ad", 20)
    assert moved is None and info(sandbox_ns, "sp0000bb")["linkinfo"]["info_data"]["id"] == 30
    assert run(sandbox_ns, lambda rt: rt.get_link("sp0000bb")).data == rtnl.Vlan(30)
    run(host_ns, lambda rt: rt.delete_link(name="lower0"))  # the VLAN links go with their parent
    only_lo(host_ns, sandbox_ns)


@pytest.mark.needs_vm
@pytest.mark.parametrize("mode,flags", [("l2", "bridge"), ("l3", "private"), ("l3s", "vepa")])
def test_ipvlan(host_ns, sandbox_ns, mode, flags):
    def probe(rt):
        p = parent(rt)
        try:
            rt.add_link("ipvlan", "ipv-probe", parent=p, data=rtnl.Ipvlan())
            return True
        except NotSupported:
            return False
        finally:
            rt.delete_link(name="lower0")

    if not run(host_ns, probe):
        only_lo(host_ns)
        missing_kernel_feature("ipvlan links: NotSupported checked")

    with Netns.open(sandbox_ns.path) as sb:
        def make(rt):
            p = parent(rt)
            here = rt.add_link("ipvlan", "ipv0", parent=p, data=rtnl.Ipvlan(mode, flags))
            there = rt.add_link("ipvlan", "sp0000cc", parent=p, netns_fd=sb.fd, data=rtnl.Ipvlan(mode, flags))
            return p, here, there

        p, here, there = run(host_ns, make)
    assert here.data == rtnl.Ipvlan(mode, flags) and here.parent_index == p and there is None
    d = info(host_ns, "ipv0")["linkinfo"]["info_data"]
    assert d["mode"] == mode and (flags == "bridge" or d.get(flags) is True)  # iproute2: "private": true
    assert run(sandbox_ns, lambda rt: rt.get_link("sp0000cc")).data == rtnl.Ipvlan(mode, flags)
    run(host_ns, lambda rt: rt.delete_link(name="lower0"))
    only_lo(host_ns, sandbox_ns)


# -- generic -----------------------------------------------------------------------------------
def test_add_link_errors(host_ns):
    with pytest.raises(NotSupported, match="nosuchkind"):
        run(host_ns, lambda rt: rt.add_link("nosuchkind", "x0"))
    with pytest.raises(ValueError, match="Vlan data for a link of kind 'macvlan'"):
        run(host_ns, lambda rt: rt.add_link("macvlan", "x0", parent=1, data=rtnl.Vlan(5)))
    for bad in (lambda: rtnl.Vlan(0), lambda: rtnl.Vlan(4095), lambda: rtnl.Vlan(5, protocol=0x800),
                lambda: rtnl.Macvlan("bogus"), lambda: rtnl.Ipvlan("l4"), lambda: rtnl.Ipvlan("l2", "x"),
                lambda: rtnl.Vxlan(vni=1 << 24)):
        with pytest.raises(ValueError):
            bad()
    # a kernel refusal carries the kernel's own explanation (extended ACK) when it gives one
    with pytest.raises(NetError) as e:
        run(host_ns, lambda rt: rt.add_link("vxlan", "vx0", data=rtnl.Vxlan(vni=1, group=ADDR("239.1.1.1"))))
    assert "create vxlan 'vx0'" in str(e.value)
    run(host_ns, lambda rt: rt.add_link("bridge", "br-t", data=rtnl.Bridge()))
    with pytest.raises(LinkExists, match="'br-t'"):
        run(host_ns, lambda rt: rt.add_link("bridge", "br-t"))
    assert run(host_ns, lambda rt: rt.get_link("br-t")).data.vlan_filtering is False
    run(host_ns, lambda rt: rt.delete_link(name="br-t"))
    only_lo(host_ns)


def test_veth_through_add_link(host_ns, sandbox_ns):
    with Netns.open(sandbox_ns.path) as sb:
        v = run(host_ns, lambda rt: rt.add_link("veth", "vt-a", mtu=1300, data=rtnl.Veth(
            peer="sp0000dd", peer_netns_fd=sb.fd, peer_mac="02:00:00:00:0d:02", peer_mtu=1300)))
    p = info(sandbox_ns, "sp0000dd")
    assert v.peer_index == p["ifindex"] and p["mtu"] == 1300 and p["address"] == "02:00:00:00:0d:02"
    assert v.data is None  # the kernel reports no veth data
    run(host_ns, lambda rt: rt.delete_link(index=v.index))
    only_lo(host_ns, sandbox_ns)


# -- move_link -----------------------------------------------------------------------------------
def test_move_link(host_ns, sandbox_ns):
    sandbox_ns.sh("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "taken1")
    with Netns.open(sandbox_ns.path) as sb:
        def make(rt):
            a = rt.add_veth("sp0000ee", "peer-a")
            rt.move_link(a.index, sb.fd, "eth1")  # move and rename in one message
            b = rt.add_veth("taken1", "peer-b")
            with pytest.raises(LinkExists, match="nothing moved"):
                rt.move_link(b.index, sb.fd)  # its current name is taken there
            still_here = rt.get_link("taken1") is not None
            c = rt.add_veth("sp0000ff", "peer-c")
            with pytest.raises(LinkExists, match="WAS moved"):
                rt.move_link(c.index, sb.fd, "eth0")  # not atomic: moved, then the rename failed
            return still_here, rt.get_link("sp0000ff")

        still_here, c_here = run(host_ns, make)
    assert still_here and c_here is None
    assert {"eth1", "sp0000ff"} <= sandbox_ns.links() and "peer-a" in host_ns.links()
    assert info(sandbox_ns, "eth1")["link_netnsid"] is not None  # its peer stayed in the host
    run(host_ns, lambda rt: (rt.delete_link(name="peer-a"), rt.delete_link(name="peer-b"),
                             rt.delete_link(name="peer-c")))
    sandbox_ns.sh("ip", "link", "del", "eth0")
    only_lo(host_ns, sandbox_ns)
