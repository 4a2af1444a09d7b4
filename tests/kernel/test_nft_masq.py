"""Masquerade by owner (splice.libnet.masq), in throwaway namespaces, asserted with the oracle."""

from __future__ import annotations

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
A, B, C = "n1 c-aaa eth0", "n1 c-bbb eth0", "n2 c-ccc eth0"
A_SRC = [ip_interface("10.22.0.2/24"), ip_interface("fd00:22::2/64")]
B_SRC = [ip_interface("10.22.0.3/24"), ip_interface("fd00:22::3/64")]
C_SRC = [ip_interface("10.33.0.2/16"), ip_interface("fd00:33::2/64")]


def masq(ns, method: str, *args):
    """Masquerade().<method>(*args) inside ns (context created and used in one run)."""
    with Netns.open(ns.path) as n:
        return n.run(lambda: getattr(Masquerade(), method)(*args))


# -- oracle views (nft -j via nsenter; no splice code) -------------------------------


def entries(ns) -> dict[str, tuple[str | None, object]]:
    """address -> (owner comment, verdict) for masq4/masq6."""
    out = {}
    for tbl, name, e in oracle.nft_map_elements(ns.name):
        if tbl == TABLE and name in ("masq4", "masq6"):
            key, data, comment = oracle.element_parts(e)
            out[key] = (comment, data)
    return out


def owner_pairs(ns) -> dict[str, str | None]:
    out = {}
    for tbl, name, e in oracle.nft_map_elements(ns.name):
        if tbl == TABLE and name in ("masq4_owner", "masq6_owner"):
            key, _, comment = oracle.element_parts(e)
            out[key[0]] = comment
    return out


def chains(ns) -> set[str]:
    return {c["name"] for c in oracle.nft_objects(ns.name, "chain") if c["table"] == TABLE and c["family"] == "inet"}


def chain_rules(ns, chain: str) -> list[list[dict]]:
    return [r["expr"] for r in oracle.nft_objects(ns.name, "rule") if r["table"] == TABLE and r["chain"] == chain]


def assert_nothing_left(ns) -> None:
    """Leak check: no element of ours remains (table/base chain/maps are shared scaffolding)."""
    assert entries(ns) == {}
    assert owner_pairs(ns) == {}


# -- tests ----------------------------------------------------------------------------
def test_add_shows_owner_elements_and_rules(host_ns):
    masq(host_ns, "add", A, A_SRC)
    masq(host_ns, "add", B, B_SRC)
    masq(host_ns, "add", C, C_SRC)
    masq(host_ns, "add", A, A_SRC)  # idempotent

    got = entries(host_ns)
    assert got == {
        "10.22.0.2": (A, {"jump": {"target": "masq-10.22.0.0-24"}}),
        "10.22.0.3": (B, {"jump": {"target": "masq-10.22.0.0-24"}}),
        "10.33.0.2": (C, {"jump": {"target": "masq-10.33.0.0-16"}}),
        "fd00:22::2": (A, {"jump": {"target": "masq-fd00_22__-64"}}),
        "fd00:22::3": (B, {"jump": {"target": "masq-fd00_22__-64"}}),
        "fd00:33::2": (C, {"jump": {"target": "masq-fd00_33__-64"}}),
    }
    assert owner_pairs(host_ns) == {k: v[0] for k, v in got.items()}

    base = [c for c in oracle.nft_objects(host_ns.name, "chain") if c["table"] == TABLE and c["name"] == "postrouting"]
    assert base and base[0]["type"] == "nat" and base[0]["hook"] == "postrouting" and base[0]["prio"] == 100
    text = oracle.nft_text(host_ns.name)
    for line in ("ip daddr 224.0.0.0/4 return", "ip saddr vmap @masq4", "ip6 daddr ff00::/8 return",
                 "ip6 saddr vmap @masq6", "ip daddr 10.22.0.0/24 return", "ip6 daddr fd00:22::/64 return"):
        assert line in text
    assert chain_rules(host_ns, "masq-10.22.0.0-24")[-1] == [{"masquerade": None}]
    assert len(chain_rules(host_ns, "postrouting")) == 4  # re-adding did not duplicate

    listed = masq(host_ns, "list")
    assert listed == {A: [ip_address("10.22.0.2"), ip_address("fd00:22::2")],
                      B: [ip_address("10.22.0.3"), ip_address("fd00:22::3")],
                      C: [ip_address("10.33.0.2"), ip_address("fd00:33::2")]}
    assert masq(host_ns, "check", A, A_SRC) == []

    masq(host_ns, "remove", A, A_SRC)
    assert set(entries(host_ns)) == {"10.22.0.3", "fd00:22::3", "10.33.0.2", "fd00:33::2"}
    masq(host_ns, "remove", A, A_SRC)  # twice is fine
    masq(host_ns, "remove", B, None)  # found by owner
    assert {v[0] for v in entries(host_ns).values()} == {C}
    masq(host_ns, "remove", C, [ip_address("10.33.0.2"), "fd00:33::2"])  # plain addresses work too
    assert_nothing_left(host_ns)


def test_remove_and_add_never_touch_another_owner(host_ns):
    x = [ip_interface("10.22.0.9/24")]
    masq(host_ns, "add", A, x)
    masq(host_ns, "add", B, x)  # the address was given out again: B takes the entry over
    assert entries(host_ns) == {"10.22.0.9": (B, {"jump": {"target": "masq-10.22.0.0-24"}})}
    assert owner_pairs(host_ns) == {"10.22.0.9": B}
    masq(host_ns, "remove", A, x)  # a late DEL of A with its old address
    masq(host_ns, "remove", A, None)
    assert entries(host_ns) == {"10.22.0.9": (B, {"jump": {"target": "masq-10.22.0.0-24"}})}
    # same address moved to another subnet: the entry is replaced, not rejected
    masq(host_ns, "add", C, [ip_interface("10.22.0.9/16")])
    assert entries(host_ns) == {"10.22.0.9": (C, {"jump": {"target": "masq-10.22.0.0-16"}})}
    masq(host_ns, "remove", B, x)
    assert set(entries(host_ns)) == {"10.22.0.9"}
    masq(host_ns, "remove", C, [ip_interface("10.22.0.9/16")])
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
    assert {v[0] for v in entries(host_ns).values()} == {A, C}
    assert "masq-10.44.0.0-24" not in chains(host_ns)  # unused subnet chain pruned
    assert {"masq-10.22.0.0-24", "masq-10.33.0.0-16"} <= chains(host_ns)
    assert masq(host_ns, "gc", "n1 ", keep) == []
    masq(host_ns, "remove", A, None)
    masq(host_ns, "remove", C, None)
    assert masq(host_ns, "gc", "", lambda o: True) == []
    assert_nothing_left(host_ns)
    assert chains(host_ns) == {"postrouting"}


def test_check_reports_problems(host_ns):
    assert masq(host_ns, "check", A, A_SRC) == ["table inet splice_nat does not exist"]
    masq(host_ns, "add", A, A_SRC[:1])
    problems = masq(host_ns, "check", A, A_SRC)
    assert len(problems) == 1 and "fd00:22::2" in problems[0]
    masq(host_ns, "add", B, A_SRC[:1])
    assert any("belongs to" in p for p in masq(host_ns, "check", A, A_SRC[:1]))
    host_ns.sh("nft", "flush", "chain", "inet", TABLE, "masq-10.22.0.0-24")
    assert any("expected rules" in p for p in masq(host_ns, "check", B, A_SRC[:1]))
    masq(host_ns, "remove", B, None)
    assert_nothing_left(host_ns)


def test_long_owner_is_truncated_to_127_bytes(host_ns):
    owner = "n1 " + "é" * 100 + " eth0"  # > 127 bytes, multi-byte characters
    masq(host_ns, "add", owner, [ip_interface("10.22.0.5/24")])
    (comment, _), = entries(host_ns).values()
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
            m.add(f"n1 c{i} eth0", [ip_interface(f"10.22.0.{10 + i}/24")])
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
    assert {k: v[0] for k, v in entries(host_ns).items()} == {f"10.22.0.{10 + i}": f"n1 c{i} eth0" for i in range(n)}
    assert len(chain_rules(host_ns, "postrouting")) == 4
    assert len(chain_rules(host_ns, "masq-10.22.0.0-24")) == 2
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
        m.add(sys.argv[1], [ip_interface(sys.argv[2])])
    """)
    procs = [
        subprocess.Popen(["nsenter", f"--net={host_ns.path}", sys.executable, "-c", code, owner, src],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for owner, src in ((A, "10.22.0.2/24"), (B, "10.22.0.3/24"), (C, "10.22.0.4/24"))
    ]
    go.write_text("")
    for p in procs:
        _, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
    assert {k: v[0] for k, v in entries(host_ns).items()} == {"10.22.0.2": A, "10.22.0.3": B, "10.22.0.4": C}
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


def test_masquerade_real_traffic(make_ns):
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
    assert oracle.sysctl(host.name, "net.ipv4.ip_forward") == "1"
    assert oracle.routes(outside.name) and not any(
        r.get("dst") in ("default", "10.99.0.0/24") for r in oracle.routes(outside.name))

    src = [ip_interface("10.99.0.2/24")]
    masq(host, "add", "n9 c-traffic eth0", src)
    assert entries(host)["10.99.0.2"][0] == "n9 c-traffic eth0"
    ok, peer = _connect(container, outside, timeout=2.0)
    assert ok and peer == "192.0.2.1"  # masqueraded to the host's outside address

    masq(host, "remove", "n9 c-traffic eth0", src)
    assert_nothing_left(host)
    ok, peer = _connect(container, outside, timeout=0.8)
    assert not ok and peer == "timeout"  # outside has no route back to 10.99.0.0/24




def test_common_paths_do_not_list_the_table(host_ns):
    """ADD (first, next, repeated) and DEL (first, repeated, of a taken-over address) are O(1)."""
    def body():
        nft = CountingNft()
        m = Masquerade(nft)
        m.add(A, A_SRC)  # first use: scaffolding created on the way
        m.add(B, B_SRC)
        m.add(A, A_SRC)  # repeated ADD
        m.remove(A, A_SRC)
        m.remove(A, A_SRC)  # repeated DEL
        m.add(C, [ip_interface("10.22.0.3/24")])  # takes B's v4 address over: slow path
        slow = nft.listings
        m.remove(B, [ip_interface("10.22.0.3/24")])  # not B's any more: probe says so
        m.remove(C, [ip_interface("10.22.0.3/24")])
        return slow, nft.listings
    with Netns.open(host_ns.path) as ns:
        slow, total = ns.run(body)
    assert slow == 1 and total == 1
    assert {k: v[0] for k, v in entries(host_ns).items()} == {"fd00:22::3": B}
    masq(host_ns, "remove", B, B_SRC)
    assert_nothing_left(host_ns)


def test_remove_partial_ownership_removes_only_ours(host_ns):
    masq(host_ns, "add", A, A_SRC)
    masq(host_ns, "add", B, A_SRC[:1])  # A's v4 address given to B
    masq(host_ns, "remove", A, A_SRC)  # compare-and-delete fails as a whole, the listing sorts it out
    assert {k: v[0] for k, v in entries(host_ns).items()} == {"10.22.0.2": B}
    assert owner_pairs(host_ns) == {"10.22.0.2": B}
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
