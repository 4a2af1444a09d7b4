"""IPAM configuration: host-local compatible parsing and validation.

Accepted keys of the ``ipam`` object (everything else is ignored, like host-local):

``ranges``
    list of range sets; a range set is a list of ranges
    ``{"subnet", "rangeStart"?, "rangeEnd"?, "gateway"?}``. Every attachment gets one
    address per range set (dual stack = one IPv4 and one IPv6 range set). The ranges of a
    set are one pool (the allocator wraps from one to the next).
``subnet``, ``rangeStart``, ``rangeEnd``, ``gateway`` (legacy)
    one range set holding one range; put in front of ``ranges`` when both are given.
``routes``
    ``[{"dst": cidr, "gw"?: ip, "mtu"?, "advmss"?, "priority"?, "table"?, "scope"?}]``,
    returned verbatim (canonicalised) in the result.
``dataDir``
    where stores live (default ``/var/lib/cni/splice``); one store per network in
    ``<dataDir>/<network>/``.
``dns``
    ``{"nameservers", "domain", "search", "options"}``, passed through to the result.
``resolvConf``
    accepted for host-local compatibility and **ignored** (splice does not read a
    resolv.conf file into the result; use ``dns``).
``allowOverlap``
    ``true``: allocate even when a subnet overlaps an address or a connected route of
    another host interface (checked only when the caller supplies the host's prefixes,
    ``Ipam(cfg, host_routes=...)``); default ``false``: refused (HostOverlap, code 7).

The ``ipRanges`` capability (``ranges_override``) replaces ``ranges`` and the legacy keys.

Defaults (as host-local): ``gateway`` = network + 1; ``rangeStart`` = network + 1;
``rangeEnd`` = broadcast - 1 (IPv4) or the last address of the subnet (IPv6). Gateways
are never handed out. Subnets of /31 (/127) or smaller are rejected.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Union

from splice.ipam.errors import IpamConfigError

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

DEFAULT_DATA_DIR = "/var/lib/cni/splice"

# CNI network names (SPEC: same rules as container ids); also keeps the store path safe.
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")

_ROUTE_INT_FIELDS = ("mtu", "advmss", "priority", "table", "scope")


def ip_of(value: Any) -> "IPAddress | None":
    """``value`` as an address: an address, an interface (its address) or a string
    ``"a.b.c.d"`` / ``"a.b.c.d/len"``; None when it is none of these."""
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return value.ip
    if isinstance(value, str):
        try:
            return ipaddress.ip_interface(value.strip()).ip
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Range:
    """One contiguous pool ``[range_start, range_end]`` inside ``subnet``."""

    subnet: IPNetwork
    range_start: IPAddress
    range_end: IPAddress
    gateway: IPAddress | None

    @property
    def version(self) -> int:
        return self.subnet.version

    @property
    def start(self) -> int:
        return int(self.range_start)

    @property
    def end(self) -> int:
        return int(self.range_end)

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.subnet.version and self.start <= int(ip) <= self.end

    def overlaps(self, other: "Range") -> bool:
        return self.version == other.version and self.start <= other.end and other.start <= self.end

    def __str__(self) -> str:
        return f"{self.subnet} [{self.range_start}-{self.range_end}]"


@dataclass(frozen=True)
class RangeSet:
    """The ranges one address per attachment is taken from (all of one family)."""

    ranges: tuple[Range, ...]

    @property
    def version(self) -> int:
        return self.ranges[0].version

    def contains(self, ip: IPAddress) -> bool:
        return any(r.contains(ip) for r in self.ranges)

    def range_for(self, ip: IPAddress) -> Range | None:
        for r in self.ranges:
            if r.contains(ip):
                return r
        return None

    def __str__(self) -> str:
        return ", ".join(str(r.subnet) for r in self.ranges)


@dataclass(frozen=True)
class RouteSpec:
    """A route to hand out with the addresses (``routes`` of the IPAM config)."""

    dst: IPNetwork
    gw: IPAddress | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None

    def to_dict(self) -> dict:
        out: dict = {"dst": str(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        for f in _ROUTE_INT_FIELDS:
            v = getattr(self, f)
            if v is not None:
                out[f] = v
        return out


@dataclass(frozen=True)
class IpamConfig:
    network: str
    range_sets: tuple[RangeSet, ...]
    data_dir: str = DEFAULT_DATA_DIR
    routes: tuple[RouteSpec, ...] = ()
    dns: dict | None = None
    resolv_conf: str | None = None  # accepted, ignored
    allow_overlap: bool = False  # allowOverlap: skip the host interface overlap check

    @property
    def store_dir(self) -> str:
        import os

        return os.path.join(self.data_dir, self.network)

    @property
    def gateways(self) -> frozenset[tuple[int, int]]:
        """(version, int) of every gateway of every range: never handed out."""
        return frozenset((r.version, int(r.gateway)) for rs in self.range_sets for r in rs.ranges if r.gateway)


# --------------------------------------------------------------------------- parsing


def _ip(value: Any, where: str) -> IPAddress:
    if not isinstance(value, str):
        raise IpamConfigError(f"{where}: expected an IP address string, got {value!r}")
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise IpamConfigError(f"{where}: invalid IP address {value!r}") from None


def _last_usable(net: IPNetwork) -> IPAddress:
    if net.version == 4:
        return net.broadcast_address - 1
    return net.broadcast_address  # IPv6: all host bits set (host-local lastIP)


def _parse_range(obj: Any, where: str) -> Range:
    if not isinstance(obj, dict):
        raise IpamConfigError(f"{where}: expected an object with a subnet, got {obj!r}")
    sub = obj.get("subnet")
    if not isinstance(sub, str) or not sub:
        raise IpamConfigError(f"{where}.subnet: missing or not a string ({sub!r})")
    if "/" not in sub:
        raise IpamConfigError(f"{where}.subnet: {sub!r} needs a prefix length (address/n)")
    try:
        subnet = ipaddress.ip_network(sub.strip(), strict=True)
    except ValueError as e:
        if "host bits set" in str(e):
            raise IpamConfigError(f"{where}.subnet: {sub!r} has host bits set") from None
        raise IpamConfigError(f"{where}.subnet: invalid subnet {sub!r}") from None
    if subnet.prefixlen > subnet.max_prefixlen - 2:
        raise IpamConfigError(f"{where}.subnet: network {sub} too small to allocate from")

    first = subnet.network_address + 1
    last = _last_usable(subnet)

    def inside(key: str, default: IPAddress) -> IPAddress:
        raw = obj.get(key)
        if raw is None or raw == "":
            return default
        ip = _ip(raw, f"{where}.{key}")
        if ip.version != subnet.version or ip not in subnet:
            raise IpamConfigError(f"{where}.{key}: {raw} is not in subnet {subnet}")
        if ip == subnet.network_address or (subnet.version == 4 and ip == subnet.broadcast_address):
            kind = "network" if ip == subnet.network_address else "broadcast"
            raise IpamConfigError(f"{where}.{key}: {raw} is the {kind} address of {subnet}")
        return ip

    start = inside("rangeStart", first)
    end = inside("rangeEnd", last)
    gateway = inside("gateway", first)
    if start > end:
        raise IpamConfigError(
            f"{where}: rangeStart {start} is after rangeEnd {end}"
        )
    return Range(subnet=subnet, range_start=start, range_end=end, gateway=gateway)


def _parse_range_sets(raw: Any, where: str) -> list[RangeSet]:
    if not isinstance(raw, list):
        raise IpamConfigError(f"{where}: expected a list of range sets, got {raw!r}")
    sets: list[RangeSet] = []
    for i, rs in enumerate(raw):
        if not isinstance(rs, list):
            raise IpamConfigError(f"{where}[{i}]: a range set must be a list of ranges, got {rs!r}")
        if not rs:
            raise IpamConfigError(f"{where}[{i}]: empty range set")
        ranges = tuple(_parse_range(r, f"{where}[{i}][{j}]") for j, r in enumerate(rs))
        fams = {r.version for r in ranges}
        if len(fams) > 1:
            raise IpamConfigError(
                f"{where}[{i}]: range set mixes IPv4 and IPv6 ({', '.join(str(r.subnet) for r in ranges)})"
            )
        sets.append(RangeSet(ranges))
    return sets


def _check_overlaps(sets: list[RangeSet], names: list[str]) -> None:
    flat = [(names[i], j, r) for i, rs in enumerate(sets) for j, r in enumerate(rs.ranges)]
    for a in range(len(flat)):
        for b in range(a + 1, len(flat)):
            (sa, ja, ra), (sb, jb, rb) = flat[a], flat[b]
            if ra.overlaps(rb):
                raise IpamConfigError(f"{sa}[{ja}] ({ra}) overlaps with {sb}[{jb}] ({rb})")


def _parse_routes(raw: Any) -> tuple[RouteSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise IpamConfigError(f"routes: expected a list, got {raw!r}")
    out = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict):
            raise IpamConfigError(f"routes[{i}]: expected an object, got {r!r}")
        dst = r.get("dst")
        if not isinstance(dst, str):
            raise IpamConfigError(f"routes[{i}].dst: missing or not a string ({dst!r})")
        try:
            net = ipaddress.ip_network(dst.strip(), strict=True)
        except ValueError:
            raise IpamConfigError(f"routes[{i}].dst: invalid destination {dst!r} (a CIDR without host bits)") from None
        gw = None
        if r.get("gw") not in (None, ""):
            gw = _ip(r["gw"], f"routes[{i}].gw")
            if gw.version != net.version:
                raise IpamConfigError(f"routes[{i}].gw: {gw} is not the family of dst {dst}")
        extra = {}
        for f in _ROUTE_INT_FIELDS:
            v = r.get(f)
            if v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise IpamConfigError(f"routes[{i}].{f}: expected a non-negative integer, got {v!r}")
            extra[f] = v
        out.append(RouteSpec(dst=net, gw=gw, **extra))
    return tuple(out)


def check_network_name(network: Any) -> str:
    if not isinstance(network, str) or not _NAME_RE.match(network) or network in (".", ".."):
        raise IpamConfigError(f"invalid network name {network!r} (letters, digits, '_', '.', '-')")
    return network


def parse_data_dir(ipam: dict) -> str:
    d = ipam.get("dataDir")
    if d is None or d == "":
        return DEFAULT_DATA_DIR
    if not isinstance(d, str) or "\0" in d:
        raise IpamConfigError(f"dataDir: expected a path string, got {d!r}")
    return d


def store_location(ipam: Any, network: Any) -> IpamConfig:
    """Only what locates the store (``dataDir``, network name): enough for DEL and GC
    when the ranges no longer parse. The result has no range sets."""
    if not isinstance(ipam, dict):
        raise IpamConfigError(f"ipam: expected an object, got {ipam!r}")
    return IpamConfig(network=check_network_name(network), range_sets=(), data_dir=parse_data_dir(ipam))


def parse_ipam_config(ipam: Any, network: str, ranges_override: list | None = None) -> IpamConfig:
    """Parse and validate a host-local compatible ``ipam`` object (raises IpamConfigError)."""
    if not isinstance(ipam, dict):
        raise IpamConfigError(f"ipam: expected an object, got {ipam!r}")
    check_network_name(network)

    if ranges_override:
        sets = _parse_range_sets(ranges_override, "ipRanges")
        names = [f"ipRanges[{i}]" for i in range(len(sets))]
    else:
        sets, names = [], []
        if ipam.get("subnet") not in (None, ""):
            legacy = {k: ipam.get(k) for k in ("subnet", "rangeStart", "rangeEnd", "gateway")}
            r = _parse_range(legacy, "ipam")
            sets.append(RangeSet((r,)))
            names.append("ipam")
        elif any(ipam.get(k) not in (None, "") for k in ("rangeStart", "rangeEnd")):
            raise IpamConfigError("ipam: rangeStart/rangeEnd given without subnet")
        if ipam.get("ranges") is not None:
            more = _parse_range_sets(ipam["ranges"], "ranges")
            sets.extend(more)
            names.extend(f"ranges[{i}]" for i in range(len(more)))
    if not sets:
        raise IpamConfigError("ipam: no IP ranges specified (ranges or subnet)")
    _check_overlaps(sets, names)

    dns = ipam.get("dns")
    if dns is not None and not isinstance(dns, dict):
        raise IpamConfigError(f"dns: expected an object, got {dns!r}")
    resolv = ipam.get("resolvConf")
    if resolv is not None and not isinstance(resolv, str):
        raise IpamConfigError(f"resolvConf: expected a path string, got {resolv!r}")

    allow = ipam.get("allowOverlap", False)
    if not isinstance(allow, bool):
        raise IpamConfigError(f"allowOverlap: expected true or false, got {allow!r}")

    return IpamConfig(
        network=network,
        range_sets=tuple(sets),
        data_dir=parse_data_dir(ipam),
        routes=_parse_routes(ipam.get("routes")),
        dns=dns or None,
        resolv_conf=resolv,
        allow_overlap=allow,
    )
