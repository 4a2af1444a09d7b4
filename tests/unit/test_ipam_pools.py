"""splice.ipam.pools: the pool-keyed API (Docker remote IPAM semantics), persistence,
concurrency, crash safety; and the CNI side's release by address."""

from __future__ import annotations

import ipaddress
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from splice.ipam.allocator import Ipam
from splice.ipam.config import parse_ipam_config
from splice.ipam.errors import (
    AddressOutOfRange,
    AddressUnavailable,
    InvalidRequest,
    IpamConfigError,
    NoMoreSubnets,
    PoolExhausted,
    PoolNotFound,
    PoolOverlaps,
    StoreBusy,
)
from splice.ipam.pools import POOLS_DB, Pool, PoolIpam, PoolLease, default_pools, parse_pool_id, ula_base
from splice.ipam.store import join

A = ipaddress.ip_address
I = ipaddress.ip_interface
N = ipaddress.ip_network

DEFAULTS = [("10.200.0.0/16", 24), ("fd00:200::/48", 64)]


def make(tmp_path: Path, **kw) -> PoolIpam:
    kw.setdefault("default_pools", DEFAULTS)
    return PoolIpam(str(tmp_path), **kw)


def ips(leases) -> list[str]:
    return [str(l.address.ip) for l in leases]


def db(tmp_path: Path, space: str = "sp") -> sqlite3.Connection:
    return sqlite3.connect(str(tmp_path / space / POOLS_DB))


# --------------------------------------------------------------------------- pools


def test_explicit_pool_shape_and_registry(tmp_path):
    p = make(tmp_path)
    pool = p.request_pool("sp", "10.250.0.0/24", options={"opt": "1"})
    assert pool == Pool("sp/10.250.0.0/24", "sp", N("10.250.0.0/24"), None, None)
    assert pool.options == {"opt": "1"} and pool.created > 0 and not pool.from_defaults
    assert p.get_pool(pool.id) == pool and p.get_pool(pool.id).options == {"opt": "1"}
    assert p.pools("sp") == [pool]
    assert p.pools("other") == [] and not (tmp_path / "other").exists()  # reads never create a store
    assert parse_pool_id(pool.id) == "sp"


def test_pool_host_bits_are_masked_and_ids_are_canonical(tmp_path):
    p = make(tmp_path)
    assert p.request_pool("sp", "10.250.0.77/24").id == "sp/10.250.0.0/24"
    assert p.request_pool("sp", "FD00:0250:0001::5/64", v6=True).id == "sp/fd00:250:1::/64"


@pytest.mark.parametrize("first, second", [
    ("10.1.0.0/16", "10.1.5.0/24"),      # inside
    ("10.1.5.0/24", "10.1.0.0/16"),      # around
])
def test_overlapping_explicit_pools(tmp_path, first, second):
    p = make(tmp_path)
    p.request_pool("sp", first)
    with pytest.raises(PoolOverlaps, match=r"address space sp"):
        p.request_pool("sp", second)
    p.request_pool("other", second)  # another address space is independent
    assert [x.id for x in p.pools("sp")] == [f"sp/{first}"]


def test_the_same_pool_again_is_a_counted_reference(tmp_path):
    """libnetwork's default IPAM (updatePoolDBOnAdd): the same explicit pool requested again
    answers the same pool id and counts a reference; ReleasePool drops one, the last takes
    the pool and its addresses. A pool picked from the default ranges is not shared."""
    p = make(tmp_path)
    a = p.request_pool("sp", "10.1.0.0/24")
    got = p.request_address(a.id, "10.1.0.5")
    assert p.request_pool("sp", "10.1.0.9/24") == a  # the same pool: the same answer
    assert p.request_pool("sp", "10.1.0.0/24") == a
    assert p.release_pool(a.id) == [] and p.release_pool(a.id) == []  # 3 references, 2 dropped
    assert [x.id for x in p.pools("sp")] == [a.id] and ips(p.leases(a.id)) == ["10.1.0.5"]
    assert [str(l.address.ip) for l in p.release_pool(a.id)] == [str(got.address.ip)]  # the last one
    assert p.pools("sp") == []
    with pytest.raises(PoolNotFound):
        p.release_pool(a.id)
    again = p.request_pool("sp", "10.1.0.0/24")  # a fresh pool: one reference
    p.release_pool(again.id)
    assert p.pools("sp") == []
    d = p.request_pool("sp")
    with pytest.raises(PoolOverlaps, match="from the default pools"):
        p.request_pool("sp", str(d.subnet))


def test_same_subnet_with_a_new_sub_range_shares_the_subnet(tmp_path):
    """libnetwork: the same pool is an overlap unless the request names a sub-range the
    subnet was not requested with yet; then both allocate from one address set."""
    p = make(tmp_path)
    whole = p.request_pool("sp", "10.1.0.0/24")
    a = p.request_pool("sp", "10.1.0.0/24", "10.1.0.0/25")
    b = p.request_pool("sp", "10.1.0.0/24", "10.1.0.128/25")
    assert (a.id, a.sub_range) == ("sp/10.1.0.0/24/10.1.0.0/25", N("10.1.0.0/25"))
    assert p.request_pool("sp", "10.1.0.0/24", "10.1.0.0/25") == a  # the same pool: a reference
    assert p.request_pool("sp", "10.1.0.0/24") == whole
    p.release_pool(a.id)
    p.release_pool(whole.id)
    assert ips([p.request_address(b.id)]) == ["10.1.0.128"]
    assert ips([p.request_address(a.id)]) == ["10.1.0.1"]
    assert ips([p.request_address(whole.id)]) == ["10.1.0.2"]  # the shared address set
    with pytest.raises(AddressUnavailable, match="already allocated"):
        p.request_address(whole.id, "10.1.0.128")
    # an explicit address may be anywhere in the subnet, outside the sub-range
    assert ips([p.request_address(b.id, "10.1.0.9")]) == ["10.1.0.9"]
    # releasing one sibling releases what was requested through it; the subnet stays
    gone = p.release_pool(b.id)
    assert sorted(ips(gone)) == ["10.1.0.128", "10.1.0.9"]
    assert ips(p.leases(a.id)) == ["10.1.0.1"] and ips(p.leases(whole.id)) == ["10.1.0.2"]
    # the subnet's last pool takes every address of it along
    p.release_pool(a.id)
    assert sorted(ips(p.release_pool(whole.id))) == ["10.1.0.2"]
    assert p.pools("sp") == []
    assert db(tmp_path).execute("SELECT count(*) FROM lease").fetchone() == (0,)


def test_addresses_freed_through_a_sibling_pool_are_reused_lowest_first(tmp_path):
    p = make(tmp_path)
    whole = p.request_pool("sp", "10.1.0.0/24")
    a = p.request_pool("sp", "10.1.0.0/24", "10.1.0.0/25")
    assert ips(p.request_address(whole.id) for _ in range(3)) == ["10.1.0.1", "10.1.0.2", "10.1.0.3"]
    assert ips([p.request_address(a.id)]) == ["10.1.0.4"]
    assert p.release_address(a.id, "10.1.0.2").pool_id == whole.id  # released through the sibling
    assert ips([p.request_address(a.id)]) == ["10.1.0.2"]
    assert ips([p.request_address(whole.id)]) == ["10.1.0.5"]
    b = p.request_pool("sp", "10.1.0.0/24", "10.1.0.0/30")
    p.release_pool(whole.id)  # .1 .3 .5 are free again for the siblings
    assert ips(p.request_address(a.id) for _ in range(3)) == ["10.1.0.1", "10.1.0.3", "10.1.0.5"]
    with pytest.raises(PoolExhausted):
        p.request_address(b.id)


def test_sub_range_needs_a_free_subnet_unless_shared(tmp_path):
    p = make(tmp_path)
    p.request_pool("sp", "10.1.0.0/24")
    with pytest.raises(PoolOverlaps):  # libnetwork skips this check (moby/moby#46756); splice does not
        p.request_pool("sp", "10.1.0.0/16", "10.1.9.0/24")


def test_sub_range_validation(tmp_path):
    p = make(tmp_path)
    with pytest.raises(InvalidRequest, match="without a pool"):
        p.request_pool("sp", "", "10.1.0.0/25")
    with pytest.raises(InvalidRequest, match="not inside"):
        p.request_pool("sp", "10.1.0.0/24", "10.2.0.0/25")
    with pytest.raises(InvalidRequest, match="different address families"):
        p.request_pool("sp", "10.1.0.0/24", "fd00::/120")
    # a sub-range wider than its pool means the whole pool (libnetwork compatibility)
    assert p.request_pool("sp", "10.1.0.0/24", "10.0.0.0/8").sub_range == N("10.1.0.0/24")


@pytest.mark.parametrize("kwargs, match", [
    ({"address_space": "", "pool": "10.0.0.0/24"}, "address space"),
    ({"address_space": "../x", "pool": "10.0.0.0/24"}, "address space"),
    ({"address_space": "sp", "pool": "10.0.0.0"}, "not a CIDR"),
    ({"address_space": "sp", "pool": "10.0.0.300/24"}, "not a CIDR"),
    ({"address_space": "sp", "pool": "10.0.0.0/24", "v6": True}, "IPv4, the request is for IPv6"),
    ({"address_space": "sp", "pool": "fd00::/64"}, "IPv6, the request is for IPv4"),
    ({"address_space": "sp", "pool": "10.0.0.0/24", "options": {"x": object()}}, "JSON"),
])
def test_bad_pool_requests(tmp_path, kwargs, match):
    with pytest.raises(InvalidRequest, match=match) as e:
        make(tmp_path).request_pool(**kwargs)
    assert isinstance(e.value, IpamConfigError)  # maps like a configuration error


def test_repeated_default_requests_get_distinct_non_overlapping_pools(tmp_path):
    p = make(tmp_path)
    got = [p.request_pool("sp") for _ in range(5)]
    assert [str(x.subnet) for x in got] == [f"10.200.{i}.0/24" for i in range(5)]
    assert all(x.from_defaults and x.id == f"sp/{x.subnet}" for x in got)
    # dockerd keeps the overlapping ones while it asks again, then releases them
    p.release_pool(got[1].id)
    assert p.request_pool("sp").subnet == N("10.200.1.0/24")  # the first free one again
    # explicit pools and excluded prefixes are skipped, wherever they sit
    p.request_pool("sp", "10.200.5.128/25")
    p.request_pool("sp", "10.200.6.0/23")
    assert p.request_pool("sp").subnet == N("10.200.8.0/24")
    assert p.request_pool("sp", exclude=["10.200.9.0/24", "10.200.10.7/32"]).subnet == N("10.200.11.0/24")
    with pytest.raises(PoolOverlaps):  # and an explicit request of a default-picked one is an overlap
        p.request_pool("sp", "10.200.0.0/16")
    nets = [x.subnet for x in p.pools("sp")]
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])


def test_default_pools_ipv6_and_exhaustion(tmp_path):
    p = make(tmp_path, default_pools=[("10.9.0.0/23", 24), ("fd00:200::/63", 64)])
    assert [str(p.request_pool("sp", v6=True).subnet) for _ in range(2)] == ["fd00:200::/64", "fd00:200:0:1::/64"]
    with pytest.raises(NoMoreSubnets, match=r"no free IPv6 subnet left .*fd00:200::/63 in /64") as e:
        p.request_pool("sp", v6=True)
    assert isinstance(e.value, PoolExhausted)
    p.request_pool("sp")
    p.request_pool("sp")
    with pytest.raises(NoMoreSubnets, match="IPv4"):
        p.request_pool("sp")
    none = make(tmp_path / "b", default_pools=[("10.9.0.0/23", 24)])
    with pytest.raises(NoMoreSubnets, match="none configured"):
        none.request_pool("sp", v6=True)


def test_builtin_defaults():
    (v4, v4size), (v6, v6size) = default_pools()
    assert (str(v4), v4size, v6size, v6.prefixlen) == ("10.200.0.0/16", 24, 64, 48)
    assert v6.subnet_of(N("fd00::/8"))  # a unique local address block
    assert ula_base("a") == ula_base("a") != ula_base("b")
    with pytest.raises(InvalidRequest, match="size"):
        PoolIpam("/nonexistent", default_pools=[("10.0.0.0/16", 8)])
    with pytest.raises(InvalidRequest, match="expected"):
        PoolIpam("/nonexistent", default_pools=["10.0.0.0/16"])


def test_release_pool_releases_its_addresses(tmp_path):
    p = make(tmp_path)
    pool = p.request_pool("sp", "10.250.0.0/24")
    p.request_address(pool.id, gateway=True)
    p.request_address(pool.id, owner="ep1")
    gone = p.release_pool(pool.id)
    assert gone == [PoolLease(pool.id, I("10.250.0.1/24")), PoolLease(pool.id, I("10.250.0.2/24"), "ep1")]
    for call in (lambda: p.release_pool(pool.id), lambda: p.get_pool(pool.id), lambda: p.leases(pool.id),
                 lambda: p.request_address(pool.id), lambda: p.release_address(pool.id, "10.250.0.2")):
        with pytest.raises(PoolNotFound, match="unknown pool id"):
            call()
    # the subnet can be requested again, from scratch
    again = p.request_pool("sp", "10.250.0.0/24")
    assert ips([p.request_address(again.id)]) == ["10.250.0.1"]


@pytest.mark.parametrize("bad", ["", "nope", "../x/10.0.0.0/24", None, 7, "sp/10.9.9.0/24", "zz/10.0.0.0/24"])
def test_unknown_pool_ids(tmp_path, bad):
    p = make(tmp_path)
    p.request_pool("sp", "10.0.0.0/24")
    with pytest.raises(PoolNotFound):
        p.request_address(bad)
    with pytest.raises(PoolNotFound):
        p.release_pool(bad)
    assert not (tmp_path / "zz").exists()


# --------------------------------------------------------------------------- addresses


def test_observed_dockerd_sequence(tmp_path):
    """The calls dockerd 20.10 made for `network create --subnet`, two containers, rm."""
    p = make(tmp_path)
    pool = p.request_pool("cllocal", "10.250.0.0/24", "", {}, False)
    gw = p.request_address(pool.id, "", gateway=True)
    assert str(gw.address) == "10.250.0.1/24" and p.get_pool(pool.id).gateway == A("10.250.0.1")
    assert str(p.request_address(pool.id).address) == "10.250.0.2/24"
    assert p.release_address(pool.id, "10.250.0.2") == PoolLease(pool.id, I("10.250.0.2/24"))
    assert str(p.request_address(pool.id, "10.250.0.50").address) == "10.250.0.50/24"
    assert str(p.request_address(pool.id).address) == "10.250.0.2/24"  # lowest free again
    # --gateway 10.250.1.254 and IPv6 with the first host address as gateway
    p2 = p.request_pool("cllocal", "10.250.1.0/24", options={"clipamopt": "2"})
    assert str(p.request_address(p2.id, "10.250.1.254", gateway=True).address) == "10.250.1.254/24"
    p6 = p.request_pool("cllocal", "fd00:250:1::/64", options={"clipamopt": "2"}, v6=True)
    assert str(p.request_address(p6.id, gateway=True).address) == "fd00:250:1::1/64"
    assert str(p.request_address(p2.id).address) == "10.250.1.1/24"
    assert str(p.request_address(p6.id).address) == "fd00:250:1::2/64"
    # network rm: gateway, then the pool
    assert p.release_address(p2.id, "10.250.1.254") is not None
    assert p.get_pool(p2.id).gateway is None
    p.release_address(p2.id, "10.250.1.1")
    assert p.release_pool(p2.id) == []


def test_request_address_errors(tmp_path):
    p = make(tmp_path)
    pool = p.request_pool("sp", "10.3.0.0/29")
    with pytest.raises(AddressOutOfRange, match="not in pool 10.3.0.0/29"):
        p.request_address(pool.id, "10.3.0.8")
    with pytest.raises(AddressOutOfRange):
        p.request_address(pool.id, "fd00::1")
    with pytest.raises(AddressUnavailable, match="network"):
        p.request_address(pool.id, "10.3.0.0")
    with pytest.raises(AddressUnavailable, match="broadcast"):
        p.request_address(pool.id, "10.3.0.7")
    with pytest.raises(InvalidRequest, match="not an IP address"):
        p.request_address(pool.id, "10.3.0.x")
    p.request_address(pool.id, "10.3.0.3/29", owner="ep")  # CIDR form accepted
    with pytest.raises(AddressUnavailable, match=r"already allocated \(pool id sp/10.3.0.0/29, owner ep\)"):
        p.request_address(pool.id, "10.3.0.3")
    assert ips(p.request_address(pool.id) for _ in range(5)) == ["10.3.0.1", "10.3.0.2", "10.3.0.4", "10.3.0.5",
                                                                  "10.3.0.6"]
    with pytest.raises(PoolExhausted, match="no free address left in pool 10.3.0.0/29"):
        p.request_address(pool.id)
    with pytest.raises(AddressOutOfRange):
        p.release_address(pool.id, "10.4.0.1")


def test_release_address_is_idempotent(tmp_path):
    p = make(tmp_path)
    pool = p.request_pool("sp", "10.3.0.0/24")
    lease = p.request_address(pool.id)
    assert p.release_address(pool.id, lease.address.ip) == lease
    assert p.release_address(pool.id, lease.address) is None
    assert p.release_address(pool.id, "10.3.0.77") is None
    with pytest.raises(InvalidRequest):
        p.release_address(pool.id, "")


def test_sub_range_allocation_and_gateway(tmp_path):
    p = make(tmp_path)
    pool = p.request_pool("sp", "10.5.0.0/16", "10.5.3.0/30")
    # as libnetwork: without an address, a gateway comes from the sub-range too
    assert ips([p.request_address(pool.id, gateway=True)]) == ["10.5.3.0"]
    assert ips(p.request_address(pool.id) for _ in range(3)) == ["10.5.3.1", "10.5.3.2", "10.5.3.3"]
    with pytest.raises(PoolExhausted, match="sub-pool 10.5.3.0/30 of pool 10.5.0.0/16"):
        p.request_address(pool.id)
    assert ips([p.request_address(pool.id, "10.5.0.1")]) == ["10.5.0.1"]
    # the sub-range never includes the subnet's reserved addresses
    edge = p.request_pool("sp", "10.6.0.0/24", "10.6.0.0/30")
    assert ips(p.request_address(edge.id) for _ in range(3)) == ["10.6.0.1", "10.6.0.2", "10.6.0.3"]


def test_lowest_free_with_releases_anywhere(tmp_path):
    """Next free = the lowest free address of the range, whatever was released where."""
    p = make(tmp_path)
    pool = p.request_pool("sp", "10.7.0.0/26")
    rnd = random.Random(7)
    held: set[int] = set()
    first, last = int(A("10.7.0.1")), int(A("10.7.0.62"))
    for step in range(600):
        if held and (len(held) == last - first + 1 or rnd.random() < 0.45):
            x = rnd.choice(sorted(held))
            assert p.release_address(pool.id, A(x)) is not None
            held.discard(x)
        elif rnd.random() < 0.2:
            free = [a for a in range(first, last + 1) if a not in held]
            x = rnd.choice(free)
            p.request_address(pool.id, A(x))
            held.add(x)
        else:
            want = min(a for a in range(first, last + 1) if a not in held)
            assert int(p.request_address(pool.id).address.ip) == want, step
            held.add(want)
    assert sorted(int(l.address.ip) for l in p.leases(pool.id)) == sorted(held)


def test_serial_round_robin(tmp_path):
    p = make(tmp_path)
    pool = p.request_pool("sp", "10.8.0.0/29")  # .1 .. .6
    assert ips(p.request_address(pool.id, serial=True) for _ in range(3)) == ["10.8.0.1", "10.8.0.2", "10.8.0.3"]
    p.release_address(pool.id, "10.8.0.1")
    assert ips(p.request_address(pool.id, serial=True) for _ in range(4)) == ["10.8.0.4", "10.8.0.5", "10.8.0.6",
                                                                              "10.8.0.1"]
    with pytest.raises(PoolExhausted):
        p.request_address(pool.id, serial=True)


def test_small_pools(tmp_path):
    p = make(tmp_path)
    p31 = p.request_pool("sp", "10.9.0.0/31")  # no reserved address (RFC 3021)
    assert ips(p.request_address(p31.id) for _ in range(2)) == ["10.9.0.0", "10.9.0.1"]
    p32 = p.request_pool("sp", "10.9.1.1/32")
    assert ips([p.request_address(p32.id)]) == ["10.9.1.1"]
    p128 = p.request_pool("sp", "fd00:9::1/128", v6=True)  # its one address is the anycast address
    with pytest.raises(PoolExhausted):
        p.request_address(p128.id)


def test_ipv6_pools(tmp_path):
    p = make(tmp_path)
    pool = p.request_pool("sp", "fd00:7::/64", v6=True)
    with pytest.raises(AddressUnavailable, match="first"):
        p.request_address(pool.id, "fd00:7::")  # subnet-router anycast: reserved
    assert ips(p.request_address(pool.id) for _ in range(2)) == ["fd00:7::1", "fd00:7::2"]
    top = p.request_pool("sp", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff8/125", v6=True)
    got = ips(p.request_address(top.id) for _ in range(7))
    assert got[-1] == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    with pytest.raises(PoolExhausted):
        p.request_address(top.id)
    assert p.release_address(top.id, got[-1]) is not None
    assert ips([p.request_address(top.id)]) == [got[-1]]
    # a /64 crossing nothing but with addresses on both halves of the 128-bit split
    wide = p.request_pool("sp", "fd00:8::/32", v6=True)
    x = p.request_address(wide.id, "fd00:8:0:1::")
    assert str(x.address) == "fd00:8:0:1::/32" and p.get_lease(wide.id, "fd00:8:0:1::") == x


def test_owners_release_owner_and_gc(tmp_path):
    p = make(tmp_path)
    a = p.request_pool("sp", "10.10.0.0/24")
    b = p.request_pool("sp", "10.11.0.0/24")
    gw = p.request_address(a.id, gateway=True)
    e1 = p.request_address(a.id, owner="ep1")
    e1b = p.request_address(b.id, owner="ep1")
    e2 = p.request_address(a.id, owner="ep2")
    anon = p.request_address(a.id)
    assert anon.key == f"pool:{a.id}:10.10.0.4" and e2.key == "ep2"
    assert p.release_owner("sp", "ep1") == [e1, e1b]
    assert p.release_owner("sp", "ep1") == []
    assert p.release_owner("nospace", "ep1") == []
    e3 = p.request_address(a.id, owner="ep3")
    assert e3.address == e1.address  # lowest free again after an owner release
    pools, leases = p.gc("sp", valid_owners=["ep3"])
    assert pools == [] and leases == [e2]
    assert ips(p.leases(a.id)) == ["10.10.0.1", "10.10.0.2", "10.10.0.4"]  # owner-less ones stay
    pools, leases = p.gc("sp", valid_pools=[a.id])
    assert [x.id for x in pools] == [b.id] and leases == []
    pools, leases = p.gc("sp", valid_pools=[])
    assert [x.id for x in pools] == [a.id] and sorted(ips(leases)) == ["10.10.0.1", "10.10.0.2", "10.10.0.4"]
    assert gw in leases
    assert p.gc("nospace", valid_pools=[]) == ([], [])


def test_persistence_across_reopen(tmp_path):
    p = make(tmp_path)
    pool = p.request_pool("sp", "10.12.0.0/24", "10.12.0.128/25", {"k": "v"})
    p.request_address(pool.id, gateway=True)
    p.request_address(pool.id, owner="ep")
    p.request_address(pool.id, serial=True)
    p.close()
    q = make(tmp_path)
    got = q.get_pool(pool.id)
    assert got == Pool(pool.id, "sp", N("10.12.0.0/24"), N("10.12.0.128/25"), A("10.12.0.128"))
    assert got.options == {"k": "v"} and got.created == pool.created
    assert [(str(l.address.ip), l.owner) for l in q.leases(pool.id)] == [
        ("10.12.0.128", None), ("10.12.0.129", "ep"), ("10.12.0.130", None)]
    assert ips([q.request_address(pool.id)]) == ["10.12.0.131"]  # hint survived
    assert ips([q.request_address(pool.id, serial=True)]) == ["10.12.0.132"]  # cursor too
    assert q.request_pool("sp", "10.12.0.0/24", "10.12.0.128/25") == got  # a reference, persisted
    assert q.release_pool(pool.id) == [] and make(tmp_path).get_pool(pool.id) == got
    assert q.request_pool("sp").subnet == N("10.200.0.0/24")


def test_store_is_indexed(tmp_path):
    p = make(tmp_path)
    p.request_pool("sp", "10.0.0.0/24")
    con = db(tmp_path)
    plans = {
        "pool": "SELECT * FROM lease WHERE pool_id='x'",
        "owner": "SELECT * FROM lease WHERE owner='x'",
        "addr": "SELECT * FROM lease WHERE fam=4 AND hi=1 AND lo=2",
        "subnet": "SELECT * FROM pool WHERE fam=4 AND s_hi=1 AND s_lo=2 AND prefix=24",
        "lowest hole": "SELECT hi, lo FROM hole WHERE pool_id='x' ORDER BY fam, hi, lo LIMIT 1",
        "hole by address": "SELECT * FROM hole WHERE fam=4 AND hi=1 AND lo=2",
        "leases of a subnet": "SELECT * FROM lease WHERE fam=4 AND (hi, lo) >= (1, 2) AND (hi, lo) <= (1, 9)",
    }
    for name, q in plans.items():
        plan = " ".join(r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + q))
        assert "USING" in plan and "SCAN" not in plan, (name, plan)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_store_busy(tmp_path):
    p = make(tmp_path, busy_timeout=0.2)
    pool = p.request_pool("sp", "10.0.0.0/24")
    con = sqlite3.connect(str(tmp_path / "sp" / POOLS_DB), isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusy):
            p.request_address(pool.id)
        with pytest.raises(StoreBusy):
            p.request_pool("sp")
        assert p.get_pool(pool.id) == pool  # reads still work
    finally:
        con.execute("ROLLBACK")
        con.close()


# --------------------------------------------------------------------------- concurrency


def test_threads_sharing_one_pool_ipam_get_distinct_addresses(tmp_path):
    p = make(tmp_path)
    pool = p.request_pool("sp", "10.13.0.0/22")
    out: list[str] = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(40):
                lease = p.request_address(pool.id, owner=f"t{n}")
                out.append(str(lease.address.ip))
                if i % 3 == 0:
                    p.release_address(pool.id, lease.address.ip)
                    out.remove(str(lease.address.ip))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert len(out) == len(set(out)) == 8 * 26
    assert sorted(out) == sorted(ips(p.leases(pool.id)))


_ENV = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")

_PROC_CHILD = r"""
import os, sys, time
from splice.ipam.pools import PoolIpam
data_dir, name, ready, go, pid = sys.argv[1:6]
p = PoolIpam(data_dir, default_pools=[("10.200.0.0/16", 24)])
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
out = []
for k in range(10):
    out.append(str(p.request_address(pid, owner=f"{name}-{k}").address.ip))
    out.append("pool=" + str(p.request_pool("sp").subnet))
print(" ".join(out), flush=True)
"""


def test_processes_allocating_in_one_pool_and_requesting_default_pools(tmp_path):
    p = make(tmp_path)
    pool = p.request_pool("sp", "10.14.0.0/24")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _PROC_CHILD, str(tmp_path), f"p{i}", str(tmp_path / f"r{i}"),
                               str(go), pool.id], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_ENV)
             for i in range(8)]
    deadline = time.monotonic() + 20
    while not all((tmp_path / f"r{i}").exists() for i in range(8)):
        assert time.monotonic() < deadline and all(x.poll() is None for x in procs)
        time.sleep(0.005)
    go.touch()
    words = []
    for x in procs:
        out, err = x.communicate(timeout=60)
        assert x.returncode == 0, err
        words += out.split()
    addrs = [w for w in words if not w.startswith("pool=")]
    pools = [w for w in words if w.startswith("pool=")]
    assert len(addrs) == len(set(addrs)) == 80
    assert sorted(addrs, key=lambda s: int(A(s))) == [f"10.14.0.{i}" for i in range(1, 81)]
    assert len(pools) == len(set(pools)) == 80
    assert {l.owner for l in p.leases(pool.id)} == {f"p{i}-{k}" for i in range(8) for k in range(10)}


# --------------------------------------------------------------------------- crash safety

_KILL_CHILD = r"""
import os, signal, sys
from splice.ipam import store
from splice.ipam.pools import PoolIpam
data_dir, op, pid = sys.argv[1:4]
p = PoolIpam(data_dir, default_pools=[("10.200.0.0/16", 24)])
store._txn_hook = lambda point: os.kill(os.getpid(), signal.SIGKILL)
if op == "pool":
    p.request_pool("sp")
elif op == "address":
    p.request_address(pid, owner="victim")
elif op == "release_address":
    p.release_address(pid, "10.15.0.1")
elif op == "release_pool":
    p.release_pool(pid)
"""


def test_sigkill_inside_each_transaction_leaves_the_store_as_before(tmp_path):
    p = make(tmp_path)
    pool = p.request_pool("sp", "10.15.0.0/24")
    p.request_address(pool.id, gateway=True)

    def snapshot():
        con = db(tmp_path)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            return (con.execute("SELECT id, gateway, t_hi, t_lo, c_hi, c_lo FROM pool ORDER BY id").fetchall(),
                    con.execute("SELECT fam, hi, lo, pool_id, owner FROM lease ORDER BY fam, hi, lo").fetchall(),
                    con.execute("SELECT * FROM hole ORDER BY pool_id, fam, hi, lo").fetchall())
        finally:
            con.close()

    before = snapshot()
    for op in ("pool", "address", "release_address", "release_pool"):
        x = subprocess.run([sys.executable, "-c", _KILL_CHILD, str(tmp_path), op, pool.id],
                           capture_output=True, text=True, env=_ENV, timeout=30)
        assert x.returncode == -signal.SIGKILL, (op, x.stderr)
        assert snapshot() == before, op
    q = make(tmp_path, busy_timeout=2)
    assert ips([q.request_address(pool.id)]) == ["10.15.0.2"]
    assert q.request_pool("sp").subnet == N("10.200.0.0/24")


_LOOP_CHILD = r"""
import random, sys
from splice.ipam.pools import PoolIpam
data_dir, pid, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
print("ready", flush=True)
i = 0
while True:
    p = PoolIpam(data_dir, default_pools=[("10.200.0.0/16", 24)])
    try:
        l = p.request_address(pid, owner=f"s{seed}-{i}")
        print("A", l.address.ip, flush=True)
    except Exception as e:
        print("E", type(e).__name__, flush=True)
    if rnd.random() < 0.5:
        held = p.leases(pid)
        if held:
            victim = rnd.choice(held).address.ip
            print("r", victim, flush=True)
            p.release_address(pid, victim)
            print("R", victim, flush=True)
    p.close()
    i += 1
"""


def test_sigkill_at_random_points_keeps_leases_and_holes_consistent(tmp_path):
    p = make(tmp_path)
    pool = p.request_pool("sp", "10.16.0.0/23")
    rnd = random.Random(99)
    held: set[str] = set()
    maybe: set[str] = set()
    for n in range(5):
        x = subprocess.Popen([sys.executable, "-c", _LOOP_CHILD, str(tmp_path), pool.id, str(n)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_ENV)
        assert x.stdout.readline().strip() == "ready", x.stderr.read()
        time.sleep(rnd.uniform(0.01, 0.08))
        x.send_signal(signal.SIGKILL)
        out, _ = x.communicate()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue
            if parts[0] == "A":
                held.add(parts[1])
            elif parts[0] == "r":
                maybe.add(parts[1])
            elif parts[0] == "R":
                held.discard(parts[1])
                maybe.discard(parts[1])
    assert held
    con = db(tmp_path)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = con.execute("SELECT hi, lo, owner FROM lease").fetchall()
    con.close()
    in_db = {str(ipaddress.ip_address(join(hi, lo))) for hi, lo, _ in rows}
    assert held - maybe <= in_db  # every reported commit survived
    assert len({o for _, _, o in rows}) == len(rows)  # one address per request, none half-done
    # top and holes are consistent with the leases: next free is still the lowest free address
    q = make(tmp_path)
    usable = [str(A(i)) for i in range(int(A("10.16.0.1")), int(A("10.16.1.255")))]
    free = [a for a in usable if a not in in_db]
    assert free and ips([q.request_address(pool.id)]) == free[:1]
    con = db(tmp_path)
    holes = {str(A(join(hi, lo))) for hi, lo in con.execute("SELECT hi, lo FROM hole")}
    (top,) = [str(A(join(hi, lo))) for hi, lo in con.execute("SELECT t_hi, t_lo FROM pool")]
    con.close()
    assert holes == {a for a in free[1:] if int(A(a)) < int(A(top))}  # every free address below top


# --------------------------------------------------------------------------- CNI: release by address


def test_cni_release_address_and_lookup(tmp_path):
    ipam = Ipam(parse_ipam_config({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd01::/120"}]],
                                   "dataDir": str(tmp_path)}, "net"))
    assert ipam.release_address("10.1.0.2") is None and ipam.lookup("10.1.0.2") is None  # no store yet
    assert not (tmp_path / "net").exists()
    v4, v6 = ipam.allocate("c1", "eth0")
    assert ipam.lookup(v4.address.ip) == v4 and ipam.lookup("fd01::2/120") == v6
    assert ipam.release_address(v4.address, "c2") is None  # someone else's: left alone
    assert ipam.release_address(v4.address, "c1", "eth1") is None
    assert ipam.release_address(str(v4.address.ip), "c1", "eth0") == v4
    assert ipam.release_address(v4.address.ip) is None  # idempotent
    assert ipam.get("c1", "eth0") == [v6]
    assert ipam.release_address("fd01::2") == v6 and ipam.get("c1", "eth0") == []
    with pytest.raises(IpamConfigError):
        ipam.release_address("not-an-ip")
