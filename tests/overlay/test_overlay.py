"""splice-vxlan across simulated hosts (conftest.py): each host's agent holds its subnet lease in
the 3-member etcd and programs its peers; containers on different hosts reach each other
through VXLAN (UDP 4789, VNI 42 on the underlay bridge), with the overlay MTU."""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import time

import pytest

from splice.conformance import oracle

from .conftest import CIDR, VNI

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

TCP_SERVER = ("import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
              "s.bind(('0.0.0.0', 7000)); s.listen(1); s.settimeout(20); c,_=s.accept()\n"
              "d=b''\nwhile not d.endswith(b'hello'): d+=c.recv(65536)\nc.sendall(b'got %d' % len(d)); c.close()")
TCP_CLIENT = ("import socket,sys; c=socket.create_connection((sys.argv[1], 7000), timeout=10); "
              "c.sendall(b'x'*5000 + b'hello'); print(c.recv(100).decode())")


def cexec(ns, *argv, **kw):
    return subprocess.run(["ip", "netns", "exec", ns.name, *argv], capture_output=True, text=True, timeout=30, **kw)


def ping(ns, addr, size=None, df=False, count=1) -> bool:
    argv = ["ping", "-n", "-q", "-c", str(count), "-W", "2"]
    if size is not None:
        argv += ["-s", str(size)]
    if df:
        argv += ["-M", "do"]
    return cexec(ns, *argv, addr).returncode == 0


def vxlan_counter(overlay) -> None:
    """An nft counter in the underlay namespace: bridged UDP 4789 frames carrying VNI 42."""
    rules = ("add table bridge sptovl\n"
             "add chain bridge sptovl vx { type filter hook forward priority 0; }\n"
             f"add rule bridge sptovl vx udp dport 4789 @th,96,24 {VNI} counter\n")
    subprocess.run(["ip", "netns", "exec", overlay.cluster.underlay, "nft", "-f", "-"], input=rules, text=True,
                   check=True, capture_output=True)


def vxlan_packets(overlay) -> int:
    out = subprocess.run(["ip", "netns", "exec", overlay.cluster.underlay, "nft", "-j", "list", "table", "bridge",
                          "sptovl"], capture_output=True, text=True, check=True).stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            for e in rule["expr"]:
                if "counter" in e:
                    return e["counter"]["packets"]
    return 0


def drop_counter(overlay) -> None:
    subprocess.run(["ip", "netns", "exec", overlay.cluster.underlay, "nft", "delete", "table", "bridge", "sptovl"],
                   capture_output=True)


def assert_no_leaks(host, cids=()) -> None:
    """After every DEL: no veth, no masquerade element, no IPAM lease on ``host``."""
    links = oracle.links(host.ns.name)
    assert not [link["ifname"] for link in links if link["ifname"].startswith("veth")], links
    nft = host.sh("nft", "-j", "list", "ruleset").stdout
    for cid in cids:
        assert cid not in nft
    leases = subprocess.run(["sqlite3", f"{host.ipam}/ovl/store.db", "select count(*) from lease"],
                            capture_output=True, text=True)
    if leases.returncode == 0:
        assert leases.stdout.strip() == "0", leases.stdout


def test_two_hosts_ping_tcp_mtu(overlay):
    h1, h2 = overlay.host(), overlay.host()
    c1, r1 = h1.add()
    c2, r2 = h2.add()
    a1, a2 = h1.address(c1), h2.address(c2)
    n1, n2 = ipaddress.ip_network(a1 + "/24", strict=False), ipaddress.ip_network(a2 + "/24", strict=False)
    assert n1 != n2 and n1.subnet_of(ipaddress.ip_network(CIDR)) and n2.subnet_of(ipaddress.ip_network(CIDR))
    # the VXLAN device: vni, port 4789, learning off, MTU = 1500 - 50, owner-tagged
    dev = oracle.ip_json(h1.ns.name, "link", "show", "spvx42")[0]
    info = dev["linkinfo"]["info_data"]
    assert info["id"] == VNI and info["port"] == 4789 and info.get("learning") is False
    assert dev["mtu"] == 1450 and dev.get("ifalias") == "splice-vxlan:ovl"
    assert r1["interfaces"][2]["mtu"] == 1450 if "mtu" in r1["interfaces"][2] else True
    # h1 programmed h2 as flannel does: route onlink via h2's VTEP address, neighbour, FDB
    vtep2 = str(n2.network_address)
    route = next(r for r in oracle.routes(h1.ns.name) if r["dst"] == str(n2))
    assert route["gateway"] == vtep2 and route["dev"] == "spvx42" and "onlink" in route.get("flags", [])
    mac2 = oracle.ip_json(h2.ns.name, "link", "show", "spvx42")[0]["address"]
    neigh = oracle.ip_json(h1.ns.name, "neigh", "show", "dev", "spvx42")
    assert [(n["dst"], n["lladdr"]) for n in neigh] == [(vtep2, mac2)]
    fdb = json.loads(h1.sh("bridge", "-j", "fdb", "show", "dev", "spvx42").stdout)
    assert [(e["mac"], e["dst"]) for e in fdb if "dst" in e] == [(mac2, h2.underlay_ip)]

    vxlan_counter(overlay)
    try:
        ct1, ct2 = h1.containers[c1], h2.containers[c2]
        assert ping(ct1, a2, count=2), h1.log.read_text()[-2000:]
        assert ping(ct2, a1)
        assert vxlan_packets(overlay) >= 6  # 3 requests + 3 replies, all UDP 4789 with VNI 42
        # TCP (a segment larger than one frame)
        server = subprocess.Popen(["ip", "netns", "exec", ct2.name, "python3", "-c", TCP_SERVER])
        try:
            for _ in range(50):
                if "7000" in cexec(ct2, "ss", "-ltn").stdout:
                    break
                time.sleep(0.05)
            out = cexec(ct1, "python3", "-c", TCP_CLIENT, a2)
            assert out.returncode == 0 and "got 5005" in out.stdout, out.stderr
        finally:
            server.kill()
            server.wait()
        # MTU: a full-size packet with DF passes, one byte more does not
        assert ping(ct1, a2, size=1450 - 28, df=True)
        assert not ping(ct1, a2, size=1450 - 27, df=True)
    finally:
        drop_counter(overlay)

    h1.delete(c1)
    h2.delete(c2)
    h1.delete(c1)  # idempotent
    assert_no_leaks(h1, [c1])
    assert_no_leaks(h2, [c2])


def test_without_agent_add_fails_clearly(overlay):
    h = overlay.host(start=False)
    name = f"{h.ns.name}-x"
    subprocess.run(["ip", "netns", "add", name], check=True)
    overlay.namespaces.append(name)
    from ..conftest import Namespace

    h.containers["cx"] = Namespace(name)
    rc, out, err = h.cni("ADD", "cx", agent=False)
    assert rc != 0 and out["code"] == 108 and "splice agent" in out["msg"], (out, err)
    assert not [link for link in oracle.link_names(h.ns.name) if link.startswith(("veth", "spvx"))]
    rc, out, _ = h.cni("DEL", "cx", agent=False)  # DEL needs no agent
    assert rc == 0, out
