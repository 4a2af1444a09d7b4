"""``splice-ipam``: the CNI adapter of splice.ipam (host-local compatible IPAM).

Used two ways: as the ``splice-ipam`` executable (class :class:`SpliceIpam`, run by the
skel) and in-process by splice's own main plugins through the module-level helpers
``ipam_add/ipam_del/ipam_check/ipam_status/ipam_gc`` (see ``splice.plugins.cni.ipam``).

Per-call inputs:

* ``config["ipam"]``, ``config["name"]`` (network name = store directory);
* ``runtimeConfig.ipRanges`` (capability) replaces the configured ranges;
* requested addresses, first non-empty source wins (CNI CONVENTIONS):
  ``runtimeConfig.ips`` (capability) > ``args.cni.ips`` > ``CNI_ARGS`` ``IP=`` (a
  comma-separated list is allowed); with or without a prefix length.

Errors are splice.ipam's (IpamConfigError, PoolExhausted, AddressUnavailable,
StoreBusy, StoreError) or CheckFailed; the skel maps them to CNI codes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
TYPE_CHECKING = False  # no typing import on the VERSION path (bench/startup.py); annotations are strings

from splice.plugins.cni.version import ALL_VERSIONS

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, Iterator
    from splice.ipam.allocator import Ipam, Lease
    from splice.ipam.config import IpamConfig
    from splice.plugins.cni.skel import CmdArgs


NAME_MAX = 255  # bytes of one file name (Linux NAME_MAX): the store directory is named after the network


MAX_RANGES = 256  # ranges of one config (all range sets): real ones have a handful


def _bound_ranges(ipam: object, override: object) -> None:
    """IpamConfigError for more than MAX_RANGES ranges, before they are parsed (every pair
    is checked for overlaps: a 250 KB config of 8000 ranges would cost half a minute)."""
    from splice.ipam.errors import IpamConfigError

    sets = override if override is not None else (ipam.get("ranges") if isinstance(ipam, dict) else None)
    if not isinstance(sets, list):
        return
    n = sum(len(rs) if isinstance(rs, list) else 1 for rs in sets)
    if n > MAX_RANGES:
        where = "runtimeConfig.ipRanges" if override is not None else "ipam.ranges"
        raise IpamConfigError(f"{where}: {n} ranges, at most {MAX_RANGES} are allowed")


def _runtime_config(a: "CmdArgs") -> dict:
    rc = a.config.get("runtimeConfig")
    return rc if isinstance(rc, dict) else {}


def _config(a: "CmdArgs", *, ranges: bool = True) -> "IpamConfig":
    """The parsed IPAM config. With ``ranges=False`` (DEL, GC) a config whose ranges do
    not parse still yields the store location, so a release is never blocked by it."""
    from splice.ipam.config import parse_ipam_config, store_location
    from splice.ipam.errors import IpamConfigError

    ipam = a.config.get("ipam")
    name = a.config.get("name")
    if isinstance(name, str) and len(name.encode(errors="surrogateescape")) > NAME_MAX:
        raise IpamConfigError(f"network name of {len(name.encode(errors='surrogateescape'))} bytes: splice-ipam keeps "
                              f"a network's store in <dataDir>/<name>, a file name of at most {NAME_MAX} bytes")
    override = _runtime_config(a).get("ipRanges") or None
    try:
        _bound_ranges(ipam, override)
        cfg = parse_ipam_config(ipam, name, override)
    except IpamConfigError:
        if ranges:
            raise
        return store_location(ipam, name)
    if ranges and cfg.dns is not None:  # it becomes the result's dns: malformed = nothing allocated
        from splice.plugins.cni.errors import CniError
        from splice.plugins.cni.types import config_dns

        try:
            config_dns(cfg.dns, "ipam.dns")
        except CniError as exc:
            raise IpamConfigError(exc.msg) from None
    return cfg


# -- shared stores (a long-lived process: the agent) ---------------------------------
# Opening a store costs a connect and three PRAGMAs, closing the last connection a WAL
# checkpoint: a noticeable share of an ADD in the agent. share_stores() keeps one open Store per
# store directory for the whole process (a Store serialises its transactions with its own
# lock; SQLite's BEGIN IMMEDIATE serialises writers across processes as before). Before
# each use the file is stat()ed: a store file removed or replaced since it was opened is
# closed and opened again, so a cached connection never writes to a deleted file.
class _Shared:
    __slots__ = ("store", "ino", "last")

    def __init__(self, store: Any, ino: tuple[int, int] | None) -> None:
        self.store, self.ino = store, ino
        self.last = time.monotonic()


_stores: dict[str, _Shared] | None = None
_stores_lock = threading.Lock()


def share_stores(enabled: bool = True) -> None:
    """Keep stores open between calls (on), or close them all (off)."""
    global _stores
    with _stores_lock:
        old, _stores = _stores, ({} if enabled else None)
    for entry in (old or {}).values():
        entry.store.close()


def prune_stores(idle_s: float) -> int:
    """Close the shared stores unused for ``idle_s`` seconds; how many were closed."""
    now = time.monotonic()
    with _stores_lock:
        if not _stores:
            return 0
        old = [k for k, e in _stores.items() if now - e.last >= idle_s]
        dropped = [_stores.pop(k) for k in old]
    for entry in dropped:
        entry.store.close()  # waits for a transaction in flight (the store's lock)
    return len(dropped)


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _shared_store(directory: str) -> Any:
    from splice.ipam.store import Store

    key = os.path.abspath(directory)
    with _stores_lock:
        table = _stores
        if table is None:
            return None
        entry = table.get(key)
        if entry is not None:
            now_id = _file_id(entry.store.path)
            if entry.ino is not None and now_id == entry.ino:
                entry.last = time.monotonic()
                return entry.store
            entry.store.close()  # gone, replaced, or opened by a call (identity unknown)
        store = Store(key)
        ino = _file_id(store.path)
        if ino is not None:
            store.open()
            if _file_id(store.path) != ino:  # replaced while opening: do not keep it open
                store.close()
                ino = None
        table[key] = _Shared(store, ino)
        return store


def host_prefixes(a: "CmdArgs", cfg: "IpamConfig") -> "Callable[[], list[tuple[str, Any]]]":
    """The overlap check's view of the host: the connected routes (main table, no gateway)
    that overlap a configured subnet, with their interface names. One route dump per
    family in the host namespace, one lookup per overlapping route."""

    def read() -> "list[tuple[str, Any]]":
        import socket

        from splice.libnet import rtnl

        subnets = [r.subnet for rs in cfg.range_sets for r in rs.ranges]
        families = {socket.AF_INET6 if n.version == 6 else socket.AF_INET for n in subnets}

        def part(rt: "Any") -> "list[tuple[str, Any]]":
            out = []
            for fam in families:
                for r in rt.routes(fam):
                    if r.gw is not None or r.table != rtnl.RT_TABLE_MAIN or not r.oif or r.dst.prefixlen == 0:
                        continue
                    if any(r.dst.version == n.version and r.dst.overlaps(n) for n in subnets):
                        link = rt.get_link_by_index(r.oif)
                        if link is not None:
                            out.append((link.name, r.dst))
            return out

        return rtnl.run(a.host_ns(), part)

    return read


def own_interfaces(a: "CmdArgs") -> list[str]:
    """The interfaces of the network itself (its bridge, a macvlan/ipvlan master), whose
    routes are not an overlap."""
    out = []
    for key in ("bridge", "master"):
        v = a.config.get(key)
        if isinstance(v, str) and v:
            out.append(v)
    if not out and "bridge" in str(a.config.get("type", "")):
        out.append("cni0")  # the bridge plugins' default bridge
    return out


@contextlib.contextmanager
def _ipam(cfg: "IpamConfig", a: "CmdArgs | None" = None, check_host: bool = False) -> Iterator["Ipam"]:
    """An Ipam for one call: on a shared store (kept open) or its own (closed at the end).
    ``check_host``: refuse a subnet overlapping another host interface's (allowOverlap)."""
    from splice.ipam.allocator import Ipam

    if check_host and a is not None:
        ipam = Ipam(cfg, host_routes=host_prefixes(a, cfg), own_interfaces=own_interfaces(a))
    else:
        ipam = Ipam(cfg)
    shared = _shared_store(cfg.store_dir) if _stores is not None else None
    if shared is not None:
        ipam.store = shared
        yield ipam
        return
    with ipam:
        yield ipam


def _open(a: "CmdArgs", *, ranges: bool = True) -> "contextlib.AbstractContextManager[Ipam]":
    return _ipam(_config(a, ranges=ranges))


def _as_list(value: Any, where: str) -> list[str]:
    from splice.ipam.errors import IpamConfigError

    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise IpamConfigError(f"{where}: expected a list of IP addresses, got {value!r}")
    return value


def _env_error() -> type:
    """An IpamConfigError that the error table maps as InvalidEnvironment (code 4): a bad
    ``CNI_ARGS IP`` is the environment's fault, callers catching IpamConfigError still do."""
    global _EnvIpError
    if _EnvIpError is None:
        from splice.ipam.errors import IpamConfigError
        from splice.plugins.errors import InvalidEnvironment

        class BadRequestedIp(InvalidEnvironment, IpamConfigError):
            pass

        _EnvIpError = BadRequestedIp
    return _EnvIpError


_EnvIpError: "type | None" = None


def requested_ips(a: "CmdArgs") -> list:
    """Requested addresses (``ip_interface``) by precedence: capability ``ips`` >
    ``args.cni.ips`` > CNI_ARGS ``IP``. Each may carry a prefix length or not."""
    import ipaddress

    from splice.ipam.errors import IpamConfigError

    raw: list[str] = []
    where = ""
    caps = _runtime_config(a).get("ips")
    args = a.config.get("args")
    cni = args.get("cni") if isinstance(args, dict) else None
    from_args = cni.get("ips") if isinstance(cni, dict) else None
    if caps:
        raw, where = _as_list(caps, "runtimeConfig.ips"), "runtimeConfig.ips"
    elif from_args:
        raw, where = _as_list(from_args, "args.cni.ips"), "args.cni.ips"
    elif (a.args or {}).get("IP"):
        raw, where = [s for s in a.args["IP"].split(",") if s.strip()], "CNI_ARGS IP"
    out = []
    for s in raw:
        try:
            out.append(ipaddress.ip_interface(s.strip()))
        except ValueError:
            if where == "CNI_ARGS IP":  # the environment's (code 4), not the config's (code 7)
                raise _env_error()(f"{where}: invalid IP address {s!r}") from None
            raise IpamConfigError(f"{where}: invalid IP address {s!r}") from None
    return out


def lease_result(cfg: "IpamConfig", leases: "list[Lease]") -> dict:
    """The abbreviated IPAM result (canonical 1.1.0 shape: no interfaces)."""
    ips = []
    for lease in leases:
        ip: dict = {"address": str(lease.address)}
        if lease.gateway is not None:
            ip["gateway"] = str(lease.gateway)
        ips.append(ip)
    result: dict = {"cniVersion": "1.1.0", "ips": ips, "routes": [r.to_dict() for r in cfg.routes]}
    dns = {k: v for k, v in (cfg.dns or {}).items() if v not in (None, "", [], {})}
    if dns:
        result["dns"] = dns
    return result


# --------------------------------------------------------------------------- helpers


def ipam_add(a: "CmdArgs") -> dict:
    """Allocate for ``(a.container_id, a.ifname)``; the canonical IPAM result."""
    import os

    cfg = _config(a)
    wanted = requested_ips(a)
    # The host overlap check (as Docker's at network creation) runs on the network's first
    # ADD on this host (its store does not exist yet) and on every STATUS: not on the ADD
    # hot path, where the routes are those the network itself made.
    with _ipam(cfg, a, check_host=not os.path.exists(cfg.store_dir)) as ipam:
        leases = ipam.allocate(a.container_id, a.ifname, wanted)
    return lease_result(cfg, leases)


def ipam_del(a: "CmdArgs") -> "list[Lease]":
    """Release (idempotent, needs no netns); returns what was released."""
    with _open(a, ranges=False) as ipam:
        return ipam.release(a.container_id, a.ifname)


def ipam_check(a: "CmdArgs") -> list:
    """CheckFailed unless ``(cid, ifname)`` holds a reservation and every reserved address
    is listed in ``prevResult.ips``. Addresses that later chained plugins added to the
    result are not ours and are not required to be reserved. Returns the leases."""
    import ipaddress

    from splice.plugins.errors import CheckFailed

    with _open(a, ranges=False) as ipam:
        leases = ipam.get(a.container_id, a.ifname)
    name = a.config.get("name")
    if not leases:
        raise CheckFailed(
            f"no IP address is reserved for container {a.container_id} interface {a.ifname} on network {name}"
        )
    listed = set()
    for ip in (a.prev_result or {}).get("ips") or []:
        addr = ip.get("address") if isinstance(ip, dict) else None
        try:
            listed.add(ipaddress.ip_interface(addr).ip)
        except (TypeError, ValueError):
            raise CheckFailed(f"prevResult has an invalid address {addr!r}") from None
    if listed:  # a prevResult without addresses (e.g. L2-only chains) lists nothing to compare
        for lease in leases:
            if lease.address.ip not in listed:
                raise CheckFailed(
                    f"address {lease.address.ip} reserved for container {a.container_id} interface {a.ifname} "
                    f"on network {name} is missing from prevResult"
                )
    return leases


def ipam_status(a: "CmdArgs") -> None:
    with _ipam(_config(a), a, check_host=True) as ipam:
        ipam.status()


def ipam_gc(a: "CmdArgs") -> "list[Lease]":
    """Release every reservation of the network not in the GC keep-list (union of
    ``cni.dev/valid-attachments`` and legacy ``cni.dev/attachments``)."""
    from splice.plugins.cni.skel import valid_attachments

    valid = valid_attachments(a.config)
    with _open(a, ranges=False) as ipam:
        return ipam.gc(valid)


class SpliceIpam:
    """The ``splice-ipam`` executable's plugin (see the module docstring)."""

    name = "splice-ipam"
    supported_versions: tuple[str, ...] = ALL_VERSIONS
    cni_args = frozenset({"IP"})

    def add(self, a: "CmdArgs") -> dict:
        """The result, checked to render in the config's version before it is returned: a
        result that cannot be printed would leave a lease nobody knows about."""
        from splice.plugins.cni.types import convert

        result = ipam_add(a)
        try:
            convert(result, a.version)
        except BaseException as exc:
            try:
                ipam_del(a)
            except Exception as e:  # noqa: BLE001 - reported on the original error
                exc.add_note(f"rollback: IPAM release: {getattr(e, 'msg', None) or e}")
            raise
        return result

    def delete(self, a: "CmdArgs") -> None:
        ipam_del(a)

    def check(self, a: "CmdArgs") -> None:
        ipam_check(a)

    def status(self, a: "CmdArgs") -> None:
        ipam_status(a)

    def gc(self, a: "CmdArgs") -> None:
        ipam_gc(a)
