"""The CNM front-end: Docker's remote NetworkDriver and IpamDriver calls, translated into
framework driver calls (:mod:`splice.plugins.driver`), the port publisher
(:class:`~splice.plugins.portmap.driver.PortmapDriver`) and the pool IPAM
(:class:`~splice.ipam.pools.PoolIpam`).

One :class:`Service` serves every socket of the daemon; :meth:`Service.handler` gives the
``(path, body) -> (status, payload)`` function of one socket (a driver kind, or ``None``
for the IPAM-only ``splice`` socket). Errors become ``{"Err": msg}`` with the HTTP status
of :func:`splice.plugins.errors.classify` (unknown network/endpoint: 404; an id or subnet
conflict: 409).

Attachments: ``Attachment(network=<NetworkID>, container_id=<EndpointID>, ifname="eth")``
(the owner of every kernel object, as on the CNI side); the link is made at CreateEndpoint
with ``placement=IN_HOST`` and left in the host under its temporary name, which Join returns
as ``SrcName`` (libnetwork moves it into the sandbox and renames it); DeleteEndpoint
removes it. State: :mod:`splice.plugins.cnm.state` (networks and endpoints), the IPAM store
(pools and addresses), the owner-tagged kernel objects. :meth:`Service.collect` is the
start-up garbage collection (docs/design.md, "Docker remote driver").
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import threading
import time
from typing import Any, Callable

from splice.ipam.errors import PoolNotFound
from splice.ipam.pools import PoolIpam
from splice.libnet import rtnl
from splice.libnet.names import normalize_mac
from splice.libnet.netns import Netns
from splice.plugins import driver as framework
from splice.plugins.cnm.options import KINDS, Kind, translate
from splice.plugins.cnm.state import StateDir, check_id
from splice.plugins.errors import ConfigError, SpliceError, classify
from splice.plugins.model import Attachment, IPConfig
from splice.plugins.owners import Steps, alias_prefix
from splice.plugins.portmap.driver import PortmapDriver
from splice.plugins.portmap.mapping import PortMapping

log = logging.getLogger("splice.driver")

LOCAL_SPACE = "SpliceLocal"
GLOBAL_SPACE = "SpliceGlobal"
OVERLAY_SPACE = "SpliceOverlay"  # splice-overlay's IPAM: the clusterCIDR pools (Docker's view of the network)
HOST_SPACE = "SpliceOverlayHost"  # the host's leased subnet of each overlay: the addresses handed out
IFNAME = "eth"  # the attachment's interface name: identity only (libnetwork names the interface)
GATEWAY_TYPE = "com.docker.network.gateway"
SERIAL = "com.docker.network.ipam.serial"
PORTMAP = "com.docker.network.portmap"
EXPOSED = "com.docker.network.endpoint.exposedports"
PROTOS = {6: "tcp", 17: "udp", 132: "sctp"}
DYNAMIC_PORTS = (49153, 65535)  # Docker's range when ip_local_port_range cannot be read
DYNAMIC_TRIES = 64


class NotFound(SpliceError):
    """An unknown network or endpoint (404)."""


class Conflict(SpliceError):
    """An id reused with other contents, a subnet or bridge another network has (409)."""


def error_answer(exc: BaseException, ipam: bool = False) -> tuple[int, dict]:
    if isinstance(exc, NotFound):
        status, msg, details = 404, exc.msg, exc.details
    elif isinstance(exc, Conflict):
        status, msg, details = 409, exc.msg, exc.details
    else:
        _code, status, msg, details = classify(exc)
    text = f"{msg} ({details})" if details else msg
    return status, ({"Err": text, "Error": text} if ipam else {"Err": text})


# -- request bodies ------------------------------------------------------------------------
def _obj(body: Any) -> dict:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ConfigError(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _id(b: dict, key: str) -> str:
    try:
        return check_id(b.get(key), key)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _str(b: dict, key: str, required: bool = False) -> str:
    value = b.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{key} is missing")
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {type(value).__name__}")
    if required and not value:
        raise ConfigError(f"{key} must not be empty")
    return value


def _map(b: dict, key: str) -> dict:
    value = b.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be an object, got {type(value).__name__}")
    return value


def _iface(value: Any, what: str, version: int | None = None) -> Any:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__}")
    if "/" not in value:
        raise ConfigError(f"{what} {value[:80]!r} has no prefix length (address/length)")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ConfigError(f"{what} {value[:80]!r} is not an address/prefix length") from None
    if version is not None and iface.version != version:
        raise ConfigError(f"{what} {value!r} is not an IPv{version} address")
    return iface


def _ipam_data(value: Any, version: int, what: str) -> list[dict]:
    """IPv4Data / IPv6Data -> [{"space", "pool", "gateway"}] (strings, validated)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{what} must be a list, got {type(value).__name__}")
    out = []
    for n, d in enumerate(value):
        if not isinstance(d, dict):
            raise ConfigError(f"{what}[{n}] must be an object")
        pool = d.get("Pool")
        if not isinstance(pool, str):
            raise ConfigError(f"{what}[{n}].Pool is missing or not a string")
        try:
            net = ipaddress.ip_network(pool, strict=False)
        except ValueError:
            raise ConfigError(f"{what}[{n}].Pool {pool[:80]!r} is not a CIDR") from None
        if net.version != version:
            raise ConfigError(f"{what}[{n}].Pool {pool!r} is not an IPv{version} subnet")
        gw = d.get("Gateway")
        gateway = None
        if gw not in (None, ""):
            gi = _iface(gw, f"{what}[{n}].Gateway", version)
            if gi.ip not in net:
                raise ConfigError(f"{what}[{n}].Gateway {gw!r} is not in the pool {net}")
            gateway = str(ipaddress.ip_interface((gi.ip, net.prefixlen)))
        space = d.get("AddressSpace")
        out.append({"space": space if isinstance(space, str) else "", "pool": str(net), "gateway": gateway})
    return out


def _port_bindings(value: Any) -> list[dict]:
    """``com.docker.network.portmap`` -> validated bindings (dicts with the Go field names)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{PORTMAP} must be a list, got {type(value).__name__}")
    out = []
    for n, pb in enumerate(value):
        where = f"{PORTMAP}[{n}]"
        if not isinstance(pb, dict):
            raise ConfigError(f"{where} must be an object")
        proto = pb.get("Proto", 6)
        if proto not in PROTOS or isinstance(proto, bool):
            raise ConfigError(f"{where}.Proto must be 6 (tcp), 17 (udp) or 132 (sctp), got {proto!r}")
        ports = {}
        for key in ("Port", "HostPort", "HostPortEnd"):
            v = pb.get(key, 0)
            if v is None:
                v = 0
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 65535:
                raise ConfigError(f"{where}.{key} must be a port number, got {v!r}")
            ports[key] = v
        if not ports["Port"]:
            raise ConfigError(f"{where}.Port (the container port) is missing")
        host_ip = pb.get("HostIP") or ""
        if not isinstance(host_ip, str):
            raise ConfigError(f"{where}.HostIP must be a string")
        if host_ip:
            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError:
                raise ConfigError(f"{where}.HostIP {host_ip[:80]!r} is not an IP address") from None
        end = ports["HostPortEnd"]
        if end and ports["HostPort"] and end < ports["HostPort"]:
            raise ConfigError(f"{where}: HostPortEnd {end} is below HostPort {ports['HostPort']}")
        out.append({"Proto": proto, "Port": ports["Port"], "HostIP": host_ip, "HostPort": ports["HostPort"],
                    "HostPortEnd": end})
    return out


def _dynamic_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        if 0 < lo <= hi <= 65535:
            return lo, hi
    except (OSError, ValueError):
        pass
    return DYNAMIC_PORTS


class _Stripes:
    """Per-id serialisation without a lock per id: ids hash onto a fixed set of locks."""

    def __init__(self, n: int = 64) -> None:
        self._locks = [threading.Lock() for _ in range(n)]

    def __call__(self, key: str) -> threading.Lock:
        return self._locks[hash(key) % len(self._locks)]


class Service:
    """Every call of every socket, on one state (see the module docstring)."""

    def __init__(self, host: Netns, state_dir: str, ipam: PoolIpam, kinds: dict[str, Kind] | None = None, *,
                 node: str | None = None) -> None:
        self.host = host
        self.node = node  # the overlay's node name (splice driver --node; default the host name)
        self._overlays: Any = None  # splice.plugins.vxlan.overlay.OverlayManager, made on first use
        self._overlay_lock = threading.Lock()
        self.ipam = ipam
        self.kinds = dict(kinds if kinds is not None else served_kinds())
        self.state = StateDir(state_dir)
        self.lock = threading.Lock()
        self.stripe = _Stripes()
        self.net_lock = threading.Lock()  # CreateNetwork/DeleteNetwork (rare; their checks span networks)
        self.networks: dict[str, dict] = dict(self.state.load("networks"))
        self.endpoints: dict[str, dict] = dict(self.state.load("endpoints"))
        self._drivers: dict[str, Any] = {}
        self.portmap = PortmapDriver(host)
        self.host_netns_path = f"/proc/{os.getpid()}/ns/net"

    # ================================================================ dispatch
    def handler(self, kind: Kind | None) -> Callable[[str, Any], tuple[int, Any]]:
        ipam_routes: dict[str, Callable[[dict], Any]] = {
            "/IpamDriver.GetCapabilities": lambda b: {"RequiresMACAddress": False, "RequiresRequestReplay": False},
            "/IpamDriver.GetDefaultAddressSpaces": lambda b: {"LocalDefaultAddressSpace": LOCAL_SPACE,
                                                              "GlobalDefaultAddressSpace": GLOBAL_SPACE},
            "/IpamDriver.RequestPool": self.request_pool,
            "/IpamDriver.ReleasePool": self.release_pool,
            "/IpamDriver.RequestAddress": self.request_address,
            "/IpamDriver.ReleaseAddress": self.release_address,
        }
        if kind is not None and kind.overlay:
            ipam_routes["/IpamDriver.GetDefaultAddressSpaces"] = lambda b: {
                "LocalDefaultAddressSpace": OVERLAY_SPACE, "GlobalDefaultAddressSpace": OVERLAY_SPACE}
            ipam_routes["/IpamDriver.RequestPool"] = self.overlay_request_pool
        routes: dict[str, Callable[[dict], Any]] = dict(ipam_routes)
        implements = ["IpamDriver"]
        if kind is not None:
            implements = ["NetworkDriver", "IpamDriver"]
            routes.update({
                "/NetworkDriver.GetCapabilities": lambda b: {"Scope": "local", "ConnectivityScope": "local"},
                "/NetworkDriver.CreateNetwork": lambda b: self.create_network(kind, b),
                "/NetworkDriver.DeleteNetwork": lambda b: self.delete_network(kind, b),
                "/NetworkDriver.AllocateNetwork": lambda b: (_id(b, "NetworkID"), {"Options": {}})[1],
                "/NetworkDriver.FreeNetwork": lambda b: (_id(b, "NetworkID"), {})[1],
                "/NetworkDriver.CreateEndpoint": lambda b: self.create_endpoint(kind, b),
                "/NetworkDriver.EndpointOperInfo": lambda b: self.endpoint_info(kind, b),
                "/NetworkDriver.DeleteEndpoint": lambda b: self.delete_endpoint(kind, b),
                "/NetworkDriver.Join": lambda b: self.join(kind, b),
                "/NetworkDriver.Leave": lambda b: self.leave(kind, b),
                "/NetworkDriver.ProgramExternalConnectivity": lambda b: self.program_external(kind, b),
                "/NetworkDriver.RevokeExternalConnectivity": lambda b: self.revoke_external(kind, b),
                "/NetworkDriver.DiscoverNew": lambda b: {},
                "/NetworkDriver.DiscoverDelete": lambda b: {},
            })
        routes["/Plugin.Activate"] = lambda b: {"Implements": implements}

        def handle(path: str, body: Any) -> tuple[int, Any]:
            fn = routes.get(path)
            is_ipam = path.startswith("/IpamDriver.")
            if fn is None:
                msg = f"unknown endpoint {path[:200]!r}"
                return 404, {"Err": msg, "Error": msg}
            try:
                return 200, fn(_obj(body))
            except Exception as e:  # noqa: BLE001 - every error is an answer
                status, payload = error_answer(e, is_ipam)
                if payload["Err"].startswith("internal error:"):  # a bug, not a refusal: keep the traceback
                    log.exception("%s failed", path)
                return status, payload

        return handle

    # ================================================================ IPAM
    def request_pool(self, b: dict) -> dict:
        space = _str(b, "AddressSpace", required=True)
        pool, sub = _str(b, "Pool"), _str(b, "SubPool")
        v6 = b.get("V6", False)
        if not isinstance(v6, bool):
            raise ConfigError(f"V6 must be a boolean, got {v6!r}")
        opts = _map(b, "Options")
        p = self.ipam.request_pool(space, pool or None, sub or None, opts, v6)
        return {"PoolID": p.id, "Pool": str(p.subnet), "Data": {}}

    def release_pool(self, b: dict) -> dict:
        pid = _str(b, "PoolID", required=True)
        try:
            self.ipam.release_pool(pid)
        except PoolNotFound:
            log.info("ReleasePool of unknown pool %r: nothing to do", pid)  # idempotent
        return {}

    def request_address(self, b: dict) -> dict:
        pid = _str(b, "PoolID", required=True)
        addr = _str(b, "Address")
        opts = _map(b, "Options")
        gateway = opts.get("RequestAddressType") == GATEWAY_TYPE
        serial = str(opts.get(SERIAL, "")).lower() == "true"
        if pid.startswith(OVERLAY_SPACE + "/"):
            return self.overlay_request_address(pid, addr, gateway, serial)
        lease = self.ipam.request_address(pid, addr or None, gateway=gateway, serial=serial)
        return {"Address": str(lease.address), "Data": {}}

    def release_address(self, b: dict) -> dict:
        pid = _str(b, "PoolID", required=True)
        addr = _str(b, "Address", required=True)
        if pid.startswith(OVERLAY_SPACE + "/"):
            try:
                ip = ipaddress.ip_interface(addr).ip
            except ValueError:
                raise ConfigError(f"Address {addr[:80]!r} is not an IP address") from None
            for p in self.ipam.pools(HOST_SPACE):  # a container's: from the host subnet
                if ip in p.subnet and ip != p.subnet.network_address + 1:  # (never the host's gateway)
                    self.ipam.release_address(p.id, ip)
                    return {}
        try:
            self.ipam.release_address(pid, addr)
        except PoolNotFound:
            log.info("ReleaseAddress %s of unknown pool %r: nothing to do", addr, pid)
        return {}

    # ================================================================ splice-overlay
    # Docker sees the clusterCIDR as the network's pool (address space SpliceOverlay); the
    # addresses come from this host's leased subnet (a pool of SpliceOverlayHost), with the
    # host prefix length, so containers reach other hosts through their gateway, the bridge.
    def overlay_request_pool(self, b: dict) -> dict:
        space = _str(b, "AddressSpace", required=True)
        pool, sub = _str(b, "Pool"), _str(b, "SubPool")
        if b.get("V6", False):
            raise ConfigError("splice-overlay: one IPv4 clusterCIDR per network (dual-stack overlays are not "
                              "supported): leave --ipv6 out")
        if space != OVERLAY_SPACE:
            raise ConfigError(f"splice-overlay: unknown address space {space!r} (its own is {OVERLAY_SPACE})")
        if not pool:
            raise ConfigError("splice-overlay: the network needs --subnet <clusterCIDR> (the overlay's address "
                              "space, the same on every host; each host leases a subnet of it from etcd)")
        if sub:
            raise ConfigError("splice-overlay: --ip-range is not supported: each host takes addresses from the "
                              "subnet it leases from etcd")
        p = self.ipam.request_pool(OVERLAY_SPACE, pool, None, _map(b, "Options"), False)
        return {"PoolID": p.id, "Pool": str(p.subnet), "Data": {}}

    def overlay_request_address(self, pid: str, addr: str, gateway: bool, serial: bool) -> dict:
        if gateway:
            if addr:
                raise ConfigError("splice-overlay: the gateway is per host (the first address of the subnet the "
                                  "host leases, on its bridge): leave --gateway out")
            # Docker's network-wide gateway is nominal (the clusterCIDR's first address, held in
            # its pool); each host's containers get their own subnet's gateway in Join
            lease = self.ipam.request_address(pid, gateway=True)
            return {"Address": str(lease.address), "Data": {}}
        with self.lock:
            net = next((n for n in self.networks.values() if n.get("overlay_pool") == pid), None)
        if net is None:
            self.ipam.get_pool(pid)  # PoolNotFound for an unknown pool
            raise ConfigError(f"pool {pid} belongs to no splice-overlay network (yet): --ipam-driver "
                              "splice-overlay serves the addresses of splice-overlay networks only")
        ov = self._overlay(net)
        subnet = ov.subnet_for_add()
        hp = self._host_pool(subnet)
        if addr:
            try:
                ip = ipaddress.ip_interface(addr).ip
            except ValueError:
                raise ConfigError(f"Address {addr[:80]!r} is not an IP address") from None
            if ip not in subnet:
                raise ConfigError(f"address {ip} is not in this host's subnet {subnet} of the overlay: each host "
                                  "hands out addresses of the subnet it leases from etcd")
        lease = self.ipam.request_address(hp, addr or None, serial=serial)
        return {"Address": str(lease.address), "Data": {}}

    def _host_pool(self, subnet: Any) -> str:
        """The IPAM pool of this host's leased subnet, its first address held as the gateway."""
        from splice.ipam.errors import AddressUnavailable
        from splice.ipam.pools import make_pool_id

        pid = make_pool_id(HOST_SPACE, subnet)
        with self._overlay_lock:
            try:
                self.ipam.get_pool(pid)
            except PoolNotFound:
                self.ipam.request_pool(HOST_SPACE, str(subnet), None, {}, subnet.version == 6)
                try:
                    self.ipam.request_address(pid, subnet.network_address + 1, gateway=True)
                except AddressUnavailable:
                    pass
        return pid

    def _overlay_manager(self) -> Any:
        with self._overlay_lock:
            if self._overlays is None:
                import socket

                from splice.plugins.vxlan.overlay import OverlayManager

                self._overlays = OverlayManager(self.node or socket.gethostname(),
                                                os.path.join(self.state.root, "overlay"))
            return self._overlays

    def _overlay(self, net: dict) -> Any:
        """The started overlay of an overlay network (started now if needed: lease, VTEP,
        record, watch, in the daemon's host namespace), as the agent hosts it."""
        driver = self._driver(net)
        ov = self._overlay_manager().overlay(driver.cfg)
        driver.mtu = ov.vtep.mtu
        return ov

    def start_overlays(self) -> list[threading.Thread]:
        """At start-up: every overlay network's overlay started on a thread of its own (a
        call of the network waits for it; a failed start is tried again by the next call)."""
        threads = []
        for net in [n for n in self.networks.values() if KINDS.get(n["kind"]) and KINDS[n["kind"]].overlay
                    and not n.get("pending")]:
            def run(net: dict = net) -> None:
                try:
                    ov = self._overlay(net)
                    self._host_pool(ov.subnet_for_add())
                except Exception as e:  # noqa: BLE001 - the next call tries again
                    log.error("network %s: the overlay did not start: %s", net["id"][:12], classify(e)[2])

            t = threading.Thread(target=run, name=f"overlay-{net['id'][:12]}", daemon=True)
            t.start()
            threads.append(t)
        return threads

    def _leave_overlay(self, net: dict) -> None:
        """DeleteNetwork: stop the overlay and leave (lease revoked, record withdrawn), and
        release the host subnet's IPAM pool."""
        cfg = self._driver(net).cfg
        self._overlay_manager().remove(cfg)
        cidr = ipaddress.ip_network(cfg.cluster_cidr)
        for p in self.ipam.pools(HOST_SPACE):
            if p.subnet.version == cidr.version and p.subnet.subnet_of(cidr):
                self.ipam.release_pool(p.id)

    def close(self) -> None:
        """Overlays stop (leases not revoked: a restart keeps the subnets)."""
        with self._overlay_lock:
            mgr, self._overlays = self._overlays, None
        if mgr is not None:
            mgr.close()

    def _overlay_create(self, kind: Kind, nid: str, v4: list[dict], v6: list[dict], opts: Any) -> None:
        """CreateNetwork checks of an overlay: our IPAM, one IPv4 pool, clusterCIDR = the pool."""
        if v6 or len(v4) != 1 or v4[0]["space"] != OVERLAY_SPACE:
            got = ", ".join(f"{d['pool']} ({d['space'] or 'no address space'})" for d in v4 + v6) or "none"
            raise ConfigError(f"{kind.plugin} networks take their addresses from the subnet each host leases from "
                              f"etcd: create them with --ipam-driver {kind.plugin} and one IPv4 --subnet (the "
                              f"clusterCIDR); got the pool(s) {got}")
        pool = v4[0]["pool"]
        cidr = opts.config.get("clusterCIDR")
        if cidr is None:
            opts.config["clusterCIDR"] = pool
        elif not isinstance(cidr, str) or str(ipaddress.ip_network(cidr, strict=False)) != pool:
            raise ConfigError(f"splice.clusterCIDR {cidr!r} differs from the network's --subnet {pool}")

    # ================================================================ networks
    def _driver(self, net: dict) -> Any:
        d = self._drivers.get(net["id"])
        if d is None:
            cls = framework.driver_class(net["kind"])
            d = cls(cls.parse_config(net["config"]), self.host)
            self._drivers[net["id"]] = d
        return d

    def _network(self, kind: Kind, nid: str) -> dict:
        net = self.networks.get(nid)
        if net is None or net["kind"] != kind.kind:
            raise NotFound(f"network {nid} not found: not created by {kind.plugin}, or deleted")
        return net

    def create_network(self, kind: Kind, b: dict) -> dict:
        nid = _id(b, "NetworkID")
        v4 = _ipam_data(b.get("IPv4Data"), 4, "IPv4Data")
        v6 = _ipam_data(b.get("IPv6Data"), 6, "IPv6Data")
        gateways = [d["gateway"] for d in v4 + v6 if d["gateway"]]
        opts = translate(kind, nid, b.get("Options"), has_gateway=bool(gateways))
        if kind.overlay:
            self._overlay_create(kind, nid, v4, v6, opts)
            gateways = []  # Docker's is nominal: each host's is its subnet's first address
        cls = framework.driver_class(kind.kind)
        cfg = cls.parse_config(opts.config)  # the driver's own validation: nothing made yet
        rec = {"id": nid, "kind": kind.kind, "config": opts.config, "ipv4": v4, "ipv6": v6,
               "internal": opts.internal, "ipv6_enabled": opts.ipv6, "host_binding_ipv4": opts.host_binding_ipv4,
               "dst_prefix": opts.dst_prefix, "created": time.time()}
        if kind.overlay:
            pool = self.ipam.pools(OVERLAY_SPACE)
            rec["overlay_pool"] = next((p.id for p in pool if str(p.subnet) == v4[0]["pool"]), None)
            if rec["overlay_pool"] is None:
                raise ConfigError(f"pool {v4[0]['pool']} was not requested from {kind.plugin}'s IPAM (RequestPool "
                                  f"before CreateNetwork, --ipam-driver {kind.plugin})")
        with self.net_lock:  # one network change at a time: the conflict checks see every network
            old = self.networks.get(nid)
            if old is not None:
                if all(old.get(k) == rec[k] for k in ("kind", "config", "ipv4", "ipv6", "internal")):
                    return {}  # a repeated call
                raise Conflict(f"network {nid} already exists with other settings")
            self._check_conflicts(kind, rec)
            driver = cls(cfg, self.host)
            driver.status()  # e.g. a parent that does not exist, a bridge name taken by a non-bridge
            # the record first, marked pending: a daemon killed in ensure_network leaves a
            # record that the next start's collection removes with what it made
            self.state.put("networks", nid, dict(rec, pending=True))
            try:
                if kind.overlay:  # lease, VTEP + bridge, record, watch; the host subnet's pool
                    with self.lock:
                        self._drivers[nid] = driver
                    ov = self._overlay(rec)
                    self._host_pool(ov.subnet_for_add())
                else:
                    driver.ensure_network([ipaddress.ip_interface(g) for g in gateways])
                self.state.put("networks", nid, rec)
            except BaseException as exc:
                if kind.overlay:
                    try:
                        self._leave_overlay(rec)
                    except Exception as e:  # noqa: BLE001
                        exc.add_note(f"rollback: leave the overlay: {getattr(e, 'msg', None) or e}")
                    with self.lock:
                        self._drivers.pop(nid, None)
                self._remove_network_objects(driver, rec, exc)
                try:
                    self.state.delete("networks", nid)
                except OSError as e:
                    exc.add_note(f"rollback: the state record: {e}")
                raise
            with self.lock:
                self.networks[nid] = rec
                self._drivers[nid] = driver
        log.info("network %s (%s) created: %s", nid[:12], kind.plugin, json.dumps(opts.config, sort_keys=True))
        return {}

    def _check_conflicts(self, kind: Kind, rec: dict) -> None:
        subnets = [ipaddress.ip_network(d["pool"]) for d in rec["ipv4"] + rec["ipv6"]]
        with self.lock:
            others = [n for n in self.networks.values() if n["kind"] == kind.kind and n["id"] != rec["id"]]
        for other in others:
            for d in other["ipv4"] + other["ipv6"]:
                theirs = ipaddress.ip_network(d["pool"])
                for mine in subnets:
                    if mine.version == theirs.version and mine.overlaps(theirs):
                        raise Conflict(f"subnet {mine} overlaps subnet {theirs} of network {other['id'][:12]} "
                                       f"({kind.plugin})")
            if kind.overlay:  # one overlay per name, VNI, device and bridge on a host
                theirs = self._driver(other).cfg
                mine = framework.driver_class(kind.kind).parse_config(rec["config"])
                for attr, what in (("network", "overlay name (splice.name)"), ("vni", "vni"),
                                   ("device", "VXLAN device"), ("bridge", "bridge")):
                    if getattr(mine, attr) == getattr(theirs, attr):
                        raise Conflict(f"{what} {getattr(mine, attr)!r} is already used by network "
                                       f"{other['id'][:12]} ({kind.plugin})")
            if kind.bridge and other["config"].get("bridge") == rec["config"].get("bridge"):
                raise Conflict(f"bridge {rec['config'].get('bridge')!r} is already used by network "
                               f"{other['id'][:12]}")

    def _remove_network_objects(self, driver: Any, rec: dict, exc: BaseException | None = None) -> None:
        remove = getattr(driver, "remove_network", None)
        if remove is None:
            return
        gws = [ipaddress.ip_interface(d["gateway"]) for d in rec["ipv4"] + rec["ipv6"] if d["gateway"]]
        try:
            remove(gws)
        except Exception as e:  # noqa: BLE001
            if exc is None:
                raise
            exc.add_note(f"rollback: remove the network's objects: {getattr(e, 'msg', None) or e}")

    def delete_network(self, kind: Kind, b: dict) -> dict:
        nid = _id(b, "NetworkID")
        with self.net_lock:
            net = self.networks.get(nid)
            if net is None:
                log.info("DeleteNetwork of unknown network %s: nothing to do", nid[:12])
                return {}
            if net["kind"] != kind.kind:
                raise NotFound(f"network {nid} is a {net['kind']} network, not {kind.plugin}'s")
            steps = Steps(f"DeleteNetwork {nid[:12]}")
            with self.lock:
                eps = [e for e in self.endpoints.values() if e["network"] == nid]
            for ep in eps:  # dockerd removes its endpoints first; these are leftovers
                log.warning("DeleteNetwork %s: removing its endpoint %s", nid[:12], ep["id"][:12])
                steps.run(self._remove_endpoint, net, ep)
            driver = self._driver(net)
            steps.run(driver.gc, nid, set())  # what crashed calls left (untracked links)
            steps.run(self.portmap.gc, nid, set())
            if KINDS.get(net["kind"]) is not None and KINDS[net["kind"]].overlay:
                steps.run(self._leave_overlay, net)
            steps.run(self._remove_network_objects, driver, net)
            steps.done()  # on failure the record stays: DeleteNetwork may be called again
            self.state.delete("networks", nid)
            with self.lock:
                self.networks.pop(nid, None)
                self._drivers.pop(nid, None)
        log.info("network %s (%s) deleted", nid[:12], kind.plugin)
        return {}

    # ================================================================ endpoints
    def _endpoint(self, kind: Kind, nid: str, eid: str) -> tuple[dict, dict]:
        net = self._network(kind, nid)
        ep = self.endpoints.get(eid)
        if ep is None or ep["network"] != nid:
            raise NotFound(f"endpoint {eid} not found on network {nid[:12]}")
        return net, ep

    def _attachment(self, net: dict, ep: dict, in_host: bool = False) -> Attachment:
        return Attachment(network=net["id"], container_id=ep["id"], ifname=IFNAME,
                          netns=self.host_netns_path if in_host else None,
                          mac=ep.get("mac_wanted", ep.get("mac_requested")))

    @staticmethod
    def _gateway(net: dict, address: Any) -> Any:
        if net.get("overlay_pool") is not None:  # the host subnet's first address (on the bridge)
            return address.network.network_address + 1
        for d in net["ipv4"] + net["ipv6"]:
            if d["gateway"] and address.ip in ipaddress.ip_network(d["pool"]):
                return ipaddress.ip_interface(d["gateway"]).ip
        return None

    def create_endpoint(self, kind: Kind, b: dict) -> dict:
        nid, eid = _id(b, "NetworkID"), _id(b, "EndpointID")
        net = self._network(kind, nid)
        iface = _map(b, "Interface")
        addrs = []
        for key, version in (("Address", 4), ("AddressIPv6", 6)):
            value = iface.get(key)
            if value not in (None, ""):
                a = _iface(value, f"Interface.{key}", version)
                pools = [ipaddress.ip_network(d["pool"]) for d in net["ipv4" if version == 4 else "ipv6"]]
                if net.get("overlay_pool") is not None:  # the host subnet: inside the clusterCIDR
                    if not any(a.version == p.version and a.network.subnet_of(p) for p in pools):
                        raise ConfigError(f"Interface.{key} {value!r} is not in the overlay {pools[0]}")
                elif pools and not any(a.network == p for p in pools):
                    raise ConfigError(f"Interface.{key} {value!r} is not in a subnet of network {nid[:12]} "
                                      f"({', '.join(map(str, pools))})")
                addrs.append(a)
        mac = iface.get("MacAddress") or None
        if mac is not None:
            if not isinstance(mac, str):
                raise ConfigError("Interface.MacAddress must be a string")
            try:
                mac = normalize_mac(mac)
            except ValueError as e:
                raise ConfigError(f"Interface.MacAddress: {e}") from None
        _map(b, "Options")
        with self.stripe(eid):
            old = self.endpoints.get(eid)
            if old is not None:
                if old["network"] == nid and old["addresses"] == [str(a) for a in addrs] and \
                        old.get("mac_requested") == mac:
                    return self._create_answer(old)  # a repeated call
                raise Conflict(f"endpoint {eid} already exists with other settings")
            if net.get("overlay_pool") is not None:
                self._overlay(net).check_device()  # started (its MTU known); the device made again if gone
            ips = [IPConfig(address=a, gateway=self._gateway(net, a)) for a in addrs]
            wanted = mac
            v4 = next((a for a in addrs if a.version == 4), None)
            if wanted is None and v4 is not None and kind.report_mac:
                wanted = mac_from_ip(v4.ip)
            rec = {"id": eid, "network": nid, "addresses": [str(a) for a in addrs], "mac_requested": mac,
                   "mac_wanted": wanted, "joined": False, "sandbox": None, "ports": [], "created": time.time()}
            self._wire(net, rec, ips)
            try:
                self.state.put("endpoints", eid, rec)
            except BaseException as exc:
                try:
                    self._driver(net).detach(self._attachment(net, rec, kind.detach_in_host), ips)
                except Exception as e:  # noqa: BLE001
                    exc.add_note(f"rollback: detach: {getattr(e, 'msg', None) or e}")
                raise
            with self.lock:
                self.endpoints[eid] = rec
        return self._create_answer(rec)

    def _wire(self, net: dict, rec: dict, ips: list[IPConfig]) -> None:
        """attach (IN_HOST) and note the container end and the host interfaces in ``rec``."""
        att = self._attachment(net, rec)
        wiring = self._driver(net).attach(att, ips, [], placement=framework.IN_HOST)
        pos = wiring.ips[0].interface if wiring.ips and wiring.ips[0].interface is not None else None
        if pos is None:
            pos = next((n for n, i in enumerate(wiring.interfaces) if i.name.startswith("sp")), len(wiring.interfaces) - 1)
        cont = wiring.interfaces[pos]
        rec["src_name"] = cont.name
        rec["mac"] = cont.mac
        rec["host_ifaces"] = [i.name for n, i in enumerate(wiring.interfaces) if n != pos and not i.sandbox]

    def _create_answer(self, rec: dict) -> dict:
        kind = KINDS.get(self.networks[rec["network"]]["kind"])
        if rec.get("mac_requested") is None and rec.get("mac") and (kind is None or kind.report_mac):
            return {"Interface": {"MacAddress": rec["mac"]}}
        return {"Interface": {}}

    def endpoint_info(self, kind: Kind, b: dict) -> dict:
        nid, eid = _id(b, "NetworkID"), _id(b, "EndpointID")
        net, ep = self._endpoint(kind, nid, eid)
        value = {"id": eid, "src_name": ep.get("src_name"), "mac": ep.get("mac"), "addresses": ep["addresses"],
                 "host_interfaces": ep.get("host_ifaces", []), "joined": ep.get("joined", False)}
        if ep.get("ports"):
            value[PORTMAP] = ep["ports"]
        return {"Value": value}

    def _remove_endpoint(self, net: dict, ep: dict) -> None:
        """Unpublish and detach; then forget the record. Raises (record kept) on failure."""
        kind = KINDS.get(net["kind"])
        att = self._attachment(net, ep, in_host=bool(kind and kind.detach_in_host))
        ips = [IPConfig(address=ipaddress.ip_interface(a)) for a in ep["addresses"]]
        steps = Steps(f"DeleteEndpoint {ep['id'][:12]}")
        if ep.get("ports"):
            steps.run(self._unpublish, net, ep)
        steps.run(self._driver(net).detach, att, ips)
        steps.done()
        self.state.delete("endpoints", ep["id"])
        with self.lock:
            self.endpoints.pop(ep["id"], None)

    def delete_endpoint(self, kind: Kind, b: dict) -> dict:
        nid, eid = _id(b, "NetworkID"), _id(b, "EndpointID")
        with self.stripe(eid):
            ep = self.endpoints.get(eid)
            if ep is None:
                log.info("DeleteEndpoint of unknown endpoint %s: nothing to do", eid[:12])
                return {}
            net, ep = self._endpoint(kind, nid, eid)
            self._remove_endpoint(net, ep)
        return {}

    def join(self, kind: Kind, b: dict) -> dict:
        nid, eid = _id(b, "NetworkID"), _id(b, "EndpointID")
        sandbox = _str(b, "SandboxKey")
        _map(b, "Options")
        with self.stripe(eid):
            net, ep = self._endpoint(kind, nid, eid)
            addrs = [ipaddress.ip_interface(a) for a in ep["addresses"]]
            src = ep.get("src_name")
            if ep.get("joined"):  # a repeated Join: the container end is in its sandbox now
                if (ep.get("sandbox") or "") != sandbox:
                    raise Conflict(f"endpoint {eid} is already joined to sandbox {ep.get('sandbox')!r}")
            elif not src or rtnl.run(self.host, lambda rt: rt.get_link(src)) is None:
                # the container end is not in the host (a reboot took it): wire it again
                log.warning("Join %s: its container end %r is not in the host: wiring it again", eid[:12], src)
                if net.get("overlay_pool") is not None:
                    self._overlay(net)  # the VXLAN device and the bridge first (their MTU)
                ips = [IPConfig(address=a, gateway=self._gateway(net, a)) for a in addrs]
                self._driver(net).detach(self._attachment(net, ep, kind.detach_in_host), ips)
                self._wire(net, ep, ips)
            if not ep.get("joined"):
                ep["joined"], ep["sandbox"] = True, sandbox or None
                self.state.put("endpoints", eid, ep)
        answer: dict[str, Any] = {"InterfaceName": {"SrcName": ep["src_name"], "DstPrefix": net["dst_prefix"]},
                                  "StaticRoutes": []}
        gws = {}
        for a in addrs:
            gw = self._gateway(net, a)
            if gw is not None:
                gws.setdefault(gw.version, gw)
        cfg = self._driver(net).cfg
        if net["internal"]:
            answer["DisableGatewayService"] = True
            if net.get("overlay_pool") is not None and 4 in gws:  # no default route; the other hosts still
                answer["StaticRoutes"].append({"Destination": cfg.cluster_cidr, "RouteType": 0,
                                               "NextHop": str(gws[4])})
        elif getattr(cfg, "routed", False):  # an l3 ipvlan: default routes through the device
            for a in addrs:
                v = a.version
                dst = "0.0.0.0/0" if v == 4 else "::/0"
                if not any(r["Destination"] == dst for r in answer["StaticRoutes"]):
                    answer["StaticRoutes"].append({"Destination": dst, "RouteType": 1})
            answer["DisableGatewayService"] = True
        else:
            if 4 in gws:
                answer["Gateway"] = str(gws[4])
            if 6 in gws:
                answer["GatewayIPv6"] = str(gws[6])
            answer["DisableGatewayService"] = not gws
        return answer

    def leave(self, kind: Kind, b: dict) -> dict:
        nid, eid = _id(b, "NetworkID"), _id(b, "EndpointID")
        with self.stripe(eid):
            ep = self.endpoints.get(eid)
            if ep is None:
                log.info("Leave of unknown endpoint %s: nothing to do", eid[:12])
                return {}
            net, ep = self._endpoint(kind, nid, eid)
            if ep.get("joined"):
                ep["joined"], ep["sandbox"] = False, None
                self.state.put("endpoints", eid, ep)
        return {}

    # ================================================================ ports
    def program_external(self, kind: Kind, b: dict) -> dict:
        nid, eid = _id(b, "NetworkID"), _id(b, "EndpointID")
        opts = _map(b, "Options")
        bindings = _port_bindings(opts.get(PORTMAP))
        exposed = opts.get(EXPOSED)
        if exposed is not None and not isinstance(exposed, list):
            raise ConfigError(f"{EXPOSED} must be a list")
        with self.stripe(eid):
            net, ep = self._endpoint(kind, nid, eid)
            if net["internal"]:
                if bindings:
                    log.info("endpoint %s: ports are not published on internal network %s", eid[:12], nid[:12])
                return {}
            if not bindings:
                if ep.get("ports"):  # published before, nothing now
                    self._unpublish(net, ep)
                    ep["ports"] = []
                    self.state.put("endpoints", eid, ep)
                return {}
            published = self._publish(net, ep, bindings)
            ep["ports"] = published
            self.state.put("endpoints", eid, ep)
        return {}

    def _mapping(self, net: dict, pb: dict, host_port: int) -> PortMapping:
        host_ip = pb["HostIP"] or None
        if host_ip in (None, "0.0.0.0") and net.get("host_binding_ipv4"):
            host_ip = net["host_binding_ipv4"]
        return PortMapping(host_port, pb["Port"], PROTOS[pb["Proto"]], host_ip)

    def _publish(self, net: dict, ep: dict, bindings: list[dict]) -> list[dict]:
        """Publish ``bindings``: fixed host ports first (all or nothing), then each dynamic one
        (HostPort 0, or a HostPort-HostPortEnd range) on the first port that is free."""
        att = self._attachment(net, ep)
        addrs = [ipaddress.ip_interface(a) for a in ep["addresses"]]
        ifaces = ep.get("host_ifaces", [])
        chosen: list[tuple[dict, PortMapping]] = []
        dynamic = []
        for pb in bindings:
            if pb["HostPort"] and (not pb["HostPortEnd"] or pb["HostPortEnd"] == pb["HostPort"]):
                chosen.append((pb, self._mapping(net, pb, pb["HostPort"])))
            else:
                dynamic.append(pb)
        try:
            self.portmap.publish(att, [m for _, m in chosen], addrs, host_ifaces=ifaces)
            for pb in dynamic:
                if pb["HostPort"]:
                    candidates = list(range(pb["HostPort"], pb["HostPortEnd"] + 1))
                else:
                    lo, hi = _dynamic_range()
                    start = random.randint(lo, hi)
                    candidates = [lo + (start - lo + i) % (hi - lo + 1) for i in range(min(DYNAMIC_TRIES, hi - lo + 1))]
                last: Exception | None = None
                for port in candidates:
                    m = self._mapping(net, pb, port)
                    try:
                        self.portmap.publish(att, [x for _, x in chosen] + [m], addrs, host_ifaces=ifaces)
                    except SpliceError as e:
                        if e.__class__.__name__ != "PortInUse":
                            raise
                        last = e
                        continue
                    chosen.append((pb, m))
                    break
                else:
                    raise last or ConfigError("no host port to try")
        except BaseException as exc:
            try:  # back to what was published before this call
                before = self._recorded_mappings(ep)
                if before:
                    self.portmap.publish(att, before, addrs, host_ifaces=ifaces)
                else:
                    self.portmap.unpublish(att, None, None)
            except Exception as e:  # noqa: BLE001
                exc.add_note(f"rollback: restore the previous publications: {getattr(e, 'msg', None) or e}")
            raise
        return [dict(pb, HostPort=m.host_port, HostPortEnd=m.host_port,
                     HostIP=str(m.host_ip) if m.host_ip is not None else "") for pb, m in chosen]

    @staticmethod
    def _recorded_mappings(ep: dict) -> list[PortMapping]:
        try:
            return [PortMapping(p["HostPort"], p["Port"], PROTOS[p["Proto"]], p["HostIP"] or None)
                    for p in ep.get("ports") or []]
        except (KeyError, TypeError, ValueError):
            return []

    def _unpublish(self, net: dict, ep: dict) -> None:
        """Remove the endpoint's publications: by what was published (one transaction), else
        (a record without its ports) every element of the attachment, by owner."""
        att = self._attachment(net, ep)
        mappings = self._recorded_mappings(ep)
        addrs = [ipaddress.ip_interface(a) for a in ep["addresses"]]
        if mappings and addrs:
            self.portmap.unpublish(att, mappings, addrs, host_ifaces=ep.get("host_ifaces", []))
        else:
            self.portmap.unpublish(att, None, None)

    def revoke_external(self, kind: Kind, b: dict) -> dict:
        nid, eid = _id(b, "NetworkID"), _id(b, "EndpointID")
        with self.stripe(eid):
            ep = self.endpoints.get(eid)
            if ep is None:
                return {}
            net, ep = self._endpoint(kind, nid, eid)
            if ep.get("ports"):
                self._unpublish(net, ep)
                ep["ports"] = []
                self.state.put("endpoints", eid, ep)
        return {}

    # ================================================================ start-up GC
    def collect(self) -> dict:
        """What containers removed while the driver was down left behind.

        An endpoint that was joined and whose container end is back in the host namespace
        (its temporary name, its MAC: libnetwork moved it back when it removed the sandbox,
        and never called Leave/DeleteEndpoint) or whose sandbox file is gone is garbage:
        its ports, links and nft entries are removed, its record dropped; in the first case
        its addresses are released too (dockerd tried ReleaseAddress while we were down and
        will not again; after a reboot dockerd releases them itself). Then every network's
        driver GC and the port publisher's GC remove owner-tagged objects of endpoints that
        are not in the state (a call that crashed half-way)."""
        stats = {"endpoints": 0, "addresses": 0, "errors": 0}
        for net in [n for n in self.networks.values() if n.get("pending")]:
            log.info("collect: network %s was being created when the daemon stopped: removing it", net["id"][:12])
            try:
                driver = self._driver(net)
                driver.gc(net["id"], set())
                if KINDS.get(net["kind"]) is not None and KINDS[net["kind"]].overlay:
                    self._leave_overlay(net)
                self._remove_network_objects(driver, net)
                self.state.delete("networks", net["id"])
                with self.lock:
                    self.networks.pop(net["id"], None)
                    self._drivers.pop(net["id"], None)
            except Exception as e:  # noqa: BLE001
                stats["errors"] += 1
                log.error("collect: network %s: %s", net["id"][:12], classify(e)[2])
        with self.lock:
            eps = list(self.endpoints.values())
        garbage: list[tuple[dict, bool]] = []

        def find(rt: rtnl.Rtnl) -> None:
            for ep in eps:
                if not ep.get("joined"):
                    continue
                link = rt.get_link(ep["src_name"]) if ep.get("src_name") else None
                back = link is not None and (link.mac or "").lower() == (ep.get("mac") or "").lower()
                gone = bool(ep.get("sandbox")) and not os.path.exists(ep["sandbox"])
                if back or gone:
                    garbage.append((ep, back))

        rtnl.run(self.host, find)
        for ep, back in garbage:
            net = self.networks.get(ep["network"])
            try:
                if net is None:
                    self.state.delete("endpoints", ep["id"])
                    with self.lock:
                        self.endpoints.pop(ep["id"], None)
                    continue
                log.info("collect: endpoint %s of network %s: its container is gone (%s)", ep["id"][:12],
                         net["id"][:12], "its interface is back in the host" if back else "its sandbox is gone")
                self._remove_endpoint(net, ep)
                stats["endpoints"] += 1
                if back:
                    stats["addresses"] += self._release_addresses(net, ep)
            except Exception as e:  # noqa: BLE001 - logged, the next one goes on
                stats["errors"] += 1
                log.error("collect: endpoint %s: %s", ep["id"][:12], classify(e)[2])
        with self.lock:
            nets = list(self.networks.values())
            valid: dict[str, set] = {n["id"]: set() for n in nets}
            for ep in self.endpoints.values():
                valid.setdefault(ep["network"], set()).add((ep["id"], IFNAME))
        self._collect_host_links(nets, valid, stats)
        for net in nets:
            for fn in (self._driver(net).gc, self.portmap.gc):
                try:
                    fn(net["id"], valid[net["id"]])
                except Exception as e:  # noqa: BLE001
                    stats["errors"] += 1
                    log.error("collect: network %s: %s", net["id"][:12], classify(e)[2])
        return stats

    def _collect_host_links(self, nets: list[dict], valid: dict[str, set], stats: dict) -> None:
        """Kinds whose container end is a link of its own (macvlan, ipvlan) leave it in the
        host when CreateEndpoint crashed before its record was written: such a link, tagged
        with a network's alias prefix and an endpoint the state does not know, is detached
        (the drivers' GC looks at sandboxes and 802.1Q users only)."""
        own = [n for n in nets if KINDS.get(n["kind"]) is not None and KINDS[n["kind"]].detach_in_host]
        if not own:
            return
        links = rtnl.run(self.host, lambda rt: rt.dump_links())
        for net in own:
            prefix = alias_prefix(net["id"])
            for link in links:
                alias = link.alias or ""
                if not alias.startswith(prefix):
                    continue
                eid = alias[len(prefix):].rpartition(":")[0]
                if not eid or (eid, IFNAME) in valid[net["id"]]:
                    continue
                log.info("collect: %s %r of network %s has no endpoint record (%s): removing it", link.kind,
                         link.name, net["id"][:12], eid[:12])
                try:
                    att = Attachment(network=net["id"], container_id=eid, ifname=IFNAME, netns=self.host_netns_path)
                    self._driver(net).detach(att, None)
                    stats["links"] = stats.get("links", 0) + 1
                except Exception as e:  # noqa: BLE001
                    stats["errors"] += 1
                    log.error("collect: %s: %s", link.name, classify(e)[2])

    def _release_addresses(self, net: dict, ep: dict) -> int:
        n = 0
        for a in ep["addresses"]:
            ip = ipaddress.ip_interface(a).ip
            if net.get("overlay_pool") is not None:  # from the host subnet's pool
                for p in self.ipam.pools(HOST_SPACE):
                    if ip in p.subnet and ip != p.subnet.network_address + 1 and \
                            self.ipam.release_address(p.id, ip) is not None:
                        n += 1
                continue
            for d in net["ipv4"] + net["ipv6"]:
                if d["space"] not in (LOCAL_SPACE, GLOBAL_SPACE) or ip not in ipaddress.ip_network(d["pool"]):
                    continue
                for p in self.ipam.pools(d["space"]):
                    if str(p.subnet) == d["pool"] and self.ipam.release_address(p.id, ip) is not None:
                        n += 1
                        break
        return n


def mac_from_ip(ip: Any) -> str:
    """Docker's MAC for an endpoint that was given none: ``02:42`` + the IPv4 address
    (libnetwork's GenerateMACFromIP). An address that moves to another endpoint keeps its
    MAC, so the peers' neighbour entries stay right without a gratuitous ARP."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def served_kinds() -> dict[str, Kind]:
    """The kinds of :data:`KINDS` whose driver the framework registry knows."""
    return {k: v for k, v in KINDS.items() if k in framework.DRIVERS}
