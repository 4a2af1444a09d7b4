"""splice.ipam stores: root-only modes, and a store deleted or replaced under a running
system detected instead of silently started over (issue 9, items 8 and 9)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from splice.ipam.allocator import Ipam
from splice.ipam.config import parse_ipam_config
from splice.ipam.errors import StoreError
from splice.ipam.pools import POOLS_DB, PoolIpam
from splice.ipam.store import DB_NAME, marker_name

RANGES = [[{"subnet": "10.1.0.0/24"}]]


def make(data_dir: Path, network: str = "net") -> Ipam:
    return Ipam(parse_ipam_config({"ranges": RANGES, "dataDir": str(data_dir)}, network))


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def umask0():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- modes


def test_new_store_is_root_only_whatever_the_umask(tmp_path, umask0):
    data = tmp_path / "a" / "data"
    ipam = make(data)
    ipam.allocate("c1", "eth0")  # kept open: -wal and -shm exist
    store = data / "net"
    assert (store / (DB_NAME + "-wal")).exists() and (store / (DB_NAME + "-shm")).exists()
    assert mode(store) == 0o700 and mode(data) == 0o700
    assert mode(tmp_path / "a") == 0o755  # levels above the data directory: not ours
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", marker_name(DB_NAME)):
        assert mode(store / name) == 0o600, name
    ipam.close()


def test_existing_store_modes_are_tightened_on_open(tmp_path):
    ipam = make(tmp_path)
    ipam.allocate("c1", "eth0")
    store = tmp_path / "net"
    os.chmod(store, 0o755)
    for p in store.iterdir():
        os.chmod(p, 0o644)
    ipam2 = make(tmp_path)
    assert [str(l.address.ip) for l in ipam2.get("c1", "eth0")] == ["10.1.0.2"]
    assert mode(store) == 0o700
    for p in store.iterdir():
        assert mode(p) == 0o600, p.name
    os.chmod(tmp_path, 0o755)  # an existing data directory is the operator's: left alone
    make(tmp_path).allocate("c2", "eth0")
    assert mode(tmp_path) == 0o755
    ipam.close()
    ipam2.close()


def test_pool_store_is_root_only(tmp_path, umask0):
    p = PoolIpam(str(tmp_path / "pools"), default_pools=[("10.200.0.0/16", 24)])
    pool = p.request_pool("local")
    p.request_address(pool.id)
    store = tmp_path / "pools" / "local"
    assert mode(tmp_path / "pools") == 0o700 and mode(store) == 0o700
    for name in (POOLS_DB, POOLS_DB + "-wal", POOLS_DB + "-shm", marker_name(POOLS_DB)):
        assert mode(store / name) == 0o600, name
    p.close()
    os.chmod(store, 0o755)
    os.chmod(store / POOLS_DB, 0o644)
    p = PoolIpam(str(tmp_path / "pools"), default_pools=[("10.200.0.0/16", 24)])
    assert p.pools("local") == [pool]
    assert mode(store) == 0o700 and mode(store / POOLS_DB) == 0o600
    p.close()


# --------------------------------------------------------------------------- identity


def _delete_db(store: Path, db: str = DB_NAME) -> None:
    for suffix in ("", "-wal", "-shm"):
        (store / (db + suffix)).unlink(missing_ok=True)


def test_deleted_store_is_refused_not_started_over(tmp_path):
    a = make(tmp_path)
    assert [str(l.address.ip) for l in a.allocate("c1", "eth0")] == ["10.1.0.2"]
    a.close()
    for p in (tmp_path / "net").glob("store.db*"):  # what "rm store.db*" deletes
        p.unlink()
    b = make(tmp_path)
    path = tmp_path / "net" / DB_NAME
    with pytest.raises(StoreError, match=rf"IPAM store {path} is missing, but {path.parent / marker_name(DB_NAME)} shows it "
                                         rf"existed .*remove the whole directory {tmp_path / 'net'}"):
        b.allocate("c2", "eth0")  # before: a fresh store handed out 10.1.0.2 again
    for call in (b.status, lambda: b.get("c1", "eth0"), lambda: b.release("c1", "eth0"), lambda: b.gc(set())):
        with pytest.raises(StoreError, match="is missing"):
            call()
    assert not path.exists()
    # the operator's reset: remove the whole directory
    shutil.rmtree(tmp_path / "net")
    assert [str(l.address.ip) for l in make(tmp_path).allocate("c2", "eth0")] == ["10.1.0.2"]


def test_store_deleted_under_an_open_store(tmp_path):
    a = make(tmp_path)
    a.allocate("c1", "eth0")
    _delete_db(tmp_path / "net")  # SQLite would keep writing to the unlinked file
    with pytest.raises(StoreError, match="was deleted or replaced while open"):
        a.allocate("c2", "eth0")
    with pytest.raises(StoreError, match="is missing"):
        a.allocate("c2", "eth0")  # re-opened: the marker is there, the database is not
    assert not (tmp_path / "net" / DB_NAME).exists()


def test_replaced_store_is_refused(tmp_path):
    a = make(tmp_path / "one")
    a.allocate("c1", "eth0")
    a.close()
    b = make(tmp_path / "two")
    b.allocate("x", "eth0")
    b.close()
    # another (empty-ish) database copied over this network's
    shutil.copy(tmp_path / "two" / "net" / DB_NAME, tmp_path / "one" / "net" / DB_NAME)
    with pytest.raises(StoreError, match=r"is not the database .*/\.store\.db\.id records \(generation [0-9a-f]{32}, expected "):
        make(tmp_path / "one").allocate("c2", "eth0")
    # a backup of the same database (same generation) is accepted
    shutil.copy(tmp_path / "two" / "net" / DB_NAME, tmp_path / "backup.db")
    (tmp_path / "two" / "net" / DB_NAME).unlink()
    shutil.copy(tmp_path / "backup.db", tmp_path / "two" / "net" / DB_NAME)
    assert [str(l.address.ip) for l in make(tmp_path / "two").get("x", "eth0")] == ["10.1.0.2"]


def test_store_without_marker_is_adopted(tmp_path):
    # stores created before the marker existed (or a crash between database and marker)
    a = make(tmp_path)
    a.allocate("c1", "eth0")
    a.close()
    marker = tmp_path / "net" / (marker_name(DB_NAME))
    gen = marker.read_text().strip()
    marker.unlink()
    assert [str(l.address.ip) for l in make(tmp_path).allocate("c2", "eth0")] == ["10.1.0.3"]
    assert marker.read_text().strip() == gen


def test_orphan_wal_without_database_is_refused(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / (DB_NAME + "-wal")).write_bytes(b"x" * 100)
    with pytest.raises(StoreError, match=r"is missing but .*-wal is left"):
        make(tmp_path).allocate("c1", "eth0")


def test_new_networks_still_create_their_store(tmp_path):
    for n in ("n1", "n2"):
        assert [str(l.address.ip) for l in make(tmp_path, n).allocate("c", "eth0")] == ["10.1.0.2"]
    # release/get/gc on a network that never had a store: nothing, and no store created
    c = make(tmp_path, "n3")
    assert c.release("c", "eth0") == [] and c.get("c", "eth0") == [] and c.gc(set()) == []
    assert not (tmp_path / "n3").exists()


def test_deleted_pool_store_is_refused(tmp_path):
    p = PoolIpam(str(tmp_path), default_pools=[("10.200.0.0/16", 24)])
    pool = p.request_pool("local")
    p.close()
    _delete_db(tmp_path / "local", POOLS_DB)
    p = PoolIpam(str(tmp_path), default_pools=[("10.200.0.0/16", 24)])
    with pytest.raises(StoreError, match=rf"{tmp_path / 'local' / POOLS_DB} is missing"):
        p.request_pool("local")  # before: 10.200.0.0/24 again
    with pytest.raises(StoreError, match="is missing"):
        p.get_pool(pool.id)
    p.close()


def test_a_store_directory_made_concurrently_is_no_error(tmp_path, monkeypatch):
    """Another process creates the store directory between our "is it a directory?" and
    "does anything exist there?" looks: that is a directory, not an unusable location
    (seen with 16 processes opening a new store at once)."""
    import splice.ipam.store as store_mod

    d = tmp_path / "data" / "net"
    real_isdir = os.path.isdir
    raced = []

    def isdir(p):
        if os.path.abspath(p) == str(d) and not raced:
            raced.append(p)
            os.makedirs(d, 0o700)  # the other process wins here
            return False
        return real_isdir(p)

    monkeypatch.setattr(store_mod.os.path, "isdir", isdir)
    ipam = make(tmp_path / "data")
    leases = ipam.allocate("c1", "eth0")
    ipam.close()
    monkeypatch.undo()
    assert raced and str(leases[0].address) == "10.1.0.2/24"
