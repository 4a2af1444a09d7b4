"""Rtnl.delete_link(early=True): the call returns on the kernel's RTM_DELLINK announcement,
the rest of the kernel's teardown finishing on a background thread; asserted with the
oracle (``ip -j link``) in throwaway namespaces."""

from __future__ import annotations

import threading

import pytest

from splice.libnet import netlink, rtnl
from splice.libnet.errors import NetError

from ..conftest import rtnl_in as run

pytestmark = [pytest.mark.root, pytest.mark.timeout(30)]


def _macvlan(ns, name="mv0"):
    ns.sh("ip", "link", "add", "lower0", "type", "veth", "peer", "name", "lower1")
    ns.sh("ip", "link", "set", "lower0", "up")
    ns.sh("ip", "link", "add", name, "link", "lower0", "type", "macvlan", "mode", "bridge")
    ns.sh("ip", "addr", "add", "10.77.0.2/24", "dev", name)
    ns.sh("ip", "link", "set", name, "up")


@pytest.fixture
def held_ack(monkeypatch):
    """Keep every background deletion's socket from returning until released: a call
    that still returns proves it returned on the announcement, not on the ACK."""
    release = threading.Event()
    real = netlink.Socket.transact

    def slow(self, requests):
        real(self, requests)
        if any(r.msg_type == rtnl.RTM_DELLINK for r in requests) and threading.current_thread().name == "splice-dellink":
            release.wait(10)

    monkeypatch.setattr(netlink.Socket, "transact", slow)
    yield release
    release.set()
    assert rtnl.wait_deletions(10)


def test_returns_on_the_announcement_with_the_link_already_gone(host_ns, held_ack):
    _macvlan(host_ns)
    index = run(host_ns, lambda rt: rt.get_link("mv0").index)
    assert run(host_ns, lambda rt: rt.delete_link(index=index, early=True)) is True
    # returned while the request's own answer is still held back
    assert rtnl.pending_deletions() == 1
    assert "mv0" not in host_ns.links()
    assert "10.77.0.2" not in host_ns.sh("ip", "-j", "addr", "show").stdout
    held_ack.set()
    assert rtnl.wait_deletions(10)
    assert rtnl.pending_deletions() == 0
    assert "mv0" not in host_ns.links()


def test_by_name_and_both_ends_of_a_veth_across_namespaces(host_ns, sandbox_ns, held_ack):
    host_ns.sh("ip", "link", "add", "vh0", "type", "veth", "peer", "name", "vc0", "netns", sandbox_ns.name)
    assert run(host_ns, lambda rt: rt.delete_link(name="vh0", early=True)) is True
    assert rtnl.pending_deletions() == 1
    assert "vh0" not in host_ns.links()
    assert "vc0" not in sandbox_ns.links()  # the peer is unregistered in the same batch


def test_a_missing_link_is_false(host_ns):
    """No announcement comes: the answer (ENODEV) does."""
    assert run(host_ns, lambda rt: rt.delete_link(name="nope0", early=True)) is False
    assert run(host_ns, lambda rt: rt.delete_link(index=987654, early=True)) is False
    assert rtnl.pending_deletions() == 0


def test_a_refused_deletion_raises_as_the_plain_call_does(host_ns):
    with pytest.raises(NetError) as plain:
        run(host_ns, lambda rt: rt.delete_link(name="lo"))
    with pytest.raises(NetError) as early:
        run(host_ns, lambda rt: rt.delete_link(name="lo", early=True))
    assert str(early.value) == str(plain.value)
    assert "lo" in host_ns.links()
    assert rtnl.wait_deletions(10)


def test_without_a_free_slot_the_call_waits_for_the_ack(host_ns, held_ack):
    _macvlan(host_ns)
    taken = 0
    while rtnl._early_slots.acquire(blocking=False):
        taken += 1
    try:
        assert taken == rtnl.MAX_EARLY_DELETIONS
        assert run(host_ns, lambda rt: rt.delete_link(name="mv0", early=True)) is True
        assert rtnl.pending_deletions() == 0  # the plain way: nothing left in the background
    finally:
        for _ in range(taken):
            rtnl._early_slots.release()
    assert "mv0" not in host_ns.links()


def test_many_at_once(host_ns):
    host_ns.sh("ip", "link", "add", "lower0", "type", "veth", "peer", "name", "lower1")
    for i in range(12):
        host_ns.sh("ip", "link", "add", f"mv{i}", "link", "lower0", "type", "macvlan")
    results = []

    def one(i):
        results.append(run(host_ns, lambda rt: rt.delete_link(name=f"mv{i}", early=True)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == [True] * 12
    assert not {f"mv{i}" for i in range(12)} & host_ns.links()
    assert rtnl.wait_deletions(10)


def test_a_thread_outside_the_sockets_namespace_deletes_the_plain_way(host_ns, sandbox_ns, held_ack):
    """The watch and the background socket would be made in the calling thread's namespace:
    when that is not the Rtnl's, the deletion goes through the Rtnl's own socket (right
    namespace), not early."""
    from splice.libnet.netns import Netns

    _macvlan(host_ns)
    with Netns.open(host_ns.path) as h, Netns.open(sandbox_ns.path) as s:
        rt = h.run(rtnl.Rtnl)
        try:
            assert s.run(lambda: rt.delete_link(name="mv0", early=True)) is True
        finally:
            rt.close()
    assert rtnl.pending_deletions() == 0
    assert "mv0" not in host_ns.links()
