"""Pool-keyed address management: pools by id, addresses by value.

The protocol-neutral core of Docker's remote IPAM API (moby/libnetwork ``docs/ipam.md``):
``RequestPool``/``ReleasePool``/``RequestAddress``/``ReleaseAddress`` are
:meth:`PoolIpam.request_pool`/``release_pool``/``request_address``/``release_address``;
the front-end translates the wire options (``RequestAddressType`` →
``gateway=True``, ``com.docker.network.ipam.serial`` → ``serial=True``). Where the
protocol leaves a choice open, libnetwork's default IPAM (``ipams/defaultipam``) is
followed:

* Pool ids are ``<address space>/<subnet>`` or ``<address space>/<subnet>/<sub-range>``
  (libnetwork's ``PoolID`` string form), deterministic and readable.
* An explicit pool that overlaps a registered pool of the address space is
  :class:`PoolOverlaps`, **unless** it is the same pool (subnet and sub-range) requested
  again: then, as libnetwork's ``updatePoolDBOnAdd``, the same pool id is answered and a
  reference counted (``release_pool`` drops one; the pool and its addresses go with the
  last); a pool picked from the default ranges requested explicitly is an overlap. A
  request naming a sub-range (``SubPool``) that the subnet has not been requested with yet
  makes a new pool that shares the subnet (its addresses) with the pools already on it, and
  allocates from its sub-range. Sibling sub-ranges may overlap each other (addresses are
  unique per subnet anyway). Stricter than libnetwork: a sub-range request for a subnet
  that is not registered is checked for overlaps like any other (libnetwork skips that
  check, moby/moby#46756).
* No pool: the first subnet of the default ranges (``default_pools``, e.g. 10.200.0.0/16
  cut into /24s) that overlaps neither a registered pool nor ``exclude``. A pool stays
  registered until released, so repeated requests get different, non-overlapping pools
  (dockerd asks again while a returned pool overlaps a host route, holding the earlier
  ones).
* Reserved, never handed out: the subnet's first address (IPv4 network address, IPv6
  subnet-router anycast) and the IPv4 broadcast address; an IPv4 /31 or /32 has no
  reserved address.
* Next free address: the lowest free one of the pool's range (its sub-range, else its
  subnet); ``serial=True``: the first free one after the last one handed out, wrapping.
  A gateway request without an address takes the lowest free one (the first host address
  of a fresh pool). An explicit address may be anywhere in the subnet.
* ``release_pool`` releases the pool's addresses with it (libnetwork drops the pool's
  bitmap; it never refuses): every address of the subnet when it was the subnet's last
  pool, else the addresses requested through this pool id. An unknown pool id is
  :class:`PoolNotFound` (as libnetwork); ``release_address`` of an address that is not
  held returns ``None`` (idempotent).

Storage: one SQLite store per address space, ``<data_dir>/<address space>/pools.db``,
built on :class:`splice.ipam.store.Store` (WAL, ``BEGIN IMMEDIATE``, busy timeout →
StoreBusy, crash-safe). The address space is the unit the overlap checks span, so a
pool, its overlap check and its leases change in one transaction. Tables: ``pool`` (the
registry: id, subnet, sub-range, gateway, options, created, and the allocation state),
``lease`` (address primary key as in the CNI store, pool id, optional owner; indexed by
pool id and owner) and ``hole``. Lowest-free without a scan: a pool's ``top`` is where its
next-free search resumes, and every free address of its range below ``top`` is listed
in ``hole``; so the next free address is the pool's lowest hole (one index lookup) or,
with no hole, the first free address from ``top`` on (a point lookup, or the gap query
over addresses requested explicitly above ``top``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Union

from splice.ipam.errors import (
    AddressOutOfRange,
    AddressUnavailable,
    InvalidRequest,
    NoMoreSubnets,
    PoolExhausted,
    PoolNotFound,
    PoolOverlaps,
)
from splice.ipam.config import ip_of
from splice.ipam.store import DEFAULT_BUSY_TIMEOUT, Store, Txn, join, split

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

__all__ = [
    "DEFAULT_POOL_DATA_DIR", "DEFAULT_POOLS_V4", "POOLS_DB", "Pool", "PoolIpam", "PoolLease", "PoolStore",
    "default_pools", "make_pool_id", "parse_pool_id", "ula_base",
]

DEFAULT_POOL_DATA_DIR = "/var/lib/splice/ipam"
POOLS_DB = "pools.db"
DEFAULT_POOLS_V4: tuple[tuple[IPNetwork, int], ...] = ((ipaddress.IPv4Network("10.200.0.0/16"), 24),)

_SPACE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


# --------------------------------------------------------------------------- defaults


def ula_base(seed: str) -> ipaddress.IPv6Network:
    """A unique local /48 (RFC 4193: fd + 40-bit global id) derived from ``seed``."""
    gid = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:5], "big")
    return ipaddress.IPv6Network(((0xFD << 120) | (gid << 80), 48))


def _host_seed() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                seed = f.read().strip()
        except OSError:
            continue
        if seed:
            return seed
    return "splice"


def default_pools() -> tuple[tuple[IPNetwork, int], ...]:
    """10.200.0.0/16 in /24s, and this host's ULA /48 (from /etc/machine-id) in /64s."""
    return DEFAULT_POOLS_V4 + ((ula_base(_host_seed()), 64),)


_host_defaults = default_pools  # PoolIpam's parameter shadows the name


def _parse_defaults(raw: Iterable) -> tuple[tuple[IPNetwork, int], ...]:
    out = []
    for item in raw:
        try:
            base, size = item
            net = base if isinstance(base, (ipaddress.IPv4Network, ipaddress.IPv6Network)) \
                else ipaddress.ip_network(str(base), strict=True)
        except (TypeError, ValueError):
            raise InvalidRequest(f"default pool {item!r}: expected (base CIDR, prefix length)") from None
        if not isinstance(size, int) or isinstance(size, bool) or not net.prefixlen <= size <= net.max_prefixlen:
            raise InvalidRequest(f"default pool {net}: size /{size} must be between /{net.prefixlen} and /{net.max_prefixlen}")
        out.append((net, size))
    return tuple(out)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Pool:
    id: str
    address_space: str
    subnet: IPNetwork
    sub_range: IPNetwork | None  # the SubPool the pool allocates from, None: the subnet
    gateway: IPAddress | None  # the address requested as the gateway, while held
    options: dict = field(default_factory=dict, compare=False)
    created: float = field(default=0.0, compare=False)
    from_defaults: bool = False  # picked from the default ranges (no subnet requested)


@dataclass(frozen=True)
class PoolLease:
    pool_id: str  # the pool the address was requested through
    address: IPInterface  # with the pool's prefix length
    owner: str | None = None

    @property
    def key(self) -> str:
        """The owner, else ``pool:<pool id>:<address>``."""
        return self.owner or f"pool:{self.pool_id}:{self.address.ip}"


def make_pool_id(space: str, subnet: IPNetwork, sub: IPNetwork | None = None) -> str:
    return f"{space}/{subnet}" + (f"/{sub}" if sub is not None else "")


def parse_pool_id(pid: Any) -> str:
    """The address space of a pool id (PoolNotFound if it cannot be one)."""
    if not isinstance(pid, str) or "/" not in pid:
        raise PoolNotFound(f"unknown pool id {pid!r}")
    space = pid.split("/", 1)[0]
    if not _SPACE_RE.match(space):
        raise PoolNotFound(f"unknown pool id {pid!r}")
    return space


def _check_space(space: Any) -> str:
    if not isinstance(space, str) or not _SPACE_RE.match(space) or space in (".", ".."):
        raise InvalidRequest(f"invalid address space {space!r} (letters, digits, '_', '.', '-'; not empty)")
    return space


def _net(value: Any, what: str) -> IPNetwork:
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if not isinstance(value, str) or "/" not in value:
        raise InvalidRequest(f"{what} {value!r} is not a CIDR (address/length)")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)  # host bits masked, as libnetwork
    except ValueError:
        raise InvalidRequest(f"{what} {value!r} is not a CIDR (address/length)") from None


def _addr(value: Any) -> IPAddress | None:
    if value is None or value == "":
        return None
    ip = ip_of(value)
    if ip is None:
        raise InvalidRequest(f"{value!r} is not an IP address")
    return ip


def _ip(fam: int, addr: int) -> IPAddress:
    return ipaddress.IPv4Address(addr) if fam == 4 else ipaddress.IPv6Address(addr)


# --------------------------------------------------------------------------- store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pool (
    id       TEXT PRIMARY KEY,   -- <address space>/<subnet>[/<sub-range>]
    fam      INTEGER NOT NULL,   -- 4 or 6
    s_hi     INTEGER NOT NULL,   -- first address of the subnet (split as lease addresses)
    s_lo     INTEGER NOT NULL,
    e_hi     INTEGER NOT NULL,   -- last address of the subnet
    e_lo     INTEGER NOT NULL,
    prefix   INTEGER NOT NULL,
    sub      TEXT,               -- sub-range CIDR, NULL: allocate from the whole subnet
    gateway  TEXT,               -- address requested as the gateway, NULL if none
    options  TEXT NOT NULL,      -- JSON object
    created  REAL NOT NULL,      -- unix time
    dflt     INTEGER NOT NULL,   -- 1: picked from the default ranges
    t_hi     INTEGER NOT NULL,   -- top: the next-free search resumes here, the free
    t_lo     INTEGER NOT NULL,   --   addresses of the range below it are in hole
    c_hi     INTEGER,            -- round-robin cursor (serial requests), NULL: none yet
    c_lo     INTEGER
);
CREATE INDEX IF NOT EXISTS pool_subnet ON pool (fam, s_hi, s_lo);
CREATE TABLE IF NOT EXISTS lease (
    fam      INTEGER NOT NULL,
    hi       INTEGER NOT NULL,
    lo       INTEGER NOT NULL,
    pool_id  TEXT NOT NULL,      -- the pool the address was requested through
    owner    TEXT,               -- optional (an endpoint id), NULL: none
    created  INTEGER NOT NULL,
    PRIMARY KEY (fam, hi, lo)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lease_pool ON lease (pool_id);
CREATE INDEX IF NOT EXISTS lease_owner ON lease (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS hole (    -- free addresses of a pool's range below its top
    pool_id  TEXT NOT NULL,
    fam      INTEGER NOT NULL,
    hi       INTEGER NOT NULL,
    lo       INTEGER NOT NULL,
    PRIMARY KEY (pool_id, fam, hi, lo)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hole_addr ON hole (fam, hi, lo);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)
"""

_PCOLS = "id, fam, s_hi, s_lo, e_hi, e_lo, prefix, sub, gateway, options, created, dflt, t_hi, t_lo, c_hi, c_lo"
_LCOLS = "fam, hi, lo, pool_id, owner"


class _PoolRow(NamedTuple):
    id: str
    fam: int
    first: int  # subnet
    last: int
    prefix: int
    sub: str | None
    gateway: str | None
    options: str
    created: float
    dflt: int
    top: int
    cursor: int | None

    @property
    def key(self) -> tuple:
        return (self.fam, *split(self.first), self.prefix)

    def usable(self) -> tuple[int, int]:
        """First and last address that may be handed out (reserved ones excluded)."""
        if self.fam == 6:
            return self.first + 1, self.last  # subnet-router anycast address
        if self.last - self.first > 1:
            return self.first + 1, self.last - 1  # network and broadcast addresses
        return self.first, self.last  # /31, /32

    def range(self) -> tuple[int, int]:
        """The addresses next-free requests take from (sub-range ∩ usable)."""
        a, b = self.usable()
        if self.sub is not None:
            sub = ipaddress.ip_network(self.sub)
            a, b = max(a, int(sub.network_address)), min(b, int(sub.broadcast_address))
        return a, b

    def subnet(self) -> IPNetwork:
        return ipaddress.ip_network((_ip(self.fam, self.first), self.prefix))

    def pool(self) -> Pool:
        return Pool(
            id=self.id,
            address_space=self.id.split("/", 1)[0],
            subnet=self.subnet(),
            sub_range=ipaddress.ip_network(self.sub) if self.sub is not None else None,
            gateway=ipaddress.ip_address(self.gateway) if self.gateway else None,
            options=json.loads(self.options),
            created=self.created,
            from_defaults=bool(self.dflt),
        )

    def lease(self, addr: int, owner: str | None, pool_id: str | None = None) -> PoolLease:
        cls = ipaddress.IPv4Interface if self.fam == 4 else ipaddress.IPv6Interface
        return PoolLease(pool_id or self.id, cls((addr, self.prefix)), owner)


def _prow(t: tuple) -> _PoolRow:
    cur = join(t[14], t[15]) if t[14] is not None else None
    return _PoolRow(t[0], t[1], join(t[2], t[3]), join(t[4], t[5]), t[6], t[7], t[8], t[9], t[10], t[11],
                    join(t[12], t[13]), cur)


class _LeaseRow(NamedTuple):
    fam: int
    addr: int
    pool_id: str
    owner: str | None


def _lrow(t: tuple) -> _LeaseRow:
    return _LeaseRow(t[0], join(t[1], t[2]), t[3], t[4])


class PoolTxn(Txn):
    """Queries of one pool-store transaction."""

    _point = "SELECT 1 FROM lease WHERE fam=? AND hi=? AND lo=?"

    # -- pools
    def pool(self, pid: str) -> _PoolRow | None:
        t = self._con.execute(f"SELECT {_PCOLS} FROM pool WHERE id=?", (pid,)).fetchone()
        return _prow(t) if t else None

    def pools(self, fam: int | None = None) -> list[_PoolRow]:
        if fam is None:
            cur = self._con.execute(f"SELECT {_PCOLS} FROM pool ORDER BY fam, s_hi, s_lo, id")
        else:
            cur = self._con.execute(f"SELECT {_PCOLS} FROM pool WHERE fam=? ORDER BY s_hi, s_lo, id", (fam,))
        return [_prow(t) for t in cur]

    def overlapping(self, fam: int, first: int, last: int) -> _PoolRow | None:
        t = self._con.execute(
            f"SELECT {_PCOLS} FROM pool WHERE fam=? AND (s_hi, s_lo) <= (?, ?) AND (e_hi, e_lo) >= (?, ?) "
            "ORDER BY s_hi, s_lo, id LIMIT 1",
            (fam, *split(last), *split(first)),
        ).fetchone()
        return _prow(t) if t else None

    def same_subnet(self, key: tuple) -> list[_PoolRow]:
        cur = self._con.execute(f"SELECT {_PCOLS} FROM pool WHERE fam=? AND s_hi=? AND s_lo=? AND prefix=?", key)
        return [_prow(t) for t in cur]

    def insert_pool(self, pid: str, subnet: IPNetwork, sub: IPNetwork | None, options: dict, dflt: bool) -> None:
        fam = subnet.version
        first, last = int(subnet.network_address), int(subnet.broadcast_address)
        self._con.execute(
            f"INSERT INTO pool ({_PCOLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,NULL,NULL)",
            (pid, fam, *split(first), *split(last), subnet.prefixlen, str(sub) if sub is not None else None, None,
             json.dumps(options, sort_keys=True), time.time(), int(dflt), *split(first)),
        )

    def delete_pool(self, pid: str) -> None:
        self._con.execute("DELETE FROM pool WHERE id=?", (pid,))

    def refs(self, pid: str) -> int:
        """References to an explicit pool (requests of the same pool; 1 when never repeated)."""
        t = self._con.execute("SELECT value FROM meta WHERE key=?", ("refs:" + pid,)).fetchone()
        return int(t[0]) if t else 1

    def set_refs(self, pid: str, n: int) -> None:
        if n <= 1:
            self._con.execute("DELETE FROM meta WHERE key=?", ("refs:" + pid,))
        else:
            self._con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", ("refs:" + pid, str(n)))

    def set_top(self, pid: str, addr: int) -> None:
        self._con.execute("UPDATE pool SET t_hi=?, t_lo=? WHERE id=?", (*split(addr), pid))

    def set_pool_cursor(self, pid: str, addr: int) -> None:
        self._con.execute("UPDATE pool SET c_hi=?, c_lo=? WHERE id=?", (*split(addr), pid))

    def set_gateway(self, pid: str, gw: str | None) -> None:
        self._con.execute("UPDATE pool SET gateway=? WHERE id=?", (gw, pid))

    def forget(self, siblings: list[_PoolRow], addr: int) -> None:
        """``addr`` became free: a hole of every pool of its subnet (``siblings``) that
        has it in its range below its top; no longer anyone's gateway."""
        hi, lo = split(addr)
        for p in siblings:
            r0, r1 = p.range()
            if r0 <= addr < p.top and addr <= r1:
                self._con.execute("INSERT OR IGNORE INTO hole (pool_id, fam, hi, lo) VALUES (?,?,?,?)",
                                  (p.id, p.fam, hi, lo))
            if p.gateway is not None and p.gateway == str(_ip(p.fam, addr)):
                self.set_gateway(p.id, None)

    def first_hole(self, pid: str) -> int | None:
        t = self._con.execute("SELECT hi, lo FROM hole WHERE pool_id=? ORDER BY fam, hi, lo LIMIT 1", (pid,)).fetchone()
        return join(t[0], t[1]) if t else None

    def drop_holes(self, pid: str) -> None:
        self._con.execute("DELETE FROM hole WHERE pool_id=?", (pid,))

    # -- leases
    def lease_at(self, fam: int, addr: int) -> _LeaseRow | None:  # type: ignore[override]
        t = self._con.execute(f"SELECT {_LCOLS} FROM lease WHERE fam=? AND hi=? AND lo=?", (fam, *split(addr))).fetchone()
        return _lrow(t) if t else None

    def insert_lease(self, fam: int, addr: int, pid: str, owner: str | None) -> None:
        """Lease ``addr`` (no longer a hole of any pool)."""
        hi, lo = split(addr)
        self._con.execute(
            "INSERT INTO lease (fam, hi, lo, pool_id, owner, created) VALUES (?,?,?,?,?,?)",
            (fam, hi, lo, pid, owner, int(time.time())),
        )
        self._con.execute("DELETE FROM hole WHERE fam=? AND hi=? AND lo=?", (fam, hi, lo))

    def pool_leases(self, pid: str) -> list[_LeaseRow]:
        cur = self._con.execute(f"SELECT {_LCOLS} FROM lease WHERE pool_id=? ORDER BY fam, hi, lo", (pid,))
        return [_lrow(t) for t in cur]

    def subnet_leases(self, fam: int, first: int, last: int) -> list[_LeaseRow]:
        cur = self._con.execute(
            f"SELECT {_LCOLS} FROM lease WHERE fam=? AND (hi, lo) >= (?, ?) AND (hi, lo) <= (?, ?) ORDER BY hi, lo",
            (fam, *split(first), *split(last)),
        )
        return [_lrow(t) for t in cur]

    def owner_leases(self, owner: str) -> list[_LeaseRow]:  # type: ignore[override]
        cur = self._con.execute(f"SELECT {_LCOLS} FROM lease WHERE owner=? ORDER BY fam, hi, lo", (owner,))
        return [_lrow(t) for t in cur]

    def owned_leases(self) -> list[_LeaseRow]:
        cur = self._con.execute(f"SELECT {_LCOLS} FROM lease WHERE owner IS NOT NULL ORDER BY fam, hi, lo")
        return [_lrow(t) for t in cur]

    def delete_leases(self, rows: Iterable[_LeaseRow]) -> None:
        self._con.executemany("DELETE FROM lease WHERE fam=? AND hi=? AND lo=?",
                              [(r.fam, *split(r.addr)) for r in rows])


class PoolStore(Store):
    """One address space's pools and leases (``<dir>/pools.db``)."""

    db_name = POOLS_DB
    schema = _SCHEMA
    schema_version = 1
    txn_class = PoolTxn


# --------------------------------------------------------------------------- API


class PoolIpam:
    """Pools and addresses of every address space under ``data_dir``; stores open lazily
    (one per address space, kept open until :meth:`close`). Thread-safe; processes
    sharing ``data_dir`` are serialised by SQLite."""

    def __init__(
        self,
        data_dir: str = DEFAULT_POOL_DATA_DIR,
        *,
        default_pools: Iterable | None = None,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        self.data_dir = data_dir
        self.default_pools = _parse_defaults(default_pools if default_pools is not None else _host_defaults())
        self.busy_timeout = busy_timeout
        self._stores: dict[str, PoolStore] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            stores, self._stores = self._stores, {}
        for s in stores.values():
            s.close()

    def __enter__(self) -> "PoolIpam":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _store(self, space: str, create: bool = True) -> PoolStore | None:
        with self._lock:
            s = self._stores.get(space)
            if s is None:
                s = PoolStore(os.path.join(self.data_dir, space), busy_timeout=self.busy_timeout)
                if not create and not s.exists():
                    return None
                self._stores[space] = s
            return s

    def _existing(self, pid: Any) -> PoolStore:
        s = self._store(parse_pool_id(pid), create=False)
        if s is None:
            raise PoolNotFound(f"unknown pool id {pid!r}")
        return s

    @staticmethod
    def _get(tx: PoolTxn, pid: str) -> _PoolRow:
        row = tx.pool(pid)
        if row is None:
            raise PoolNotFound(f"unknown pool id {pid!r}")
        return row

    # ------------------------------------------------------------------ pools
    def request_pool(
        self,
        address_space: str,
        pool: str | IPNetwork | None = None,
        sub_pool: str | IPNetwork | None = None,
        options: Mapping[str, Any] | None = None,
        v6: bool = False,
        *,
        exclude: Iterable[str | IPNetwork] = (),
    ) -> Pool:
        """Register a pool: ``pool`` (a CIDR) or, if empty, the next free default subnet of
        the family (``v6``) that overlaps nothing registered and nothing in ``exclude``."""
        space = _check_space(address_space)
        fam = 6 if v6 else 4
        opts = dict(options or {})
        try:
            json.dumps(opts)
        except (TypeError, ValueError):
            raise InvalidRequest(f"pool options {options!r} are not JSON-serialisable") from None
        if pool in (None, ""):
            if sub_pool not in (None, ""):
                raise InvalidRequest(f"sub-pool {sub_pool} requested without a pool")
            excl = [_net(e, "excluded prefix") for e in exclude]
            with self._store(space).write() as tx:
                subnet = self._pick_default(tx, fam, excl)
                pid = make_pool_id(space, subnet)
                tx.insert_pool(pid, subnet, None, opts, True)
                return tx.pool(pid).pool()
        subnet = _net(pool, "pool")
        if subnet.version != fam:
            raise InvalidRequest(f"pool {subnet} is IPv{subnet.version}, the request is for IPv{fam} (V6={bool(v6)})")
        sub = None
        if sub_pool not in (None, ""):
            sub = _net(sub_pool, "sub-pool")
            if sub.version != fam:
                raise InvalidRequest(f"sub-pool {sub} and pool {subnet} are of different address families")
            if sub.prefixlen < subnet.prefixlen:
                sub = subnet  # a wider sub-range means the whole pool (as libnetwork)
            elif not sub.subnet_of(subnet):
                raise InvalidRequest(f"sub-pool {sub} is not inside pool {subnet}")
        pid = make_pool_id(space, subnet, sub)
        first, last = int(subnet.network_address), int(subnet.broadcast_address)
        with self._store(space).write() as tx:
            have = tx.pool(pid)
            if have is not None:
                if have.dflt:
                    raise PoolOverlaps(f"pool {subnet}{f' (sub-pool {sub})' if sub else ''} is already allocated "
                                       f"in address space {space} from the default pools (pool id {pid})")
                tx.set_refs(pid, tx.refs(pid) + 1)  # the same pool again: one more reference
                return have.pool()
            shared = sub is not None and bool(tx.same_subnet((fam, *split(first), subnet.prefixlen)))
            if not shared:
                other = tx.overlapping(fam, first, last)
                if other is not None:
                    raise PoolOverlaps(f"pool {subnet} overlaps pool {other.subnet()} (pool id {other.id}) "
                                       f"in address space {space}")
            tx.insert_pool(pid, subnet, sub, opts, False)
            return tx.pool(pid).pool()

    def _pick_default(self, tx: PoolTxn, fam: int, exclude: list[IPNetwork]) -> IPNetwork:
        taken = [(r.first, r.last) for r in tx.pools(fam)]
        taken += [(int(n.network_address), int(n.broadcast_address)) for n in exclude if n.version == fam]
        taken.sort()
        merged: list[list[int]] = []
        for a, b in taken:
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        bases = [(b, size) for b, size in self.default_pools if b.version == fam]
        for base, size in bases:
            step = 1 << (base.max_prefixlen - size)
            c, end = int(base.network_address), int(base.broadcast_address)
            i = 0
            while c + step - 1 <= end:
                while i < len(merged) and merged[i][1] < c:
                    i += 1
                if i == len(merged) or merged[i][0] > c + step - 1:
                    return ipaddress.ip_network((_ip(fam, c), size))
                c = (merged[i][1] // step + 1) * step  # the next aligned subnet after the conflict
        ranges = ", ".join(f"{b} in /{s}" for b, s in bases) or "none configured"
        raise NoMoreSubnets(f"no free IPv{fam} subnet left in the default ranges ({ranges})")

    def release_pool(self, pool_id: str) -> list[PoolLease]:
        """Drop one reference of a pool; with the last, unregister it and release its
        addresses (all of the subnet's when no other pool shares it); the released leases
        (none while references remain). PoolNotFound if unknown."""
        with self._existing(pool_id).write() as tx:
            row = self._get(tx, pool_id)
            refs = tx.refs(row.id)
            if refs > 1:
                tx.set_refs(row.id, refs - 1)
                return []
            return self._drop_pool(tx, row)

    @staticmethod
    def _drop_pool(tx: PoolTxn, row: _PoolRow) -> list[PoolLease]:
        tx.delete_pool(row.id)
        tx.set_refs(row.id, 1)
        tx.drop_holes(row.id)
        others = tx.same_subnet(row.key)
        if others:  # the subnet stays: release what was requested through this pool
            rows = tx.pool_leases(row.id)
            tx.delete_leases(rows)
            for r in rows:
                tx.forget(others, r.addr)
        else:
            rows = tx.subnet_leases(row.fam, row.first, row.last)
            tx.delete_leases(rows)
        return [row.lease(r.addr, r.owner, r.pool_id) for r in rows]

    def get_pool(self, pool_id: str) -> Pool:
        with self._existing(pool_id).read() as tx:
            return self._get(tx, pool_id).pool()

    def pools(self, address_space: str) -> list[Pool]:
        s = self._store(_check_space(address_space), create=False)
        if s is None:
            return []
        with s.read() as tx:
            return [r.pool() for r in tx.pools()]

    # ------------------------------------------------------------------ addresses
    def request_address(
        self,
        pool_id: str,
        address: str | IPAddress | IPInterface | None = None,
        *,
        gateway: bool = False,
        serial: bool = False,
        owner: str | None = None,
    ) -> PoolLease:
        """Reserve ``address`` in the pool, or the next free one; ``gateway=True`` also
        records it as the pool's gateway."""
        ip = _addr(address)
        with self._existing(pool_id).write() as tx:
            row = self._get(tx, pool_id)
            fam = row.fam
            if ip is not None:
                a = int(ip)
                if ip.version != fam or not row.first <= a <= row.last:
                    raise AddressOutOfRange(f"address {ip} is not in pool {row.subnet()} (pool id {pool_id})")
                u0, u1 = row.usable()
                if not u0 <= a <= u1:
                    what = "first (network)" if a == row.first else "broadcast"
                    raise AddressUnavailable(f"address {ip} is the {what} address of pool {row.subnet()}: reserved")
                held = tx.lease_at(fam, a)
                if held is not None:
                    raise AddressUnavailable(
                        f"address {ip} is already allocated (pool id {held.pool_id}"
                        + (f", owner {held.owner})" if held.owner else ")"))
            else:
                r0, r1 = row.range()
                if serial and not gateway:
                    got = self._after_cursor(tx, row, r0, r1)
                else:  # the lowest free address: the lowest hole, else the first free from top
                    got = tx.first_hole(pool_id)
                    if got is None:
                        got = tx.find_free(fam, max(r0, row.top), r1)
                        if got is not None:
                            tx.set_top(pool_id, min(got + 1, r1))  # r1 may be the last IPv6 address
                if got is None:
                    where = f"sub-pool {row.sub} of " if row.sub else ""
                    raise PoolExhausted(f"no free address left in {where}pool {row.subnet()} (pool id {pool_id})")
                a = got
                if serial and not gateway:
                    tx.set_pool_cursor(pool_id, a)
            tx.insert_lease(fam, a, pool_id, owner)
            if gateway:
                tx.set_gateway(pool_id, str(_ip(fam, a)))
        return row.lease(a, owner)

    @staticmethod
    def _after_cursor(tx: PoolTxn, row: _PoolRow, r0: int, r1: int) -> int | None:
        c = row.cursor
        if c is None or not r0 <= c <= r1:
            return tx.find_free(row.fam, r0, r1)
        got = tx.find_free(row.fam, c + 1, r1) if c < r1 else None
        return got if got is not None else tx.find_free(row.fam, r0, c)

    def release_address(self, pool_id: str, address: str | IPAddress | IPInterface) -> PoolLease | None:
        """Release ``address``; ``None`` if it was not held (idempotent). PoolNotFound if
        the pool is unknown, AddressOutOfRange if the address is not in its subnet."""
        ip = _addr(address)
        if ip is None:
            raise InvalidRequest("release_address: no address given")
        with self._existing(pool_id).write() as tx:
            row = self._get(tx, pool_id)
            a = int(ip)
            if ip.version != row.fam or not row.first <= a <= row.last:
                raise AddressOutOfRange(f"address {ip} is not in pool {row.subnet()} (pool id {pool_id})")
            held = tx.lease_at(row.fam, a)
            if held is None:
                return None
            tx.delete_leases([held])
            tx.forget(tx.same_subnet(row.key), a)
        return row.lease(a, held.owner, held.pool_id)

    def get_lease(self, pool_id: str, address: str | IPAddress | IPInterface) -> PoolLease | None:
        """The lease of ``address`` in the pool's subnet, None if it is free."""
        ip = _addr(address)
        if ip is None:
            raise InvalidRequest("get_lease: no address given")
        with self._existing(pool_id).read() as tx:
            row = self._get(tx, pool_id)
            a = int(ip)
            if ip.version != row.fam or not row.first <= a <= row.last:
                raise AddressOutOfRange(f"address {ip} is not in pool {row.subnet()} (pool id {pool_id})")
            held = tx.lease_at(row.fam, a)
        return row.lease(a, held.owner, held.pool_id) if held else None

    def leases(self, pool_id: str) -> list[PoolLease]:
        """The addresses requested through this pool id, in address order."""
        with self._existing(pool_id).read() as tx:
            row = self._get(tx, pool_id)
            rows = tx.pool_leases(pool_id)
        return [row.lease(r.addr, r.owner) for r in rows]

    # ------------------------------------------------------------------ owners, GC
    def _release_rows(self, tx: PoolTxn, rows: list[_LeaseRow]) -> list[PoolLease]:
        tx.delete_leases(rows)
        out = []
        cache: dict[str, tuple[_PoolRow | None, list[_PoolRow]]] = {}
        for r in rows:
            if r.pool_id not in cache:
                p = tx.pool(r.pool_id)
                cache[r.pool_id] = (p, tx.same_subnet(p.key) if p is not None else [])
            p, siblings = cache[r.pool_id]
            if p is not None:
                tx.forget(siblings, r.addr)
                out.append(p.lease(r.addr, r.owner))
            else:  # not expected: a lease always belongs to a registered pool
                cls = ipaddress.IPv4Interface if r.fam == 4 else ipaddress.IPv6Interface
                out.append(PoolLease(r.pool_id, cls(r.addr), r.owner))
        return out

    def release_owner(self, address_space: str, owner: str) -> list[PoolLease]:
        """Release every address ``owner`` holds in the address space (idempotent)."""
        s = self._store(_check_space(address_space), create=False)
        if s is None:
            return []
        with s.write() as tx:
            return self._release_rows(tx, tx.owner_leases(owner))

    def gc(
        self,
        address_space: str,
        *,
        valid_pools: Iterable[str] | None = None,
        valid_owners: Iterable[str] | None = None,
    ) -> tuple[list[Pool], list[PoolLease]]:
        """Release every pool not in ``valid_pools`` (with its addresses, as release_pool)
        and every lease with an owner not in ``valid_owners``; ``None`` keeps all of that
        kind (owner-less leases are only released by address or with their pool). One
        transaction; returns what was released."""
        s = self._store(_check_space(address_space), create=False)
        if s is None:
            return [], []
        pools_out: list[Pool] = []
        leases_out: list[PoolLease] = []
        with s.write() as tx:
            if valid_pools is not None:
                keep = set(valid_pools)
                for row in tx.pools():
                    if row.id in keep:
                        continue
                    pools_out.append(row.pool())
                    leases_out += self._drop_pool(tx, row)
            if valid_owners is not None:
                keep_o = set(valid_owners)
                stale = [r for r in tx.owned_leases() if r.owner not in keep_o]
                leases_out += self._release_rows(tx, stale)
        return pools_out, leases_out
