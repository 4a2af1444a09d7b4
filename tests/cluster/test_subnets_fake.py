"""SubnetLease's idempotence paths against an in-memory etcd (no root, no etcd): a write
that etcd applied but whose answer was lost is retried by the client; the claim must count
it as its own instead of holding a second subnet or failing."""

from __future__ import annotations

import itertools
import json

import pytest

from splice.ipam.cluster.errors import ClusterUnavailable
from splice.ipam.cluster.etcd import KV
from splice.ipam.cluster.subnets import Layout, SubnetLease


class FakeEtcd:
    """The few calls SubnetLease makes, with etcd's semantics; ``lose`` holds (call, key
    part) pairs: the next such call is applied, then answered with ClusterUnavailable (its
    answer lost for longer than the client retries)."""

    def __init__(self) -> None:
        self.kv: dict[bytes, KV] = {}
        self.rev = 1
        self.leases: dict[int, set[bytes]] = {}
        self.ids = itertools.count(1000)
        self.lose: list[str] = []
        self.calls: list[str] = []

    def _lost(self, name: str, key) -> None:
        self.calls.append(name)
        k = key.decode() if isinstance(key, bytes) else key
        for entry in self.lose:
            if entry[0] == name and entry[1] in k:
                self.lose.remove(entry)
                raise ClusterUnavailable(f"{name} {k}: answer lost")

    def _put(self, key, value, lease):
        k = key.encode() if isinstance(key, str) else key
        v = value.encode() if isinstance(value, str) else value
        self.rev += 1
        old = self.kv.get(k)
        if old is not None and old.lease in self.leases:
            self.leases[old.lease].discard(k)
        self.kv[k] = KV(k, v, old.create_revision if old else self.rev, self.rev, (old.version if old else 0) + 1, lease)
        if lease:
            self.leases[lease].add(k)

    def get(self, key, **kw):
        return self.kv.get(key.encode() if isinstance(key, str) else key)

    def range(self, key, *, prefix=False, **kw):
        k = key.encode() if isinstance(key, str) else key
        return sorted((v for kk, v in self.kv.items() if kk.startswith(k)), key=lambda v: v.key), self.rev

    def put(self, key, value, *, lease=0, **kw):
        self._put(key, value, lease)
        return self.rev

    def create(self, key, value, *, lease=0, **kw):
        existing = self.get(key)
        if existing is None:
            self._put(key, value, lease)
        self._lost("create", key)
        return (existing is None), existing

    def replace(self, key, value, *, mod_revision, lease=0, **kw):
        cur = self.get(key)
        ok = cur is not None and cur.mod_revision == mod_revision
        if ok:
            self._put(key, value, lease)
        self._lost("replace", key)
        return ok

    def lease_grant(self, ttl, **kw):
        lid = next(self.ids)
        self.leases[lid] = set()
        return lid, ttl

    def lease_keepalive(self, lid, **kw):
        return 10 if lid in self.leases else 0

    def lease_revoke(self, lid, **kw):
        for k in self.leases.pop(lid, set()):
            self.kv.pop(k, None)
        return True

    def lease_ttl(self, lid, **kw):
        return 10 if lid in self.leases else -1

    def expire(self, lid):
        self.lease_revoke(lid)


def make(fake, tmp_path, node="a", **kw):
    return SubnetLease(fake, "n", "10.9.0.0/22", node=node, state_dir=str(tmp_path / node), prefix="/p",
                       ttl=10, choice="first", **kw)


def subnet_keys(fake):
    return sorted(k.decode() for k in fake.kv if b"/subnets/" in k)


def test_lost_create_answer_is_not_a_second_subnet(tmp_path):
    """The claim's create applied, its answer never came: acquire() fails (and revokes the
    lease it granted, which takes the key with it); the next acquire() claims once."""
    fake = FakeEtcd()
    sl = make(fake, tmp_path)
    fake.lose = [("create", "/subnets/")]
    with pytest.raises(ClusterUnavailable):
        sl.acquire()
    assert subnet_keys(fake) == [] and sl.status().state == "none"
    assert str(sl.acquire()) == "10.9.0.0/24"
    assert subnet_keys(fake) == ["/p/n/subnets/10.9.0.0-24"]
    assert fake.get("/p/n/subnets/10.9.0.0-24").lease == sl.lease


def test_lost_create_answer_within_one_claim(tmp_path):
    """The claim's create applied but answered "lost": the retried create sees the key with
    this node, host and lease: created."""
    fake = FakeEtcd()
    sl = make(fake, tmp_path)
    real_create = fake.create
    state = {"n": 0}

    def create(key, value, *, lease=0, **kw):
        created, existing = real_create(key, value, lease=lease)
        if "/subnets/" in key and not state["n"]:
            state["n"] += 1
            assert created
            return real_create(key, value, lease=lease)  # the client's retry of a lost answer
        return created, existing

    fake.create = create
    assert str(sl.acquire()) == "10.9.0.0/24" and sl.status().reason == "claimed"
    assert state["n"] == 1 and subnet_keys(fake) == ["/p/n/subnets/10.9.0.0-24"]


def test_lost_replace_answer_takes_over_once(tmp_path):
    """No state file, this host's key under an old lease: the swap to the new lease applied
    but its answer said no (a retry): still one subnet, under the new lease."""
    fake = FakeEtcd()
    sl = make(fake, tmp_path)
    sub = sl.acquire()
    sl.close()
    (tmp_path / "a" / "subnet-n.json").unlink()
    sl2 = make(fake, tmp_path)
    real_replace = fake.replace

    def replace(key, value, *, mod_revision, lease=0, **kw):
        real_replace(key, value, mod_revision=mod_revision, lease=lease)
        return False   # applied, answered as the retry would see it

    fake.replace = replace
    assert sl2.acquire() == sub and "no state file" in sl2.status().reason
    assert subnet_keys(fake) == [f"/p/n/subnets/{sub.network_address}-24"]
    assert fake.get(Layout("/p", "n").subnet_key(sub)).lease == sl2.lease


def test_expired_lease_with_reservation_and_rebind(tmp_path):
    """renew(): the lease expired; a reserved subnet stays as it is and the bound record
    comes back under the new lease."""
    fake = FakeEtcd()
    fake.put("/p/n/subnets/10.9.2.0-24", json.dumps({"node": "r"}))
    sl = make(fake, tmp_path, node="r")
    assert str(sl.acquire()) == "10.9.2.0/24"
    sl.bind("/p/n/nodes/r", "rec")
    fake.expire(sl.lease)
    assert fake.get("/p/n/nodes/r") is None
    st = sl.renew()
    assert st.state == "held" and fake.get("/p/n/nodes/r").lease == sl.lease
    assert fake.get("/p/n/subnets/10.9.2.0-24").lease == 0
