"""End to end: a real dockerd 20.10 using ``splice driver`` (splice-bridge, splice-macvlan).

Each test drives dockerd with /usr/bin/docker, checks the containers from inside (busybox ``ip``,
``ping``, ``nc``, ``httpd``), the host with ``ip -j`` / ``nft -j`` in the throwaway host namespace
(and HTTP from there), and ends with a leak check: nothing but ``lo`` in the host namespace, no
address, route or nft set/map element, no network or endpoint in the driver's state, no pool or
lease in its IPAM store, the machine's namespace unchanged. (802.1Q parents: test_docker_vm.py.)
"""

from __future__ import annotations

import ipaddress
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from splice.conformance import oracle

from ..clients.hostenv import wait_until
from ..conftest import has_ipv6, make_switch
from .conftest import IMAGE, SLEEP
from .harness import Tombstone

pytestmark = [pytest.mark.root, pytest.mark.slow]

BR = "splice-bridge"
MV = "splice-macvlan"
HTTPD = ("sh", "-c", "mkdir -p /www && echo splice-ok >/www/index.html && exec httpd -f -p 80 -h /www")


def subnet(i: int) -> str:
    return f"10.214.{i}.0/24"


def addr(i: int, host: int) -> str:
    return f"10.214.{i}.{host}"


def inet4(dk, name: str, dev: str = "eth0") -> list[str]:
    """IPv4 CIDRs on ``dev`` inside container ``name`` (busybox ip)."""
    out = dk.exec(name, "ip", "-o", "-4", "addr", "show", "dev", dev).stdout
    return [w[i + 1] for w in (line.split() for line in out.splitlines()) for i, t in enumerate(w) if t == "inet"]


def mac_of(dk, name: str, dev: str = "eth0") -> str:
    words = dk.exec(name, "ip", "-o", "link", "show", "dev", dev).stdout.split()
    return words[words.index("link/ether") + 1]


def ports_on(dk, bridge: str) -> set[str]:
    """Host links enslaved to ``bridge`` (ip -j, the oracle)."""
    return {link["ifname"] for link in oracle.links(dk.host.name) if link.get("master") == bridge}


def bridge_holding(dk, gateway: str) -> str:
    """The host bridge that holds ``gateway`` (the driver names it as it likes by default)."""
    for item in oracle.ip_json(dk.host.name, "addr", "show"):
        if any(a.get("local") == gateway for a in item.get("addr_info", [])):
            assert (item.get("linkinfo") or {}).get("info_kind") == "bridge", item
            return item["ifname"]
    raise AssertionError(f"no host link holds the gateway {gateway}: {oracle.addresses(dk.host.name)}"
                         f"\n--- driver log:\n{dk.driver_log()}")


_HTTP_GET = """
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from the environment
try:
    print(opener.open(sys.argv[1], timeout=float(sys.argv[2])).read().decode().strip())
except OSError as e:
    print(e, file=sys.stderr); sys.exit(1)
"""


def host_wget(dk, port: int, host: str = "127.0.0.1", timeout: int = 5) -> subprocess.CompletedProcess:
    """An HTTP GET from the throwaway host namespace (the "host" of the published port); Debian's
    python3: the static busybox's wget crashes outside a container here."""
    return dk.host.sh(sys.executable, "-I", "-c", _HTTP_GET, f"http://{host}:{port}/", str(timeout),
                      check=False, timeout=timeout + 10)


def container_http_get(dk, name: str, host: str, port: int) -> subprocess.CompletedProcess:
    """HTTP/1.0 GET with busybox nc inside a container (the static busybox's wget crashes here)."""
    return dk.exec(name, "sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port}", check=False)


def state_records(dk) -> dict[str, list]:
    """Network and endpoint records in the driver's state directory (JSON files), pools and
    address leases in its IPAM store (SQLite, read-only)."""
    out: dict[str, list] = {}
    for kind in ("networks", "endpoints"):
        d = dk.driver.state_dir / kind
        names = sorted(p.name for p in d.iterdir() if p.suffix == ".json") if d.is_dir() else []
        if names:
            out[kind] = names
    for db in sorted(dk.driver.ipam_dir.rglob("*.db")) if dk.driver.ipam_dir.is_dir() else []:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            pools = [r[0] for r in con.execute("SELECT id FROM pool")]
            leases = [r for r in con.execute("SELECT pool_id, fam, hi, lo, owner FROM lease")]
        finally:
            con.close()
        if pools:
            out.setdefault("pools", []).extend(pools)
        if leases:
            out.setdefault("leases", []).extend(leases)
    return out


def assert_all_clean(dk, allow_links=frozenset()) -> None:
    dk.assert_clean(allow_links)
    assert not state_records(dk), f"driver state left: {state_records(dk)}"


# --------------------------------------------------------------------------- life cycle


def test_network_create_inspect_rm(dk):
    nid = dk.network_create("n1", "--subnet", subnet(1), "-o", "com.docker.network.bridge.name=spdbr1")
    info = dk.net_inspect("n1")
    assert info["Id"] == nid
    assert info["Driver"] == BR
    assert info["IPAM"]["Driver"] == BR
    assert [c["Subnet"] for c in info["IPAM"]["Config"]] == [subnet(1)]
    assert info["Options"].get("com.docker.network.bridge.name") == "spdbr1"
    br = dk.link("spdbr1")
    assert br is not None and br["linkinfo"]["info_kind"] == "bridge", f"{br}\n{dk.driver_log()}"
    assert f"{addr(1, 1)}/24" in oracle.addresses(dk.host.name, "spdbr1")
    assert f"{nid}.json" in state_records(dk).get("networks", []), state_records(dk)
    # the names dockerd registered (remote plugins show up in `docker info` once activated)
    assert "n1" in dk("network", "ls", "--filter", f"driver={BR}", "--format", "{{.Name}}").stdout.split()
    assert BR in json.loads(dk("info", "--format", "{{json .Plugins.Network}}").stdout)
    dk("network", "rm", "n1")
    assert "n1" not in dk("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert_all_clean(dk)
    # the pool was released: the same subnet can be taken again
    dk.network_create("n1", "--subnet", subnet(1))
    dk("network", "rm", "n1")
    assert_all_clean(dk)


def test_docker_default_ipam(dk):
    """The issue's own example: `docker network create -d splice-bridge --subnet S net1` (Docker's
    built-in IPAM, no --ipam-driver), then `docker run --network net1 -p ...` just works."""
    dk.network_create("net1", "--subnet", subnet(21), ipam=None)
    assert dk.net_inspect("net1")["IPAM"]["Driver"] == "default"
    dk.run("web", "net1", "-p", "127.0.0.1:18086:80", cmd=HTTPD)
    dk.run("cli", "net1")
    assert dk.ping("cli", dk.container_ip("web", "net1")) and dk.ping("cli", addr(21, 1))
    wait_until(lambda: host_wget(dk, 18086).stdout.strip() == "splice-ok", timeout=10,
               what=f"the published port\n--- driver log:\n{dk.driver_log()}")
    dk("rm", "-f", "web", "cli")
    dk("network", "rm", "net1")
    assert_all_clean(dk)


def test_two_containers_ping_each_other(dk):
    dk.network_create("n2", "--subnet", subnet(2))
    dk.run("ca", "n2")
    dk.run("cb", "n2")
    ip_a, ip_b = dk.container_ip("ca", "n2"), dk.container_ip("cb", "n2")
    assert inet4(dk, "ca") == [f"{ip_a}/24"] and inet4(dk, "cb") == [f"{ip_b}/24"]
    gw = addr(2, 1)
    assert f"default via {gw} dev eth0" in dk.exec("ca", "ip", "route").stdout
    assert dk.ping("ca", ip_b) and dk.ping("cb", ip_a), dk.driver_log()
    assert dk.ping("ca", gw)
    br = bridge_holding(dk, gw)
    assert len(ports_on(dk, br)) == 2, oracle.links(dk.host.name)
    assert oracle.ping(dk.host.name, ip_a), "host -> container over the bridge"
    dk("rm", "-f", "ca")
    assert len(ports_on(dk, br)) == 1
    assert dk.ping("cb", gw)
    dk("rm", "-f", "cb")
    dk("network", "rm", "n2")
    assert_all_clean(dk)


def test_static_ip_and_mac(dk):
    dk.network_create("n3", "--subnet", subnet(3))
    ip, mac = addr(3, 50), "02:42:0a:d6:03:32"
    dk.run("cs", "n3", "--ip", ip, "--mac-address", mac)
    assert inet4(dk, "cs") == [f"{ip}/24"]
    assert mac_of(dk, "cs") == mac
    net = dk.inspect("cs")["NetworkSettings"]["Networks"]["n3"]
    assert (net["IPAddress"], net["MacAddress"]) == (ip, mac)
    # the next container gets another address, and reaches the static one
    dk.run("ct", "n3")
    assert dk.container_ip("ct", "n3") != ip
    assert dk.ping("ct", ip)
    # an address in use is refused, with the driver's message
    p = dk("run", "--rm", "--network", "n3", "--ip", ip, IMAGE, "true", check=False)
    assert p.returncode != 0
    dk("rm", "-f", "cs", "ct")
    dk("network", "rm", "n3")
    assert_all_clean(dk)


def test_published_port_reached_from_the_host(dk):
    dk.network_create("n4", "--subnet", subnet(4))
    dk.run("web", "n4", "-p", "127.0.0.1:18080:80", cmd=HTTPD)
    wait_until(lambda: host_wget(dk, 18080).stdout.strip() == "splice-ok", timeout=10,
               what=f"http://127.0.0.1:18080/ from the host namespace; nft:\n{oracle.nft_text(dk.host.name)}"
                    f"\n--- driver log:\n{dk.driver_log()}")
    assert oracle.nft_references(dk.host.name, {"18080"}), "no nft object for the published port"
    dk("rm", "-f", "web")
    assert host_wget(dk, 18080, timeout=2).returncode != 0
    assert not oracle.nft_references(dk.host.name, {"18080"})
    dk("network", "rm", "n4")
    assert_all_clean(dk)


def test_published_port_on_all_addresses(dk):
    """-p PORT:80 (no host address): reached from the host on 127.0.0.1, and from another
    container through the gateway address (hairpin through the host)."""
    dk.network_create("n16", "--subnet", subnet(16))
    dk.run("web", "n16", "-p", "18085:80", cmd=HTTPD)
    dk.run("cli", "n16")
    wait_until(lambda: host_wget(dk, 18085).stdout.strip() == "splice-ok", timeout=10,
               what=f"http://127.0.0.1:18085/ from the host namespace\n--- driver log:\n{dk.driver_log()}")
    p = container_http_get(dk, "cli", addr(16, 1), 18085)
    assert p.stdout.rstrip().endswith("splice-ok"), f"{p.stdout}{p.stderr}\n{oracle.nft_text(dk.host.name)}"
    dk("rm", "-f", "web", "cli")
    assert not oracle.nft_references(dk.host.name, {"18085"})
    dk("network", "rm", "n16")
    assert_all_clean(dk)


def test_bridge_options(dk):
    """com.docker.network.driver.mtu and com.docker.network.bridge.enable_icc=false honoured;
    a bad option value is refused with the driver's message and nothing is made."""
    dk.network_create("n17", "--subnet", subnet(17), "-o", "com.docker.network.driver.mtu=1400",
                      "-o", "com.docker.network.bridge.enable_icc=false")
    dk.run("cm", "n17")
    dk.run("cn", "n17")
    words = dk.exec("cm", "ip", "-o", "link", "show", "dev", "eth0").stdout.split()
    assert words[words.index("mtu") + 1] == "1400"
    assert dk.ping("cm", addr(17, 1)), "the gateway stays reachable without ICC"
    assert not dk.ping("cm", dk.container_ip("cn", "n17")), "enable_icc=false: containers must not talk"
    dk("rm", "-f", "cm", "cn")
    dk("network", "rm", "n17")
    links = dk.links()
    p = dk("network", "create", "-d", BR, "--ipam-driver", BR, "--subnet", subnet(17),
           "-o", "com.docker.network.driver.mtu=lots", "n18", check=False)
    assert p.returncode != 0 and "mtu" in p.stderr.lower(), p.stderr
    assert "n18" not in dk("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert dk.links() == links
    assert_all_clean(dk)


def test_connect_and_disconnect_a_second_network(dk):
    dk.network_create("n5", "--subnet", subnet(5))
    dk.network_create("n6", "--subnet", subnet(6), "-o", "com.docker.network.bridge.name=spdbr6")
    dk.run("cc", "n5")
    dk.run("cd", "n6")
    dk("network", "connect", "n6", "cc")
    ip_c6 = dk.container_ip("cc", "n6")
    assert inet4(dk, "cc", "eth1") == [f"{ip_c6}/24"]
    assert dk.ping("cc", addr(6, 1)) and dk.ping("cc", dk.container_ip("cd", "n6"))
    assert dk.ping("cd", ip_c6)
    assert len(ports_on(dk, "spdbr6")) == 2
    dk("network", "disconnect", "n6", "cc")
    assert "eth1" not in dk.exec("cc", "ip", "-o", "link").stdout
    assert len(ports_on(dk, "spdbr6")) == 1
    assert dk.ping("cc", addr(5, 1))
    # connect again: the address is free and the attachment works as the first time
    dk("network", "connect", "--ip", ip_c6, "n6", "cc")
    assert dk.ping("cc", dk.container_ip("cd", "n6"))  # cc speaks first: see test_moved_address_*
    dk("rm", "-f", "cc", "cd")
    dk("network", "rm", "n5", "n6")
    assert_all_clean(dk)


def test_default_pools_and_overlap(dk):
    """Without --subnet the IPAM driver picks a pool of its default range, another one for the next
    network; an explicit subnet overlapping a network of the driver is refused, nothing made."""
    dk.network_create("p1")
    dk.network_create("p2")
    pools = [ipaddress.ip_network(dk.net_inspect(n)["IPAM"]["Config"][0]["Subnet"]) for n in ("p1", "p2")]
    assert not pools[0].overlaps(pools[1]), pools
    dk.run("cp", "p1")
    assert ipaddress.ip_address(dk.container_ip("cp", "p1")) in pools[0]
    links = dk.links()
    for taken in (pools[0], pools[0].supernet(new_prefix=pools[0].prefixlen - 4)):
        p = dk("network", "create", "-d", BR, "--ipam-driver", BR, "--subnet", str(taken), "p3", check=False)
        assert p.returncode != 0 and ("overlap" in p.stderr or "already allocated" in p.stderr), p.stderr
        assert "p3" not in dk("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert dk.links() == links
    dk("rm", "-f", "cp")
    dk("network", "rm", "p1", "p2")
    assert_all_clean(dk)


def test_ip_range_and_aux_address(dk):
    """--ip-range (RequestPool's SubPool): dynamic addresses come from it; --aux-address is
    reserved (RequestAddress at create), so no container gets it."""
    dk.network_create("n23", "--subnet", subnet(23), "--ip-range", "10.214.23.128/30",
                      "--aux-address", "printer=10.214.23.129")
    dk.run("r1", "n23")
    dk.run("r2", "n23")
    got = sorted(dk.container_ip(n, "n23") for n in ("r1", "r2"))
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.214.23.128/30") for a in got), got
    assert "10.214.23.129" not in got and len(set(got)) == 2, got
    dk("rm", "-f", "r1", "r2")
    dk("network", "rm", "n23")
    assert_all_clean(dk)


def test_internal_network(dk):
    """--internal: no default route in the container, peers still reach each other."""
    dk.network_create("ni", "--internal", "--subnet", subnet(12))
    dk.run("ci", "ni")
    dk.run("cj", "ni")
    assert "default" not in dk.exec("ci", "ip", "route").stdout
    assert dk.ping("ci", dk.container_ip("cj", "ni"))
    dk("rm", "-f", "ci", "cj")
    dk("network", "rm", "ni")
    assert_all_clean(dk)


def test_ipv6_dual_stack(dk):
    if not has_ipv6():
        return
    dk.network_create("n13", "--ipv6", "--subnet", subnet(13), "--subnet", "fd00:214:13::/64")
    dk.run("c6", "n13")
    dk.run("c7", "n13")
    net = dk.inspect("c7")["NetworkSettings"]["Networks"]["n13"]
    v6 = net["GlobalIPv6Address"]
    assert ipaddress.ip_address(v6) in ipaddress.ip_network("fd00:214:13::/64"), net
    out = dk.exec("c7", "ip", "-o", "-6", "addr", "show", "dev", "eth0").stdout
    assert f"{v6}/64" in out, out
    ok = any(dk.exec("c6", "ping", "-6", "-c", "1", "-W", "2", v6, check=False).returncode == 0 for _ in range(3))
    assert ok, "c6 -> c7 over IPv6 (3 tries: DAD)"
    dk("rm", "-f", "c6", "c7")
    dk("network", "rm", "n13")
    assert_all_clean(dk)


def test_parallel_runs(dk):
    """Six `docker run` at once on one network: distinct addresses, all attached, all removed."""
    dk.network_create("n14", "--subnet", subnet(14))
    names = [f"par{i}" for i in range(6)]
    errors: list[str] = []

    def run(name: str) -> None:
        p = dk("run", "-d", "--name", name, "--network", "n14", IMAGE, "sleep", "3600", check=False)
        if p.returncode != 0:
            errors.append(f"{name}: {p.stderr}")

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, f"{errors}\n--- driver log:\n{dk.driver_log()}"
    ips = {dk.container_ip(n, "n14") for n in names}
    assert len(ips) == len(names), ips
    assert all(dk.ping(n, addr(14, 1)) for n in names)
    assert len(ports_on(dk, bridge_holding(dk, addr(14, 1)))) == len(names)
    threads = [threading.Thread(target=dk, args=("rm", "-f", n)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    dk("network", "rm", "n14")
    assert_all_clean(dk)


def test_moved_address_is_reachable_at_once(dk):
    """An address that moves to a new endpoint (disconnect + connect --ip, or a container
    replaced by one with the same --ip) is reachable at once from a peer that talked to the old
    one. Docker's own bridge driver derives the MAC from the IPv4 address (02:42:<a.b.c.d>), so
    the peers' ARP entries stay right; otherwise a gratuitous ARP at Join must correct them. A
    random MAC with neither leaves the peers' REACHABLE entry pointing at the old MAC for up to
    ~45 s (base_reachable_time 30 s, randomised, then probes)."""
    dk.network_create("n11", "--subnet", subnet(11))
    dk.run("cc", "n11")
    dk.run("cd", "n11")
    ip_c = dk.container_ip("cc", "n11")
    assert dk.ping("cd", ip_c)
    dk("network", "disconnect", "n11", "cc")
    dk("network", "connect", "--ip", ip_c, "n11", "cc")
    assert dk.ping("cd", ip_c, count=2), (
        f"the peer's neighbour entry still names the old MAC:\n{dk.exec('cd', 'ip', 'neigh').stdout}"
        f"new: {dk.exec('cc', 'ip', '-o', 'link').stdout}")
    dk("rm", "-f", "cc", "cd")
    dk("network", "rm", "n11")
    assert_all_clean(dk)


# --------------------------------------------------------------------------- restarts


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_driver_restart(dk, sig):
    dk.network_create("n7", "--subnet", subnet(7))
    dk.run("ca", "n7", "-p", "127.0.0.1:18083:80", cmd=HTTPD)
    ip_a = dk.container_ip("ca", "n7")
    wait_until(lambda: host_wget(dk, 18083).stdout.strip() == "splice-ok", timeout=10, what="the published port")
    dk.driver.stop(sig)
    # the data path does not need the daemon
    assert dk.ping("ca", addr(7, 1))
    assert host_wget(dk, 18083).stdout.strip() == "splice-ok"
    dk.driver.start()
    assert dk.ping("ca", addr(7, 1))
    assert host_wget(dk, 18083).stdout.strip() == "splice-ok"
    dk.run("cb", "n7")  # joins after the restart
    assert dk.ping("cb", ip_a) and dk.ping("ca", dk.container_ip("cb", "n7"))
    dk("rm", "-f", "ca", "cb")
    assert not oracle.nft_references(dk.host.name, {"18083"})
    dk("network", "rm", "n7")
    assert_all_clean(dk)


def test_dockerd_restart(dk):
    """dockerd runs with live-restore: containers survive its restart; dockerd does not replay
    RequestPool, so the driver answers from its own state."""
    dk.network_create("n8", "--subnet", subnet(8))
    dk.run("ca", "n8")
    ip_a = dk.container_ip("ca", "n8")
    dk.dockerd.restart()
    assert dk.inspect("ca")["State"]["Running"]
    assert dk.ping("ca", addr(8, 1))
    dk.run("cb", "n8")
    assert dk.ping("cb", ip_a)
    dk("network", "disconnect", "n8", "ca")  # Leave + DeleteEndpoint + ReleaseAddress after the restart
    dk.run("cc", "n8", "--ip", ip_a)  # ... released in the driver's store
    assert dk.ping("cc", dk.container_ip("cb", "n8"))
    dk("rm", "-f", "ca", "cb", "cc")
    dk("network", "rm", "n8")
    assert_all_clean(dk)


def test_dockerd_restart_without_live_restore(dk):
    """A plain dockerd restart stops the containers (Leave, DeleteEndpoint) and starts the
    --restart=always one again on a new endpoint: the network is known to the driver from its
    own state (dockerd does not replay RequestPool)."""
    dk.network_create("n15", "--subnet", subnet(15))
    dk.run("ra", "n15", "--restart", "always", "--stop-timeout", "1")  # sleep ignores SIGTERM
    dk.dockerd.set_live_restore(False)
    try:
        dk.dockerd.restart()
        wait_until(lambda: dk.inspect("ra")["State"]["Running"], timeout=30, what="ra to be restarted")
        assert dk.ping("ra", addr(15, 1)), dk.driver_log()
        dk.run("rb", "n15")
        assert dk.ping("rb", dk.container_ip("ra", "n15"))
    finally:
        dk.dockerd.set_live_restore(True)
        dk("rm", "-f", "ra", "rb", check=False)
        dk.dockerd.restart()
    dk("network", "rm", "n15")
    assert_all_clean(dk)


def test_rm_while_driver_down_is_collected(dk):
    """``docker rm -f`` with the driver down succeeds and leaves the veth, the published port and
    the address behind; the restarted driver collects them within 10 s. (The socket answers 503
    meanwhile, see harness.Tombstone: a dead socket costs 60 s of dockerd retries, same outcome.)"""
    dk.network_create("n9", "--subnet", subnet(9), "-o", "com.docker.network.bridge.name=spdbr9")
    ip = addr(9, 60)
    dk.run("ca", "n9", "--ip", ip, "-p", "127.0.0.1:18084:80", cmd=HTTPD)
    wait_until(lambda: host_wget(dk, 18084).stdout.strip() == "splice-ok", timeout=10, what="the published port")
    before = ports_on(dk, "spdbr9")
    assert len(before) == 1
    dk.driver.kill()
    with Tombstone(dk.driver.socket_paths()) as dead:
        dk("rm", "-f", "ca")
    assert "/NetworkDriver.Leave" in dead.calls, dead.calls  # dockerd tried, nobody served it
    left = dk.links() - {"lo", "spdbr9"}
    t0 = time.monotonic()
    dk.driver.start()

    def collected():
        return (not (dk.links() - {"lo", "spdbr9"}) and not oracle.nft_references(dk.host.name, {"18084", ip})
                and not ports_on(dk, "spdbr9"))

    wait_until(collected, timeout=10 + 2, interval=0.2,
               what=f"the driver to collect {sorted(left)}, port 18084, {ip}; links now {dk.links()}"
                    f"\n--- driver log:\n{dk.driver_log()}")
    took = time.monotonic() - t0
    assert took <= 10 + 1, f"collected after {took:.1f} s"
    # the address went back to the pool
    dk.run("cb", "n9", "--ip", ip)
    dk("rm", "-f", "cb")
    dk("network", "rm", "n9")
    assert_all_clean(dk)


# --------------------------------------------------------------------------- failures


def host_side_of(dk, bridge: str) -> dict:
    """What attachments leave in the host: bridge ports, nft elements, leases (gateway aside)."""
    st = state_records(dk)
    return {"ports": sorted(ports_on(dk, bridge)), "nft": dk.nft_elements(), "endpoints": st.get("endpoints", []),
            "leases": len(st.get("leases", []))}


def with_failpoint(dk, n: int, action: str) -> dict:
    """Network ``n<n>`` (bridge spdbr<n>) with container ok1, then the driver restarted with
    ``bridge.masq_added:<action>``; what the host held before."""
    dk.network_create(f"n{n}", "--subnet", subnet(n), "-o", f"com.docker.network.bridge.name=spdbr{n}")
    dk.run("ok1", f"n{n}")
    before = host_side_of(dk, f"spdbr{n}")
    dk.driver.extra_env = {"SPLICE_FAILPOINT": f"bridge.masq_added:{action}"}
    dk.driver.restart()
    return before


def test_driver_error_mid_attachment_leaves_nothing(dk):
    """A failure half-way through wiring an endpoint (after the veth and the masquerade are made):
    dockerd reports the driver's message, the driver rolls back, and keeps serving."""
    before = with_failpoint(dk, 19, "error")
    p = dk("run", "-d", "--name", "bad", "--network", "n19", IMAGE, *SLEEP, check=False)
    assert p.returncode != 0 and "failpoint bridge.masq_added" in p.stderr, p.stderr
    assert host_side_of(dk, "spdbr19") == before
    dk("rm", "-f", "bad")
    assert dk.ping("ok1", addr(19, 1))
    dk.driver.extra_env = {}
    dk.driver.restart()
    dk.run("ok2", "n19")
    assert dk.ping("ok2", dk.container_ip("ok1", "n19"))
    dk("rm", "-f", "ok1", "ok2")
    dk("network", "rm", "n19")
    assert_all_clean(dk)


def test_driver_killed_mid_attachment(dk):
    """The driver is SIGKILLed half-way through wiring an endpoint; it is started again at once
    (dockerd retries the call after 1 s): the next start collects the half-made attachment, and
    the container either runs attached or fails cleanly - nothing is left after its removal."""
    before = with_failpoint(dk, 20, "kill")
    result: list[subprocess.CompletedProcess] = []
    t = threading.Thread(target=lambda: result.append(
        dk("run", "-d", "--name", "crash", "--network", "n20", IMAGE, *SLEEP, check=False)))
    t.start()
    dk.driver.proc.wait(30)  # the failpoint killed it
    assert dk.driver.proc.returncode == -signal.SIGKILL
    dk.driver.extra_env = {}
    dk.driver.start()
    t.join(120)
    p = result[0]
    if p.returncode == 0:
        assert dk.ping("crash", addr(20, 1)), dk.driver_log()
        assert dk.ping("crash", dk.container_ip("ok1", "n20"))
    dk("rm", "-f", "crash")
    assert host_side_of(dk, "spdbr20") == before, dk.driver_log()
    assert dk.ping("ok1", addr(20, 1))
    dk("rm", "-f", "ok1")
    dk("network", "rm", "n20")
    assert_all_clean(dk)


# --------------------------------------------------------------------------- macvlan


def test_macvlan_on_a_veth_wire(dk, make_ns):
    wire = "spdwire0"
    sw = make_switch(dk.host, make_ns, wire, addr(10, 1))
    try:
        # the IPAM-only socket (splice.sock) with the macvlan driver
        dk.network_create("mv", "--subnet", subnet(10), "--gateway", addr(10, 1), "-o", f"parent={wire}",
                          driver=MV, ipam="splice")
        assert dk.net_inspect("mv")["Driver"] == MV
        # no parent: refused (splice makes no dummy parent), with a message naming it
        p = dk("network", "create", "-d", MV, "--subnet", subnet(22), "mv2", check=False)
        assert p.returncode != 0 and "parent" in p.stderr, p.stderr
        dk.run("m1", "mv")
        dk.run("m2", "mv", "--ip", addr(10, 77))
        ip1 = dk.container_ip("m1", "mv")
        assert inet4(dk, "m2") == [f"{addr(10, 77)}/24"]
        assert dk.ping("m1", addr(10, 1)), f"container -> switch over {wire}\n{dk.driver_log()}"
        assert oracle.ping(sw.name, ip1)
        assert dk.ping("m1", addr(10, 77))
        dk("rm", "-f", "m1", "m2")
        dk("network", "rm", "mv")
        assert_all_clean(dk, allow_links={wire})
    finally:
        dk.host.sh("ip", "link", "del", wire, check=False)
