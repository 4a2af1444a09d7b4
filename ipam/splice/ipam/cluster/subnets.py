"""Host subnet leases: a network's ``clusterCIDR`` cut into ``subnetLen`` subnets, one per host
(node), each held in etcd by a key bound to the host's etcd lease (flannel's subnet manager,
reimplemented on the v3 JSON gateway).

Keys (``prefix`` default ``/splice``; network and node names percent-encoded):

* ``<prefix>/<network>/config``: ``{"clusterCIDR": ..., "subnetLen": ...}``, created by the
  first host (no lease); a host configured otherwise gets :class:`ClusterConfigError`.
* ``<prefix>/<network>/subnets/<address>-<len>``: ``{"node": NAME, "host": HOST ID}``, bound
  to the lease (the host id, random, in ``<state_dir>/host-id``, tells apart two hosts given
  one node name: the second gets :class:`NodeNameInUse`). ``{"node": NAME}`` without a lease
  is a reservation (put by an operator): that node uses it, nobody else.
* ``<prefix>/<network>/nodes/<node>``: the peer record (peers.py), bound to the same lease.

A claim is one transaction ``if create_revision(key) == 0 then put(key, lease)``: two hosts can
never hold one subnet, whatever they race. The host keeps its choice in a state file
(``<state_dir>/subnet-<network>.json``, written atomically) and, after a restart, renews the
same subnet: its old lease if still alive, else a new lease on the same key if free. If
another host took it meanwhile: :class:`SubnetTaken` (or, with ``allow_new=True``, a new
subnet: only for a host whose containers hold no address of the old one).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from typing import Callable, NamedTuple
from urllib.parse import quote

from splice.ipam.cluster.errors import (ClusterConfigError, ClusterError, ClusterUnavailable, EtcdError,
                                        NodeNameInUse, NoFreeSubnet, SubnetTaken)
from splice.ipam.cluster.etcd import KV, Etcd

log = logging.getLogger("splice.cluster")

DEFAULT_PREFIX = "/splice"
DEFAULT_TTL = 20          # seconds; renewed every TTL/3
DEFAULT_SUBNET_LEN = 24
CHOICES = ("hash", "first", "random")
STATE_VERSION = 1

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def component(name: str, what: str) -> str:
    """A name as one key component: percent-encoded (no ``/``), never empty."""
    if not isinstance(name, str) or not name or len(name.encode()) > 253:
        raise ClusterConfigError(f"{what} {name!r}: expected a non-empty name of at most 253 bytes")
    return quote(name, safe="")


class Layout(NamedTuple):
    """Where a network's keys live."""

    prefix: str
    network: str

    @property
    def base(self) -> str:
        p = self.prefix or DEFAULT_PREFIX
        if not p.startswith("/"):
            raise ClusterConfigError(f"etcd prefix {self.prefix!r}: must start with /")
        return f"{p.rstrip('/')}/{component(self.network, 'network')}/"

    @property
    def config(self) -> str:
        return self.base + "config"

    @property
    def subnets(self) -> str:
        return self.base + "subnets/"

    @property
    def nodes(self) -> str:
        return self.base + "nodes/"

    def subnet_key(self, subnet: IPNetwork) -> str:
        return f"{self.subnets}{subnet.network_address}-{subnet.prefixlen}"

    def node_key(self, node: str) -> str:
        return self.nodes + component(node, "node")

    def subnet_of(self, key: bytes | str) -> IPNetwork | None:
        k = key.decode() if isinstance(key, bytes) else key
        if not k.startswith(self.subnets):
            return None
        addr, _, plen = k[len(self.subnets):].rpartition("-")
        try:
            return ipaddress.ip_network(f"{addr}/{plen}")
        except ValueError:
            return None


class SubnetSpace:
    """The cluster CIDR and the subnets it is cut into (never enumerated: /32 → /64 is fine)."""

    __slots__ = ("cidr", "subnet_len")

    def __init__(self, cidr: IPNetwork, subnet_len: int) -> None:
        self.cidr = cidr
        self.subnet_len = subnet_len

    @classmethod
    def parse(cls, cluster_cidr: str, subnet_len: int = DEFAULT_SUBNET_LEN) -> "SubnetSpace":
        try:
            cidr = ipaddress.ip_network(cluster_cidr, strict=True)
        except (ValueError, TypeError) as e:
            raise ClusterConfigError(f"clusterCIDR {cluster_cidr!r}: {e}") from None
        if isinstance(subnet_len, bool) or not isinstance(subnet_len, int):
            raise ClusterConfigError(f"subnetLen {subnet_len!r}: expected an integer")
        if not cidr.prefixlen <= subnet_len <= cidr.max_prefixlen - 2:
            raise ClusterConfigError(f"subnetLen {subnet_len}: must be between the clusterCIDR's prefix length "
                                     f"{cidr.prefixlen} and {cidr.max_prefixlen - 2} (a subnet needs room for hosts)")
        return cls(cidr, subnet_len)

    @property
    def count(self) -> int:
        return 1 << (self.subnet_len - self.cidr.prefixlen)

    def nth(self, i: int) -> IPNetwork:
        size = 1 << (self.cidr.max_prefixlen - self.subnet_len)
        return ipaddress.ip_network((int(self.cidr.network_address) + i * size, self.subnet_len))

    def index(self, subnet: IPNetwork) -> int | None:
        """The subnet's position, None when it is not one of this space's subnets."""
        if subnet.version != self.cidr.version or subnet.prefixlen != self.subnet_len or not subnet.subnet_of(self.cidr):
            return None
        return (int(subnet.network_address) - int(self.cidr.network_address)) >> (self.cidr.max_prefixlen - self.subnet_len)

    def first_free(self, used: set[int], start: int) -> int | None:
        """The first index at or after ``start`` (wrapping) not in ``used``: at most
        ``len(used) + 1`` steps."""
        n = self.count
        for step in range(min(n, len(used) + 1)):
            i = (start + step) % n
            if i not in used:
                return i
        return None

    def start(self, node: str, choice: str) -> int:
        if choice == "first":
            return 0
        if choice == "random":
            import random

            return random.randrange(self.count)
        # "hash": a node tries the same subnet first every time (stable after a lost state
        # file), and concurrent joiners start at different places (few conflicting txns)
        import hashlib  # (imported on a claim only: ~5 ms)

        return int.from_bytes(hashlib.sha256(node.encode()).digest()[:16], "big") % self.count


class LeaseStatus(NamedTuple):
    """What a caller reports. ``state``: "none" (not acquired), "held" (renewed within the
    TTL), "unreachable" (etcd did not answer the last renewal: the subnet is still ours as far
    as we know, keep using it), "lost" (another host holds it now: stop using it)."""

    state: str
    subnet: IPNetwork | None
    node: str
    reason: str = ""
    renewed_at: float | None = None   # time.time() of the last successful renewal
    lease: int = 0

    @property
    def usable(self) -> bool:
        """May ADDs take addresses from ``subnet``?"""
        return self.state in ("held", "unreachable") and self.subnet is not None


class StateFile:
    """``<state_dir>/subnet-<network>.json``, root-only, replaced atomically."""

    def __init__(self, state_dir: str, network: str) -> None:
        self.dir = state_dir
        self.path = os.path.join(state_dir, f"subnet-{component(network, 'network')}.json")

    def load(self) -> dict | None:
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable subnet state %s: %s", self.path, e)
            return None
        return data if isinstance(data, dict) else None

    def save(self, data: dict) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        tmp = f"{self.path}.tmp.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, json.dumps(data, sort_keys=True).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def host_id(self) -> str:
        """This state directory's random identity (``<state_dir>/host-id``, made once): two
        agents given one node name are told apart by it."""
        path = os.path.join(self.dir, "host-id")
        for _ in range(3):
            try:
                with open(path, "rb") as f:
                    hid = f.read().decode("ascii", "replace").strip()
                if len(hid) == 32 and all(c in "0123456789abcdef" for c in hid):
                    return hid
                log.warning("replacing the malformed %s", path)
                os.unlink(path)
            except FileNotFoundError:
                pass
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue  # made by a concurrent first start: read it
            try:
                os.write(fd, os.urandom(16).hex().encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace").strip()


def owner_of(kv: KV | None) -> str | None:
    if kv is None:
        return None
    try:
        node = json.loads(kv.value).get("node")
    except (ValueError, AttributeError):
        return None
    return node if isinstance(node, str) else None


def host_of(kv: KV | None) -> str | None:
    try:
        host = json.loads(kv.value).get("host")
    except (ValueError, AttributeError):
        return None
    return host if isinstance(host, str) else None


class SubnetLease:
    """This host's subnet of one network. ``acquire()`` claims or renews it, ``start()``
    keeps the lease alive on a thread (or call ``renew()`` yourself), ``status()`` /
    ``check()`` say whether it may be used, ``bind()`` puts more keys under the same lease
    (the peer record), ``close()`` stops renewing (the keys expire after the TTL; a restart
    within it renews them unchanged), ``release()`` gives everything back at once."""

    def __init__(self, etcd: Etcd, network: str, cluster_cidr: str, *, node: str, state_dir: str,
                 subnet_len: int = DEFAULT_SUBNET_LEN, prefix: str = DEFAULT_PREFIX, ttl: int = DEFAULT_TTL,
                 choice: str = "hash", on_change: Callable[[LeaseStatus], None] | None = None) -> None:
        if choice not in CHOICES:
            raise ClusterConfigError(f"subnet choice {choice!r}: expected one of {', '.join(CHOICES)}")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 2:
            raise ClusterConfigError(f"lease TTL {ttl!r}: expected an integer of at least 2 (seconds)")
        self.etcd = etcd
        self.network = network
        self.node = node
        self.space = SubnetSpace.parse(cluster_cidr, subnet_len)
        self.layout = Layout(prefix, network)
        self.layout.node_key(node)  # validates the node name
        self.ttl = ttl
        self.choice = choice
        self.on_change = on_change
        self.state = StateFile(state_dir, network)
        self._host = self.state.host_id()
        self._lock = threading.RLock()
        self._status = LeaseStatus("none", None, node, "not acquired yet")
        self._bound: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- status --------------------------------------------------------------------------
    @property
    def subnet(self) -> IPNetwork | None:
        return self._status.subnet

    @property
    def lease(self) -> int:
        return self._status.lease

    def status(self) -> LeaseStatus:
        return self._status

    def check(self) -> IPNetwork:
        """The subnet ADDs may use, or raise: SubnetTaken (lost: never use it), ClusterError
        (not acquired). An "unreachable" lease answers its subnet: ask ``status()`` to report
        the etcd failure."""
        st = self._status
        if st.state == "lost":
            raise SubnetTaken(st.reason, subnet=st.subnet)
        if not st.usable:
            raise ClusterError(f"network {self.network}: this host holds no subnet: {st.reason}")
        return st.subnet

    def _set(self, state: str, subnet: IPNetwork | None, reason: str, *, lease: int | None = None,
             renewed: bool = False) -> LeaseStatus:
        with self._lock:
            old = self._status
            new = LeaseStatus(state, subnet, self.node, reason, time.time() if renewed else old.renewed_at,
                              old.lease if lease is None else lease)
            self._status = new
        if self.on_change is not None and (old.state, old.subnet, old.lease) != (new.state, new.subnet, new.lease):
            try:
                self.on_change(new)
            except Exception:  # noqa: BLE001
                log.exception("subnet lease on_change callback failed")
        return new

    # -- acquire -------------------------------------------------------------------------
    def _value(self) -> bytes:
        return json.dumps({"node": self.node, "host": self._host}).encode()

    def _whose(self, kv: KV | None) -> str:
        """"free", "mine", "reserved" (put for this node without a lease and without a host:
        an operator's reservation, kept as it is), "twin" (this node name, another host) or
        "other"."""
        if kv is None:
            return "free"
        if owner_of(kv) != self.node:
            return "other"
        host = host_of(kv)
        if host == self._host:
            return "mine"
        if host is None and kv.lease == 0:
            return "reserved"
        return "twin"

    def _twin(self, kv: KV) -> NodeNameInUse:
        ttl = self.etcd.lease_ttl(kv.lease) if kv.lease else -1
        return NodeNameInUse(
            f"network {self.network}: node name {self.node} is in use by another host (host id {host_of(kv)}, "
            f"{kv.key.decode(errors='replace')}): give every host its own node name",
            f"if this host's state directory {self.state.dir} was wiped, its former lease expires in "
            f"{max(ttl, 0)} s" if ttl >= 0 else "")

    def _ensure_config(self) -> None:
        want = {"clusterCIDR": str(self.space.cidr), "subnetLen": self.space.subnet_len}
        created, kv = self.etcd.create(self.layout.config, json.dumps(want, sort_keys=True))
        if created:
            return
        if kv is None:
            kv = self.etcd.get(self.layout.config)
        try:
            have = json.loads(kv.value) if kv is not None else want
        except ValueError:
            have = None
        if have != want:
            raise ClusterConfigError(
                f"network {self.network}: this host has clusterCIDR {want['clusterCIDR']} subnetLen {want['subnetLen']}, "
                f"but etcd ({self.layout.config}) has {kv.value.decode(errors='replace') if kv else '?'}: "
                "every host of a network needs the same values")

    def saved_subnet(self) -> IPNetwork | None:
        """The subnet of this host's state file (this network, node, clusterCIDR and
        subnetLen), None without one: what a host restarted while etcd is out of reach
        still holds (its lease does not expire while the cluster has no leader)."""
        return self._saved_subnet()[0]

    def _saved_subnet(self) -> tuple[IPNetwork | None, int]:
        data = self.state.load()
        if not data:
            return None, 0
        try:
            if (data.get("network"), data.get("node"), data.get("clusterCIDR"), data.get("subnetLen")) != (
                    self.network, self.node, str(self.space.cidr), self.space.subnet_len):
                log.warning("subnet state %s is for another network/node/cidr: ignored", self.state.path)
                return None, 0
            subnet = ipaddress.ip_network(data["subnet"])
            lease = int(data.get("lease") or 0)
        except (KeyError, ValueError, TypeError):
            log.warning("subnet state %s is malformed: ignored", self.state.path)
            return None, 0
        if self.space.index(subnet) is None:
            return None, 0
        return subnet, lease

    def _save(self, subnet: IPNetwork, lease: int) -> None:
        self.state.save({"version": STATE_VERSION, "network": self.network, "node": self.node,
                         "clusterCIDR": str(self.space.cidr), "subnetLen": self.space.subnet_len,
                         "subnet": str(subnet), "lease": str(lease)})

    def acquire(self, *, allow_new: bool = False) -> IPNetwork:
        """Claim this host's subnet (or renew the one it had): the subnet, or raise
        ClusterUnavailable (etcd down: a host without a subnet cannot start),
        ClusterConfigError, SubnetTaken (the saved subnet is another host's now and
        ``allow_new`` is False), NoFreeSubnet."""
        with self._lock:
            self._ensure_config()
            granted: list[int] = []

            def new_lease() -> int:
                if not granted:
                    granted.append(self.etcd.lease_grant(self.ttl)[0])
                return granted[0]

            try:
                subnet, lease, how = self._claim(new_lease, allow_new)
            except BaseException:
                for lid in granted:
                    try:
                        self.etcd.lease_revoke(lid, retry_for=0.5)
                    except ClusterError:
                        pass
                raise
            if granted and lease != granted[0]:
                self.etcd.lease_revoke(granted[0], retry_for=0.5)
            self._save(subnet, lease)
            if self._status.subnet is not None and subnet != self._status.subnet:
                self._bound.clear()  # records made for the old subnet: the caller publishes anew
            for key, value in self._bound.items():
                self.etcd.put(key, value, lease=lease)
            self._set("held", subnet, how, lease=lease, renewed=True)
            log.info("network %s: node %s %s %s", self.network, self.node, how, subnet)
            return subnet

    def _move(self, key: bytes | str, kv: KV, lid: int) -> bool:
        """Put this host's key, read as ``kv``, under lease ``lid`` (compare-and-swap on its
        mod revision); a retried swap whose first try applied counts too."""
        if self.etcd.replace(key, self._value(), mod_revision=kv.mod_revision, lease=lid):
            return True
        now = self.etcd.get(key)
        return self._whose(now) == "mine" and now.lease == lid

    def _claim(self, new_lease: Callable[[], int], allow_new: bool) -> tuple[IPNetwork, int, str]:
        etcd, value = self.etcd, self._value()
        saved, saved_lease = self._saved_subnet()
        if saved is not None:
            key = self.layout.subnet_key(saved)
            for _ in range(5):
                kv = etcd.get(key)
                whose = self._whose(kv)
                if whose == "mine":
                    if kv.lease and kv.lease == saved_lease and etcd.lease_keepalive(kv.lease) > 0:
                        return saved, kv.lease, "renewed the lease it held on"
                    lid = new_lease()
                    if self._move(key, kv, lid):
                        return saved, lid, "took over with a new lease"
                    continue
                if whose == "reserved":
                    return saved, new_lease(), "uses its reservation"
                if whose == "twin":
                    raise self._twin(kv)
                if whose == "free":
                    lid = new_lease()
                    created, kv = etcd.create(key, value, lease=lid)
                    if created or (self._whose(kv) == "mine" and kv.lease == lid):
                        return saved, lid, "re-claimed its former subnet"
                    if kv is None:
                        continue
                    if self._whose(kv) != "other":
                        continue
                holder = owner_of(kv)
                msg = (f"network {self.network}: subnet {saved} of node {self.node} (state {self.state.path}) is now "
                       f"leased by node {holder or '?'}")
                if not allow_new:
                    self._set("lost", saved, msg)
                    raise SubnetTaken(msg, "its addresses must not be used; choose a new subnet only when no "
                                           "container of this host holds one of them", subnet=saved, holder=holder)
                log.warning("%s: choosing a new subnet", msg)
                break
        # no usable saved state: a key of ours (a lost state file) or a reservation for this
        # node, else a free subnet
        kvs, _ = etcd.range(self.layout.subnets, prefix=True)
        used: set[int] = set()
        for kv in kvs:
            sub = self.layout.subnet_of(kv.key)
            idx = self.space.index(sub) if sub is not None else None
            if idx is not None:
                used.add(idx)
            if idx is None or sub == saved:
                continue
            whose = self._whose(kv)
            if whose == "twin":
                raise self._twin(kv)
            if whose == "reserved":
                return sub, new_lease(), "uses its reservation"
            if whose == "mine":
                lid = new_lease()
                if self._move(kv.key, kv, lid):
                    return sub, lid, "took over its key (no state file)"
        start = self.space.start(self.node, self.choice)
        lid = new_lease()
        while True:
            idx = self.space.first_free(used, start)
            if idx is None:
                raise NoFreeSubnet(f"network {self.network}: every /{self.space.subnet_len} of {self.space.cidr} "
                                   f"({self.space.count}) is leased by a host")
            sub = self.space.nth(idx)
            created, kv = etcd.create(self.layout.subnet_key(sub), value, lease=lid)
            if created or (self._whose(kv) == "mine" and kv.lease == lid):
                return sub, lid, "claimed"
            used.add(idx)
            if self.choice == "random":
                start = self.space.start(self.node, "random")

    # -- bound keys ----------------------------------------------------------------------
    def bind(self, key: str, value: bytes | str) -> None:
        """Put ``key`` under this host's lease; re-put with the new lease whenever the lease
        is renewed by re-claiming."""
        v = value.encode() if isinstance(value, str) else value
        with self._lock:
            if not self._status.usable:
                raise ClusterError(f"network {self.network}: no subnet held ({self._status.reason})")
            self._bound[key] = v
            self.etcd.put(key, v, lease=self._status.lease)

    def unbind(self, key: str) -> None:
        with self._lock:
            self._bound.pop(key, None)
            self.etcd.delete(key)

    # -- renewal -------------------------------------------------------------------------
    def renew(self) -> LeaseStatus:
        """One renewal round (the keep-alive thread calls it every TTL/3)."""
        with self._lock:
            st = self._status
            if st.state in ("none", "lost"):
                return st
            key = self.layout.subnet_key(st.subnet)
            window = max(self.ttl / 3, 0.5)
            try:
                ttl = self.etcd.lease_keepalive(st.lease, retry_for=window)
                kv = self.etcd.get(key, retry_for=window)
                whose = self._whose(kv)
                if ttl > 0 and (whose == "reserved" or (whose == "mine" and kv.lease == st.lease)):
                    return self._set("held", st.subnet, "renewed", renewed=True)
                if whose in ("other", "twin"):
                    holder = owner_of(kv) if whose == "other" else f"{self.node} (another host: {host_of(kv)})"
                    return self._lost(st, holder, "" if ttl > 0 else " after this host's lease expired")
                # our lease expired (etcd was out of reach longer than the TTL), or the key
                # was deleted: claim the same subnet again, with a new lease if needed
                lid = st.lease if ttl > 0 else self.etcd.lease_grant(self.ttl, retry_for=window)[0]
                if self._put_if_free_or_mine(key, lid, window):
                    for k, v in self._bound.items():
                        self.etcd.put(k, v, lease=lid, retry_for=window)
                    if lid != st.lease:
                        self._save(st.subnet, lid)
                    return self._set("held", st.subnet, "re-claimed after its lease expired", lease=lid, renewed=True)
                if lid != st.lease:
                    self.etcd.lease_revoke(lid, retry_for=window)
                return self._lost(st, owner_of(self.etcd.get(key, retry_for=window)), " after this host's lease expired")
            except (ClusterUnavailable, EtcdError) as e:
                ago = time.time() - st.renewed_at if st.renewed_at else 0.0
                late = (f"; last renewed {ago:.0f} s ago, longer than its TTL ({self.ttl} s): if the cluster "
                        "still has a leader the lease has expired" if ago > self.ttl else "")
                why = f"{e}: {e.details}" if e.details else str(e)
                return self._set("unreachable", st.subnet, f"cannot renew the lease on {st.subnet}: {why}{late}")

    def _put_if_free_or_mine(self, key: str, lid: int, window: float) -> bool:
        """Create ``key`` under lease ``lid``, or move it there if it is this node's: False
        when another node holds it."""
        for _ in range(5):
            created, kv = self.etcd.create(key, self._value(), lease=lid, retry_for=window)
            whose = self._whose(kv)
            if created or whose == "reserved" or (whose == "mine" and kv.lease == lid):
                return True
            if kv is None:
                continue
            if whose != "mine":
                return False
            if self.etcd.replace(key, self._value(), mod_revision=kv.mod_revision, lease=lid, retry_for=window):
                return True
        raise ClusterUnavailable(f"network {self.network}: {key} keeps changing: try again")

    def _lost(self, st: LeaseStatus, holder: str | None, when: str) -> LeaseStatus:
        try:
            self.etcd.lease_revoke(st.lease, retry_for=0.5)  # our peer record goes with it
        except ClusterError:
            pass
        self._bound.clear()  # they describe a subnet this host no longer has
        return self._set("lost", st.subnet, f"network {self.network}: subnet {st.subnet} of node {self.node} was "
                                            f"taken by node {holder or '?'}{when}: its addresses must not be used")

    def start(self) -> "SubnetLease":
        """Renew on a thread: every TTL/3 while held, every min(1 s, TTL/3) while etcd is
        out of reach, never again once lost."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._keepalive, name=f"splice-lease-{self.network}", daemon=True)
            self._thread.start()
        return self

    def _keepalive(self) -> None:
        interval = self.ttl / 3
        while not self._stop.wait(interval):
            st = self.renew()
            if st.state in ("lost", "none"):
                return
            interval = self.ttl / 3 if st.state == "held" else min(1.0, self.ttl / 3)

    def close(self) -> None:
        """Stop renewing (keys stay until the lease expires; a restart renews them)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self._thread = None

    def release(self) -> None:
        """Leave: revoke the lease (the subnet key and every bound key go at once) and forget
        the state file."""
        self.close()
        with self._lock:
            st = self._status
            if st.lease and st.state != "lost":
                self.etcd.lease_revoke(st.lease)
            self.state.remove()
            self._bound.clear()
            self._set("none", None, "released", lease=0)
