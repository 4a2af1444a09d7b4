"""The peer registry: records published under the host's lease, a watcher that sees other
hosts join (< 1 s), change and leave (revoke, expiry), and keeps following through etcd
member failures (resume from the last revision) and compaction (re-list)."""

from __future__ import annotations

import queue
import time

import pytest

from splice.ipam.cluster.errors import ClusterConfigError
from splice.ipam.cluster.etcd import Endpoint
from splice.ipam.cluster.mirror import Mirror
from splice.ipam.cluster.peers import Peer, PeerRegistry
from splice.ipam.cluster.subnets import Layout, SubnetLease

pytestmark = pytest.mark.root
TTL = 2


def test_peer_record():
    p = Peer.make("n1", "10.1.2.0/24", "192.0.2.1", "02:AA:bb:cc:dd:ee", vni=42)
    assert p.mac == "02:aa:bb:cc:dd:ee"
    assert Peer.from_json(p.to_json()) == p
    for bad in (dict(mac="01:00:5e:00:00:01"), dict(mac="zz"), dict(underlay="nope"), dict(subnet="10.1.2.1/24")):
        args = {"subnet": "10.1.2.0/24", "underlay": "192.0.2.1", "mac": "02:00:00:00:00:01", **bad}
        with pytest.raises(ClusterConfigError):
            Peer.make("n1", **args)
    with pytest.raises(ValueError):
        Peer.from_json(b'{"node": 5}')


class Host:
    """One simulated host: its subnet lease and its record."""

    def __init__(self, cluster, prefix, tmp_path, node, ttl=TTL) -> None:
        self.etcd = cluster.client(timeout=1.0, retry_for=3.0)
        self.lease = SubnetLease(self.etcd, "ov", "10.50.0.0/16", node=node, state_dir=str(tmp_path / node),
                                 prefix=prefix, ttl=ttl)
        self.registry = PeerRegistry(self.etcd, "ov", prefix=prefix)
        cluster.later(self.lease.close)
        self.node = node

    def join(self, underlay: str, mac: str = "02:00:00:00:00:01") -> Peer:
        self.lease.acquire()
        self.lease.start()
        return self.registry.publish(self.lease, underlay, mac)

    def watch(self, cluster, **kw):
        events: queue.Queue = queue.Queue()
        w = self.registry.watch(events.put, exclude=self.node, **kw)
        cluster.later(w.stop)
        assert w.wait_synced(5)
        return w, events


def next_event(events: queue.Queue, timeout: float):
    try:
        return events.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no peer event within {timeout} s") from None


def test_join_update_leave(cluster, prefix, tmp_path):
    a = Host(cluster, prefix, tmp_path, "a")
    a.join("10.231.0.11")
    early = Host(cluster, prefix, tmp_path, "early")
    early.join("10.231.0.12")
    w, events = a.watch(cluster)
    ev = next_event(events, 1)   # the initial listing: the other host, never itself
    assert (ev.kind, ev.node, str(ev.peer.underlay)) == ("add", "early", "10.231.0.12")
    assert events.empty()

    b = Host(cluster, prefix, tmp_path, "b")
    t0 = time.monotonic()
    peer = b.join("10.231.0.13", "02:00:00:00:00:0b")
    ev = next_event(events, 1)
    join_s = time.monotonic() - t0   # acquire + publish + watch delivery
    assert (ev.kind, ev.node, ev.peer, ev.previous) == ("add", "b", peer, None)
    assert ev.peer.subnet == b.lease.subnet and ev.peer.subnet != a.lease.subnet
    assert join_s < 1.0, join_s
    assert set(w.peers()) == {"early", "b"}

    b.registry.publish(b.lease, "10.231.0.13", "02:00:00:00:00:0c")
    ev = next_event(events, 1)
    assert (ev.kind, ev.peer.mac, ev.previous.mac) == ("update", "02:00:00:00:00:0c", "02:00:00:00:00:0b")

    t0 = time.monotonic()
    b.lease.release()    # revoke: record and subnet key go at once
    ev = next_event(events, 1)
    assert (ev.kind, ev.node, ev.peer, ev.previous.node) == ("remove", "b", None, "b")
    assert time.monotonic() - t0 < 1.0

    early.lease.close()  # stopped without revoking: gone when the lease expires
    ev = next_event(events, TTL + 3)
    assert (ev.kind, ev.node) == ("remove", "early")
    assert w.peers() == {}


def test_malformed_record_is_ignored(cluster, prefix, tmp_path):
    a = Host(cluster, prefix, tmp_path, "a")
    a.join("10.231.0.11")
    w, events = a.watch(cluster)
    e = cluster.client()
    nodes = Layout(prefix, "ov").nodes
    e.put(nodes + "x", b"not json")
    e.put(nodes + "y", Peer.make("z", "10.50.9.0/24", "10.0.0.1", "02:00:00:00:00:09").to_json())  # names another node
    e.put(nodes + "v", Peer.make("v", "10.50.8.0/24", "10.0.0.2", "02:00:00:00:00:08").to_json())
    ev = next_event(events, 1)
    assert (ev.kind, ev.node) == ("add", "v")
    e.put(nodes + "v", b"{broken")
    ev = next_event(events, 1)
    assert (ev.kind, ev.node) == ("remove", "v")
    assert w.peers() == {}


def test_watch_resumes_after_member_restart(cluster, prefix, tmp_path):
    """The member the watcher streams from is killed: it resumes on another member from
    the next revision (nothing lost, nothing twice), and again after the member is back."""
    a = Host(cluster, prefix, tmp_path, "a", ttl=10)
    a.join("10.231.0.11")
    w, events = a.watch(cluster)
    time.sleep(0.2)
    streaming = w.mirror._stream.endpoint.url
    member = cluster.member(streaming)
    member.kill()
    hosts = []
    for i in range(3):
        h = Host(cluster, prefix, tmp_path, f"h{i}", ttl=10)
        h.join(f"10.231.0.{20 + i}")
        hosts.append(h)
    got = [next_event(events, 5) for _ in range(3)]
    assert sorted((e.kind, e.node) for e in got) == [("add", "h0"), ("add", "h1"), ("add", "h2")]
    assert w.mirror.reconnects >= 1 and w.mirror._stream.endpoint.url != streaming
    member.start()
    cluster.wait_healthy()
    hosts[0].lease.release()
    assert (next_event(events, 2).kind, w.mirror.relists) == ("remove", 1)
    time.sleep(0.3)
    assert events.empty()
    for h in hosts[1:]:
        h.lease.release()


def test_watch_survives_partition(cluster, prefix, tmp_path):
    """The member the watcher streams from is cut off (no RST, no FIN): it notices (the
    member drops watches when it loses its leader, or the idle probe fails) and resumes on
    another member."""
    a = Host(cluster, prefix, tmp_path, "a", ttl=10)
    a.join("10.231.0.11")
    w, events = a.watch(cluster, idle=1.0)
    time.sleep(0.2)
    member = cluster.member(w.mirror._stream.endpoint.url)
    member.cut()
    time.sleep(0.2)
    b = Host(cluster, prefix, tmp_path, "b", ttl=10)
    b.etcd.endpoints = [ep for ep in b.etcd.endpoints if ep.url != member.url]
    t0 = time.monotonic()
    b.join("10.231.0.12")
    ev = next_event(events, 8)
    assert (ev.kind, ev.node) == ("add", "b")
    assert time.monotonic() - t0 < 6
    b.lease.release()
    assert next_event(events, 3).kind == "remove"


def test_compaction_relists(cluster, prefix, tmp_path):
    """A resume from a compacted revision re-lists the prefix and reports the difference."""
    e = cluster.client()
    seen = []
    m = Mirror(cluster.client(), f"{prefix}/", lambda kind, key, kv, prev: seen.append((kind, key.decode().rsplit("/", 1)[1])))
    cluster.later(m.stop)
    e.put(f"{prefix}/a", "1")
    e.put(f"{prefix}/b", "1")
    m.start()
    assert m.wait_synced(5)
    time.sleep(0.2)
    assert sorted(seen) == [("add", "a"), ("add", "b")]
    seen.clear()
    # the mirror is cut off (its endpoints refuse) while keys change and etcd compacts
    endpoints = m.etcd.endpoints
    m.etcd.endpoints = [Endpoint.parse(f"http://{cluster.members[0].ip}:1")]
    m.reconnect()
    time.sleep(0.2)
    e2 = cluster.client()
    e2.delete(f"{prefix}/a")
    e2.put(f"{prefix}/b", "2")
    rev = e2.put(f"{prefix}/c", "3")
    e2.compact(rev)
    assert seen == []
    m.etcd.endpoints = endpoints
    deadline = time.monotonic() + 5
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(seen) == [("add", "c"), ("remove", "a"), ("update", "b")]
    assert m.relists == 2 and set(m.snapshot()) == {f"{prefix}/b".encode(), f"{prefix}/c".encode()}


def test_watch_through_full_outage(cluster, prefix, tmp_path):
    """Every member down and back (same data): the watcher resumes by itself, the records
    survived (leases do not expire without a leader), and a host joining afterwards is seen."""
    a = Host(cluster, prefix, tmp_path, "a", ttl=5)
    a.join("10.231.0.11")
    early = Host(cluster, prefix, tmp_path, "early", ttl=5)
    early.join("10.231.0.12")
    w, events = a.watch(cluster)
    assert next_event(events, 1).node == "early"
    for m in cluster.members:
        m.kill()
    time.sleep(1.0)
    for m in cluster.members:
        m.start()
    cluster.wait_healthy()
    b = Host(cluster, prefix, tmp_path, "b", ttl=5)
    b.join("10.231.0.13")
    ev = next_event(events, 5)
    assert (ev.kind, ev.node) == ("add", "b")
    assert set(w.peers()) == {"early", "b"} and w.mirror.relists == 1
    time.sleep(0.3)
    assert events.empty()
    for h in (a, early, b):
        h.lease.release()


def test_join_latency(cluster, prefix, tmp_path):
    """Join latency as the overlay sees it: from a host's publish to the other hosts'
    callbacks (5 watchers, 10 joins): the worst well under 1 s."""
    watchers = []
    for i in range(5):
        h = Host(cluster, prefix, tmp_path, f"w{i}", ttl=10)
        h.join(f"10.231.0.{30 + i}")
        watchers.append(h.watch(cluster))
    for _, events in watchers:
        for _ in range(4):
            next_event(events, 2)   # the other watchers' hosts
    worst = 0.0
    for j in range(10):
        h = Host(cluster, prefix, tmp_path, f"j{j}", ttl=10)
        h.lease.acquire()
        t0 = time.monotonic()
        h.registry.publish(h.lease, f"10.231.0.{50 + j}", "02:00:00:00:00:01")
        for _, events in watchers:
            ev = next_event(events, 2)
            assert (ev.kind, ev.node) == ("add", f"j{j}")
        worst = max(worst, time.monotonic() - t0)
        h.lease.release()
        for _, events in watchers:
            assert next_event(events, 2).kind == "remove"
    print(f"join latency, publish to the last of 5 watchers, worst of 10: {worst * 1000:.1f} ms")
    assert worst < 0.5
