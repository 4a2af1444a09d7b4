"""Shared libnftables contexts (nft.share_contexts): a context in use is never evicted or pruned."""

from __future__ import annotations

import pytest

from splice.libnet import nft


class FakeContext:
    def json_cmd(self, cmd):  # pragma: no cover - never run here
        return 0, {"nftables": []}, ""


@pytest.fixture
def shared(monkeypatch):
    monkeypatch.setattr(nft, "_new_context", FakeContext)
    monkeypatch.setattr(nft, "SHARED_MAX", 2)
    nft.share_contexts(True)
    yield
    nft.share_contexts(False)


def test_eviction_skips_a_context_in_use(shared):
    k1, k2, k3 = (1, 1), (1, 2), (1, 3)
    a = nft._shared_context(k1)
    with a.lock:  # a thread is running a command on it
        nft._shared_context(k2)
        nft._shared_context(k3)  # the cap is reached: the least recently used is k1, in use
        assert nft._shared[k1] is a
    assert set(nft._shared) >= {k1, k3}


def test_prune_skips_a_context_handed_out(shared):
    """Handed out by _shared_context but not locked yet (Nft._run takes the lock next)."""
    k1 = (2, 1)
    a = nft._shared_context(k1)
    assert nft.prune_contexts(0) == 0
    assert nft._shared[k1] is a
