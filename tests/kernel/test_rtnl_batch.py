"""rtnl.Batch: several requests in one send, one answer each, in throwaway namespaces."""

from __future__ import annotations

import ipaddress

import pytest

from splice.conformance import oracle
from splice.libnet import rtnl
from splice.libnet.errors import LinkExists, NetError
from splice.libnet.netns import Netns

from ..conftest import rtnl_in as run, only_lo

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

IF = ipaddress.ip_interface
NET = ipaddress.ip_network
ADDR = ipaddress.ip_address



class CountingSocket:
    """Wraps the Rtnl's socket to count the datagrams it sends."""

    def __init__(self, sock) -> None:
        self.sock, self.sends = sock, []

    def send(self, data: bytes) -> int:
        self.sends.append(len(data))
        return self.sock.send(data)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def counting(rt) -> CountingSocket:
    rt._nl._sock = CountingSocket(rt._nl._sock)
    return rt._nl._sock


def test_one_send_one_answer_per_request_in_order(host_ns):
    def make(rt):
        sent = counting(rt)
        b = rt.batch()
        positions = [
            b.add_bridge("br-t"),
            b.add_bridge("br-t"),  # EEXIST: add_bridge answers None
            b.add_veth("vt-a", "vt-b"),
            b.add_veth("vt-a", "vt-c"),  # LinkExists, in place
            b.set_brport("vt-a", alias="x"),  # by name: applied to vt-a
            b.get_link("vt-a"),  # sees the alias: requests run in order
            b.delete_link(name="nope0"),
            b.addresses(1),  # a dump may ride along
        ]
        results = b.run(check=False)
        return positions, results, sent.sends, len(b)

    positions, r, sends, left = run(host_ns, make)
    assert positions == list(range(8)) and left == 0
    # one send for the eight requests; a kernel that does not echo new links (< 6.3) costs
    # one lookup each afterwards (a GETLINK of 52 bytes)
    assert sends[0] > 8 * 16 and all(size <= 64 for size in sends[1:]) and len(sends) in (1, 3)
    assert isinstance(r[0], rtnl.Link) and r[0].kind == "bridge" and r[1] is None
    assert isinstance(r[2], rtnl.Link) and isinstance(r[3], LinkExists) and "'vt-a'" in str(r[3])
    assert r[4] is None and r[5].alias == "x" and r[6] is False
    assert {str(a.iface) for a in r[7]} >= {"127.0.0.1/8"}
    assert oracle.link(host_ns.name, "vt-a")["ifalias"] == "x" and "vt-c" not in host_ns.links()
    run(host_ns, lambda rt: (rt.delete_link(name="vt-a"), rt.delete_link(name="br-t")))
    only_lo(host_ns)


def test_check_raises_the_first_failure_after_every_answer(host_ns):
    def make(rt):
        b = rt.batch()
        b.add_veth("vt-a", "vt-b")
        b.add_address(99999, IF("10.9.0.1/24"))  # no such link
        b.add_veth("vt-a", "vt-c")  # LinkExists: the second failure
        b.set_link(1, alias="still-done")  # runs although earlier requests failed
        with pytest.raises(NetError, match="add address 10.9.0.1/24") as e:
            b.run()
        return e.value, b.results

    first, results = run(host_ns, make)
    assert results[1] is first and isinstance(results[2], LinkExists)
    assert isinstance(results[0], rtnl.Link) and results[3] is None
    assert oracle.link(host_ns.name, "lo")["ifalias"] == "still-done"
    run(host_ns, lambda rt: rt.delete_link(name="vt-a"))
    only_lo(host_ns)


def test_large_batches_are_sent_in_chunks(host_ns):
    n = rtnl.BATCH_CHUNK * 2 + 5

    def make(rt):
        idx = rt.add_veth("vt-a", "vt-b").index
        sent = counting(rt)
        b = rt.batch()
        for i in range(n):
            b.add_address(idx, IF(f"10.9.{i}.1/24"))
        return b.run(), sent.sends

    results, sends = run(host_ns, make)
    assert results == [True] * n and len(sends) == 3
    assert len(oracle.addresses(host_ns.name, "vt-a")) == n
    run(host_ns, lambda rt: rt.delete_link(name="vt-a"))
    only_lo(host_ns)


def test_at_most_one_dump(host_ns):
    def make(rt):
        sent = counting(rt)
        b = rt.batch()
        b.dump_links()
        b.routes(rtnl.AF_INET)
        with pytest.raises(ValueError, match="at most one dump"):
            b.run()
        return sent.sends

    assert run(host_ns, make) == []


def test_a_bridge_add_in_two_batches(host_ns, sandbox_ns):
    """What the bridge driver's ADD can do: the host side (veth with the peer in the
    sandbox, port options) in one send, the sandbox side (addresses, rename + up,
    routes) in another. Then the same with the sandbox name taken: the rename fails, the
    requests after it still run (and fail: the link is down), the first failure is the
    rename's."""
    host_ns.sh("ip", "link", "add", "br-t", "up", "type", "bridge")
    host_ns.sh("ip", "addr", "add", "10.9.0.1/24", "dev", "br-t")

    def host_side(rt, fd, veth, tmp):
        br = rt.require_link("br-t")
        b = rt.batch()
        b.add_veth(veth, tmp, peer_netns_fd=fd, master=br.index, mac="02:00:00:00:01:01",
                   peer_mac="02:00:00:00:01:02", up=True)
        b.set_brport(veth, alias=f"splice:net:{veth}:eth0", hairpin=True)
        veth_link, _ = b.run()
        return veth_link.peer_index

    def sandbox_side(rt, idx, addr):
        b = rt.batch()
        b.add_address(idx, IF(addr))
        b.set_link(idx, name="eth0", up=True)
        b.add_route(NET("0.0.0.0/0"), gw=ADDR("10.9.0.1"), oif=idx)
        return b.run(check=False)

    with Netns.open(sandbox_ns.path) as sb:
        idx = run(host_ns, host_side, sb.fd, "vethaaaa", "sp000001")
        assert run(sandbox_ns, sandbox_side, idx, "10.9.0.2/24") == [True, None, True]
        o = oracle.link(sandbox_ns.name, "eth0")
        assert o["ifindex"] == idx and "UP" in o["flags"] and oracle.addresses(sandbox_ns.name, "eth0") == ["10.9.0.2/24"]
        assert any(r["dst"] == "default" and r["gateway"] == "10.9.0.1" for r in oracle.routes(sandbox_ns.name))
        h = oracle.link(host_ns.name, "vethaaaa")
        assert h["master"] == "br-t" and h["ifalias"] == "splice:net:vethaaaa:eth0"
        assert h["linkinfo"]["info_slave_data"]["hairpin"] is True
        assert oracle.ping(sandbox_ns.name, "10.9.0.1")

        idx2 = run(host_ns, host_side, sb.fd, "vethbbbb", "sp000002")
        r = run(sandbox_ns, sandbox_side, idx2, "10.9.0.3/24")
    assert r[0] is True and isinstance(r[1], LinkExists) and isinstance(r[2], NetError)
    assert "sp000002" in sandbox_ns.links()  # left for the rollback, which deletes the host end
    run(host_ns, lambda rt: (rt.delete_link(name="vethaaaa"), rt.delete_link(name="vethbbbb"),
                             rt.delete_link(name="br-t")))
    only_lo(host_ns, sandbox_ns)
