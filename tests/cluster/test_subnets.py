"""Host subnet leases: cutting, claiming under concurrency, renewal after a restart, expiry,
a subnet taken by another host, etcd members failing. Leases use etcd's minimum TTL (2 s)."""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time

import pytest

from splice.ipam.cluster.errors import (ClusterConfigError, ClusterError, ClusterUnavailable, NodeNameInUse,
                                        NoFreeSubnet, SubnetTaken)
from splice.ipam.cluster.subnets import Layout, SubnetLease, SubnetSpace
from splice.ipam import errors as ie

pytestmark = pytest.mark.root
TTL = 2
net = ipaddress.ip_network


def wait_for(pred, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            return v
        time.sleep(step)


# -- no etcd needed -----------------------------------------------------------------------
def test_space():
    s = SubnetSpace.parse("10.244.0.0/16")
    assert s.count == 256 and s.nth(0) == net("10.244.0.0/24") and s.nth(255) == net("10.244.255.0/24")
    assert s.index(net("10.244.7.0/24")) == 7
    assert s.index(net("10.245.0.0/24")) is None and s.index(net("10.244.7.0/25")) is None
    assert s.index(net("fd00::/64")) is None
    assert s.first_free({0, 1, 2}, 0) == 3 and s.first_free({255, 0}, 255) == 1
    full = SubnetSpace.parse("10.0.0.0/22", 24)
    assert full.first_free({0, 1, 2, 3}, 2) is None
    assert full.start("node-a", "first") == 0
    assert full.start("node-a", "hash") == full.start("node-a", "hash")
    assert len({SubnetSpace.parse("10.0.0.0/8", 24).start(f"n{i}", "hash") for i in range(50)}) > 40
    big = SubnetSpace.parse("fd00::/32", 64)   # 2**32 subnets: never enumerated
    assert big.count == 2**32 and big.nth(big.count - 1) == net("fd00:0:ffff:ffff::/64")
    assert big.first_free(set(), big.start("x", "hash")) is not None
    for cidr, length, words in (("10.244.1.0/16", 24, "host bits"), ("nonsense", 24, "clusterCIDR"),
                                ("10.0.0.0/24", 16, "between"), ("10.0.0.0/24", 31, "between"),
                                ("10.0.0.0/16", "24", "integer"), ("10.0.0.0/16", True, "integer")):
        with pytest.raises(ClusterConfigError, match=words):
            SubnetSpace.parse(cidr, length)
    assert issubclass(ClusterConfigError, ie.IpamConfigError) and issubclass(ClusterUnavailable, ie.StoreBusy)
    assert issubclass(NoFreeSubnet, ie.PoolExhausted)


def test_layout():
    lay = Layout("/splice", "my net/1")
    assert lay.config == "/splice/my%20net%2F1/config"
    assert lay.subnet_key(net("10.1.2.0/24")) == "/splice/my%20net%2F1/subnets/10.1.2.0-24"
    assert lay.subnet_of(lay.subnet_key(net("fd00:1::/64")).encode()) == net("fd00:1::/64")
    assert lay.node_key("a/b") == "/splice/my%20net%2F1/nodes/a%2Fb"
    assert Layout("/", "n").config == "/n/config" and Layout("/a/b/", "n").nodes == "/a/b/n/nodes/"
    with pytest.raises(ClusterConfigError):
        Layout("relative", "n").config
    with pytest.raises(ClusterConfigError):
        Layout("/p", "").config


# -- against the cluster --------------------------------------------------------------------
def lease(cluster, prefix, tmp_path, node, cidr="10.20.0.0/20", *, ttl=TTL, choice="hash", client=None, **kw):
    sl = SubnetLease(client or cluster.client(), "net1", cidr, node=node, state_dir=str(tmp_path / node),
                     prefix=prefix, ttl=ttl, choice=choice, **kw)
    cluster.later(sl.close)
    return sl


@pytest.mark.parametrize("choice", ["first", "hash", "random"])
def test_concurrent_claims_fill_without_duplicates(cluster, prefix, tmp_path, choice):
    """16 hosts claim at once from a /20 cut in /24s (16 subnets): each gets its own, all
    are used; the 17th finds none. "first" is the worst case (everyone races for the same
    lowest free subnet)."""
    n = 16
    got: dict[str, object] = {}
    barrier = threading.Barrier(n)

    def claim(i):
        sl = lease(cluster, prefix, tmp_path, f"node{i}", choice=choice)
        barrier.wait()
        try:
            got[sl.node] = sl.acquire()
        except Exception as e:  # noqa: BLE001
            got[sl.node] = e

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(v, ipaddress.IPv4Network) for v in got.values()), got
    assert sorted(got.values()) == list(net("10.20.0.0/20").subnets(new_prefix=24))
    e = cluster.client()
    kvs, _ = e.range(Layout(prefix, "net1").subnets, prefix=True)
    owners = {json.loads(kv.value)["node"]: Layout(prefix, "net1").subnet_of(kv.key) for kv in kvs}
    assert owners == got
    with pytest.raises(NoFreeSubnet, match="every /24 of 10.20.0.0/20"):
        lease(cluster, prefix, tmp_path, "late").acquire()


def test_config_mismatch(cluster, prefix, tmp_path):
    lease(cluster, prefix, tmp_path, "a").acquire()
    with pytest.raises(ClusterConfigError, match="clusterCIDR 10.30.0.0/16.*every host of a network needs the same"):
        lease(cluster, prefix, tmp_path, "b", cidr="10.30.0.0/16").acquire()


def test_restart_keeps_subnet_and_lease(cluster, prefix, tmp_path):
    a = lease(cluster, prefix, tmp_path, "a")
    sub = a.acquire()
    st = json.loads((tmp_path / "a" / "subnet-net1.json").read_text())
    assert st["subnet"] == str(sub) and int(st["lease"]) == a.lease
    assert oct(os.stat(tmp_path / "a" / "subnet-net1.json").st_mode & 0o777) == "0o600"
    old_lease = a.lease
    a.close()   # a restart: no revoke
    a2 = lease(cluster, prefix, tmp_path, "a")
    assert a2.acquire() == sub
    assert a2.lease == old_lease and a2.status().reason == "renewed the lease it held on"


def test_restart_after_expiry_reclaims_same_subnet(cluster, prefix, tmp_path):
    a = lease(cluster, prefix, tmp_path, "a")
    sub = a.acquire()
    a.close()
    e = cluster.client()
    key = Layout(prefix, "net1").subnet_key(sub)
    assert wait_for(lambda: e.get(key) is None, TTL + 3), "the lease did not expire"
    a2 = lease(cluster, prefix, tmp_path, "a")
    assert a2.acquire() == sub and a2.status().reason == "re-claimed its former subnet"


def test_lost_state_file_takes_its_key_back(cluster, prefix, tmp_path):
    a = lease(cluster, prefix, tmp_path, "a", ttl=30)
    sub = a.acquire()
    a.close()
    os.unlink(tmp_path / "a" / "subnet-net1.json")
    a2 = lease(cluster, prefix, tmp_path, "a", ttl=30)
    assert a2.acquire() == sub and "no state file" in a2.status().reason
    a2.release()


def test_one_node_name_on_two_hosts(cluster, prefix, tmp_path):
    """Two agents given the same node name (hosts simulated as namespaces share one host
    name): the second one must not take the first one's subnet."""
    a = lease(cluster, prefix, tmp_path, "a")
    sub = a.acquire()
    twin = SubnetLease(cluster.client(), "net1", "10.20.0.0/20", node="a", state_dir=str(tmp_path / "twin"),
                       prefix=prefix, ttl=TTL)
    with pytest.raises(NodeNameInUse, match="node name a is in use by another host") as ei:
        twin.acquire()
    assert "expires in" in ei.value.details
    assert a.renew().state == "held" and a.subnet == sub
    assert (tmp_path / "a" / "host-id").read_text() != (tmp_path / "twin" / "host-id").read_text()


def test_reservation(cluster, prefix, tmp_path):
    """A subnet key put for a node without a lease (an operator's reservation): that node
    uses it and keeps it as it is, nobody else gets it."""
    e = cluster.client()
    key = Layout(prefix, "net1").subnet_key(net("10.20.5.0/24"))
    e.put(key, json.dumps({"node": "r"}))
    others = [lease(cluster, prefix, tmp_path, f"o{i}", choice="first") for i in range(6)]
    assert net("10.20.5.0/24") not in [o.acquire() for o in others]
    r = lease(cluster, prefix, tmp_path, "r")
    assert r.acquire() == net("10.20.5.0/24") and r.status().reason == "uses its reservation"
    r.bind(f"{prefix}/rec", "x")
    assert r.renew().state == "held"
    r.release()
    assert e.get(key).value == json.dumps({"node": "r"}).encode() and e.get(f"{prefix}/rec") is None


def test_taken_while_away(cluster, prefix, tmp_path):
    """a's lease expired while it was down and b took its subnet: a restart is SubnetTaken
    naming b; with allow_new, a gets another one."""
    a = lease(cluster, prefix, tmp_path, "a", cidr="10.40.0.0/23", choice="first")
    assert a.acquire() == net("10.40.0.0/24")
    a.close()
    e = cluster.client()
    assert wait_for(lambda: e.get(Layout(prefix, "net1").subnet_key(net("10.40.0.0/24"))) is None, TTL + 3)
    b = lease(cluster, prefix, tmp_path, "b", cidr="10.40.0.0/23", choice="first")
    assert b.acquire() == net("10.40.0.0/24")
    a2 = lease(cluster, prefix, tmp_path, "a", cidr="10.40.0.0/23", choice="first")
    with pytest.raises(SubnetTaken, match="subnet 10.40.0.0/24 of node a .* is now leased by node b") as ei:
        a2.acquire()
    assert ei.value.holder == "b" and a2.status().state == "lost" and not a2.status().usable
    assert a2.acquire(allow_new=True) == net("10.40.1.0/24")


def test_expiry_frees_and_renew_reclaims(cluster, prefix, tmp_path):
    """No keep-alive for longer than the TTL: the key (and the bound record) is gone; the
    next renewal claims the same subnet with a new lease and puts the record back."""
    a = lease(cluster, prefix, tmp_path, "a")
    sub = a.acquire()
    a.bind(f"{prefix}/extra", "rec")
    e = cluster.client()
    key = Layout(prefix, "net1").subnet_key(sub)
    old = a.lease
    assert wait_for(lambda: e.get(key) is None, TTL + 3)
    assert e.get(f"{prefix}/extra") is None
    st = a.renew()
    assert (st.state, st.subnet, st.reason) == ("held", sub, "re-claimed after its lease expired")
    assert a.lease != old and e.get(key).lease == a.lease and e.get(f"{prefix}/extra").lease == a.lease
    assert int(json.loads((tmp_path / "a" / "subnet-net1.json").read_text())["lease"]) == a.lease


def test_taken_after_expiry_is_lost(cluster, prefix, tmp_path):
    a = lease(cluster, prefix, tmp_path, "a", cidr="10.40.0.0/23", choice="first")
    changes = []
    a.on_change = changes.append
    sub = a.acquire()
    e = cluster.client()
    assert wait_for(lambda: e.get(Layout(prefix, "net1").subnet_key(sub)) is None, TTL + 3)
    lease(cluster, prefix, tmp_path, "b", cidr="10.40.0.0/23", choice="first").acquire()
    st = a.renew()
    assert st.state == "lost" and not st.usable
    assert "taken by node b after this host's lease expired" in st.reason
    with pytest.raises(SubnetTaken):
        a.check()
    assert [c.state for c in changes] == ["held", "lost"]


def test_keepalive_thread_holds(cluster, prefix, tmp_path):
    a = lease(cluster, prefix, tmp_path, "a").start()
    sub = a.acquire()
    time.sleep(2.5 * TTL)
    e = cluster.client()
    kv = e.get(Layout(prefix, "net1").subnet_key(sub))
    assert kv is not None and kv.lease == a.lease and a.status().state == "held"
    a.release()
    assert e.get(Layout(prefix, "net1").subnet_key(sub)) is None
    assert not (tmp_path / "a" / "subnet-net1.json").exists()


def test_one_member_killed(cluster, prefix, tmp_path):
    """A member down (the leader, if it was the first endpoint): renewals and new claims
    go on through the others."""
    a = lease(cluster, prefix, tmp_path, "a").start()
    a.acquire()
    cluster.members[0].kill()
    b = lease(cluster, prefix, tmp_path, "b")
    assert b.acquire() != a.subnet
    time.sleep(1.5 * TTL)
    assert a.status().state == "held"


def test_all_members_down(cluster, prefix, tmp_path):
    """Every member down: a held subnet stays usable ("unreachable", with the reason), a
    new host cannot claim (ClusterUnavailable naming the endpoints), and all recovers when
    etcd returns (leases do not expire while the cluster has no leader)."""
    a = lease(cluster, prefix, tmp_path, "a", client=cluster.client(timeout=0.5, retry_for=1.0)).start()
    sub = a.acquire()
    for m in cluster.members:
        m.kill()
    assert wait_for(lambda: a.status().state == "unreachable", 3 * TTL)
    st = a.status()
    assert st.usable and st.subnet == sub and a.check() == sub
    assert "connection refused" in st.reason and cluster.members[2].url in st.reason
    b = lease(cluster, prefix, tmp_path, "b", client=cluster.client(timeout=0.5, retry_for=1.0))
    t0 = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="no etcd endpoint answered") as ei:
        b.acquire()
    assert time.monotonic() - t0 < 5
    assert all(m.url in ei.value.details for m in cluster.members)
    assert b.status().state == "none"
    with pytest.raises(ClusterError, match="holds no subnet"):
        b.check()
    for m in cluster.members:
        m.start()
    assert wait_for(lambda: a.status().state == "held", 20), a.status()
    assert a.subnet == sub
    assert b.acquire() != sub


CLAIMER = r"""
import json, sys
from splice.ipam.cluster.etcd import Etcd
from splice.ipam.cluster.subnets import SubnetLease
eps, prefix, node, state_dir = sys.argv[1:5]
sl = SubnetLease(Etcd(eps.split(",")), "pnet", "10.60.0.0/21", node=node, state_dir=state_dir, prefix=prefix,
                 ttl=10, choice="first")
print("ready", flush=True)
sys.stdin.readline()
try:
    print(json.dumps({"subnet": str(sl.acquire())}), flush=True)
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "msg": str(e)}), flush=True)
"""


def test_concurrent_claims_from_processes(cluster, prefix, tmp_path):
    """10 processes (10 hosts) claim at once from 8 subnets: 8 distinct subnets, covering
    the CIDR, and 2 clear NoFreeSubnet errors."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, ",".join(cluster.endpoints), prefix, f"p{i}",
                               str(tmp_path / f"p{i}")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for i in range(10)]   # (started from the client namespace: they inherit it)
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("\n")
            p.stdin.flush()
        results = [json.loads(p.stdout.readline()) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    subnets = sorted(net(r["subnet"]) for r in results if "subnet" in r)
    assert subnets == list(net("10.60.0.0/21").subnets(new_prefix=24)), results
    errors = [r for r in results if "error" in r]
    assert len(errors) == 2 and all(r["error"] == "NoFreeSubnet" for r in errors), errors


def test_host_cut_off_loses_subnet(cluster, prefix, tmp_path):
    """This host is cut off the network while the cluster is whole: its subnet stays
    usable while it cannot tell ("unreachable"); the cluster expires its lease, another
    host takes the subnet; back on the network, the host learns it is lost."""
    a = lease(cluster, prefix, tmp_path, "a", cidr="10.40.0.0/23", choice="first",
              client=cluster.client(timeout=0.5, retry_for=1.0)).start()
    sub = a.acquire()
    cluster.cut_client()
    assert wait_for(lambda: a.status().state == "unreachable", 3 * TTL)
    assert a.check() == sub

    def other_host():
        e = cluster.client()
        assert wait_for(lambda: e.get(Layout(prefix, "net1").subnet_key(sub)) is None, TTL + 3)
        b = SubnetLease(e, "net1", "10.40.0.0/23", node="b", state_dir=str(tmp_path / "b"), prefix=prefix, ttl=TTL,
                        choice="first")
        return b.acquire()

    assert cluster.run2(other_host) == sub
    assert wait_for(lambda: "longer than its TTL" in a.status().reason, 2 * TTL), a.status()
    assert a.status().state == "unreachable"
    cluster.cut_client(False)
    assert wait_for(lambda: a.status().state == "lost", 3 * TTL), a.status()
    assert "taken by node b after this host's lease expired" in a.status().reason
    with pytest.raises(SubnetTaken):
        a.check()
