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
    h.container("cx")
    rc, out, err = h.cni("ADD", "cx", agent=False)
    assert rc != 0 and out["code"] == 108 and "splice agent" in out["msg"], (out, err)
    assert not [link for link in oracle.link_names(h.ns.name) if link.startswith(("veth", "spvx"))]
    rc, out, _ = h.cni("DEL", "cx", agent=False)  # DEL needs no agent
    assert rc == 0, out


def route_to(host, subnet: str) -> dict | None:
    return next((r for r in oracle.routes(host.ns.name) if r["dst"] == subnet), None)


def overlay_entries(host) -> tuple[set, set, set]:
    """(routes, neighbours, FDB entries) on the host's VXLAN device."""
    routes = {r["dst"] for r in oracle.routes(host.ns.name) if r.get("dev") == "spvx42" and r.get("gateway")}
    neigh = {n["dst"] for n in oracle.ip_json(host.ns.name, "neigh", "show", "dev", "spvx42")}
    fdb = {(e["mac"], e["dst"]) for e in json.loads(host.sh("bridge", "-j", "fdb", "show", "dev", "spvx42").stdout)
           if "dst" in e}
    return routes, neigh, fdb


def subnet_of(host, cid) -> str:
    return str(ipaddress.ip_network(host.address(cid) + "/24", strict=False))


def wait_for(pred, timeout: float, step: float = 0.01) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    return None


def wait_status_error(host, code: int, timeout: float) -> dict:
    """Poll STATUS until it fails with ``code``; its error JSON (the test fails on timeout)."""
    seen: dict = {}

    def failing() -> bool:
        rc, out, _ = host.cni("STATUS")
        seen["out"] = out
        return rc != 0 and out["code"] == code

    assert wait_for(failing, timeout, step=0.2) is not None, seen
    return seen["out"]


def test_join_leave_restart(overlay):
    """A third host joining is reachable from the others in under 1 s; a host whose agent is
    gone (lease expired, TTL 3 s) is removed from the others (route, neighbour, FDB); an agent
    restarted keeps its subnet and its containers stay reachable."""
    h1, h2 = overlay.host(), overlay.host()
    c1, _ = h1.add()
    c2, _ = h2.add()
    h3 = overlay.host()
    cts = {c1: h1.containers[c1], c2: h2.containers[c2]}
    from concurrent.futures import ThreadPoolExecutor

    known = {s for h in (h1, h2) for s in overlay_entries(h)[0]}
    with ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        job = pool.submit(h3.add)  # the first ADD starts h3's overlay: claim, VTEP, publish, watch
        # join convergence: from the start of that ADD until h1 and h2 both route to a new subnet
        joined = wait_for(lambda: all(overlay_entries(h)[0] - known for h in (h1, h2)), 5.0, step=0)
        c3, _ = job.result()
        added = time.monotonic() - t0
    a3, s3 = h3.address(c3), subnet_of(h3, c3)
    reach = wait_for(lambda: ping(cts[c1], a3) and ping(cts[c2], a3), 1.0, step=0)
    assert reach is not None, (overlay_entries(h1), h1.log.read_text()[-2000:])
    assert joined is not None and joined < 1.0 and route_to(h1, s3) and route_to(h2, s3)
    print(f"\njoin: routes to h3 on h1 and h2 {joined * 1000:.0f} ms after h3's first ADD started (polled with "
          f"ip -j); that ADD took {added * 1000:.0f} ms (overlay start included); ping from both "
          f"{reach * 1000:.0f} ms after it returned")
    assert ping(h3.containers[c3], h1.address(c1)) and ping(h3.containers[c3], h2.address(c2))

    # ADD p50 through the agent (the executable, nsenter included), the overlay running
    times = []
    extra = []
    for _ in range(10):
        t = time.monotonic()
        cid, _ = h1.add()
        times.append(time.monotonic() - t)
        extra.append(cid)
    times.sort()
    inside = sorted(float(line.rsplit(" ", 2)[-2]) for line in h1.log.read_text().splitlines()
                    if " ADD " in line and "rc=0" in line and any(cid in line for cid in extra))
    print(f"ADD through the agent: p50 {times[len(times) // 2] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms "
          f"(the executable under nsenter); in the agent p50 {inside[len(inside) // 2]:.1f} ms")
    for cid in extra:
        h1.delete(cid)

    # h3 leaves while h1's agent is down: h3's agent killed, its lease expires (TTL 3 s);
    # h2 drops its entries at once, h1 (its agent restarted) when it reconciles at start
    mac3 = oracle.ip_json(h3.ns.name, "link", "show", "spvx42")[0]["address"]
    s1 = subnet_of(h1, c1)
    h1.stop_agent()
    h3.stop_agent(signal.SIGKILL)
    gone = wait_for(lambda: route_to(h2, s3) is None, 10.0, step=0.1)
    assert gone is not None
    print(f"leave: h3's entries gone from h2 {gone:.1f} s after its agent was killed (lease TTL 3 s)")
    assert route_to(h1, s3) is not None  # stale: nobody runs h1's overlay
    h1.start_agent()
    c1b, _ = h1.add()  # h1's overlay starts again: same subnet, h3's entries reconciled away
    for h in (h1, h2):
        routes, neigh, fdb = overlay_entries(h)
        assert s3 not in routes and s3.split("/")[0] not in neigh and (mac3, h3.underlay_ip) not in fdb
        assert len(routes) == len(neigh) == len(fdb) == 1  # the one other host left
    assert "stale route/neighbour/FDB" in h1.log.read_text()
    assert subnet_of(h1, c1b) == s1
    assert "renewed the lease it held on" in h1.log.read_text() or "re-claimed its former subnet" in h1.log.read_text()
    assert ping(cts[c2], h1.address(c1)) and ping(h1.containers[c1b], h2.address(c2))
    assert route_to(h2, s1) is not None
    for h, cid in ((h1, c1), (h1, c1b), (h2, c2)):
        h.delete(cid)
    assert_no_leaks(h1, [c1, c1b])
    assert_no_leaks(h2, [c2])


def test_concurrent_adds_on_two_hosts(overlay):
    """Both hosts' first ADDs race (the overlay starts under them): distinct subnets, no
    address twice, every container reachable from the other host."""
    from concurrent.futures import ThreadPoolExecutor

    h1, h2 = overlay.host(), overlay.host()
    jobs = [h for h in (h1, h2) for _ in range(6)]
    with ThreadPoolExecutor(12) as pool:
        done = list(pool.map(lambda h: (h, h.add()[0]), jobs))
    addrs = [h.address(cid) for h, cid in done]
    assert len(set(addrs)) == len(addrs) == 12
    subnets = {h.node: {subnet_of(h, cid) for hh, cid in done if hh is h} for h in (h1, h2)}
    assert all(len(s) == 1 for s in subnets.values()) and subnets["host1"] != subnets["host2"], subnets
    one1 = next(cid for h, cid in done if h is h1)
    for h, cid in done:
        if h is h2:
            assert ping(h1.containers[one1], h.address(cid))
    for h, cid in done:
        h.delete(cid)
    assert_no_leaks(h1)
    assert_no_leaks(h2)


def test_status_follows_the_lease(overlay):
    """STATUS: 0 while the lease is held; 51 with the reason while etcd is out of reach (ADDs
    go on); 0 again when it is back. A new host that cannot reach etcd: STATUS 50, ADD fails
    clearly and makes nothing."""
    h1 = overlay.host()
    rc, out, err = h1.cni("STATUS")
    assert rc == 0, (out, err, h1.log.read_text()[-2000:])
    port = next(link["ifname"] for link in oracle.links(overlay.cluster.underlay)
                if link["ifname"].startswith("h1") and link.get("master") == "br0")
    subprocess.run(["ip", "-n", overlay.cluster.underlay, "link", "set", port, "down"], check=True)
    try:
        out = wait_status_error(h1, 51, 15.0)
        assert "cannot renew the lease" in out["msg"]
        cid, _ = h1.add()  # ADDs keep using the held subnet
        h1.delete(cid)
    finally:
        subprocess.run(["ip", "-n", overlay.cluster.underlay, "link", "set", port, "up"], check=True)
    assert wait_for(lambda: h1.cni("STATUS")[0] == 0, 15.0, step=0.2) is not None

    h2 = overlay.host()
    port2 = next(link["ifname"] for link in oracle.links(overlay.cluster.underlay)
                 if link["ifname"].startswith("h2") and link.get("master") == "br0")
    subprocess.run(["ip", "-n", overlay.cluster.underlay, "link", "set", port2, "down"], check=True)
    try:
        conf = h2.config(etcd={"endpoints": overlay.cluster.endpoints, "prefix": overlay.prefix, "timeout": 0.5})
        rc, out, _ = h2.cni("STATUS", conf=conf)
        assert rc != 0 and out["code"] == 50 and "etcd" in out["msg"] + out.get("details", ""), out
        h2.container("cy")
        rc, out, _ = h2.cni("ADD", "cy", conf=conf)
        assert rc != 0 and out["code"] == 11 and "etcd" in out["msg"], out
        assert not [link for link in oracle.link_names(h2.ns.name) if link.startswith(("veth", "spvx"))]
    finally:
        subprocess.run(["ip", "-n", overlay.cluster.underlay, "link", "set", port2, "up"], check=True)


def test_device_deleted_under_the_agent_is_made_again(overlay):
    h1, h2 = overlay.host(), overlay.host()
    c1, _ = h1.add()
    c2, _ = h2.add()
    assert ping(h1.containers[c1], h2.address(c2))
    h1.sh("ip", "link", "del", "spvx42")
    assert not ping(h1.containers[c1], h2.address(c2))
    rc, out, _ = h1.cni("CHECK", c1, dict(h1.config(), prevResult=overlay.results[c1]))
    assert rc != 0 and out["code"] == 105 and "spvx42" in out["msg"], out
    rc, out, err = h1.cni("STATUS")
    assert rc == 0, (out, err)
    assert wait_for(lambda: ping(h1.containers[c1], h2.address(c2)), 3.0, step=0) is not None  # new MAC re-published
    assert ping(h2.containers[c2], h1.address(c1))
    rc, out, _ = h1.cni("CHECK", c1, dict(h1.config(), prevResult=overlay.results[c1]))
    assert rc == 0, out
    h1.sh("ip", "link", "del", "spvx42")  # and by an ADD
    c1b, _ = h1.add()
    assert wait_for(lambda: ping(h1.containers[c1b], h2.address(c2)), 3.0, step=0) is not None
    assert ping(h2.containers[c2], h1.address(c1b))
    h1.delete(c1b)
    rc, out, _ = h1.cni("GC", conf=dict(h1.config(), **{"cni.dev/valid-attachments": []}))
    assert rc == 0, out
    assert_no_leaks(h1, [c1])
    h2.delete(c2)
    assert_no_leaks(h2, [c2])


def test_etcd_member_killed_and_whole_cluster_down(overlay):
    """One etcd member killed: ADDs and a join keep working. Every member down: ADDs on a
    held subnet keep working, a new host fails clearly (code 11, nothing made), and all
    recovers when etcd returns (the new host joins and is reachable)."""
    cluster = overlay.cluster
    h1, h2 = overlay.host(), overlay.host()
    c1, _ = h1.add()
    c2, _ = h2.add()
    cluster.members[0].kill()
    h3 = overlay.host()
    c3, _ = h3.add()  # claim + publish + watch with a member gone
    assert wait_for(lambda: ping(h1.containers[c1], h3.address(c3)), 3.0, step=0) is not None
    c1b, _ = h1.add()
    for m in cluster.members:
        m.kill()
    c1c, _ = h1.add()  # the held subnet: no etcd needed
    assert subnet_of(h1, c1c) == subnet_of(h1, c1)
    assert ping(h1.containers[c1c], h2.address(c2))
    h4 = overlay.host()
    conf4 = h4.config(etcd={"endpoints": cluster.endpoints, "prefix": overlay.prefix, "timeout": 0.5})
    h4.container("cz")
    rc, out, _ = h4.cni("ADD", "cz", conf=conf4)
    assert rc != 0 and out["code"] == 11 and "no etcd endpoint answered" in out["msg"], out
    assert not [link for link in oracle.link_names(h4.ns.name) if link.startswith(("veth", "spvx"))]
    cluster.restore()
    c4, _ = h4.add(conf=conf4)
    assert wait_for(lambda: ping(h1.containers[c1], h4.address(c4)) and ping(h2.containers[c2], h4.address(c4)),
                    5.0, step=0) is not None, (overlay_entries(h1), h1.log.read_text()[-2000:])
    # the leases survived the outage (no leader: no expiry), every host kept its subnet
    assert "taken" not in h1.log.read_text() and "lost" not in h2.log.read_text()
    for h, cid in ((h1, c1), (h1, c1b), (h1, c1c), (h2, c2), (h3, c3), (h4, c4)):
        h.delete(cid, conf=conf4 if h is h4 else None)
    for h in (h1, h2, h3, h4):
        assert_no_leaks(h)


def test_subnet_taken_by_another_host(overlay):
    """Another host holds this host's subnet now (its key overwritten in etcd): the lease is
    "lost": STATUS 50 with the reason, ADD refused with 50, the host's record withdrawn (the
    others drop its entries); DEL still works."""
    h1, h2 = overlay.host(), overlay.host()
    c1, _ = h1.add()
    c2, _ = h2.add()
    s1 = subnet_of(h1, c1)
    net = ipaddress.ip_network(s1)
    key = f"{overlay.prefix}/ovl/subnets/{net.network_address}-{net.prefixlen}"

    def take():
        e = overlay.cluster.client()
        try:
            e.put(key, json.dumps({"node": "intruder", "host": "0" * 32}))
        finally:
            e.close()

    overlay.cluster.run(take)
    out = wait_status_error(h1, 50, 10.0)
    assert "taken by node intruder" in out["msg"], out
    h1.containers[c1 + "x"] = h1.containers[c1]
    rc, out, _ = h1.cni("ADD", c1 + "x", h1.config(), ifname="eth1")
    assert rc != 0 and out["code"] == 50 and "intruder" in out["msg"], out
    assert wait_for(lambda: route_to(h2, s1) is None, 5.0, step=0.1) is not None  # record revoked with the lease
    h1.delete(c1)
    h2.delete(c2)
    assert_no_leaks(h1, [c1])
    assert_no_leaks(h2, [c2])


def test_agent_restarted_while_etcd_is_down(overlay):
    """An agent restarted while every etcd member is down starts on the subnet of its state
    file: ADDs work (same subnet), STATUS is 51 meanwhile; when etcd returns it renews,
    publishes and watches: STATUS 0, containers of both hosts reach each other."""
    cluster = overlay.cluster
    h1, h2 = overlay.host(), overlay.host()
    c1, _ = h1.add()
    c2, _ = h2.add()
    s1 = subnet_of(h1, c1)
    h1.stop_agent()
    for m in cluster.members:
        m.kill()
    h1.start_agent()
    c1b, _ = h1.add()
    assert subnet_of(h1, c1b) == s1
    assert ping(h1.containers[c1b], h1.address(c1))
    rc, out, _ = h1.cni("STATUS")
    assert rc != 0 and out["code"] == 51 and "state file" in out["msg"], out
    cluster.restore()
    assert wait_for(lambda: h1.cni("STATUS")[0] == 0, 15.0, step=0.2) is not None, h1.log.read_text()[-2000:]
    assert wait_for(lambda: ping(h1.containers[c1b], h2.address(c2)) and ping(h2.containers[c2], h1.address(c1b)),
                    5.0, step=0) is not None, (overlay_entries(h1), overlay_entries(h2))
    for h, cid in ((h1, c1), (h1, c1b), (h2, c2)):
        h.delete(cid)
    assert_no_leaks(h1, [c1, c1b])
    assert_no_leaks(h2, [c2])


def test_without_default_gateway_the_cluster_route(overlay):
    """isDefaultGateway false: the container routes clusterCIDR via the bridge, nothing else;
    containers of two hosts still reach each other."""
    h1, h2 = overlay.host(), overlay.host()
    c1, r1 = h1.add(conf=h1.config(isDefaultGateway=False))
    c2, _ = h2.add(conf=h2.config(isDefaultGateway=False))
    routes = {r["dst"] for r in oracle.routes(h1.containers[c1].name)}
    assert CIDR in routes and "default" not in routes, routes
    assert ping(h1.containers[c1], h2.address(c2)) and ping(h2.containers[c2], h1.address(c1))
    rc, out, _ = h1.cni("CHECK", c1, dict(h1.config(isDefaultGateway=False), prevResult=r1))
    assert rc == 0, out
    h1.delete(c1, conf=h1.config(isDefaultGateway=False))
    h2.delete(c2, conf=h2.config(isDefaultGateway=False))
    assert_no_leaks(h1, [c1])
    assert_no_leaks(h2, [c2])


def test_ip_masq_only_outside_the_cluster(overlay):
    """ipMasq: traffic to an address outside clusterCIDR leaves with the host's address (the
    outside namespace has no route back to the containers, so its reply proves it); traffic
    to another host's container keeps the container's address (the server sees it)."""
    h1, h2 = overlay.host(), overlay.host()
    c1, _ = h1.add()
    c2, _ = h2.add()
    out_ns = f"{h1.ns.name}-out"
    subprocess.run(["ip", "netns", "add", out_ns], check=True)
    overlay.namespaces.append(out_ns)
    subprocess.run(["ip", "-n", h1.ns.name, "link", "add", "sptout", "type", "veth", "peer", "name", "eth0",
                    "netns", out_ns], check=True)
    for ns, dev, addr in ((h1.ns.name, "sptout", "192.168.77.1/24"), (out_ns, "eth0", "192.168.77.2/24")):
        subprocess.run(["ip", "-n", ns, "addr", "add", addr, "dev", dev], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
    assert ping(h1.containers[c1], "192.168.77.2", count=1)
    server = ("import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
              "s.bind(('0.0.0.0', 7001)); s.listen(1); s.settimeout(20); c,a=s.accept(); c.sendall(a[0].encode()); "
              "c.close()")
    client = "import socket,sys; c=socket.create_connection((sys.argv[1], 7001), timeout=10); print(c.recv(100).decode())"
    ct2 = h2.containers[c2]
    p = subprocess.Popen(["ip", "netns", "exec", ct2.name, "python3", "-c", server])
    try:
        wait_for(lambda: "7001" in cexec(ct2, "ss", "-ltn").stdout, 5.0, step=0.05)
        got = cexec(h1.containers[c1], "python3", "-c", client, h2.address(c2))
        assert got.stdout.strip() == h1.address(c1), (got.stdout, got.stderr)
    finally:
        p.kill()
        p.wait()
    h1.delete(c1)
    h2.delete(c2)
    assert_no_leaks(h1, [c1])
    assert_no_leaks(h2, [c2])


def test_ipv6_overlay(overlay):
    """An IPv6 clusterCIDR (/48 in /64s) over the IPv4 underlay: VTEP address <subnet>::/128,
    the other host's route onlink via its ``::``, its neighbour; ping both ways, the MTU."""
    from ..conftest import require_ipv6

    require_ipv6()
    h1, h2 = overlay.host(), overlay.host()
    conf = {h: h.config(clusterCIDR="fd00:244::/48", subnetLen=64) for h in (h1, h2)}
    c1, _ = h1.add(conf=conf[h1])
    c2, _ = h2.add(conf=conf[h2])
    a1, a2 = h1.address(c1), h2.address(c2)
    n2 = ipaddress.ip_network(a2 + "/64", strict=False)
    route = next(r for r in oracle.routes(h1.ns.name, "-6") if r["dst"] == str(n2))
    assert route["gateway"] == str(n2.network_address) and "onlink" in route["flags"] and route["dev"] == "spvx42"
    assert ping(h1.containers[c1], a2, count=2) and ping(h2.containers[c2], a1)
    assert ping(h1.containers[c1], a2, size=1450 - 48, df=True)
    assert not ping(h1.containers[c1], a2, size=1450 - 47, df=True)
    h1.delete(c1, conf=conf[h1])
    h2.delete(c2, conf=conf[h2])
    assert_no_leaks(h1, [c1])
    assert_no_leaks(h2, [c2])
