"""The port publisher (splice.libnet.portmap.publisher) in throwaway namespaces, asserted with the oracle.

Element/owner checks read ``nft -j`` (tests/kernel/test_portmap_net.py helpers); traffic
tests are in test_portmap_traffic.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from ipaddress import ip_address, ip_interface

import pytest

from splice.conformance import oracle
from splice.libnet.netns import Netns
from splice.libnet.portmap.model import PortConflict
from splice.plugins.portmap.mapping import PortMapping, PortMappingError

from .nfthelp import CountingNft
from .portmap_help import Publisher, pub

from .test_portmap_net import assert_no_portmap_elements, dnat_elements, elements, route_localnet

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

A, B, C = "n1 c-aaa eth0", "n1 c-bbb eth0", "n2 c-ccc eth0"
A_ADDR = [ip_interface("10.44.0.2/24"), ip_interface("fd44::2/64")]
B_ADDR = [ip_interface("10.44.0.3/24"), ip_interface("fd44::3/64")]
C_ADDR = [ip_interface("10.45.0.2/24")]
WEB = [PortMapping(8080, 80), PortMapping(5353, 53, "udp")]


@pytest.fixture
def host(host_ns):
    """A host namespace with a bridge-like link for 10.44.0.0/24 and fd44::/64 (so the
    containers are routed through ``pmbr``: route_localnet lands there)."""
    for cmd in ("ip link add pmbr type bridge", "ip addr add 10.44.0.1/24 dev pmbr",
                "ip addr add fd44::1/64 dev pmbr nodad", "ip link add pmd type veth peer name pmd2",
                "ip link set pmd master pmbr", "ip link set pmd up", "ip link set pmd2 up", "ip link set pmbr up"):
        host_ns.sh(*cmd.split())
    yield host_ns
    assert_no_portmap_elements(host_ns)
    assert route_localnet(host_ns, "pmbr") == "0"


def ruleset(ns) -> str:
    return json.dumps(oracle.nft_ruleset(ns.name), sort_keys=True)


def owners_of(ns) -> dict:
    return {k: v[1] for k, v in dnat_elements(ns).items()}


def test_publish_elements_owners_and_unpublish(host):
    got = pub(host, "publish", A, WEB + [PortMapping(9090, 90, host_ip="10.44.0.1")], A_ADDR)
    assert [str(p) for p in got] == [
        "*:8080/tcp -> 10.44.0.2:80", "*:5353/udp -> 10.44.0.2:53", "10.44.0.1:9090/tcp -> 10.44.0.2:90",
        "*:8080/tcp -> [fd44::2]:80", "*:5353/udp -> [fd44::2]:53"]
    assert dnat_elements(host) == {
        ("dnat4", ("tcp", 8080)): ({"concat": ["10.44.0.2", 80]}, A),
        ("dnat4", ("udp", 5353)): ({"concat": ["10.44.0.2", 53]}, A),
        ("dnat4_ip", ("10.44.0.1", "tcp", 9090)): ({"concat": ["10.44.0.2", 90]}, A),
        ("dnat6", ("tcp", 8080)): ({"concat": ["fd44::2", 80]}, A),
        ("dnat6", ("udp", 5353)): ({"concat": ["fd44::2", 53]}, A),
    }
    e = elements(host)
    assert e["claim4"] == {("tcp", 8080): (1, A), ("udp", 5353): (1, A), ("tcp", 9090): (2, A)}
    assert e["ifrefs4"] == {("pmbr", "10.44.0.2", "10.44.0.2"): ("users4:pmbr", A)}
    assert e["ifrefs6"] == {("pmbr", "fd44::2", "fd44::2"): ("users6:pmbr", A)}
    assert len(e["owners"]) == 7 and {c for _, c in e["owners"].values()} == {A}
    assert e["hairpin"] == {("pmbr", "pmbr"): (None, None)}
    assert e["localhost"] == {"pmbr": (None, None)} and "masq_all" not in e
    assert e["localnet"] == {"pmbr": (None, None)}
    assert route_localnet(host, "pmbr") == "1"
    counters = {c["name"] for c in oracle.nft_objects(host.name, "counter") if c["table"] == "splice_portmap"}
    assert counters == {"users4:pmbr", "users6:pmbr"}
    text = oracle.nft_text(host.name)
    for line in ("fib daddr type != local return", "dnat ip to ip daddr . meta l4proto . th dport map @dnat4_ip",
                 "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @dnat4",
                 "ct status dnat iifname . oifname @hairpin masquerade",
                 "ct status dnat oifname . ip saddr . ip daddr @ifrefs4 masquerade",
                 "ct status dnat ip saddr 127.0.0.0/8 oifname @localhost masquerade",
                 "iifname @localnet ip daddr 127.0.0.0/8 ct status ! dnat drop"):
        assert line in text
    assert pub(host, "check", A, WEB + [PortMapping(9090, 90, host_ip="10.44.0.1")], A_ADDR) == []
    assert {o: sorted(map(str, ps)) for o, ps in pub(host, "owners").items()} == {A: sorted(map(str, got))}

    removed = pub(host, "unpublish", A, WEB + [PortMapping(9090, 90, host_ip="10.44.0.1")], A_ADDR)
    assert sorted(map(str, removed)) == sorted(map(str, got))
    assert_no_portmap_elements(host)
    assert route_localnet(host, "pmbr") == "0"
    # twice, and without addresses (the listing path), change nothing
    assert pub(host, "unpublish", A, WEB, A_ADDR) == []
    assert pub(host, "unpublish", A) == []


def test_publish_is_idempotent_and_converges(host):
    pub(host, "publish", A, WEB, A_ADDR)
    before = ruleset(host)
    pub(host, "publish", A, WEB, A_ADDR)  # a repeated ADD
    assert ruleset(host) == before
    # the same owner with other mappings: its elements become exactly the new ones
    pub(host, "publish", A, [PortMapping(8081, 81)], A_ADDR[:1])
    assert owners_of(host) == {("dnat4", ("tcp", 8081)): A}
    assert set(elements(host)["claim4"]) == {("tcp", 8081)}
    assert "claim6" not in elements(host) and "ifrefs6" not in elements(host)
    pub(host, "unpublish", A, [PortMapping(8081, 81)], A_ADDR[:1])


def test_conflicts_name_the_owner_and_change_nothing(host):
    pub(host, "publish", A, WEB + [PortMapping(9090, 90, host_ip="10.44.0.1")], A_ADDR)
    before = ruleset(host)
    cases = [
        ([PortMapping(8080, 81)], "host port tcp/8080 on every IPv4 address is already published by 'n1 c-aaa eth0'"),
        ([PortMapping(7000, 70), PortMapping(5353, 53, "udp")], "udp/5353"),
        ([PortMapping(8080, 80, host_ip="10.44.0.1")],
         "host port tcp/8080 on 10.44.0.1 conflicts with the same port on every IPv4 address"),
        ([PortMapping(9090, 80)], "host port tcp/9090 on every IPv4 address conflicts with the same port on 10.44.0.1"),
        ([PortMapping(9090, 80, host_ip="10.44.0.1")], "host port tcp/9090 on 10.44.0.1 is already published"),
    ]
    for mappings, text in cases:
        with pytest.raises(PortConflict) as e:
            pub(host, "publish", B, mappings, B_ADDR)
        assert text in str(e.value) and e.value.owner == A
        assert ruleset(host) == before, mappings
    # another given address on the same port, another family, another protocol: fine
    pub(host, "publish", B, [PortMapping(9090, 91, host_ip="10.44.0.9"), PortMapping(8080, 80, "sctp")], B_ADDR)
    assert owners_of(host)[("dnat4_ip", ("10.44.0.9", "tcp", 9090))] == B
    pub(host, "unpublish", B, [PortMapping(9090, 91, host_ip="10.44.0.9"), PortMapping(8080, 80, "sctp")], B_ADDR)
    # A's wildcard tcp/8080 gone: B can publish it on a given address, and then A again cannot
    pub(host, "unpublish", A, WEB + [PortMapping(9090, 90, host_ip="10.44.0.1")], A_ADDR)
    pub(host, "publish", B, [PortMapping(8080, 80, host_ip="10.44.0.1")], B_ADDR)
    with pytest.raises(PortConflict, match="c-bbb"):
        pub(host, "publish", A, WEB, A_ADDR)
    pub(host, "unpublish", B, [PortMapping(8080, 80, host_ip="10.44.0.1")], B_ADDR)
    assert "claim4" not in elements(host)  # the given-address claim was released
    pub(host, "publish", A, WEB, A_ADDR)
    pub(host, "unpublish", A, WEB, A_ADDR)


def test_contradictory_mappings_are_rejected_before_anything(host):
    with pytest.raises(PortMappingError, match="mapped twice"):
        pub(host, "publish", A, [PortMapping(8080, 80), PortMapping(8080, 81)], A_ADDR)
    with pytest.raises(PortMappingError, match="both on every IPv4 address and on a given address"):
        pub(host, "publish", A, [PortMapping(8080, 80), PortMapping(8080, 80, host_ip="10.44.0.1")], A_ADDR)
    # the same mapping twice (and 0.0.0.0 = every IPv4 address) is just one element
    pub(host, "publish", A, [PortMapping(8080, 80), PortMapping(8080, 80, host_ip="0.0.0.0")], A_ADDR)
    assert owners_of(host) == {("dnat4", ("tcp", 8080)): A, ("dnat6", ("tcp", 8080)): A}
    pub(host, "unpublish", A)
    assert oracle.nft_objects(host.name, "table")  # scaffolding stays


def test_family_selection(host):
    """No hostIP: each family the container has; hostIP: only its family; :: = every IPv6."""
    got = pub(host, "publish", A, [PortMapping(1000, 10), PortMapping(1001, 11, host_ip="::"),
                                   PortMapping(1002, 12, host_ip="fd44::1"), PortMapping(1003, 13, host_ip="0.0.0.0")],
              A_ADDR[1:])  # an IPv6-only container
    assert sorted(map(str, got)) == ["*:1000/tcp -> [fd44::2]:10", "*:1001/tcp -> [fd44::2]:11",
                                     "[fd44::1]:1002/tcp -> [fd44::2]:12"]
    assert "localnet" not in elements(host) and "localhost" not in elements(host)
    assert route_localnet(host, "pmbr") == "0"
    assert pub(host, "publish", C, [PortMapping(2000, 20, host_ip="fd44::1")], C_ADDR) == []  # nothing applies
    pub(host, "unpublish", A, [PortMapping(1000, 10), PortMapping(1001, 11, host_ip="::"),
                               PortMapping(1002, 12, host_ip="fd44::1"), PortMapping(1003, 13, host_ip="0.0.0.0")],
        A_ADDR[1:])


def test_a_late_del_never_removes_another_owners_port(host):
    """A's mapping is garbage-collected, B publishes the same port, then A's (retried) DEL
    arrives: the compare-and-delete fails for A and B keeps its port."""
    pub(host, "publish", A, WEB, A_ADDR)
    assert pub(host, "gc", "n1 ", lambda owner: owner != A) == [A]
    assert_no_portmap_elements(host)
    pub(host, "publish", B, WEB, B_ADDR)
    pub(host, "unpublish", A, WEB, A_ADDR)
    pub(host, "unpublish", A)
    assert set(owners_of(host).values()) == {B}
    assert pub(host, "check", B, WEB, B_ADDR) == []
    pub(host, "unpublish", B, WEB, B_ADDR)


def test_stale_masquerade_entry_of_a_reused_address_is_taken_over(host):
    """A crashed without DEL (its elements stay); its address is given to B later."""
    pub(host, "publish", A, [PortMapping(8080, 80)], A_ADDR)
    pub(host, "publish", B, [PortMapping(8081, 80)], A_ADDR)  # same container address
    e = elements(host)
    assert e["ifrefs4"][("pmbr", "10.44.0.2", "10.44.0.2")][1] == B and e["ifrefs6"][("pmbr", "fd44::2", "fd44::2")][1] == B
    assert owners_of(host) == {("dnat4", ("tcp", 8080)): A, ("dnat6", ("tcp", 8080)): A,
                               ("dnat4", ("tcp", 8081)): B, ("dnat6", ("tcp", 8081)): B}
    pub(host, "unpublish", A, [PortMapping(8080, 80)], A_ADDR)  # takes A's ports, leaves B's snat
    assert pub(host, "check", B, [PortMapping(8081, 80)], A_ADDR) == []
    assert route_localnet(host, "pmbr") == "1"
    pub(host, "unpublish", B, [PortMapping(8081, 80)], A_ADDR)


def test_gc_removes_exactly_the_stale_owners(host):
    pub(host, "publish", A, WEB, A_ADDR)
    pub(host, "publish", B, [PortMapping(9000, 90, host_ip="10.44.0.1")], B_ADDR)
    pub(host, "publish", C, [PortMapping(7000, 70)], C_ADDR)
    asked = []

    def keep(owner):
        asked.append(owner)
        return owner == A

    assert pub(host, "gc", "n1 ", keep) == [B]
    assert sorted(set(asked)) == [A, B]  # C (another network) never asked
    assert set(owners_of(host).values()) == {A, C}
    assert ("tcp", 9000) not in elements(host).get("claim4", {})

    def counters():
        return {c["name"] for c in oracle.nft_objects(host.name, "counter") if c["table"] == "splice_portmap"}

    assert counters() == {"users4:pmbr", "users6:pmbr"}  # C has no route: no interface, not registered
    assert pub(host, "gc", "", lambda o: False) == [A, C]
    assert counters() == set()  # unused counters pruned
    assert route_localnet(host, "pmbr") == "0"


def test_check_reports_problems(host):
    assert pub(host, "check", A, WEB, A_ADDR) == ["table inet splice_portmap does not exist"]
    pub(host, "publish", A, WEB[:1], A_ADDR)
    problems = pub(host, "check", A, WEB, A_ADDR)
    assert problems and all("5353" in p for p in problems)
    host.sh("nft", "delete", "element", "inet", "splice_portmap", "dnat4", "{ tcp . 8080 }")
    assert any("no element in dnat4" in p for p in pub(host, "check", A, WEB[:1], A_ADDR))
    host.sh("sh", "-c", "echo 0 > /proc/sys/net/ipv4/conf/pmbr/route_localnet")
    assert any("route_localnet is off on pmbr" in p for p in pub(host, "check", A, WEB[:1], A_ADDR))
    pub(host, "unpublish", A, WEB[:1], A_ADDR)  # partial state: the listing path cleans it


def test_route_localnet_set_by_someone_else_is_left_alone(host):
    host.sh("sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/pmbr/route_localnet")
    pub(host, "publish", A, WEB, A_ADDR)
    assert "localnet" not in elements(host)  # not ours to undo
    pub(host, "unpublish", A, WEB, A_ADDR)
    assert route_localnet(host, "pmbr") == "1"
    host.sh("sh", "-c", "echo 0 > /proc/sys/net/ipv4/conf/pmbr/route_localnet")


def test_masq_all_entries_and_counters(host):
    pub(host, "publish", A, [PortMapping(8080, 80)], A_ADDR, masq_all=True)
    e = elements(host)
    assert e["masq_all"] == {"pmbr": (None, None)} and "localhost" not in e
    assert e["ifrefs4"][("pmbr", "10.44.0.2", "10.44.0.2")][0] == "all4:pmbr"
    assert route_localnet(host, "pmbr") == "1"
    assert pub(host, "check", A, [PortMapping(8080, 80)], A_ADDR, masq_all=True) == []
    pub(host, "publish", B, [PortMapping(8081, 80)], B_ADDR)  # the same bridge, plain snat
    pub(host, "unpublish", A, [PortMapping(8080, 80)], A_ADDR)
    e = elements(host)
    assert "masq_all" not in e and e["localhost"] == {"pmbr": (None, None)} and e["hairpin"]
    pub(host, "unpublish", B, [PortMapping(8081, 80)], B_ADDR)


def test_route_localnet_is_undone_with_the_last_user_only(host):
    pub(host, "publish", A, [PortMapping(8080, 80)], A_ADDR)
    pub(host, "publish", B, [PortMapping(8081, 80)], B_ADDR)
    pub(host, "publish", C, [PortMapping(8082, 80)], C_ADDR, snat=False)  # needs none
    pub(host, "unpublish", A, [PortMapping(8080, 80)], A_ADDR)
    assert route_localnet(host, "pmbr") == "1"
    pub(host, "unpublish", B, [PortMapping(8081, 80)], B_ADDR)
    assert route_localnet(host, "pmbr") == "0"
    assert not {"localnet", "hairpin", "localhost"} & set(elements(host))
    pub(host, "unpublish", C, [PortMapping(8082, 80)], C_ADDR, snat=False)


def test_conditions_are_parsed_by_libnftables_and_shared(host):
    pub(host, "publish", A, [PortMapping(8080, 80)], A_ADDR, conditions_v4=["ip saddr 192.0.2.0/24", "iifname != \"pmbr\""])
    pub(host, "publish", B, [PortMapping(8081, 80)], B_ADDR, conditions_v4=["ip saddr 192.0.2.0/24", "iifname != \"pmbr\""])
    e = elements(host)
    assert set(e["cond4"]) == {("tcp", 8080), ("tcp", 8081)}
    (target,) = {d["jump"]["target"] for d, _ in e["cond4"].values()}
    assert "cond6" not in e  # no conditionsV6: IPv6 mappings are unconditional
    rules = [r["expr"] for r in oracle.nft_objects(host.name, "rule") if r["chain"] == target]
    assert rules[-1] == [{"accept": None}] and rules[0][-1] == {"return": None}
    assert "ip saddr 192.0.2.0/24 iifname != \"pmbr\" return" in oracle.nft_text(host.name)
    assert pub(host, "check", A, [PortMapping(8080, 80)], A_ADDR,
               conditions_v4=["ip saddr 192.0.2.0/24", "iifname != \"pmbr\""]) == []
    for bad, msg in ((["ip saddr 1.2.3.4; flush ruleset"], "must not contain ';'"),
                     (["ip saddr 1.2.3.4 drop"], "only match expressions"),
                     (["bogus thing"], "invalid conditions")):
        with pytest.raises(PortMappingError, match=msg):
            pub(host, "publish", C, [PortMapping(9000, 90)], C_ADDR, conditions_v4=bad)
    assert not any(t["name"].startswith("splice_portmap_parse") for t in oracle.nft_objects(host.name, "table"))
    pub(host, "unpublish", A, [PortMapping(8080, 80)], A_ADDR, conditions_v4=["ip saddr 192.0.2.0/24", "x"])
    pub(host, "unpublish", B, [PortMapping(8081, 80)], B_ADDR, conditions_v4=["ip saddr 192.0.2.0/24", "x"])
    assert target in pub(host, "prune")




def test_common_paths_do_not_list_the_table(host):
    def body():
        nft = CountingNft()
        p = Publisher(nft)
        p.publish(A, WEB, A_ADDR)  # first use: scaffolding created on the way
        p.publish(B, [PortMapping(9000, 90)], B_ADDR)
        p.unpublish(A, WEB, A_ADDR)
        p.unpublish(A, WEB, A_ADDR)  # repeated DEL: a failed delete and a probe
        p.publish(A, [PortMapping(9001, 91, host_ip="10.44.0.1")], A_ADDR)
        p.unpublish(A, [PortMapping(9001, 91, host_ip="10.44.0.1")], A_ADDR)  # lists dnat4_ip only
        fast = nft.listings
        with pytest.raises(PortConflict):
            p.publish(C, [PortMapping(9000, 90)], C_ADDR)  # a conflict lists (to name the owner)
        p.unpublish(B, [PortMapping(9000, 90)], B_ADDR)
        return fast, nft.listings

    with Netns.open(host.path) as ns:
        fast, total = ns.run(body)
    assert fast == 0 and total == 1


def test_concurrent_publishers(host, tmp_path):
    """Processes publishing on a fresh host at once: distinct ports all land; of the ones
    asking for the same port exactly one wins and the others get a conflict."""
    go = tmp_path / "go"
    code = textwrap.dedent(f"""
        import os, sys, time
        from ipaddress import ip_interface
        from splice.libnet.portmap.model import PortConflict
        from splice.plugins.portmap.mapping import PortMapping, expand
        from splice.libnet.portmap.publisher import PortPublisher
        deadline = time.monotonic() + 10
        while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:
            time.sleep(0.001)
        try:
            PortPublisher().publish(sys.argv[1], expand([PortMapping(int(sys.argv[2]), 80)], [ip_interface(sys.argv[3])]))
            print("ok")
        except PortConflict:
            print("conflict")
    """)
    jobs = [(f"n1 c{i} eth0", str(7000 + i), f"10.44.0.{10 + i}/24") for i in range(4)]
    jobs += [(f"n1 d{i} eth0", "7100", f"10.44.0.{20 + i}/24") for i in range(4)]
    procs = [subprocess.Popen(["nsenter", f"--net={host.path}", sys.executable, "-c", code, *j],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for j in jobs]
    go.write_text("")
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        outs.append(out.strip())
    assert outs[:4] == ["ok"] * 4
    assert sorted(outs[4:]) == ["conflict"] * 3 + ["ok"]
    winner = jobs[4 + outs[4:].index("ok")][0]
    assert owners_of(host)[("dnat4", ("tcp", 7100))] == winner
    assert len(owners_of(host)) == 5
    removed = pub(host, "gc", "n1 ", lambda o: False)
    if len(removed) != 5:  # seen once under heavy load: say what this process's context saw
        from splice.libnet import nft as N

        def seen():
            ctx = N.Nft()
            return {"chains": sorted(ctx.chain_names("inet", "splice_portmap")),
                    "table": ctx.list_table("inet", "splice_portmap") is not None,
                    "netns": N._thread_netns()}

        with Netns.open(host.path) as ns:
            diag = ns.run(seen)
        pytest.fail(f"gc removed {removed}; now: {diag}; oracle owners: {owners_of(host)}; "
                    f"host netns inode {host.sh('stat', '-L', '-c', '%d %i', host.path).stdout.strip()}")


def test_concurrent_threads_one_context_each(host):
    n = 6
    barrier = threading.Barrier(n)
    errors = []

    def worker(i):
        def body():
            p = Publisher()
            barrier.wait(timeout=10)
            p.publish(f"n1 t{i} eth0", [PortMapping(6000 + i, 80, "udp")], [ip_interface(f"10.44.0.{30 + i}/24")])
        try:
            with Netns.open(host.path) as ns:
                ns.run(body)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert {k[1][1] for k in owners_of(host)} == {6000 + i for i in range(n)}
    for i in range(n):
        pub(host, "unpublish", f"n1 t{i} eth0", [PortMapping(6000 + i, 80, "udp")], [ip_interface(f"10.44.0.{30 + i}/24")])
    assert route_localnet(host, "pmbr") == "0"


def test_status(host):
    """STATUS answers without changing anything, and fails where nftables cannot be used."""
    assert pub(host, "status") is None  # no table yet: fine, and none made
    assert oracle.nft_objects(host.name, "table") == []
    pub(host, "publish", A, WEB, A_ADDR)
    before = ruleset(host)
    assert pub(host, "status") is None
    assert ruleset(host) == before
    pub(host, "unpublish", A, WEB, A_ADDR)
    # a process without CAP_NET_ADMIN over the host namespace (root of a user namespace):
    # the kernel refuses every nf_tables request, so STATUS must raise
    code = ("from splice.libnet.portmap.publisher import PortPublisher\n"
            "try:\n    PortPublisher().status()\n    print('no error')\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    p = subprocess.run(["nsenter", f"--net={host.path}", "unshare", "--user", "--map-root-user", sys.executable,
                        "-c", code], capture_output=True, text=True, timeout=30)
    assert p.stdout.startswith("NftError") and "Operation not permitted" in p.stdout, p.stdout + p.stderr


def test_long_owner_is_truncated(host):
    owner = "n1 " + "é" * 100 + " eth0"
    pub(host, "publish", owner, [PortMapping(8080, 80)], C_ADDR)
    (tag,) = set(owners_of(host).values())
    assert len(tag.encode()) <= 127 and owner.startswith(tag)
    assert pub(host, "check", owner, [PortMapping(8080, 80)], C_ADDR) == []
    pub(host, "unpublish", owner, [PortMapping(8080, 80)], C_ADDR)


def test_proto_numbers_in_listings_are_normalised():
    from splice.libnet.portmap.model import key_digest

    assert key_digest("dnat4", {"concat": ["tcp", 80]}) == key_digest("dnat4", {"concat": [6, 80]})
    assert key_digest("dnat4_ip", ("10.0.0.1", 132, 80)) == key_digest("dnat4_ip", {"concat": ["10.0.0.1", "sctp", 80]})
    assert key_digest("snat4", "10.0.0.1") != key_digest("snat6", "10.0.0.1")
    assert ip_address("10.0.0.1")  # keep the import used
