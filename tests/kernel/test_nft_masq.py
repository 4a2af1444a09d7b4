"""Masquerade by owner (splice.libnet.masq), in throwaway namespaces, asserted with the oracle."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import threading
from ipaddress import ip_address, ip_interface

import pytest

from splice.conformance import oracle
from splice.libnet.masq import Masquerade
from splice.libnet.netns import Netns
from splice.libnet.nft import Nft

from .nfthelp import CountingNft

pytestmark = [pytest.mark.root, pytest.mark.timeout(30)]

TABLE = "splice_nat"
BR = "br0"  # the interface the sources' traffic comes in by (no such link needed)
A, B, C = "n1 c-aaa eth0", "n1 c-bbb eth0", "n2 c-ccc eth0"
A_SRC = [ip_interface("10.22.0.2/24"), ip_interface("fd00:22::2/64")]
B_SRC = [ip_interface("10.22.0.3/24"), ip_interface("fd00:22::3/64")]
C_SRC = [ip_interface("10.33.0.2/16"), ip_interface("fd00:33::2/64")]


def masq(ns, method: str, *args, **kwargs):
    """Masquerade().<method>(*args) inside ns (context created and used in one run);
    ``iface`` defaults to BR for add/remove/check."""
    if method in ("add", "remove", "check"):
        kwargs.setdefault("iface", BR)
    with Netns.open(ns.path) as n:
        return n.run(lambda: getattr(Masquerade(), method)(*args, **kwargs))


# -- oracle views (nft -j via nsenter; no splice code) -------------------------------


def _elements(ns, names) -> list[tuple[str, object, object, str | None]]:
    out = []
    for tbl, name, e in oracle.nft_map_elements(ns.name):
        if tbl == TABLE and (name in names if not callable(names) else names(name)):
            key, data, comment = oracle.element_parts(e)
            out.append((name, key, data, comment))
    return out


def registrations(ns) -> dict[tuple[str, str], str | None]:
    """(iface, address) -> owner comment, from src4/src6."""
    return {key: comment for _, key, _, comment in _elements(ns, ("src4", "src6"))}


def entries(ns) -> dict[str, str | None]:
    """address -> owner comment (when every address is registered on one interface)."""
    regs = registrations(ns)
    out = {a: c for (_, a), c in regs.items()}
    assert len(out) == len(regs)
    return out


def nets(ns) -> dict[tuple[str, str, str], tuple[str, str | None]]:
    """(iface, address, network address) -> (set name, owner comment), from net4_*/net6_*."""
    return {key: (name, comment) for name, key, _, comment in _elements(ns, lambda n: n.startswith(("net4_", "net6_")))}


def pair_owners(ns) -> list[str | None]:
    return sorted(comment for _, _, _, comment in _elements(ns, ("owners",)))


def expected_pair(iface: str, address: str, owner: str) -> tuple[str, str]:
    """The ownership pair of (iface, address) as documented: digest(set . key) . digest(owner)."""
    set_name = "src6" if ":" in address else "src4"
    kd = hashlib.sha256(f"{set_name} {json.dumps([iface, address])}".encode()).hexdigest()[:15]
    return kd, hashlib.sha256(owner.encode()).hexdigest()[:15]


def pairs(ns) -> dict[tuple[str, str], str | None]:
    return {key: comment for _, key, _, comment in _elements(ns, ("owners",))}


def chains(ns) -> set[str]:
    return {c["name"] for c in oracle.nft_objects(ns.name, "chain") if c["table"] == TABLE and c["family"] == "inet"}


def chain_rules(ns, chain: str) -> list[list[dict]]:
    return [r["expr"] for r in oracle.nft_objects(ns.name, "rule") if r["table"] == TABLE and r["chain"] == chain]


def assert_nothing_left(ns) -> None:
    """Leak check: no element of ours remains (table/chains/sets are shared scaffolding)."""
    assert _elements(ns, lambda n: True) == []


# -- tests ----------------------------------------------------------------------------
def test_add_shows_owner_elements_and_rules(host_ns):
    masq(host_ns, "add", A, A_SRC)
    masq(host_ns, "add", B, B_SRC)
    masq(host_ns, "add", C, C_SRC)
    masq(host_ns, "add", A, A_SRC)  # idempotent

    assert entries(host_ns) == {"10.22.0.2": A, "10.22.0.3": B, "10.33.0.2": C,
                                "fd00:22::2": A, "fd00:22::3": B, "fd00:33::2": C}
    assert nets(host_ns) == {
        (BR, "10.22.0.2", "10.22.0.0"): ("net4_24", A), (BR, "10.22.0.3", "10.22.0.0"): ("net4_24", B),
        (BR, "10.33.0.2", "10.33.0.0"): ("net4_16", C), (BR, "fd00:22::2", "fd00:22::"): ("net6_64", A),
        (BR, "fd00:22::3", "fd00:22::"): ("net6_64", B), (BR, "fd00:33::2", "fd00:33::"): ("net6_64", C),
    }
    assert pairs(host_ns) == {expected_pair(i, a, o): o for (i, a), o in registrations(host_ns).items()}

    base = [c for c in oracle.nft_objects(host_ns.name, "chain") if c["table"] == TABLE and c["name"] == "postrouting"]
    assert base and base[0]["type"] == "nat" and base[0]["hook"] == "postrouting" and base[0]["prio"] == 100
    text = oracle.nft_text(host_ns.name)
    for line in ("ip daddr 224.0.0.0/4 return", "ip6 daddr ff00::/8 return", "jump srcnat", "jump net4_24",
                 "jump net4_16", "jump net6_64", "iifname . ip saddr @src4 masquerade",
                 "iifname . ip6 saddr @src6 masquerade",
                 "iifname . ip saddr . ip daddr & 255.255.255.0 @net4_24 accept",
                 "iifname . ip saddr . ip daddr & 255.255.0.0 @net4_16 accept",
                 "iifname . ip6 saddr . ip6 daddr & ffff:ffff:ffff:ffff:: @net6_64 accept"):
        assert line in text
    assert len(chain_rules(host_ns, "postrouting")) == 6  # re-adding did not duplicate
    # the subnet jumps come before the multicast returns and srcnat last
    assert chain_rules(host_ns, "postrouting")[-1] == [{"jump": {"target": "srcnat"}}]

    listed = masq(host_ns, "list")
    assert listed == {A: [ip_address("10.22.0.2"), ip_address("fd00:22::2")],
                      B: [ip_address("10.22.0.3"), ip_address("fd00:22::3")],
                      C: [ip_address("10.33.0.2"), ip_address("fd00:33::2")]}
    assert masq(host_ns, "check", A, A_SRC) == []

    masq(host_ns, "remove", A, A_SRC)
    assert set(entries(host_ns)) == {"10.22.0.3", "fd00:22::3", "10.33.0.2", "fd00:33::2"}
    masq(host_ns, "remove", A, A_SRC)  # twice is fine
    masq(host_ns, "remove", B, None)  # found by owner
    assert set(entries(host_ns).values()) == {C}
    masq(host_ns, "remove", C, [ip_address("10.33.0.2"), "fd00:33::2"])  # plain addresses work too
    assert_nothing_left(host_ns)


def test_remove_and_add_never_touch_another_owner(host_ns):
    x = [ip_interface("10.22.0.9/24")]
    masq(host_ns, "add", A, x)
    masq(host_ns, "add", B, x)  # the address was given out again on BR: B takes the entry over
    assert registrations(host_ns) == {(BR, "10.22.0.9"): B}
    assert pairs(host_ns) == {expected_pair(BR, "10.22.0.9", B): B}
    masq(host_ns, "remove", A, x)  # a late DEL of A with its old address
    masq(host_ns, "remove", A, None)
    assert registrations(host_ns) == {(BR, "10.22.0.9"): B}
    # same address moved to another subnet: the entry is replaced, not rejected
    masq(host_ns, "add", C, [ip_interface("10.22.0.9/16")])
    assert registrations(host_ns) == {(BR, "10.22.0.9"): C}
    assert nets(host_ns) == {(BR, "10.22.0.9", "10.22.0.0"): ("net4_16", C)}
    masq(host_ns, "remove", B, x)
    assert set(entries(host_ns)) == {"10.22.0.9"}
    masq(host_ns, "remove", C, [ip_interface("10.22.0.9/16")])
    assert_nothing_left(host_ns)


def test_same_address_on_two_interfaces_keeps_both(host_ns):
    """Defect 1: two live containers with one address on two bridges (overlapping subnets)
    each keep their entry through the other's ADD and DEL, in both orders."""
    src = [ip_interface("10.50.0.2/24"), ip_interface("fd00:50::2/64")]
    for first, second in (("br-a", "br-b"), ("br-b", "br-a")):
        owner = {"br-a": A, "br-b": B}
        masq(host_ns, "add", owner[first], src, iface=first)
        masq(host_ns, "add", owner[second], src, iface=second)
        assert registrations(host_ns) == {(i, a): owner[i] for i in ("br-a", "br-b")
                                          for a in ("10.50.0.2", "fd00:50::2")}
        for o in (A, B):  # without iface: the owner's own entry counts, not the other's
            assert masq(host_ns, "check", o, src, iface=None) == []
        masq(host_ns, "remove", owner[second], src, iface=second)
        assert registrations(host_ns) == {(first, "10.50.0.2"): owner[first], (first, "fd00:50::2"): owner[first]}
        assert nets(host_ns) == {(first, "10.50.0.2", "10.50.0.0"): ("net4_24", owner[first]),
                                 (first, "fd00:50::2", "fd00:50::"): ("net6_64", owner[first])}
        assert pairs(host_ns) == {expected_pair(first, a, owner[first]): owner[first] for a in ("10.50.0.2", "fd00:50::2")}
        assert masq(host_ns, "check", owner[first], src, iface=first) == []
        assert masq(host_ns, "check", owner[second], src, iface=second) != []
        masq(host_ns, "remove", owner[second], src, iface=second)  # repeated: still A's
        masq(host_ns, "remove", owner[second], None)
        assert set(registrations(host_ns).values()) == {owner[first]}
        masq(host_ns, "remove", owner[first], src, iface=first)
        assert_nothing_left(host_ns)
    # GC of one of them leaves the other
    masq(host_ns, "add", A, src, iface="br-a")
    masq(host_ns, "add", B, src, iface="br-b")
    assert masq(host_ns, "gc", "n1 ", lambda o: o == A) == [B]
    assert set(registrations(host_ns)) == {("br-a", "10.50.0.2"), ("br-a", "fd00:50::2")}
    masq(host_ns, "remove", A, src, iface=None)  # no iface (and no route): found through the listing
    assert_nothing_left(host_ns)


def test_remove_on_a_fresh_host_is_a_noop(host_ns):
    masq(host_ns, "remove", A, A_SRC)
    masq(host_ns, "remove", A, None)
    assert masq(host_ns, "list") == {}
    assert masq(host_ns, "gc", "n1 ", lambda o: False) == []
    assert not any(t["name"] == TABLE for t in oracle.nft_objects(host_ns.name, "table"))


def test_gc_removes_exactly_the_stale_owners(host_ns):
    masq(host_ns, "add", A, A_SRC)
    masq(host_ns, "add", B, B_SRC)
    masq(host_ns, "add", C, [ip_interface("10.33.0.2/16")])
    masq(host_ns, "add", "n1 c-ddd eth0", [ip_interface("10.44.0.2/24")])
    asked = []

    def keep(owner):
        asked.append(owner)
        return owner == A

    removed = masq(host_ns, "gc", "n1 ", keep)
    assert removed == [B, "n1 c-ddd eth0"]
    assert sorted(asked) == sorted({A, B, "n1 c-ddd eth0"})  # C (other prefix) never asked
    assert set(entries(host_ns).values()) == {A, C}
    assert sorted(o for _, o in nets(host_ns).values()) == [A, A, C]
    assert pair_owners(host_ns) == [A, A, C]
    assert masq(host_ns, "gc", "n1 ", keep) == []
    masq(host_ns, "remove", A, None)
    masq(host_ns, "remove", C, None)
    assert masq(host_ns, "gc", "", lambda o: True) == []
    assert_nothing_left(host_ns)


def test_check_reports_problems(host_ns):
    assert masq(host_ns, "check", A, A_SRC) == ["table inet splice_nat does not exist"]
    masq(host_ns, "add", A, A_SRC[:1])
    problems = masq(host_ns, "check", A, A_SRC)
    assert len(problems) == 1 and "fd00:22::2" in problems[0]
    assert any("no masquerade entry" in p for p in masq(host_ns, "check", A, A_SRC[:1], iface="br9"))
    masq(host_ns, "add", B, A_SRC[:1])
    assert any("belongs to" in p for p in masq(host_ns, "check", A, A_SRC[:1]))
    host_ns.sh("nft", "flush", "chain", "inet", TABLE, "net4_24")
    assert any("expected rule" in p for p in masq(host_ns, "check", B, A_SRC[:1]))
    host_ns.sh("nft", "flush", "set", "inet", TABLE, "net4_24")
    assert any("no subnet entry" in p for p in masq(host_ns, "check", B, A_SRC[:1]))
    masq(host_ns, "add", B, A_SRC[:1])  # repairs: the re-assert puts the element back
    host_ns.sh("nft", "flush", "chain", "inet", TABLE, "srcnat")
    assert any("srcnat" in p for p in masq(host_ns, "check", B, A_SRC[:1]))
    host_ns.sh("nft", "flush", "chain", "inet", TABLE, "postrouting")
    assert any("postrouting does not hold" in p for p in masq(host_ns, "check", B, A_SRC[:1]))
    masq(host_ns, "add", A, A_SRC[:1])  # a take-over: the slow path repairs the chains
    assert masq(host_ns, "check", A, A_SRC[:1]) == []
    assert len(chain_rules(host_ns, "postrouting")) == 4 and len(chain_rules(host_ns, "srcnat")) == 2
    masq(host_ns, "remove", A, None)
    masq(host_ns, "remove", B, None)
    assert_nothing_left(host_ns)


def test_slow_path_keeps_a_subnet_jump_added_meanwhile(host_ns):
    """The slow path builds its transaction from a listing; a prefix length whose chain and
    jump another process added after that listing must survive the transaction."""
    from splice.libnet import masq as M

    masq(host_ns, "add", A, [ip_interface("10.22.0.2/24")])

    def body():
        m = Masquerade()
        state = M.T.read(m.nft)  # the slow path's listing ...
        m.add(C, [ip_interface("10.33.0.2/16")], iface=BR)  # ... a first /16 meanwhile ...
        m.nft.apply(M.build_skeleton(state, [(4, 24)]))  # ... then its transaction
    with Netns.open(host_ns.path) as ns:
        ns.run(body)
    assert [{"jump": {"target": "net4_16"}}] in chain_rules(host_ns, "postrouting")
    assert masq(host_ns, "check", C, [ip_interface("10.33.0.2/16")]) == []
    masq(host_ns, "remove", A, None)
    masq(host_ns, "remove", C, None)
    assert_nothing_left(host_ns)


def test_long_owner_is_truncated_to_127_bytes(host_ns):
    owner = "n1 " + "é" * 100 + " eth0"  # > 127 bytes, multi-byte characters
    masq(host_ns, "add", owner, [ip_interface("10.22.0.5/24")])
    comment, = entries(host_ns).values()
    assert len(comment.encode()) <= 127 and owner.startswith(comment)
    assert masq(host_ns, "check", owner, [ip_interface("10.22.0.5/24")]) == []
    masq(host_ns, "remove", owner, [ip_interface("10.22.0.5/24")])
    assert_nothing_left(host_ns)


def test_concurrent_first_adds_from_threads(host_ns):
    n = 8
    barrier = threading.Barrier(n)
    errors = []

    def worker(i):
        def body():
            m = Masquerade()
            barrier.wait(timeout=10)
            m.add(f"n1 c{i} eth0", [ip_interface(f"10.22.0.{10 + i}/24")], iface=BR)
        try:
            with Netns.open(host_ns.path) as ns:
                ns.run(body)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors
    assert entries(host_ns) == {f"10.22.0.{10 + i}": f"n1 c{i} eth0" for i in range(n)}
    assert len(chain_rules(host_ns, "postrouting")) == 4
    assert len(chain_rules(host_ns, "net4_24")) == 1 and len(chain_rules(host_ns, "srcnat")) == 2
    for i in range(n):
        masq(host_ns, "remove", f"n1 c{i} eth0", [ip_interface(f"10.22.0.{10 + i}/24")])
    assert_nothing_left(host_ns)


def test_concurrent_first_adds_from_processes(host_ns, tmp_path):
    go = tmp_path / "go"
    code = textwrap.dedent(f"""
        import os, sys, time
        from ipaddress import ip_interface
        from splice.libnet.masq import Masquerade
        m = Masquerade()
        deadline = time.monotonic() + 10
        while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:
            time.sleep(0.001)
        m.add(sys.argv[1], [ip_interface(sys.argv[2])], iface=sys.argv[3])
    """)
    procs = [
        subprocess.Popen(["nsenter", f"--net={host_ns.path}", sys.executable, "-c", code, owner, src, BR],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for owner, src in ((A, "10.22.0.2/24"), (B, "10.22.0.3/24"), (C, "fd00:22::4/64"))
    ]
    go.write_text("")
    for p in procs:
        _, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
    assert entries(host_ns) == {"10.22.0.2": A, "10.22.0.3": B, "fd00:22::4": C}
    assert len(chain_rules(host_ns, "postrouting")) == 5
    assert masq(host_ns, "gc", "n", lambda o: False) == [A, B, C]
    assert_nothing_left(host_ns)


# -- real traffic ----------------------------------------------------------------------
SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.0.2.2", 8080)); s.listen(4); s.settimeout(float(sys.argv[1]))
print("ready", flush=True)
try:
    c, peer = s.accept(); print(peer[0], flush=True); c.close()
except socket.timeout:
    print("timeout", flush=True)
"""
CLIENT = """
import socket, sys
try:
    socket.create_connection(("192.0.2.2", 8080), timeout=float(sys.argv[1])).close()
except OSError as e:
    print(e); sys.exit(1)
"""


def _connect(container, outside, timeout: float) -> tuple[bool, str]:
    """One TCP connection container -> 192.0.2.2:8080; (connected, peer seen by server)."""
    srv = subprocess.Popen(["nsenter", f"--net={outside.path}", sys.executable, "-c", SERVER, str(timeout + 0.5)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready", srv.stderr.read()
        cli = container.sh(sys.executable, "-c", CLIENT, str(timeout), check=False, timeout=timeout + 5)
        out, _ = srv.communicate(timeout=timeout + 5)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    return cli.returncode == 0, out.strip()


def nat_topology(make_ns):
    """container (10.99.0.2, default via the host) -- host (forwarding) -- outside (192.0.2.2)."""
    container, host, outside = make_ns(), make_ns(), make_ns()
    for argv in (
        ["ip", "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns", container.name],
        ["ip", "link", "add", "vo", "type", "veth", "peer", "name", "eth0", "netns", outside.name],
        ["ip", "addr", "add", "10.99.0.1/24", "dev", "vc"],
        ["ip", "addr", "add", "192.0.2.1/24", "dev", "vo"],
        ["ip", "link", "set", "vc", "up"],
        ["ip", "link", "set", "vo", "up"],
        ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
    ):
        host.sh(*argv)
    container.sh("ip", "addr", "add", "10.99.0.2/24", "dev", "eth0")
    container.sh("ip", "link", "set", "eth0", "up")
    container.sh("ip", "route", "add", "default", "via", "10.99.0.1")
    outside.sh("ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
    outside.sh("ip", "link", "set", "eth0", "up")
    return container, host, outside


def test_masquerade_real_traffic(make_ns):
    container, host, outside = nat_topology(make_ns)
    assert oracle.sysctl(host.name, "net.ipv4.ip_forward") == "1"
    assert oracle.routes(outside.name) and not any(
        r.get("dst") in ("default", "10.99.0.0/24") for r in oracle.routes(outside.name))

    src = [ip_interface("10.99.0.2/24")]
    masq(host, "add", "n9 c-traffic eth0", src, iface="vc")
    assert registrations(host) == {("vc", "10.99.0.2"): "n9 c-traffic eth0"}
    ok, peer = _connect(container, outside, timeout=2.0)
    assert ok and peer == "192.0.2.1"  # masqueraded to the host's outside address

    masq(host, "remove", "n9 c-traffic eth0", src, iface="vc")
    assert_nothing_left(host)
    ok, peer = _connect(container, outside, timeout=0.8)
    assert not ok and peer == "timeout"  # outside has no route back to 10.99.0.0/24




UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.2", 9000)); s.settimeout(float(sys.argv[1]))
print("ready", flush=True)
try:
    data, peer = s.recvfrom(100); print(peer[0], flush=True)
except socket.timeout:
    print("timeout", flush=True)
"""
UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.sendto(b"x", ("192.0.2.2", 9000))
"""


def _udp_source(container, outside, sport: int, timeout: float = 1.5) -> str:
    """One datagram container:sport -> 192.0.2.2:9000; the source address the outside
    sees ("timeout" when nothing arrived). A fresh source port per probe: NAT is decided
    on the first packet of a conntrack entry."""
    srv = subprocess.Popen(["nsenter", f"--net={outside.path}", sys.executable, "-c", UDP_SERVER, str(timeout)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready", srv.stderr.read()
        container.sh(sys.executable, "-c", UDP_CLIENT, str(sport))
        out, _ = srv.communicate(timeout=timeout + 5)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    return out.strip()


def test_same_address_on_two_bridges_real_traffic(make_ns):
    """Defect 1 with packets: containers with the same address behind two bridges with the
    same subnet are both masqueraded; removing one leaves the other masqueraded."""
    host, outside, ca, cb = make_ns(), make_ns(), make_ns(), make_ns()
    for argv in (
        ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward; for f in all default; do "
                     "echo 0 > /proc/sys/net/ipv4/conf/$f/rp_filter; done"],
        ["ip", "link", "add", "vo", "type", "veth", "peer", "name", "eth0", "netns", outside.name],
        ["ip", "addr", "add", "192.0.2.1/24", "dev", "vo"],
        ["ip", "link", "set", "vo", "up"],
    ):
        host.sh(*argv)
    for br, c in (("br-a", ca), ("br-b", cb)):
        host.sh("ip", "link", "add", br, "type", "bridge")
        host.sh("ip", "addr", "add", "10.50.0.1/24", "dev", br)
        host.sh("ip", "link", "add", f"p-{br}", "type", "veth", "peer", "name", "eth0", "netns", c.name)
        host.sh("ip", "link", "set", f"p-{br}", "master", br, "up")
        host.sh("ip", "link", "set", br, "up")
        c.sh("ip", "addr", "add", "10.50.0.2/24", "dev", "eth0")
        c.sh("ip", "link", "set", "eth0", "up")
        c.sh("ip", "route", "add", "default", "via", "10.50.0.1")
    outside.sh("ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
    outside.sh("ip", "link", "set", "eth0", "up")
    outside.sh("ip", "route", "add", "10.50.0.0/24", "via", "192.0.2.1")  # unmasqueraded sources arrive as such
    assert {r.get("dev") for r in oracle.routes(host.name) if r.get("dst") == "10.50.0.0/24"} == {"br-a", "br-b"}

    ports = iter(range(41000, 41100))
    src = [ip_interface("10.50.0.2/24")]
    assert _udp_source(ca, outside, next(ports)) == "10.50.0.2"  # no NAT yet
    for first, second in ((("br-a", ca, A), ("br-b", cb, B)), (("br-b", cb, B), ("br-a", ca, A))):
        (fi, fc, fo), (si, sc, so) = first, second
        masq(host, "add", fo, src, iface=fi)
        masq(host, "add", so, src, iface=si)
        assert _udp_source(fc, outside, next(ports)) == "192.0.2.1"
        assert _udp_source(sc, outside, next(ports)) == "192.0.2.1"
        masq(host, "remove", so, src, iface=si)
        assert registrations(host) == {(fi, "10.50.0.2"): fo}
        assert _udp_source(fc, outside, next(ports)) == "192.0.2.1"  # still masqueraded
        assert _udp_source(sc, outside, next(ports)) == "10.50.0.2"
        masq(host, "remove", fo, src, iface=fi)
        assert_nothing_left(host)
        assert _udp_source(fc, outside, next(ports)) == "10.50.0.2"


def _legacy_table(ns, entries: dict[str, str]) -> None:
    """The table as the earlier versions made it (keyed by address alone), written with
    nft: address -> owner, all in 10.99.0.0/24 (+ fd00:99::/64)."""
    cmds = [
        "add table inet splice_nat",
        "add map inet splice_nat masq4 { type ipv4_addr : verdict; }",
        "add map inet splice_nat masq6 { type ipv6_addr : verdict; }",
        "add set inet splice_nat masq4_owner { type ipv4_addr . ifname; }",
        "add set inet splice_nat masq6_owner { type ipv6_addr . ifname; }",
        "add chain inet splice_nat postrouting { type nat hook postrouting priority srcnat; policy accept; }",
        "add rule inet splice_nat postrouting ip daddr 224.0.0.0/4 return",
        "add rule inet splice_nat postrouting ip saddr vmap @masq4",
        "add rule inet splice_nat postrouting ip6 daddr ff00::/8 return",
        "add rule inet splice_nat postrouting ip6 saddr vmap @masq6",
        "add chain inet splice_nat masq-10.99.0.0-24",
        "add rule inet splice_nat masq-10.99.0.0-24 ip daddr 10.99.0.0/24 return",
        "add rule inet splice_nat masq-10.99.0.0-24 masquerade",
    ]
    for address, owner in entries.items():
        v = 6 if ":" in address else 4
        chain = "masq-fd00_99__-64" if v == 6 else "masq-10.99.0.0-24"
        if v == 6 and f"add chain inet splice_nat {chain}" not in cmds:
            cmds += [f"add chain inet splice_nat {chain}",
                     f"add rule inet splice_nat {chain} ip6 daddr fd00:99::/64 return",
                     f"add rule inet splice_nat {chain} masquerade"]
        d = hashlib.sha256(owner.encode()).hexdigest()[:15]
        cmds += [f'add element inet splice_nat masq{v} {{ {address} comment "{owner}" : jump {chain} }}',
                 f'add element inet splice_nat masq{v}_owner {{ {address} . "{d}" comment "{owner}" }}']
    ns.sh("nft", "-f", "-", input="\n".join(cmds) + "\n")


def legacy_entries(ns) -> dict[str, str | None]:
    return {key: comment for _, key, _, comment in _elements(ns, ("masq4", "masq6"))}


def test_upgrade_keeps_legacy_entries_working_until_removed(make_ns):
    """A table of the earlier layout: its containers keep their NAT through the first ADD of
    this version, CHECK accepts them, DEL and GC remove them, and GC then drops the legacy
    objects."""
    container, host, outside = nat_topology(make_ns)
    outside.sh("ip", "route", "add", "10.99.0.0/24", "via", "192.0.2.1")
    old, stale = "n9 c-old eth0", "n9 c-stale eth0"
    _legacy_table(host, {"10.99.0.2": old, "fd00:99::2": old, "10.99.0.7": stale})
    ports = iter(range(42000, 42100))
    assert _udp_source(container, outside, next(ports)) == "192.0.2.1"  # the legacy entry works

    # this version's first ADD (another container, another interface) upgrades the table
    masq(host, "add", A, [ip_interface("10.99.0.2/24"), ip_interface("10.98.0.3/24")], iface="vx")
    assert registrations(host) == {("vx", "10.99.0.2"): A, ("vx", "10.98.0.3"): A}
    assert legacy_entries(host) == {"10.99.0.2": old, "fd00:99::2": old, "10.99.0.7": stale}
    text = oracle.nft_text(host.name)
    assert "ip saddr vmap @masq4" in text and "jump srcnat" in text
    assert _udp_source(container, outside, next(ports)) == "192.0.2.1"  # still masqueraded
    old_src = [ip_interface("10.99.0.2/24"), ip_interface("fd00:99::2/64")]
    assert masq(host, "check", old, old_src, iface="vc") == []
    assert masq(host, "list")[old] == [ip_address("10.99.0.2"), ip_address("fd00:99::2")]

    masq(host, "remove", old, old_src, iface="vc")  # DEL of the pre-upgrade container
    assert legacy_entries(host) == {"10.99.0.7": stale}
    assert _udp_source(container, outside, next(ports)) == "10.99.0.2"
    masq(host, "remove", old, old_src, iface="vc")  # repeated
    assert masq(host, "gc", "n9 ", lambda o: False) == [stale]
    assert legacy_entries(host) == {}
    # nothing legacy is left: no maps, sets, chains or rules of the old layout
    assert not any(s["name"].startswith("masq") for kind in ("set", "map")
                   for s in oracle.nft_objects(host.name, kind) if s["table"] == TABLE)
    assert not any(c.startswith("masq-") for c in chains(host))
    assert "vmap" not in oracle.nft_text(host.name)
    assert registrations(host) == {("vx", "10.99.0.2"): A, ("vx", "10.98.0.3"): A}
    assert masq(host, "check", A, [ip_interface("10.98.0.3/24")], iface="vx") == []
    masq(host, "add", B, [ip_interface("10.99.0.2/24")], iface="vc")
    assert _udp_source(container, outside, next(ports)) == "192.0.2.1"
    masq(host, "remove", A, None)
    masq(host, "remove", B, [ip_interface("10.99.0.2/24")], iface="vc")
    assert_nothing_left(host)


def test_common_paths_do_not_list_the_table(host_ns):
    """ADD (first, next, repeated) and DEL (first, repeated, of a taken-over address) are O(1)."""
    def body():
        nft = CountingNft()
        m = Masquerade(nft)
        m.add(A, A_SRC, iface=BR)  # first use: scaffolding created on the way
        m.add(B, B_SRC, iface=BR)
        m.add(A, A_SRC, iface=BR)  # repeated ADD
        m.add(C, A_SRC, iface="br1")  # the same addresses on another interface
        m.remove(A, A_SRC, iface=BR)
        m.remove(A, A_SRC, iface=BR)  # repeated DEL
        m.remove(C, A_SRC, iface="br1")
        m.add(C, [ip_interface("10.22.0.3/24")], iface=BR)  # takes B's v4 address over: slow path
        slow = nft.listings
        m.remove(B, [ip_interface("10.22.0.3/24")], iface=BR)  # not B's any more: probe says so
        m.remove(C, [ip_interface("10.22.0.3/24")], iface=BR)
        return slow, nft.listings
    with Netns.open(host_ns.path) as ns:
        slow, total = ns.run(body)
    assert slow == 1 and total == 1
    assert entries(host_ns) == {"fd00:22::3": B}
    masq(host_ns, "remove", B, B_SRC)
    assert_nothing_left(host_ns)


def test_remove_partial_ownership_removes_only_ours(host_ns):
    masq(host_ns, "add", A, A_SRC)
    masq(host_ns, "add", B, A_SRC[:1])  # A's v4 address given to B
    masq(host_ns, "remove", A, A_SRC)  # compare-and-delete fails as a whole, the listing sorts it out
    assert entries(host_ns) == {"10.22.0.2": B}
    assert pairs(host_ns) == {expected_pair(BR, "10.22.0.2", B): B}
    masq(host_ns, "remove", B, A_SRC[:1])
    assert_nothing_left(host_ns)


def test_nft_context_stays_in_its_namespace(make_ns):
    """An Nft is bound to the namespace of its first use; elsewhere it refuses to work."""
    from splice.libnet.errors import NetError, NftError

    one, two = make_ns(), make_ns()
    nft = Nft()
    with Netns.open(one.path) as ns1, Netns.open(two.path) as ns2:
        ns1.run(nft.apply, [{"add": {"table": {"family": "inet", "name": "splice_probe"}}}])
        with pytest.raises(NetError, match="outside the network namespace"):
            ns2.run(nft.apply, [{"add": {"table": {"family": "inet", "name": "splice_probe"}}}])
        with pytest.raises(NftError, match="No such file or directory"):
            ns1.run(nft.apply, [{"delete": {"table": {"family": "inet", "name": "nope"}}}])
        ns1.run(nft.apply, [{"delete": {"table": {"family": "inet", "name": "splice_probe"}}}])
    assert oracle.nft_objects(two.name, "table") == []
    assert oracle.nft_objects(one.name, "table") == []
