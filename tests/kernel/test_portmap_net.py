"""Real-traffic lab for the port-mapping tests (helpers; imported by the portmap tests).

Topology, every namespace a throwaway one from the ``make_ns`` fixture::

    client (eth0 192.0.2.2/24, 2001:db8:1::2/64)
        |  veth
    host   up0 192.0.2.1/24, 2001:db8:1::1/64        ip_forward, ipv6 forwarding on
           spbr0 10.66.0.1/24, fd66::1/64 (bridge)
        |  vA / vB (ports of spbr0, hairpin on)
    ca  (eth0 10.66.0.2/24, fd66::2/64, default via the bridge)
    cb  (eth0 10.66.0.3/24, fd66::3/64, default via the bridge)

The client has no route to the containers: a reply reaches it only through the host's
de-NAT. Servers (``serve``) answer every TCP connection / UDP datagram with
``"<name> <peer address as seen>"``; ``call`` is one bounded client exchange.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field

from splice.conformance import oracle

SERVER = r"""
import selectors, socket, sys
name, port = sys.argv[1], int(sys.argv[2])
sel = selectors.DefaultSelector()
for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    for typ in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(fam, typ)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, port))
        if typ == socket.SOCK_STREAM:
            s.listen(16)
        sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        try:
            if s.type == socket.SOCK_STREAM:
                c, peer = s.accept()
                c.settimeout(2)
                c.recv(64)
                c.sendall(f"{name} {peer[0]}".encode())
                c.close()
            else:
                data, peer = s.recvfrom(64)
                s.sendto(f"{name} {peer[0]}".encode(), peer)
        except OSError:
            pass
"""

CLIENT = r"""
import socket, sys, time
proto, host, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sport = int(sys.argv[5]) if len(sys.argv) > 5 else 0
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
try:
    if proto == "tcp":
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(timeout)
        if sport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", sport))
        s.connect((host, port))
        s.sendall(b"hi")
        print(s.recv(128).decode())
    else:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        if sport:
            s.bind(("", sport))
        deadline = time.monotonic() + timeout
        while True:  # a datagram may be lost while neighbours resolve: resend
            s.sendto(b"hi", (host, port))
            s.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
            try:
                print(s.recvfrom(128)[0].decode())
                break
            except socket.timeout:
                if time.monotonic() >= deadline:
                    raise
except OSError as e:
    print("ERR", type(e).__name__, e)
    sys.exit(1)
"""

BRIDGE = "spbr0"
GW4, GW6 = "10.66.0.1", "fd66::1"
A4, A6 = "10.66.0.2", "fd66::2"
B4, B6 = "10.66.0.3", "fd66::3"
UP4_HOST, UP6_HOST = "192.0.2.1", "2001:db8:1::1"
UP4_CLIENT, UP6_CLIENT = "192.0.2.2", "2001:db8:1::2"


@dataclass
class Reply:
    ok: bool
    server: str | None = None
    peer: str | None = None
    error: str = ""


def call(ns, proto: str, host: str, port: int, timeout: float = 2.0, sport: int = 0) -> Reply:
    """One TCP connection / UDP exchange from inside ``ns`` (a Namespace, or None for the
    test process's own namespace, never used for traffic)."""
    argv = [sys.executable, "-c", CLIENT, proto, host, str(port), str(timeout)] + ([str(sport)] if sport else [])
    p = ns.sh(*argv, check=False, timeout=timeout + 10)
    out = p.stdout.strip()
    if p.returncode != 0 or not out:
        return Reply(False, error=out + p.stderr.strip())
    name, _, peer = out.partition(" ")
    return Reply(True, name, peer)


@dataclass
class Servers:
    procs: list = field(default_factory=list)

    def start(self, ns, name: str, port: int = 80) -> None:
        p = subprocess.Popen(["nsenter", f"--net={ns.path}", sys.executable, "-c", SERVER, name, str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline().strip()
        if line != "ready":
            p.kill()
            raise AssertionError(f"server {name} did not start: {line} {p.stderr.read()}")
        self.procs.append(p)

    def stop(self) -> None:
        for p in self.procs:  # only the servers this test started, by their own handle
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        self.procs.clear()


@dataclass
class Lab:
    host: object
    ca: object
    cb: object
    client: object


def _sh(ns, *cmds: str) -> None:
    for c in cmds:
        ns.sh(*c.split())


def _container(host, ns, veth: str, v4: str, v6: str) -> None:
    host.sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
    _sh(host, f"ip link set {veth} master {BRIDGE}", f"ip link set {veth} up",
        f"bridge link set dev {veth} hairpin on")
    _sh(ns, f"ip addr add {v4}/24 dev eth0", f"ip addr add {v6}/64 dev eth0 nodad", "ip link set eth0 up",
        f"ip route add default via {GW4}", f"ip -6 route add default via {GW6}")


def build_lab(make_ns, *, br_netfilter: bool = True) -> Lab:
    host, ca, cb, client = make_ns(), make_ns(), make_ns(), make_ns()
    # multicast snooping off: without an MLD querier the bridge may drop the neighbour
    # solicitations for a container that has not sent anything yet
    _sh(host, f"ip link add {BRIDGE} type bridge mcast_snooping 0", f"ip addr add {GW4}/24 dev {BRIDGE}",
        f"ip addr add {GW6}/64 dev {BRIDGE} nodad", f"ip link set {BRIDGE} up")
    host.sh("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv6/conf/all/forwarding; "
            f"echo {int(br_netfilter)} > /proc/sys/net/bridge/bridge-nf-call-iptables; "
            f"echo {int(br_netfilter)} > /proc/sys/net/bridge/bridge-nf-call-ip6tables")
    _container(host, ca, "vA", A4, A6)
    _container(host, cb, "vB", B4, B6)
    host.sh("ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", client.name)
    _sh(host, f"ip addr add {UP4_HOST}/24 dev up0", f"ip addr add {UP6_HOST}/64 dev up0 nodad", "ip link set up0 up")
    _sh(client, f"ip addr add {UP4_CLIENT}/24 dev eth0", f"ip addr add {UP6_CLIENT}/64 dev eth0 nodad",
        "ip link set eth0 up")
    # the bridge gets its carrier with its first port; let IPv6 settle on it
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if (oracle.ping(ca.name, GW6, timeout=1) and oracle.ping(cb.name, GW6, timeout=1)
                and oracle.ping(client.name, UP6_HOST, timeout=1)):
            break
        time.sleep(0.1)
    return Lab(host, ca, cb, client)


# -- oracle views of the portmap table (nft -j, no splice code) -------------------------------
TABLE = "splice_portmap"




def elements(ns, maps: tuple[str, ...] | None = None) -> dict[str, dict]:
    """map/set name -> {key: (data, comment)} for the portmap table."""
    out: dict[str, dict] = {}
    for tbl, name, e in oracle.nft_map_elements(ns.name):
        if tbl != TABLE or (maps is not None and name not in maps):
            continue
        k, d, c = oracle.element_parts(e)
        out.setdefault(name, {})[k] = (d, c)
    return out


def dnat_elements(ns) -> dict[tuple, tuple]:
    """(map, key) -> (data, owner) for the four DNAT maps."""
    out = {}
    for name, elems in elements(ns, ("dnat4", "dnat4_ip", "dnat6", "dnat6_ip")).items():
        for k, v in elems.items():
            out[(name, k)] = v
    return out


def assert_no_portmap_elements(ns) -> None:
    left = {name: e for name, e in elements(ns).items() if e}
    assert not left, f"portmap elements left: {left}"


def route_localnet(ns, iface: str) -> str:
    return oracle.sysctl(ns.name, f"net.ipv4.conf.{iface}.route_localnet")


def conntrack_udp(ns, dport: int) -> list[str]:
    p = ns.sh("conntrack", "-L", "-p", "udp", "--orig-port-dst", str(dport), check=False)
    return [line for line in p.stdout.splitlines() if line.strip()]
