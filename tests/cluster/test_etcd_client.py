"""The stdlib etcd v3 gateway client against a real 3-member etcd (3.4) in namespaces:
KV, txn, leases, fail-over, timeouts, watch streams; and its import cost."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from splice.ipam.cluster.errors import ClusterConfigError, ClusterUnavailable, EtcdError
from splice.ipam.cluster.etcd import Endpoint, Etcd, prefix_end

from ..conftest import REPO

pytestmark = pytest.mark.root


# -- no etcd needed -----------------------------------------------------------------------
def test_endpoint_parsing():
    assert Endpoint.parse("http://10.0.0.1:2379") == Endpoint("http://10.0.0.1:2379", False, "10.0.0.1", 2379)
    assert Endpoint.parse("https://[fd00::1]").port == 2379
    assert Endpoint.parse("https://[fd00::1]").netloc == "[fd00::1]:2379"
    assert Endpoint.parse("http://h").url == "http://h:2379"
    assert Endpoint.parse("https://[fd00::1]").host == "fd00::1"
    for bad in ("10.0.0.1:2379", "ftp://x:1", "http://", "http://h:99999", "http://h:1/v3", 5):
        with pytest.raises(ClusterConfigError):
            Endpoint.parse(bad)
    with pytest.raises(ClusterConfigError, match="no etcd endpoint"):
        Etcd([])
    with pytest.raises(ClusterConfigError, match="both cert_file and key_file"):
        Etcd("http://h:1", cert_file="/x")
    with pytest.raises(ClusterConfigError, match="TLS files"):
        Etcd("https://h:1", ca_file="/nonexistent/ca.pem")
    assert [e.url for e in Etcd("http://a:1,http://b:2").endpoints] == ["http://a:1", "http://b:2"]


def test_prefix_end():
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


def test_import_cost():
    """The agent imports the cluster store: stdlib only, no requests/grpc/protobuf, and no
    ssl unless an https endpoint is used."""
    code = ("import sys; import splice.ipam.cluster.subnets, splice.ipam.cluster.peers; "
            "bad = [m for m in ('requests', 'urllib3', 'grpc', 'google.protobuf', 'ssl', 'etcd3gw') if m in sys.modules]; "
            "print(','.join(bad))")
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, cwd=REPO,
                       check=True)
    assert p.stdout.strip() == "", f"heavy modules imported: {p.stdout}"
    own = [ln for ln in p.stderr.splitlines() if "splice.ipam.cluster." in ln]
    assert own, p.stderr[-2000:]


# -- against the cluster --------------------------------------------------------------------
def test_kv_txn_lease(cluster, prefix):
    e = cluster.client()
    assert e.put(f"{prefix}/a", "1") > 0
    e.put(f"{prefix}/b", b"\x00\xff")
    e.put(f"{prefix}0", "outside")
    kvs, rev = e.range(f"{prefix}/", prefix=True)
    assert [(kv.key, kv.value) for kv in kvs] == [(f"{prefix}/a".encode(), b"1"), (f"{prefix}/b".encode(), b"\x00\xff")]
    assert rev >= kvs[-1].mod_revision
    assert e.get(f"{prefix}/none") is None

    lid, ttl = e.lease_grant(5)
    assert lid > 0 and ttl == 5
    created, existing = e.create(f"{prefix}/c", "mine", lease=lid)
    assert created and existing is None
    created, existing = e.create(f"{prefix}/c", "theirs")
    assert not created and existing.value == b"mine" and existing.lease == lid
    assert not e.replace(f"{prefix}/c", "x", mod_revision=existing.mod_revision - 1)
    assert e.replace(f"{prefix}/c", "y", mod_revision=existing.mod_revision, lease=lid)
    assert e.get(f"{prefix}/c").value == b"y"
    assert 0 < e.lease_keepalive(lid) <= 5
    assert 0 < e.lease_ttl(lid) <= 5
    assert e.lease_revoke(lid)
    assert e.get(f"{prefix}/c") is None  # went with the lease
    assert e.lease_keepalive(lid) == 0   # expired/unknown: 0, not an error
    assert e.lease_ttl(lid) == -1
    assert not e.lease_revoke(lid)
    with pytest.raises(EtcdError, match="lease not found"):
        e.put(f"{prefix}/d", "v", lease=lid)
    before = e.range(f"{prefix}/", prefix=True)
    n = e.delete(f"{prefix}/", prefix=True)
    assert n == 2, (before, e.range(f"{prefix}/", prefix=True), prefix)
    assert e.get(f"{prefix}0").value == b"outside"


def test_all_endpoints_down_names_them(cluster):
    """Nothing listens: ClusterUnavailable naming each endpoint, after ``retry_for``."""
    e = Etcd([f"http://{cluster.members[0].ip}:1", f"http://{cluster.members[1].ip}:2"], timeout=0.5, retry_for=0.6)
    t0 = time.monotonic()
    with pytest.raises(ClusterUnavailable) as ei:
        e.get("/x")
    assert time.monotonic() - t0 < 3
    assert ":1: connection refused" in ei.value.details and ":2: connection refused" in ei.value.details
    assert "no etcd endpoint answered" in str(ei.value)


def test_failover_member_killed(cluster, prefix):
    e = cluster.client(timeout=1.0, retry_for=5.0)
    e.put(f"{prefix}/k", "0")
    first = cluster.member(e.order()[0].url)
    first.kill()
    t0 = time.monotonic()
    for i in range(5):
        e.put(f"{prefix}/k", str(i))
    assert e.get(f"{prefix}/k").value == b"4"
    assert time.monotonic() - t0 < 6   # an election (killed the leader?) takes ~1-2 s
    assert e.order()[0].url != first.url


def test_failover_member_partitioned(cluster, prefix):
    """A member that does not answer at all (its link down): the request times out there
    and goes to the next endpoint."""
    e = cluster.client(timeout=0.5, retry_for=5.0)
    e.put(f"{prefix}/k", "0")
    first = cluster.member(e.order()[0].url)
    e.close()  # no pooled connection: the next request connects anew
    first.cut()
    t0 = time.monotonic()
    e.put(f"{prefix}/k", "1")
    assert e.get(f"{prefix}/k").value == b"1"
    assert time.monotonic() - t0 < 5


def test_watch_stream(cluster, prefix):
    e = cluster.client()
    rev = e.put(f"{prefix}/a", "1")
    w = e.watch(f"{prefix}/", prefix=True, start_revision=rev)
    try:
        assert w.next(2)["result"]["created"]
        first = w.next(2)["result"]["events"]
        assert len(first) == 1 and first[0]["kv"]["mod_revision"] == str(rev)
        assert w.next(0.2) is None  # quiet: None, the stream stays usable
        e.put(f"{prefix}/b", "2")
        e.delete(f"{prefix}/a")
        seen = []
        while len(seen) < 2:
            msg = w.next(2)
            assert msg is not None
            seen += msg["result"].get("events", [])
        assert [ev.get("type", "PUT") for ev in seen] == ["PUT", "DELETE"]
    finally:
        w.close()


def _answers(*bodies: bytes, chunked: bool) -> bytes:
    out = b""
    for body in bodies:
        if chunked:
            mid = len(body) // 2
            out += (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"%x\r\n%s\r\n" % (mid, body[:mid]) + b"%x;ext=1\r\n%s\r\n" % (len(body) - mid, body[mid:])
                    + b"0\r\n\r\n")
        else:
            out += b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    return out


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("step", [1, 3, 7, 4096])
def test_reader_byte_by_byte(chunked, step):
    """Answers arriving in pieces of any size (a chunk's CRLF, the last chunk's CRLF split
    off): each answer is read whole, and the next one on the connection starts clean."""
    import socket
    import threading

    from splice.ipam.cluster.etcd import _Reader

    a, b = socket.socketpair()
    data = _answers(b'{"n": 1}', b'{"n": 22, "x": "' + b"y" * 300 + b'"}', chunked=chunked)

    def feed():
        for i in range(0, len(data), step):
            b.sendall(data[i:i + step])
            time.sleep(0.0005)

    t = threading.Thread(target=feed)
    t.start()
    a.settimeout(5)
    r = _Reader(a)
    try:
        for want in (b'{"n": 1}', b'{"n": 22, "x": "' + b"y" * 300 + b'"}'):
            status, _, _ = r.head()
            assert status == 200 and r.read_all() == want
        t.join()
        assert r._raw == b""
    finally:
        a.close()
        b.close()
