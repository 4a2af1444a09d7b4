"""rtnl FDB and neighbour entries: what a VXLAN overlay programs per remote host (as
flannel's vxlan backend: an FDB entry ``<remote VTEP MAC> dst <remote underlay IP>`` and a
permanent neighbour ``<remote VTEP IP> lladdr <remote VTEP MAC>`` on the vxlan device,
and an onlink route via the remote VTEP IP). Kernel state is read with ``bridge -j`` /
``ip -j``; the overlay is proven with a ping between two throwaway "nodes"."""

from __future__ import annotations

import ipaddress
import json

import pytest

from splice.conformance import oracle
from splice.libnet import rtnl
from splice.libnet.netns import Netns

from ..conftest import has_ipv6, rtnl_in as run, only_lo

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

ADDR = ipaddress.ip_address
IF = ipaddress.ip_interface
NET = ipaddress.ip_network
MAC_A, MAC_B = "02:00:00:00:aa:01", "02:00:00:00:bb:01"



def fdb(ns, dev: str) -> list[dict]:
    out = ns.sh("bridge", "-j", "fdb", "show", "dev", dev).stdout
    return json.loads(out) if out.strip() else []


def neigh(ns, dev: str) -> list[dict]:
    return oracle.ip_json(ns.name, "neigh", "show", "dev", dev)


def vtep(rt, underlay_ip: str, mac: str) -> int:
    """The underlay veth end called u0 (already there) gets ``underlay_ip``; a vxlan
    device vx0 on it, learning off, up. Returns vx0's ifindex."""
    u = rt.require_link("u0")
    rt.set_link(u.index, up=True)
    rt.add_address(u.index, IF(f"{underlay_ip}/24"))
    vx = rt.add_link("vxlan", "vx0", mac=mac, up=True,
                     data=rtnl.Vxlan(vni=1, port=8472, local=ADDR(underlay_ip), dev=u.index, learning=False))
    return vx.index


def test_fdb_on_a_vxlan_device(host_ns):
    host_ns.sh("ip", "link", "add", "u0", "type", "veth", "peer", "name", "u1")

    def make(rt):
        vx = vtep(rt, "192.168.50.1", MAC_A)
        out = {
            "add": rt.fdb_add(vx, MAC_B, dst=ADDR("192.168.50.2")),
            "add again": rt.fdb_add(vx, MAC_B, dst=ADDR("192.168.50.2")),
            "append 1": rt.fdb_append(vx, "00:00:00:00:00:00", dst=ADDR("192.168.50.7")),
            "append 2": rt.fdb_append(vx, "00:00:00:00:00:00", dst=ADDR("192.168.50.8"), vni=5, port=4789),
            "append again": rt.fdb_append(vx, "00:00:00:00:00:00", dst=ADDR("192.168.50.8"), vni=5, port=4789),
        }
        rt.fdb_replace(vx, MAC_B, dst=ADDR("192.168.50.3"))  # the remote moved
        rt.fdb_replace(vx, MAC_B, dst=ADDR("192.168.50.3"))  # idempotent
        rt.fdb_replace(vx, "02:00:00:00:cc:01", dst=ADDR("192.168.50.4"))  # creates
        out["dump"] = rt.fdb_dump(vx)
        return vx, out

    vx, out = run(host_ns, make)
    assert out["add"] is True and out["add again"] is False
    assert out["append 1"] is out["append 2"] is out["append again"] is None  # idempotent
    seen = {(e["mac"], e["dst"], e.get("vni"), e.get("port")) for e in fdb(host_ns, "vx0") if "dst" in e}
    assert seen == {
        (MAC_B, "192.168.50.3", None, None),
        ("02:00:00:00:cc:01", "192.168.50.4", None, None),
        ("00:00:00:00:00:00", "192.168.50.7", None, None),
        ("00:00:00:00:00:00", "192.168.50.8", 5, 4789),
    }
    assert all("self" in e["flags"] and e["state"] == "permanent" for e in fdb(host_ns, "vx0") if "dst" in e)
    mine = {(e.mac, str(e.dst), e.vni, e.port) for e in out["dump"] if e.dst is not None}
    assert mine == seen and all(e.permanent and e.master is None and e.ifindex == vx for e in out["dump"])

    def remove(rt):
        return (rt.fdb_del(vx, "00:00:00:00:00:00", dst=ADDR("192.168.50.7")),  # one remote only
                rt.fdb_del(vx, "00:00:00:00:00:00", dst=ADDR("192.168.50.7")),  # the kernel: success
                rt.fdb_del(vx, MAC_B), rt.fdb_del(vx, MAC_B), rt.fdb_del(vx, MAC_B, dst=ADDR("192.168.50.3")))

    assert run(host_ns, remove) == (True, True, True, False, False)
    left = {(e["mac"], e["dst"]) for e in fdb(host_ns, "vx0") if "dst" in e}
    assert left == {("00:00:00:00:00:00", "192.168.50.8"), ("02:00:00:00:cc:01", "192.168.50.4")}
    run(host_ns, lambda rt: (rt.delete_link(name="vx0"), rt.delete_link(name="u0")))
    only_lo(host_ns)


def test_neighbours_on_a_vxlan_device(host_ns):
    host_ns.sh("ip", "link", "add", "u0", "type", "veth", "peer", "name", "u1")
    v6 = has_ipv6()

    def make(rt):
        vx = vtep(rt, "192.168.50.1", MAC_A)
        out = [
            rt.neigh_add(vx, ADDR("10.244.1.0"), MAC_B),
            rt.neigh_add(vx, ADDR("10.244.1.0"), "02:00:00:00:bb:99"),  # exists: False, unchanged
            rt.neigh_add(vx, ADDR("fd00:244:1::"), MAC_B) if v6 else True,
        ]
        rt.neigh_replace(vx, ADDR("10.244.2.0"), "02:00:00:00:cc:01")
        rt.neigh_replace(vx, ADDR("10.244.2.0"), "02:00:00:00:cc:02")  # the remote's VTEP MAC changed
        return vx, out, rt.neigh_dump(vx), rt.neigh_dump(vx, rtnl.AF_INET6) if v6 else []

    vx, out, dump, dump6 = run(host_ns, make)
    assert out == [True, False, True]
    seen = {(n["dst"], n["lladdr"]) for n in neigh(host_ns, "vx0") if "PERMANENT" in n["state"]}
    assert seen == {("10.244.1.0", MAC_B), ("10.244.2.0", "02:00:00:00:cc:02")} | (
        {("fd00:244:1::", MAC_B)} if v6 else set())
    assert {(str(n.ip), n.mac) for n in dump if n.permanent} == seen
    assert {str(n.ip) for n in dump6} == ({"fd00:244:1::"} if v6 else set())
    assert run(host_ns, lambda rt: (rt.neigh_del(vx, ADDR("10.244.1.0")), rt.neigh_del(vx, ADDR("10.244.1.0")))) == (
        True, False)
    assert "10.244.1.0" not in {n["dst"] for n in neigh(host_ns, "vx0")}
    run(host_ns, lambda rt: (rt.delete_link(name="vx0"), rt.delete_link(name="u0")))
    only_lo(host_ns)


def test_a_vxlan_overlay_between_two_nodes(make_ns):
    """Two "nodes" joined by an underlay veth; each programs the other as flannel does
    (FDB + neighbour + onlink route, all through rtnl, one batch per node); the overlay
    addresses then reach each other."""
    a, b = make_ns(), make_ns()
    with Netns.open(b.path) as nb:
        run(a, lambda rt: rt.add_veth("u0", "sp0000u0", peer_netns_fd=nb.fd))
    b.sh("ip", "link", "set", "sp0000u0", "name", "u0")

    def node(rt, underlay, mac, overlay, peer_underlay, peer_mac, peer_overlay, peer_subnet):
        vx = vtep(rt, underlay, mac)
        rt.add_address(vx, IF(f"{overlay}/32"))
        batch = rt.batch()
        batch.fdb_replace(vx, peer_mac, dst=ADDR(peer_underlay))
        batch.neigh_replace(vx, ADDR(peer_overlay), peer_mac)
        batch.add_route(NET(peer_subnet), gw=ADDR(peer_overlay), oif=vx, onlink=True)
        return batch.run()

    assert run(a, node, "192.168.50.1", MAC_A, "10.244.0.0", "192.168.50.2", MAC_B, "10.244.1.0", "10.244.1.0/24") == [
        None, None, True]
    run(b, node, "192.168.50.2", MAC_B, "10.244.1.0", "192.168.50.1", MAC_A, "10.244.0.0", "10.244.0.0/24")
    route = next(r for r in oracle.routes(a.name) if r["dst"] == "10.244.1.0/24")
    assert route["gateway"] == "10.244.1.0" and route["dev"] == "vx0" and "onlink" in route.get("flags", [])
    assert oracle.ping(a.name, "10.244.1.0", count=2, timeout=5)
    assert oracle.ping(b.name, "10.244.0.0", count=1, timeout=5)
    run(a, lambda rt: (rt.delete_link(name="vx0"), rt.delete_link(name="u0")))
    run(b, lambda rt: rt.delete_link(name="vx0"))
    only_lo(a, b)


def test_fdb_entry_in_the_bridge_of_a_port(host_ns):
    """``master=True``: the entry goes to the bridge's table through its port (NTF_MASTER)."""

    def make(rt):
        br = rt.add_bridge("br-t", up=True)
        v = rt.add_veth("vt-a", "vt-b", master=br.index, up=True)
        return br.index, v.index, rt.fdb_add(v.index, "02:00:00:00:dd:01", master=True), rt.fdb_dump(v.index)

    br, idx, added, dump = run(host_ns, make)
    assert added is True
    entry = next(e for e in fdb(host_ns, "vt-a") if e["mac"] == "02:00:00:00:dd:01")
    assert entry.get("master") == "br-t" and entry["state"] in ("permanent", "")
    assert any(e.mac == "02:00:00:00:dd:01" and e.master == br and e.permanent for e in dump)
    assert run(host_ns, lambda rt: rt.fdb_del(idx, "02:00:00:00:dd:01", master=True)) is True
    run(host_ns, lambda rt: (rt.delete_link(name="vt-a"), rt.delete_link(name="br-t")))
    only_lo(host_ns)


def test_bridge_fdb_lists_the_whole_table_of_one_bridge(make_ns):
    """bridge_fdb(bridge): the bridge's and its ports' permanent entries in one dump, not
    another bridge's (checked against `bridge -j fdb show br`)."""
    import json

    from splice.libnet import rtnl as R
    from splice.libnet.netns import Netns

    ns = make_ns()
    for cmd in ("ip link add brx type bridge", "ip link add bry type bridge",
                "ip link add vx1 type veth peer name vx2", "ip link add vy1 type veth peer name vy2",
                "ip link set vx1 master brx", "ip link set vy1 master bry"):
        ns.sh(*cmd.split())
    want = {e["mac"] for e in json.loads(ns.sh("bridge", "-j", "fdb", "show", "br", "brx").stdout)}
    with Netns.open(ns.path) as h:
        got = R.run(h, lambda rt: {e.mac for e in rt.bridge_fdb(rt.require_link("brx").index)})
    vy1 = json.loads(ns.sh("ip", "-j", "link", "show", "vy1").stdout)[0]["address"]
    assert got == want and vy1 not in got
