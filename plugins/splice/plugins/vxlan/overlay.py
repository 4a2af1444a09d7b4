"""The overlay manager: what a VXLAN network needs beyond single calls, held by the agent.

One :class:`Overlay` per network (and host namespace), started by the first ``splice-vxlan``
ADD or STATUS the agent serves for it (its config comes from that call):

1. the host namespace is the caller's at first use, kept as an fd (all kernel work and
   every etcd socket of the overlay are made there);
2. :class:`~splice.ipam.cluster.subnets.SubnetLease` claims (or, after a restart, renews
   from ``<state dir>/subnet-<network>.json``) this host's subnet and keeps its etcd lease
   alive on a thread;
3. :meth:`VxlanDriver.ensure_vtep` makes the VXLAN device and the bridge;
4. :class:`~splice.ipam.cluster.peers.PeerRegistry` publishes this host's VTEP (underlay
   address, device MAC, subnet) under the lease and watches the other hosts' records: each
   add/update/remove programs or removes that host's route, neighbour and FDB entry; once
   the first listing is in, entries of hosts that left while the agent was down go.

Settings (``--node``, ``--state-dir``) are the agent's (``agent/server.py`` ``OVERLAY``):
without an agent there is no manager and an overlay ADD fails with :class:`AgentRequired`.
The agent's shutdown calls :func:`shutdown`: leases stop being renewed but are not revoked,
so an agent restarted within the TTL keeps its subnet and its peers notice nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from splice.plugins.errors import AgentRequired, ConfigError, LimitedConnectivity, NotAvailable

log = logging.getLogger("splice.overlay")

_lock = threading.Lock()
_manager: "OverlayManager | None" = None


def settings() -> dict | None:
    """The agent's overlay settings (``{"node", "state_dir", "log"}``), None outside an agent."""
    srv = sys.modules.get("splice.plugins.agent.server")
    return getattr(srv, "OVERLAY", None) if srv is not None else None


def manager() -> "OverlayManager":
    global _manager
    with _lock:
        if _manager is None:
            s = settings()
            if not s:
                raise AgentRequired(
                    "the VXLAN overlay needs the splice agent: run `splice agent` on this host (it holds the "
                    "host's subnet lease in etcd and programs the routes to the other hosts)",
                    "no agent answered this call, so it ran in-process, where nothing outlives the call")
            _manager = OverlayManager(s["node"], s["state_dir"], s.get("log"))
        return _manager


def shutdown() -> None:
    global _manager
    with _lock:
        m, _manager = _manager, None
    if m is not None:
        m.close()


class OverlayManager:
    def __init__(self, node: str, state_dir: str, logf: Any = None) -> None:
        self.node = node
        self.state_dir = state_dir
        self.logf = logf
        self._lock = threading.Lock()
        self._overlays: dict[str, Overlay] = {}

    def log(self, msg: str) -> None:
        if self.logf is not None:
            try:
                self.logf(f"overlay: {msg}")
                return
            except Exception:  # noqa: BLE001
                pass
        log.info("%s", msg)

    def overlay(self, cfg: Any) -> "Overlay":
        """The started overlay of ``cfg.network`` (started now if needed, in the calling
        thread's namespace; a failed start raises and is tried again by the next call). One
        per network: its node name and state file are the agent's, so a call of the same
        network from another network namespace is refused."""
        st = os.stat("/proc/thread-self/ns/net")
        with self._lock:
            ov = self._overlays.get(cfg.network)
            if ov is None:
                ov = self._overlays[cfg.network] = Overlay(self, cfg)
                ov.netns = (st.st_dev, st.st_ino)
        if ov.netns != (st.st_dev, st.st_ino):
            raise ConfigError(f"network {cfg.network!r} runs in another network namespace of this agent (node "
                              f"{self.node}): one host namespace per agent and network")
        if ov.cfg.identity() != cfg.identity():
            raise ConfigError(f"network {cfg.network!r} runs in this agent with another configuration "
                              "(vni, port, device, clusterCIDR, subnetLen, leaseTTL or etcd differ): every call "
                              "of a network needs the same values; restart the agent after changing them")
        ov.ensure_started()
        return ov

    def close(self) -> None:
        with self._lock:
            overlays, self._overlays = list(self._overlays.values()), {}
        for ov in overlays:
            ov.close()

    def remove(self, cfg: Any) -> None:
        """The network is deleted on this host (the Docker front-end's DeleteNetwork): its
        overlay stops and the host leaves: the lease is revoked (the subnet key and the VTEP
        record go at once, the other hosts drop this host's route, neighbour and FDB entry)
        and the state file is removed. etcd out of reach: the keys expire after the TTL
        (nobody renews them), the state file goes all the same."""
        with self._lock:
            ov = self._overlays.pop(cfg.network, None)
        if ov is None:  # not started in this process (e.g. its start failed): the state file
            ov = Overlay(self, cfg)
        ov.leave()


class Overlay:
    """One network's lease, VTEP and peer watch (see the module docstring)."""

    def __init__(self, mgr: OverlayManager, cfg: Any) -> None:
        self.mgr = mgr
        self.cfg = cfg
        self._lock = threading.Lock()
        self._peer_lock = threading.Lock()  # peer events vs. the start-up reconcile
        self.started = False
        self.netns: tuple[int, int] | None = None  # (dev, inode) of the host namespace
        self.fd: int | None = None
        self.etcd: Any = None
        self.lease: Any = None
        self.watcher: Any = None
        self.driver: Any = None
        self.vtep: Any = None
        self.registry: Any = None
        self.offline: str | None = None  # started without etcd: why (ADDs use the state file's subnet)
        self.offline_subnet: Any = None
        self._stopped = threading.Event()
        self.dirty = False  # a peer event failed to program: the next STATUS programs every peer again

    # -- start / stop ----------------------------------------------------------------
    def ensure_started(self) -> None:
        if self.started:
            return
        with self._lock:
            if self.started:
                return
            self._stopped.clear()
            try:
                self._start()
            except BaseException:
                self._stop(quiet=True)
                raise
            self.started = True

    def _start(self) -> None:
        from splice.ipam.cluster.errors import ClusterUnavailable
        from splice.libnet.netns import Netns
        from splice.plugins.vxlan.driver import VxlanDriver

        cfg, mgr = self.cfg, self.mgr
        t0 = time.monotonic()
        self.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)  # the host: the caller's
        self._new_lease(on_change=self._lease_changed)
        self.driver = VxlanDriver(cfg, Netns.from_fd(self.fd))
        try:
            subnet = self.lease.acquire()
        except ClusterUnavailable as e:
            saved = self.lease.saved_subnet()
            if saved is None:
                raise  # a new host cannot start without etcd
            # restarted while etcd is out of reach: the subnet of the state file is still
            # this host's (no leader, no expiry); ADDs use it, the rest follows when etcd answers
            self.offline = (f"network {cfg.network}: etcd did not answer since the agent started ({e.msg}); "
                            f"using the subnet of the state file, {saved}")
            self.offline_subnet = saved
            self.vtep = self.driver.ensure_vtep(saved)
            threading.Thread(target=self._reconnect, name=f"splice-overlay-{cfg.network}", daemon=True).start()
            mgr.log(f"{self.offline}; retrying every second")
            return
        self._connect(subnet, t0)

    def _new_lease(self, on_change: Any = None) -> None:
        """The etcd client and this host's (unacquired) SubnetLease of the network."""
        from splice.ipam.cluster.subnets import SubnetLease

        cfg, mgr = self.cfg, self.mgr
        self.etcd = cfg.etcd.client()
        self.lease = SubnetLease(self.etcd, cfg.network, cfg.cluster_cidr, node=mgr.node, state_dir=mgr.state_dir,
                                 subnet_len=cfg.subnet_len, prefix=cfg.etcd.prefix, ttl=cfg.lease_ttl,
                                 on_change=on_change)

    def _reconnect(self) -> None:
        from splice.ipam.cluster.errors import ClusterError, ClusterUnavailable

        while not self._stopped.wait(1.0):
            try:
                subnet = self.lease.acquire()
            except ClusterUnavailable:
                continue
            except ClusterError as e:  # SubnetTaken: the lease is "lost", ADDs are refused
                self.mgr.log(f"{self.cfg.network}: {e.msg}")
                return
            with self._lock:
                if self._stopped.is_set():
                    return
                try:
                    self._connect(subnet, time.monotonic())
                    self.offline = None
                    return
                except Exception as e:  # noqa: BLE001 - try again
                    self.mgr.log(f"{self.cfg.network}: {e.__class__.__name__}: {e}")

    def _connect(self, subnet: Any, t0: float) -> None:
        """Claimed: the VTEP, the record, the renewals, the watch."""
        from splice.ipam.cluster.peers import PeerRegistry

        cfg, mgr = self.cfg, self.mgr
        self.vtep = self.driver.ensure_vtep(subnet)
        reg = self.registry = PeerRegistry(self.etcd, cfg.network, prefix=cfg.etcd.prefix)
        reg.publish(self.lease, self.vtep.underlay, self.vtep.mac, vni=cfg.vni, port=cfg.port)
        self.lease.start()
        self.watcher = reg.watch(self._on_peer, exclude=mgr.node)
        if self.watcher.wait_synced(5.0):
            with self._peer_lock:
                removed = self.driver.reconcile(self.vtep, list(self.watcher.peers().values()))
            if removed:
                mgr.log(f"{cfg.network}: removed {removed} stale route/neighbour/FDB entries")
        mgr.log(f"{cfg.network}: node {mgr.node} holds {subnet} ({self.lease.status().reason}); VTEP "
                f"{self.vtep.name} {self.vtep.mac} on {self.vtep.underlay}, MTU {self.vtep.mtu}; "
                f"{len(self.watcher.peers())} peer(s); started in {(time.monotonic() - t0) * 1000:.0f} ms")

    def _stop(self, quiet: bool = False) -> None:
        self._stopped.set()
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if self.lease is not None:
            self.lease.close()  # not revoked: a restart within the TTL keeps the subnet unchanged
        if self.etcd is not None:
            try:
                self.etcd.close()
            except Exception:  # noqa: BLE001
                pass
            self.etcd = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.started = False

    def close(self) -> None:
        with self._lock:
            self._stop()

    def leave(self) -> None:
        """Stop and release the subnet (:meth:`OverlayManager.remove`)."""
        with self._lock:
            self._stopped.set()
            if self.watcher is not None:
                self.watcher.stop()
                self.watcher = None
            if self.lease is None:
                self._new_lease()
            try:
                self.lease.release()
                self.mgr.log(f"{self.cfg.network}: left the overlay (lease revoked)")
            except Exception as e:  # noqa: BLE001 - etcd out of reach: the keys expire after the TTL
                self.lease.close()
                try:
                    self.lease.state.remove()
                except Exception:  # noqa: BLE001
                    pass
                self.mgr.log(f"{self.cfg.network}: leaving: the lease could not be revoked "
                             f"({getattr(e, 'msg', None) or e}); its keys expire after {self.cfg.lease_ttl} s")
            self._stop()

    # -- for the calls -----------------------------------------------------------------
    def subnet_for_add(self) -> Any:
        """The subnet an ADD takes its address from: SubnetTaken (code 50) when another host
        has it now, a ClusterError when none is held."""
        if self.offline and self.lease.status().state == "none":
            return self.offline_subnet
        return self.lease.check()

    def check_status(self) -> None:
        """Raise the STATUS error of the lease; a VXLAN device deleted (or made again by
        someone) under the running overlay is made again and every peer programmed again."""
        st = self.lease.status()
        if self.offline and st.state == "none":
            raise LimitedConnectivity(self.offline, "ADDs go on; other hosts are not programmed until etcd answers")
        if st.usable:
            now = self.driver.vtep()
            if now is None or now.index != self.vtep.index or now.address != self.vtep.address:
                self.remake_device()
            if self.dirty:
                self.resync()
        if st.state == "held":
            return
        if st.state == "unreachable":
            raise LimitedConnectivity(f"network {self.cfg.network}: {st.reason}",
                                      "ADDs go on with the subnet this host holds; changes of other hosts are not seen")
        raise NotAvailable(st.reason or f"network {self.cfg.network}: this host holds no subnet")

    def check_device(self) -> None:
        """For ADD: one link lookup; a VXLAN device gone or made again by someone is made
        again (and every peer programmed again)."""
        if self.driver.device_index() != self.vtep.index:
            self.remake_device()
            self.resync()

    def remake_device(self) -> None:
        st = self.lease.status()
        subnet = st.subnet if st.usable else self.offline_subnet
        with self._lock:
            old, self.vtep = self.vtep, self.driver.ensure_vtep(subnet)
            self.dirty = True
            self.mgr.log(f"{self.cfg.network}: VXLAN device {self.vtep.name} made again")
            if self.registry is not None and (old.mac, old.underlay) != (self.vtep.mac, self.vtep.underlay):
                # the peers' FDB entries name the old MAC
                self.registry.publish(self.lease, self.vtep.underlay, self.vtep.mac, vni=self.cfg.vni,
                                      port=self.cfg.port)

    def resync(self) -> None:
        """Program every peer again and remove what no peer accounts for."""
        with self._peer_lock:
            self.dirty = False
            try:
                peers = [p for p in self.watcher.peers().values() if p.extra.get("vni", self.cfg.vni) == self.cfg.vni]
                for peer in peers:
                    self.driver.program_peer(self.vtep, peer)
                self.driver.reconcile(self.vtep, peers)
            except BaseException:
                self.dirty = True
                raise
        self.mgr.log(f"{self.cfg.network}: {len(peers)} peer(s) programmed again")

    # -- events ------------------------------------------------------------------------
    def _lease_changed(self, st: Any) -> None:
        self.mgr.log(f"{self.cfg.network}: subnet lease {st.state}: {st.reason}")

    def _on_peer(self, ev: Any) -> None:
        """A remote host's record appeared, changed or went (the watcher's thread)."""
        with self._peer_lock:
            self._apply(ev)

    def _apply(self, ev: Any) -> None:
        drv, vtep = self.driver, self.vtep
        try:
            if ev.previous is not None and (ev.peer is None or ev.previous[:4] != ev.peer[:4]):
                drv.remove_peer(vtep, ev.previous)
            if ev.peer is not None:
                if ev.peer.extra.get("vni", self.cfg.vni) != self.cfg.vni:
                    self.mgr.log(f"{self.cfg.network}: peer {ev.node} has vni {ev.peer.extra.get('vni')}, "
                                 f"this host {self.cfg.vni}: not programmed")
                    return
                drv.program_peer(vtep, ev.peer)
        except Exception as e:  # noqa: BLE001 - keep watching; the next STATUS programs every peer again
            self.dirty = True
            self.mgr.log(f"{self.cfg.network}: peer {ev.node} {ev.kind}: {e.__class__.__name__}: {e}")
