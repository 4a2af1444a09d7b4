"""The IPAM facade: allocate / release / get / gc / status over one network's store.

Semantics follow host-local: one address per range set, round-robin from the last
address handed out in each range set (wrapping across the set's ranges), gateways never
handed out, requested addresses taken from the range set that contains them, and a
call either reserves everything it was asked for or nothing (one transaction).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Union

from splice.ipam.config import IpamConfig, Range, RangeSet, ip_of
from splice.ipam.errors import AddressUnavailable, HostOverlap, IpamConfigError, PoolExhausted
from splice.ipam.store import DEFAULT_BUSY_TIMEOUT, Row, Store, Txn

IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

__all__ = ["HostPrefixes", "Ipam", "Lease", "host_overlap"]

# The host's interface prefixes, for the overlap check: ``(ifname, prefix)`` pairs, where
# prefix is an interface address (``IPv4Interface``/``IPv6Interface`` or "10.0.0.5/24": its
# subnet counts) or a connected route's destination (``IPv4Network``/``IPv6Network`` or
# "10.0.0.0/24"). Called at most once per allocate/status, outside the store's lock.
HostPrefixes = Callable[[], Iterable[tuple[str, Any]]]


@dataclass(frozen=True)
class Lease:
    address: IPInterface  # with the subnet's prefix length
    gateway: IPAddress | None
    range_set: int
    container_id: str
    ifname: str


def _lease(row: Row) -> Lease:
    cls = ipaddress.IPv4Interface if row.fam == 4 else ipaddress.IPv6Interface
    gw = ipaddress.ip_address(row.gateway) if row.gateway else None
    return Lease(cls((row.addr, row.prefix)), gw, row.range_set, row.container_id, row.ifname)


def _as_ip(value) -> IPAddress:
    ip = ip_of(value)
    if ip is None:
        raise IpamConfigError(f"requested address {value!r} is not an IP address")
    return ip


def host_overlap(cfg: IpamConfig, prefixes: Iterable[tuple[str, Any]], own_interfaces: Iterable[str] = ()) -> None:
    """HostOverlap if a subnet of ``cfg`` overlaps an address or a connected route of a
    host interface that is not this network's own. Own: the names in ``own_interfaces``
    (the network's bridge, a macvlan/ipvlan master) and every interface holding one of the
    configuration's gateway addresses (the bridge once the gateway is on it). Default
    routes (/0) are ignored. Nothing is checked with ``cfg.allow_overlap``."""
    if cfg.allow_overlap:
        return
    subnets = {r.subnet for rs in cfg.range_sets for r in rs.ranges}
    if not subnets:
        return
    entries = []
    for ifname, prefix in prefixes:
        try:
            iface = ipaddress.ip_interface(str(prefix).strip())
        except ValueError:
            raise ValueError(f"host prefix {prefix!r} of interface {ifname!r} is not an address or prefix") from None
        entries.append((str(ifname), iface, isinstance(prefix, (ipaddress.IPv4Network, ipaddress.IPv6Network))))
    gateways = {(v, a) for v, a in cfg.gateways}
    own = set(own_interfaces)
    own.update(n for n, i, route in entries if not route and (i.version, int(i.ip)) in gateways)
    for ifname, iface, route in entries:
        net = iface.network
        if ifname in own or net.prefixlen == 0:
            continue
        for subnet in sorted(subnets, key=lambda n: (n.version, n)):
            if subnet.version == net.version and subnet.overlaps(net):
                is_route = route or (iface.ip == net.network_address and net.prefixlen < net.max_prefixlen)
                what = f"connected route {net}" if is_route else f"address {iface}"
                raise HostOverlap(
                    f"ipam: subnet {subnet} of network {cfg.network} overlaps the {what} of host interface "
                    f"{ifname}: choose another subnet, or set \"allowOverlap\": true in the ipam config to "
                    f"use it anyway"
                )


class Ipam:
    """Address management for one network (``cfg.network``); the store opens lazily.

    ``host_routes``: the host's interface prefixes (see :data:`HostPrefixes`), supplied by
    the CNI adapter (this layer does not read the kernel); when given, allocate and status
    refuse a subnet overlapping one of another interface (:func:`host_overlap`), unless
    ``allowOverlap``. ``own_interfaces``: interface names that belong to this network."""

    def __init__(self, cfg: IpamConfig, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
                 host_routes: HostPrefixes | None = None, own_interfaces: Iterable[str] = ()) -> None:
        self.cfg = cfg
        self.store = Store(cfg.store_dir, busy_timeout=busy_timeout)
        self.host_routes = host_routes
        self.own_interfaces = tuple(own_interfaces)

    def check_host_overlap(self) -> None:
        """HostOverlap if a subnet overlaps another host interface's address or connected
        route (nothing without ``host_routes`` or with ``allowOverlap``)."""
        if self.host_routes is None or self.cfg.allow_overlap or not self.cfg.range_sets:
            return
        host_overlap(self.cfg, self.host_routes(), self.own_interfaces)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Ipam":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def _need_ranges(self) -> tuple[RangeSet, ...]:
        if not self.cfg.range_sets:
            raise IpamConfigError("ipam: no IP ranges specified (ranges or subnet)")
        return self.cfg.range_sets

    def _map_requested(self, requested: Iterable) -> dict[int, IPAddress]:
        sets = self._need_ranges()
        out: dict[int, IPAddress] = {}
        for item in requested or ():
            ip = _as_ip(item)
            idx = next((i for i, rs in enumerate(sets) if rs.contains(ip)), None)
            if idx is None:
                pools = "; ".join(f"[{', '.join(str(r) for r in rs.ranges)}]" for rs in sets)
                raise AddressUnavailable(f"requested address {ip} is not in any range ({pools})")
            if idx in out and out[idx] != ip:
                raise AddressUnavailable(
                    f"requested addresses {out[idx]} and {ip} are both in range set {idx} ({sets[idx]}): "
                    "only one address per range set"
                )
            out[idx] = ip
        return out

    def _next_free(self, tx: Txn, idx: int, rs: RangeSet) -> tuple[int, Range] | None:
        """Round-robin: the first free address after the range set's cursor, wrapping."""
        fam = rs.version
        ranges = rs.ranges
        exclude = frozenset(a for v, a in self.cfg.gateways if v == fam)
        cur = tx.get_cursor(idx)
        pos = None
        if cur is not None and cur[0] == fam:
            pos = next((i for i, r in enumerate(ranges) if r.start <= cur[1] <= r.end), None)
        if pos is None:
            segments = [(r, r.start, r.end) for r in ranges]
        else:
            c, n, here = cur[1], len(ranges), ranges[pos]
            segments = [(here, c + 1, here.end)] if c < here.end else []
            segments += [(ranges[(pos + k) % n], ranges[(pos + k) % n].start, ranges[(pos + k) % n].end) for k in range(1, n)]
            segments.append((here, here.start, c))
        for r, a, b in segments:
            x = tx.find_free(fam, a, b, exclude)
            if x is not None:
                return x, r
        return None

    @staticmethod
    def _belongs(row: Row, rs: RangeSet) -> bool:
        return any(row.fam == r.version and int(r.subnet.network_address) <= row.addr <= int(r.subnet.broadcast_address)
                   for r in rs.ranges)

    # ------------------------------------------------------------------ API
    def allocate(self, cid: str, ifname: str, requested: Iterable = ()) -> list[Lease]:
        """One address per range set for ``(cid, ifname)``; all or nothing."""
        sets = self._need_ranges()
        wanted = self._map_requested(requested)
        self.check_host_overlap()
        gateways = self.cfg.gateways
        leases: list[Lease] = []
        with self.store.write() as tx:
            held = tx.owner_leases(cid, ifname)
            for idx, rs in enumerate(sets):
                for row in held:
                    if row.range_set == idx or self._belongs(row, rs):
                        raise AddressUnavailable(
                            f"duplicate allocation is not allowed: container {cid} interface {ifname} already "
                            f"holds {_lease(row).address.ip} in range set {idx} ({rs})"
                        )
            for idx, rs in enumerate(sets):
                fam = rs.version
                ip = wanted.get(idx)
                if ip is not None:
                    addr = int(ip)
                    r = rs.range_for(ip)
                    if (fam, addr) in gateways:
                        raise AddressUnavailable(f"requested address {ip} is a gateway address")
                    h = tx.holder(fam, addr)
                    if h is not None:
                        raise AddressUnavailable(
                            f"requested address {ip} is already allocated to container {h[0]} (interface {h[1]})"
                        )
                else:
                    got = self._next_free(tx, idx, rs)
                    if got is None:
                        raise PoolExhausted(
                            f"no free address left in range set {idx} "
                            f"({', '.join(str(r) for r in rs.ranges)}) of network {self.cfg.network}"
                        )
                    addr, r = got
                gw = str(r.gateway) if r.gateway is not None else None
                tx.insert(fam, addr, r.subnet.prefixlen, gw, idx, cid, ifname)
                tx.set_cursor(idx, fam, addr)
                leases.append(_lease(Row(fam, addr, r.subnet.prefixlen, gw, idx, cid, ifname)))
        return leases

    def release(self, cid: str, ifname: str) -> list[Lease]:
        """Release every address of ``(cid, ifname)``; ``[]`` if there is none (idempotent)."""
        if not self.store.exists():
            return []
        with self.store.write() as tx:
            rows = tx.delete_owner(cid, ifname)
        return [_lease(r) for r in rows]

    def release_address(self, address, cid: str | None = None, ifname: str | None = None) -> Lease | None:
        """Release the reservation of ``address`` (an address, interface or string);
        ``None`` if it is free (idempotent). With ``cid`` (and ``ifname``) the address is
        released only if that attachment holds it: one that belongs to someone else now is
        left alone (``None``)."""
        ip = _as_ip(address)
        if not self.store.exists():
            return None
        with self.store.write() as tx:
            row = tx.lease_at(ip.version, int(ip))
            if row is None or (cid is not None and row.container_id != cid) or (
                    ifname is not None and row.ifname != ifname):
                return None
            tx.delete_at(ip.version, int(ip))
        return _lease(row)

    def lookup(self, address) -> Lease | None:
        """The reservation holding ``address``, ``None`` if it is free."""
        ip = _as_ip(address)
        if not self.store.exists():
            return None
        with self.store.read() as tx:
            row = tx.lease_at(ip.version, int(ip))
        return _lease(row) if row else None

    def get(self, cid: str, ifname: str) -> list[Lease]:
        """The addresses reserved for ``(cid, ifname)`` (for CHECK)."""
        if not self.store.exists():
            return []
        with self.store.read() as tx:
            rows = tx.owner_leases(cid, ifname)
        return [_lease(r) for r in rows]

    def gc(self, valid: Iterable[tuple[str, str]]) -> list[Lease]:
        """Release every reservation whose ``(container_id, ifname)`` is not in ``valid``."""
        if not self.store.exists():
            return []
        keep = {(str(c), str(i)) for c, i in valid}
        out: list[Row] = []
        with self.store.write() as tx:
            for owner in sorted(tx.owners() - keep):
                out.extend(tx.delete_owner(*owner))
        return [_lease(r) for r in out]

    def status(self) -> None:
        """Raise StoreError/StoreBusy if the store cannot be written, PoolExhausted if a
        range set has no free address left (ADD would fail)."""
        sets = self._need_ranges()
        self.check_host_overlap()
        with self.store.write() as tx:
            tx.touch()
            # ADD needs one address from every range set: one full set blocks every ADD.
            full = [rs for idx, rs in enumerate(sets) if self._next_free(tx, idx, rs) is None]
            if full:
                raise PoolExhausted(
                    f"network {self.cfg.network}: no free address left in range set "
                    f"{'; '.join(str(rs) for rs in full)}"
                )
