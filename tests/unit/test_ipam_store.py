"""splice.ipam.allocator + store: host-local semantics, crash safety, concurrency."""

from __future__ import annotations

import ipaddress
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splice.ipam.allocator import Ipam, Lease
from splice.ipam.config import parse_ipam_config
from splice.ipam.errors import AddressUnavailable, IpamConfigError, PoolExhausted, StoreBusy, StoreError
from splice.ipam.store import DB_NAME, join, split

A = ipaddress.ip_address
I = ipaddress.ip_interface


def make(tmp_path: Path, ranges, network: str = "net", **kw) -> Ipam:
    cfg = parse_ipam_config({"ranges": ranges, "dataDir": str(tmp_path)}, network)
    return Ipam(cfg, **kw)


def addrs(leases: list[Lease]) -> list[str]:
    return [str(l.address.ip) for l in leases]


def db_rows(tmp_path: Path, network: str = "net") -> list[tuple]:
    con = sqlite3.connect(str(tmp_path / network / DB_NAME))
    try:
        return con.execute("SELECT fam, hi, lo, container_id, ifname FROM lease").fetchall()
    finally:
        con.close()


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("addr", [0, 1, 2**32 - 1, 2**63, 2**64 - 1, 2**64, 2**127, 2**128 - 1])
def test_address_encoding_roundtrip_and_order(addr):
    hi, lo = split(addr)
    assert -(2**63) <= hi < 2**63 and -(2**63) <= lo < 2**63
    assert join(hi, lo) == addr
    if addr:
        assert split(addr - 1) < (hi, lo)


# --------------------------------------------------------------------------- semantics


def test_lease_shape(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/24"}]])
    (lease,) = ipam.allocate("c1", "eth0")
    assert lease == Lease(I("10.1.0.2/24"), A("10.1.0.1"), 0, "c1", "eth0")
    with pytest.raises(AttributeError):
        lease.range_set = 3  # type: ignore[misc]
    assert ipam.get("c1", "eth0") == [lease]


def test_round_robin_and_wrap(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/29"}]])  # .2 .. .6 usable (.1 gateway)
    assert addrs(ipam.allocate("a", "eth0")) == ["10.1.0.2"]
    assert addrs(ipam.allocate("b", "eth0")) == ["10.1.0.3"]
    ipam.release("a", "eth0")
    assert addrs(ipam.allocate("c", "eth0")) == ["10.1.0.4"]  # not the freed .2: round robin
    assert addrs(ipam.allocate("d", "eth0")) == ["10.1.0.5"]
    assert addrs(ipam.allocate("e", "eth0")) == ["10.1.0.6"]
    assert addrs(ipam.allocate("f", "eth0")) == ["10.1.0.2"]  # wrapped
    with pytest.raises(PoolExhausted, match=r"range set 0 \(10.1.0.0/29"):
        ipam.allocate("g", "eth0")
    assert ipam.get("g", "eth0") == []
    assert len(db_rows(tmp_path)) == 5


def test_round_robin_survives_reopen(tmp_path):
    make(tmp_path, [[{"subnet": "10.1.0.0/24"}]]).allocate("a", "eth0")
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/24"}]])
    ipam.release("a", "eth0")
    assert addrs(ipam.allocate("b", "eth0")) == ["10.1.0.3"]


def test_wrap_across_ranges_of_a_set(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.11"},
                            {"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.20", "rangeEnd": "10.2.0.21"}]])
    got = [ipam.allocate(f"c{i}", "eth0")[0] for i in range(4)]
    assert [str(l.address) for l in got] == ["10.1.0.10/24", "10.1.0.11/24", "10.2.0.20/24", "10.2.0.21/24"]
    assert [str(l.gateway) for l in got] == ["10.1.0.1", "10.1.0.1", "10.2.0.1", "10.2.0.1"]
    ipam.release("c1", "eth0")
    ipam.release("c0", "eth0")
    assert addrs(ipam.allocate("c4", "eth0")) == ["10.1.0.10"]  # wrapped from the end of range 2
    assert addrs(ipam.allocate("c5", "eth0")) == ["10.1.0.11"]
    with pytest.raises(PoolExhausted):
        ipam.allocate("c6", "eth0")


def test_gateway_never_handed_out(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/29", "gateway": "10.1.0.3"}]])
    got = [addrs(ipam.allocate(f"c{i}", "eth0"))[0] for i in range(5)]
    assert got == ["10.1.0.1", "10.1.0.2", "10.1.0.4", "10.1.0.5", "10.1.0.6"]
    with pytest.raises(PoolExhausted):
        ipam.allocate("x", "eth0")
    with pytest.raises(AddressUnavailable, match="10.1.0.3 is a gateway"):
        make(tmp_path, [[{"subnet": "10.1.0.0/29", "gateway": "10.1.0.3"}]], network="n2").allocate(
            "y", "eth0", [A("10.1.0.3")])


def test_requested_addresses(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/24", "rangeEnd": "10.1.0.100"}]])
    assert addrs(ipam.allocate("a", "eth0", [A("10.1.0.50")])) == ["10.1.0.50"]
    assert addrs(ipam.allocate("b", "eth0")) == ["10.1.0.51"]  # cursor follows the requested one
    assert addrs(ipam.allocate("c", "eth0", [I("10.1.0.7/24")])) == ["10.1.0.7"]
    assert addrs(ipam.allocate("d", "eth0", ["10.1.0.8"])) == ["10.1.0.8"]
    with pytest.raises(AddressUnavailable, match=r"10.1.0.50 is already allocated to container a \(interface eth0\)"):
        ipam.allocate("e", "eth0", [A("10.1.0.50")])
    with pytest.raises(AddressUnavailable, match="10.1.0.200 is not in any range"):
        ipam.allocate("e", "eth0", [A("10.1.0.200")])  # in the subnet, outside rangeEnd
    with pytest.raises(AddressUnavailable, match="fd00::5 is not in any range"):
        ipam.allocate("e", "eth0", [A("fd00::5")])
    with pytest.raises(AddressUnavailable, match="10.1.0.1 is a gateway"):
        ipam.allocate("e", "eth0", [A("10.1.0.1")])
    with pytest.raises(AddressUnavailable, match="only one address per range set"):
        ipam.allocate("e", "eth0", [A("10.1.0.60"), A("10.1.0.61")])
    with pytest.raises(IpamConfigError, match="not an IP address"):
        ipam.allocate("e", "eth0", ["nope"])
    assert ipam.get("e", "eth0") == []
    assert len(db_rows(tmp_path)) == 4


def test_duplicate_allocation(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/24"}]])
    ipam.allocate("a", "eth0")
    with pytest.raises(AddressUnavailable, match="duplicate allocation"):
        ipam.allocate("a", "eth0")
    with pytest.raises(AddressUnavailable, match="duplicate allocation"):
        ipam.allocate("a", "eth0", [A("10.1.0.9")])
    assert addrs(ipam.allocate("a", "eth1")) == ["10.1.0.3"]  # another interface is another owner
    assert len(db_rows(tmp_path)) == 2


def test_dual_stack(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]])
    leases = ipam.allocate("a", "eth0")
    assert [str(l.address) for l in leases] == ["10.1.0.2/24", "fd00::2/64"]
    assert [l.range_set for l in leases] == [0, 1]
    leases = ipam.allocate("b", "eth0", [A("fd00::abcd")])
    assert [str(l.address) for l in leases] == ["10.1.0.3/24", "fd00::abcd/64"]
    assert addrs(ipam.release("a", "eth0")) == ["10.1.0.2", "fd00::2"]
    assert ipam.get("a", "eth0") == []


def test_all_or_nothing(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]])
    ipam.allocate("a", "eth0")  # 10.1.0.2, fd00::2
    before = sorted(db_rows(tmp_path))
    with pytest.raises(AddressUnavailable, match="fd00::2 is already allocated"):
        ipam.allocate("b", "eth0", [A("10.1.0.77"), A("fd00::2")])
    assert sorted(db_rows(tmp_path)) == before
    # neither the address nor the round-robin cursor moved
    assert addrs(ipam.allocate("b", "eth0")) == ["10.1.0.3", "fd00::3"]


def test_pool_exhaustion_leaves_nothing_half_reserved(tmp_path):
    # /30: .1 is the gateway, .2 the only address; the IPv6 set has plenty
    ipam = make(tmp_path, [[{"subnet": "fd00::/64"}], [{"subnet": "10.1.0.0/30"}]])
    assert addrs(ipam.allocate("a", "eth0")) == ["fd00::2", "10.1.0.2"]
    with pytest.raises(PoolExhausted, match=r"range set 1 \(10.1.0.0/30 \[10.1.0.1-10.1.0.2\]\) of network net"):
        ipam.allocate("b", "eth0")
    assert ipam.get("b", "eth0") == []
    assert len(db_rows(tmp_path)) == 2
    ipam.release("a", "eth0")
    assert addrs(ipam.allocate("b", "eth0")) == ["fd00::3", "10.1.0.2"]  # v6 cursor did not move on failure


def test_release_idempotent_and_returns_leases(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/24"}]])
    leases = ipam.allocate("a", "eth0")
    assert ipam.release("a", "eth0") == leases
    assert ipam.release("a", "eth0") == []
    assert ipam.get("a", "eth0") == []


def test_release_get_gc_never_create_a_store(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/24"}]])
    assert ipam.release("a", "eth0") == []
    assert ipam.get("a", "eth0") == []
    assert ipam.gc(set()) == []
    assert not (tmp_path / "net").exists()


def test_gc(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/64"}]])
    for c in ("a", "b", "c"):
        ipam.allocate(c, "eth0")
    ipam.allocate("a", "eth1")
    gone = ipam.gc({("a", "eth0"), ("c", "eth0"), ("zzz", "eth0")})
    assert sorted({(l.container_id, l.ifname) for l in gone}) == [("a", "eth1"), ("b", "eth0")]
    assert len(gone) == 4
    assert {(r[3], r[4]) for r in db_rows(tmp_path)} == {("a", "eth0"), ("c", "eth0")}
    assert ipam.gc({("a", "eth0"), ("c", "eth0")}) == []
    assert len(ipam.gc(set())) == 4
    assert db_rows(tmp_path) == []


def test_status(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/30"}]])
    ipam.status()  # creates and writes the store
    assert (tmp_path / "net" / DB_NAME).exists()
    ipam.allocate("a", "eth0")
    with pytest.raises(PoolExhausted, match="no free address left in range set"):
        ipam.status()
    ipam.release("a", "eth0")
    ipam.status()
    ds = make(tmp_path, [[{"subnet": "10.2.0.0/30"}], [{"subnet": "fd00::/64"}]], network="ds")
    ds.allocate("a", "eth0", [A("10.2.0.2")])
    # the IPv6 set still has room, but ADD needs one address from each set: not available
    with pytest.raises(PoolExhausted, match="10.2.0.0/30"):
        ds.status()


def test_data_dir_that_is_a_file_is_a_config_error(tmp_path):
    # issue 9 item 9: a regular file as dataDir (or above it) is IpamConfigError (CNI code 7)
    # naming the path and the problem, not an internal error (code 100)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for data_dir in (blocker, blocker / "sub"):
        cfg = parse_ipam_config({"subnet": "10.1.0.0/24", "dataDir": str(data_dir)}, "net")
        with pytest.raises(IpamConfigError, match=rf"{blocker} is a regular file, not a directory .*dataDir"):
            Ipam(cfg).status()
        with pytest.raises(IpamConfigError, match="is a regular file"):
            Ipam(cfg).allocate("c", "eth0")
    # the store directory itself a file, the database a directory
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "net").write_text("x")
    with pytest.raises(IpamConfigError, match=rf"{tmp_path / 'd' / 'net'} is a regular file"):
        make(tmp_path / "d", [[{"subnet": "10.1.0.0/24"}]]).allocate("c", "eth0")
    (tmp_path / "e" / "net" / DB_NAME).mkdir(parents=True)
    with pytest.raises(StoreError, match=rf"{tmp_path / 'e' / 'net' / DB_NAME} is a directory, not a database"):
        make(tmp_path / "e", [[{"subnet": "10.1.0.0/24"}]]).allocate("c", "eth0")


def test_status_store_error(tmp_path, monkeypatch):
    def denied(path, mode=0o777):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "mkdir", denied)
    cfg = parse_ipam_config({"subnet": "10.1.0.0/24", "dataDir": str(tmp_path / "data")}, "net")
    with pytest.raises(StoreError, match=rf"cannot create IPAM store directory {tmp_path / 'data'}: Permission denied"):
        Ipam(cfg).status()


def test_corrupt_store_is_a_store_error(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/24"}]])
    ipam.allocate("a", "eth0")
    ipam.close()
    (tmp_path / "net" / DB_NAME).write_bytes(b"garbage" * 1000)
    for f in ("-wal", "-shm"):
        p = tmp_path / "net" / (DB_NAME + f)
        if p.exists():
            p.unlink()
    with pytest.raises(StoreError, match="unusable"):
        make(tmp_path, [[{"subnet": "10.1.0.0/24"}]]).allocate("b", "eth0")


def test_ipv6_range_crossing_64_bit_boundary(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "fd00::/56", "rangeStart": "fd00::ffff:ffff:ffff:fffe",
                             "rangeEnd": "fd00:0:0:1::2"}]])
    got = [addrs(ipam.allocate(f"c{i}", "eth0"))[0] for i in range(5)]
    assert got == ["fd00::ffff:ffff:ffff:fffe", "fd00::ffff:ffff:ffff:ffff", "fd00:0:0:1::", "fd00:0:0:1::1",
                   "fd00:0:0:1::2"]
    with pytest.raises(PoolExhausted):
        ipam.allocate("x", "eth0")
    ipam.release("c1", "eth0")
    assert addrs(ipam.allocate("x", "eth0")) == ["fd00::ffff:ffff:ffff:ffff"]


def test_ipv6_top_of_address_space(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "ffff:ffff:ffff:ffff::/64"}]])
    assert addrs(ipam.allocate("a", "eth0")) == ["ffff:ffff:ffff:ffff::2"]
    last = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    assert addrs(ipam.allocate("b", "eth0", [A(last)])) == [last]
    assert addrs(ipam.allocate("c", "eth0")) == ["ffff:ffff:ffff:ffff::3"]  # cursor at the end: wrapped


def test_gap_search_finds_a_deep_hole(tmp_path):
    """The next free address after a long occupied run comes from the indexed gap query."""
    ipam = make(tmp_path, [[{"subnet": "10.8.0.0/20"}]])  # .0.2 .. .15.254 (4093 addresses)
    ipam.allocate("seed", "eth0")
    base = int(A("10.8.0.3"))
    with ipam.store.write() as tx:
        for i in range(4000):
            if i != 3210:
                tx.insert(4, base + i, 20, "10.8.0.1", 0, f"bulk{i}", "eth0")
        tx.set_cursor(0, 4, int(A("10.8.0.1")))
    assert addrs(ipam.allocate("x", "eth0")) == [str(A(base + 3210))]
    assert addrs(ipam.allocate("y", "eth0")) == [str(A(base + 4000))]


# --------------------------------------------------------------------------- processes

_ENV = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")

PER_CHILD = 8  # allocations per process: more chances to interleave
_CONCURRENT_CHILD = f"PER_CHILD = {PER_CHILD}\n" + r"""
import os, sys, time
from splice.ipam.allocator import Ipam
from splice.ipam.config import parse_ipam_config
data_dir, cid, ready, go = sys.argv[1:5]
ipam = Ipam(parse_ipam_config({"subnet": "10.20.0.0/24", "dataDir": data_dir}, "net"))
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
for k in range(PER_CHILD):
    (lease,) = ipam.allocate(f"{cid}-{k}", "eth0")
    print(lease.address, flush=True)
"""


def test_16_concurrent_processes_get_distinct_addresses(tmp_path):
    go = tmp_path / "go"
    procs = []
    for i in range(16):
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_CHILD, str(tmp_path), f"p{i}", str(tmp_path / f"ready{i}"), str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_ENV))
    deadline = time.monotonic() + 20
    while not all((tmp_path / f"ready{i}").exists() for i in range(16)):
        assert time.monotonic() < deadline, "children did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
        time.sleep(0.005)
    go.touch()  # the store does not exist yet: they also race to create it
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        outs.extend(out.split())
    assert len(outs) == 16 * PER_CHILD and len(set(outs)) == len(outs), outs
    assert all(o.startswith("10.20.0.") and o != "10.20.0.1/24" for o in outs)
    rows = db_rows(tmp_path)
    assert len(rows) == len(outs)
    assert {r[3] for r in rows} == {f"p{i}-{k}" for i in range(16) for k in range(PER_CHILD)}


_KILL_IN_TXN_CHILD = r"""
import sys, time
from splice.ipam import store
from splice.ipam.allocator import Ipam
from splice.ipam.config import parse_ipam_config
data_dir, marker = sys.argv[1:3]
def hook(point):
    open(marker, "w").write(point)
    time.sleep(60)
store._txn_hook = hook
Ipam(parse_ipam_config({"subnet": "10.30.0.0/24", "dataDir": data_dir}, "net")).allocate("victim", "eth0")
"""


def _integrity(tmp_path: Path) -> str:
    con = sqlite3.connect(str(tmp_path / "net" / DB_NAME))
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def test_sigkill_while_holding_the_write_transaction(tmp_path):
    cfg = parse_ipam_config({"subnet": "10.30.0.0/24", "dataDir": str(tmp_path)}, "net")
    assert addrs(Ipam(cfg).allocate("first", "eth0")) == ["10.30.0.2"]
    marker = tmp_path / "in-txn"
    p = subprocess.Popen([sys.executable, "-c", _KILL_IN_TXN_CHILD, str(tmp_path), str(marker)],
                         stderr=subprocess.PIPE, env=_ENV)
    try:
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert p.poll() is None, p.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # the child holds the write lock with its lease inserted but not committed
        with pytest.raises(StoreBusy, match="locked by another process"):
            Ipam(cfg, busy_timeout=0.2).allocate("other", "eth0")
        assert Ipam(cfg).get("victim", "eth0") == []  # readers never see uncommitted rows
    finally:
        p.kill()
        p.wait()
    assert p.returncode == -signal.SIGKILL
    assert _integrity(tmp_path) == "ok"
    ipam = Ipam(cfg, busy_timeout=2)
    assert ipam.get("victim", "eth0") == []
    # the victim's address (.3) and its cursor move were rolled back together
    assert addrs(ipam.allocate("after", "eth0")) == ["10.30.0.3"]
    assert addrs(ipam.allocate("victim", "eth0")) == ["10.30.0.4"]


_LOOP_CHILD = r"""
import random, sys
from splice.ipam.allocator import Ipam
from splice.ipam.config import parse_ipam_config
data_dir, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
print("ready", flush=True)
i = 0
while True:
    ipam = Ipam(parse_ipam_config({"ranges": [[{"subnet": "10.40.0.0/24"}], [{"subnet": "fd40::/120"}]],
                                   "dataDir": data_dir}, "net"))
    cid = f"s{seed}-{i}"
    try:
        leases = ipam.allocate(cid, "eth0")
        print("A", cid, " ".join(str(l.address.ip) for l in leases), flush=True)
    except Exception as e:
        print("E", cid, type(e).__name__, flush=True)
    if rnd.random() < 0.5:
        victim = f"s{seed}-{rnd.randrange(i + 1)}"
        print("r", victim, flush=True)  # may be killed after the commit, before "R"
        ipam.release(victim, "eth0")
        print("R", victim, flush=True)
    ipam.close()
    i += 1
"""


def test_sigkill_at_random_points_never_corrupts_or_duplicates(tmp_path):
    rnd = random.Random(1234)
    held: dict[str, list[str]] = {}  # what the children reported as committed and not released
    maybe: set[str] = set()  # a release was started but not reported done
    for rnd_no in range(6):
        p = subprocess.Popen([sys.executable, "-c", _LOOP_CHILD, str(tmp_path), str(rnd_no)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_ENV)
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(rnd.uniform(0.005, 0.08))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue  # a line cut by the kill
            if parts[0] == "A" and len(parts) == 4:
                held[parts[1]] = parts[2:]
            elif parts[0] == "r":
                maybe.add(parts[1])
            elif parts[0] == "R":
                held.pop(parts[1], None)
                maybe.discard(parts[1])
    assert held, "the children never got to allocate"
    assert _integrity(tmp_path) == "ok"
    rows = db_rows(tmp_path)
    in_db: dict[str, list[str]] = {}
    for fam, hi, lo, cid, _ in sorted(rows):
        in_db.setdefault(cid, []).append(str(ipaddress.ip_address(join(hi, lo))))
    for cid, leases in held.items():  # every reported commit survived the kills
        if cid in maybe and cid not in in_db:
            continue  # its release committed just before the kill
        assert sorted(in_db.get(cid, [])) == sorted(leases), cid
    for cid, leases in in_db.items():  # one address per range set per owner, all or nothing
        assert len(leases) == 2 and {A(x).version for x in leases} == {4, 6}, (cid, leases)
    # and the store is still usable: a new owner gets addresses nobody holds
    cfg = parse_ipam_config({"ranges": [[{"subnet": "10.40.0.0/24"}], [{"subnet": "fd40::/120"}]],
                             "dataDir": str(tmp_path)}, "net")
    ipam = Ipam(cfg)
    ipam.gc({(c, "eth0") for c in list(in_db)[:10]})  # make room
    others = {str(ipaddress.ip_address(join(hi, lo))) for _, hi, lo, _, _ in db_rows(tmp_path)}
    new = addrs(ipam.allocate("fresh", "eth0"))
    assert len(new) == 2 and not set(new) & others


def test_store_busy_when_lock_held(tmp_path):
    ipam = make(tmp_path, [[{"subnet": "10.1.0.0/24"}]], busy_timeout=0.3)
    ipam.allocate("a", "eth0")
    con = sqlite3.connect(str(tmp_path / "net" / DB_NAME), isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    try:
        other = make(tmp_path, [[{"subnet": "10.1.0.0/24"}]], busy_timeout=0.3)
        t0 = time.monotonic()
        with pytest.raises(StoreBusy, match="locked by another process"):
            other.allocate("b", "eth0")
        assert 0.25 <= time.monotonic() - t0 < 3
        with pytest.raises(StoreBusy):
            other.release("a", "eth0")
        with pytest.raises(StoreBusy):
            other.status()
        assert [str(l.address) for l in other.get("a", "eth0")] == ["10.1.0.2/24"]  # reads still work
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert addrs(other.allocate("b", "eth0")) == ["10.1.0.3"]
