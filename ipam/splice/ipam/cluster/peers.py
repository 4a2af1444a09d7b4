"""The peer registry: each host's VTEP record under ``<prefix>/<network>/nodes/<node>``, bound
to the host's subnet lease (it goes away with the lease: revoke, or expiry after the TTL),
and a watcher that tells a callback about every OTHER host's record as it appears, changes
and goes (initial listing + watch, see mirror.py; a join reaches the others in milliseconds).

Record (JSON): ``{"node", "subnet", "underlay", "mac", ...extra}``: the host's name, its
subnet, its underlay address (the VXLAN tunnel endpoint) and its VXLAN device's MAC. What to
do with it (route, neighbour, FDB entry) is the overlay driver's business, not this module's.
A record that does not parse (or names another node than its key) counts as absent.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
from typing import Any, Callable, NamedTuple
from urllib.parse import unquote

from splice.ipam.cluster.errors import ClusterConfigError
from splice.ipam.cluster.etcd import KV, Etcd
from splice.ipam.cluster.mirror import Mirror
from splice.ipam.cluster.subnets import DEFAULT_PREFIX, Layout, SubnetLease

log = logging.getLogger("splice.cluster")

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class Peer(NamedTuple):
    node: str
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    underlay: ipaddress.IPv4Address | ipaddress.IPv6Address
    mac: str
    extra: dict = {}  # (never mutated)

    @classmethod
    def make(cls, node: str, subnet, underlay, mac: str, **extra: Any) -> "Peer":
        try:
            sub = ipaddress.ip_network(subnet)
            addr = ipaddress.ip_address(underlay)
        except (ValueError, TypeError) as e:
            raise ClusterConfigError(f"peer record of {node}: {e}") from None
        m = str(mac).lower()
        if not _MAC.match(m) or int(m[:2], 16) & 1:
            raise ClusterConfigError(f"peer record of {node}: {mac!r} is not a unicast MAC address")
        for k in extra:
            if k in ("node", "subnet", "underlay", "mac"):
                raise ClusterConfigError(f"peer record of {node}: extra field {k!r} shadows a record field")
        return cls(node, sub, addr, m, dict(extra))

    def to_json(self) -> bytes:
        return json.dumps({**self.extra, "node": self.node, "subnet": str(self.subnet),
                           "underlay": str(self.underlay), "mac": self.mac}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Peer":
        d = json.loads(data)
        if not isinstance(d, dict) or not isinstance(d.get("node"), str):
            raise ValueError("not a peer record")
        rest = {k: v for k, v in d.items() if k not in ("node", "subnet", "underlay", "mac")}
        try:
            return cls.make(d["node"], d.get("subnet"), d.get("underlay"), d.get("mac", ""), **rest)
        except ClusterConfigError as e:
            raise ValueError(str(e)) from None


class PeerEvent(NamedTuple):
    kind: str                 # "add" | "update" | "remove"
    node: str
    peer: Peer | None         # None on remove
    previous: Peer | None     # None on add


class PeerRegistry:
    def __init__(self, etcd: Etcd, network: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.etcd = etcd
        self.network = network
        self.layout = Layout(prefix, network)

    def publish(self, lease: SubnetLease, underlay, mac: str, **extra: Any) -> Peer:
        """Put this host's record (node and subnet from ``lease``) under its lease."""
        peer = Peer.make(lease.node, lease.check(), underlay, mac, **extra)
        lease.bind(self.layout.node_key(lease.node), peer.to_json())
        return peer

    def withdraw(self, lease: SubnetLease) -> None:
        lease.unbind(self.layout.node_key(lease.node))

    def _decode(self, kv: KV) -> Peer | None:
        node = unquote(kv.key.decode(errors="replace")[len(self.layout.nodes):])
        try:
            peer = Peer.from_json(kv.value)
        except ValueError as e:
            log.warning("network %s: ignoring the malformed peer record %r: %s", self.network, kv.key, e)
            return None
        if peer.node != node:
            log.warning("network %s: ignoring %r: it names node %r", self.network, kv.key, peer.node)
            return None
        return peer

    def list(self) -> dict[str, Peer]:
        kvs, _ = self.etcd.range(self.layout.nodes, prefix=True)
        return {p.node: p for p in map(self._decode, kvs) if p is not None}

    def watch(self, callback: Callable[[PeerEvent], None], *, exclude: str | None = None,
              idle: float = 2.0) -> "PeerWatcher":
        """Start a watcher: ``callback`` gets every other host's record (``exclude``: this
        host's node name) on the watcher's thread."""
        return PeerWatcher(self, callback, exclude, idle).start()


class PeerWatcher:
    def __init__(self, registry: PeerRegistry, callback, exclude: str | None, idle: float) -> None:
        self.registry = registry
        self.callback = callback
        self.exclude = exclude
        self._peers: dict[str, Peer] = {}
        self._lock = threading.Lock()
        self.mirror = Mirror(registry.etcd, registry.layout.nodes, self._on_change, idle=idle,
                             name=f"splice-peers-{registry.network}")

    def start(self) -> "PeerWatcher":
        self.mirror.start()
        return self

    def stop(self) -> None:
        self.mirror.stop()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self.mirror.wait_synced(timeout)

    def peers(self) -> dict[str, Peer]:
        with self._lock:
            return dict(self._peers)

    def _on_change(self, kind: str, key: bytes, kv: KV | None, prev: KV | None) -> None:
        peer = self.registry._decode(kv) if kv is not None else None
        with self._lock:
            node = unquote(key.decode(errors="replace")[len(self.registry.layout.nodes):])
            if node == self.exclude:
                return
            old = self._peers.get(node)
            if peer is None:
                if old is None:
                    return
                del self._peers[node]
                event = PeerEvent("remove", node, None, old)
            else:
                if old == peer:
                    return
                self._peers[node] = peer
                event = PeerEvent("add" if old is None else "update", node, peer, old)
        self.callback(event)
