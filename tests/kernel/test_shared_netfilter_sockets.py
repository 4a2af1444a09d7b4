"""Shared netfilter sockets (conntrack.netfilter in a resident process): a socket another
thread is using is never closed under it (eviction at SHARED_MAX, share_sockets(False))."""

from __future__ import annotations

import threading

import pytest

from splice.conformance import oracle
from splice.libnet import conntrack
from splice.libnet.netns import Netns

pytestmark = [pytest.mark.root, pytest.mark.timeout(30)]

GETCHAIN = (conntrack.NFNL_SUBSYS_NFTABLES << 8) | conntrack.NFT_MSG_GETCHAIN


class User:
    """A thread inside ``ns`` holding a shared netfilter socket until ``go`` is set, then
    making one request on it (a chain dump)."""

    def __init__(self, ns) -> None:
        self.inside, self.go = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.sock = None
        self.thread = threading.Thread(target=self._main, args=(ns,))
        self.thread.start()
        assert self.inside.wait(10)

    def _main(self, ns) -> None:
        def body():
            with conntrack.netfilter() as nl:
                self.sock = nl.sock
                self.inside.set()
                assert self.go.wait(10)
                nl.request(GETCHAIN, conntrack.NLM_F_DUMP, conntrack._nfgen(1))
        try:
            with Netns.open(ns.path) as n:
                n.run(body)
        except BaseException as e:  # noqa: BLE001 - checked by finish()
            self.error = e

    def finish(self) -> None:
        self.go.set()
        self.thread.join(10)
        assert self.error is None, repr(self.error)


@pytest.fixture
def sharing(monkeypatch):
    monkeypatch.setattr(conntrack, "SHARED_MAX", 1)
    conntrack.share_sockets(True)
    yield
    conntrack.share_sockets(False)


def use_once(ns) -> None:
    def body():
        with conntrack.netfilter() as nl:
            nl.request(GETCHAIN, conntrack.NLM_F_DUMP, conntrack._nfgen(1))
    with Netns.open(ns.path) as n:
        n.run(body)


def test_eviction_never_closes_a_socket_in_use(make_ns, sharing):
    one, two, three = make_ns(), make_ns(), make_ns()
    user = User(one)
    use_once(two)  # the cap (1) is reached and the only other socket is in use
    user.finish()  # its request still works (it was closed under it before: EBADF)
    use_once(three)  # now the unused ones may go
    assert len(conntrack._shared) <= 2
    for ns in (one, two, three):
        assert oracle.nft_objects(ns.name, "table") == []


def test_share_sockets_off_closes_a_socket_in_use_after_its_use(make_ns, sharing):
    one = make_ns()
    user = User(one)
    conntrack.share_sockets(False)
    user.finish()
    assert user.sock.fileno() == -1  # closed once its user was done
    assert oracle.nft_objects(one.name, "table") == []
