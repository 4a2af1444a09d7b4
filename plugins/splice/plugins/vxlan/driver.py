"""The VXLAN overlay driver (framework kind ``vxlan``): per network on each host a bridge and a
VXLAN device; a veth per container exactly as the bridge driver makes it (composition: a
:class:`~splice.plugins.bridge.driver.BridgeDriver` built from this config does the bridge,
the veth, the sandbox and the MAC spoof check).

Protocol-neutral: it knows nothing of CNI, Docker or etcd. The host subnet and the remote
hosts come from the caller (the agent's overlay manager, :mod:`splice.plugins.vxlan.overlay`):

* :meth:`VxlanDriver.ensure_vtep` (host): the VXLAN device (``vni``, ``port``, learning off,
  ``local`` = the underlay address of ``vtepInterface``, MTU = the underlay's - 50 unless
  ``mtu``, alias ``splice-vxlan:<network>``) holding ``<subnet network address>/32`` (flannel's
  VTEP address), up; and the bridge with the subnet's gateway. Idempotent; a device of ours
  that no longer matches (the underlay address changed) is made again.
* :meth:`program_peer` / :meth:`remove_peer`: per remote host, as flannel's vxlan backend
  does ahead of any traffic: one route ``<its subnet> via <its VTEP address> dev <device>
  onlink``, one permanent neighbour ``<its VTEP address> lladdr <its VTEP MAC>`` and one FDB
  entry ``<its VTEP MAC> dst <its underlay address>`` (one netlink batch each way).
* :meth:`reconcile`: what the device carries for hosts that are not peers any more (after an
  agent restart) is removed.

``ipMasq`` masquerades what leaves ``clusterCIDR``: the masquerade entries (libnet/masq.py)
are keyed by the source with the cluster's prefix length, so the "own subnet" exception
of the bridge's masquerade becomes "the whole cluster".
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, NamedTuple

from splice.libnet import rtnl, sysctl
from splice.libnet.errors import LinkExists
from splice.libnet.names import random_mac
from splice.libnet.netns import Netns
from splice.plugins.bridge.config import BridgeConfig
from splice.plugins.bridge.driver import BridgeDriver
from splice.plugins.bridge.driver import _masquerade as _masq  # libnet.masq, imported on use
from splice.plugins.driver import IN_SANDBOX
from splice.plugins.errors import CheckFailed, ConfigError, KernelError
from splice.plugins.model import Attachment, IPConfig, Route, Wiring
from splice.plugins.owners import Steps, gc_prefix, owner_tag
from splice.plugins.vxlan.config import OVERHEAD, VxlanConfig, parse_vxlan_config

DEVICE_ALIAS = "splice-vxlan:"


class Vtep(NamedTuple):
    """This host's tunnel endpoint of one network."""

    index: int
    name: str
    mac: str
    underlay: Any  # IPv4Address | IPv6Address
    mtu: int
    address: Any  # the device's overlay address (the subnet's network address)


def vtep_address(subnet: Any) -> Any:
    """A host's VTEP address in the overlay: its subnet's network address (as flannel)."""
    return subnet.network_address


class VxlanDriver:
    """See the module docstring; the framework's protocol (:mod:`splice.plugins.driver`)."""

    kind = "vxlan"
    parse_config = staticmethod(parse_vxlan_config)

    def __init__(self, cfg: VxlanConfig, host: Netns) -> None:
        self.cfg = cfg
        self.host = host
        self.mtu: int | None = cfg.mtu  # the overlay MTU, once known (ensure_vtep, or read at attach)

    @property
    def installs_default_routes(self) -> bool:
        return self.cfg.is_default_gateway

    def bridge_driver(self, mtu: int | None = None) -> BridgeDriver:
        c = self.cfg
        return BridgeDriver(BridgeConfig(bridge=c.bridge, is_gateway=True, is_default_gateway=c.is_default_gateway,
                                         ip_masq=False, mtu=mtu or self.mtu, hairpin_mode=c.hairpin_mode,
                                         enable_dad=c.enable_dad, mac_spoof_check=c.mac_spoof_check), self.host)

    # =================================================================== VTEP
    def _lower(self, rt: rtnl.Rtnl) -> rtnl.Link:
        cfg = self.cfg
        if cfg.vtep_interface:
            link = rt.get_link(cfg.vtep_interface)
            if link is None:
                raise ConfigError(f"vtepInterface {cfg.vtep_interface!r} not found in the host namespace")
            return link
        from splice.plugins.lowerdev import default_route_ifindex

        index = default_route_ifindex(rt)
        link = rt.get_link_by_index(index) if index else None
        if link is None:
            raise ConfigError("no vtepInterface given and the host has no default route to take it from; "
                              "set \"vtepInterface\"")
        return link

    @staticmethod
    def _underlay_address(rt: rtnl.Rtnl, lower: rtnl.Link) -> Any:
        addrs = [a.iface.ip for a in rt.addresses(lower.index)]
        for want in (4, 6):
            for ip in addrs:
                if ip.version == want and not ip.is_link_local and not ip.is_loopback:
                    return ip
        raise ConfigError(f"the VTEP interface {lower.name!r} has no IP address to send VXLAN from")

    def ensure_vtep(self, subnet: Any) -> Vtep:
        """The VXLAN device with the host's VTEP address, and the bridge with the subnet's
        gateway (see the module docstring). Returns the VTEP to publish."""
        vtep = rtnl.run(self.host, self._ensure_device, subnet)
        self.mtu = vtep.mtu
        gw = ipaddress.ip_interface(f"{subnet.network_address + 1}/{subnet.prefixlen}")
        self.bridge_driver(vtep.mtu).ensure_network([gw])
        return vtep

    def _ensure_device(self, rt: rtnl.Rtnl, subnet: Any) -> Vtep:
        cfg = self.cfg
        lower = self._lower(rt)
        underlay = self._underlay_address(rt, lower)
        mtu = cfg.mtu or (lower.mtu or 1500) - OVERHEAD[underlay.version]
        alias = DEVICE_ALIAS + cfg.network
        want = rtnl.Vxlan(vni=cfg.vni, port=cfg.port, local=underlay, dev=lower.index, learning=False)
        dev = rt.get_link(cfg.device)
        if dev is not None and not self._matches(dev, want, mtu):
            if dev.alias != alias:
                raise ConfigError(f"{cfg.device!r} exists and is not this network's VXLAN device "
                                  f"(kind {dev.kind or 'none'}, alias {dev.alias!r}); set \"device\"")
            rt.delete_link(index=dev.index)  # ours, made for another underlay address/port/MTU
            dev = None
        if dev is None:
            try:
                dev = rt.add_link("vxlan", cfg.device, mtu=mtu, mac=random_mac(), data=want)
            except LinkExists:
                dev = rt.get_link(cfg.device)  # a concurrent start made it
                if dev is None:
                    raise KernelError(f"create VXLAN device {cfg.device!r}: another VXLAN device of this host "
                                      f"uses vni {cfg.vni} on port {cfg.port}") from None
                if not self._matches(dev, want, mtu):
                    raise ConfigError(f"{cfg.device!r} exists with other settings") from None
            except rtnl.NetError as e:  # EEXIST of another device with this VNI and port, ...
                raise KernelError(f"create VXLAN device {cfg.device!r} (vni {cfg.vni}, port {cfg.port}): {e}") from None
            rt.set_link(dev.index, alias=alias)
        # the VTEP address: the subnet's network address; addresses of an earlier subnet go
        addr = ipaddress.ip_interface(f"{vtep_address(subnet)}/{subnet.max_prefixlen}")
        have = [a.iface for a in rt.addresses(dev.index)]
        for a in have:
            if a != addr and not (a.version == 6 and a.is_link_local):
                rt.delete_address(dev.index, a)
        if addr not in have:
            rt.add_address(dev.index, addr, nodad=True)
        if not dev.up:
            rt.set_link(dev.index, up=True)
        sysctl.ensure("ipv4/ip_forward", 1) if subnet.version == 4 else sysctl.try_ensure("ipv6/conf/all/forwarding", 1)
        dev = rt.require_link(cfg.device)
        return Vtep(dev.index, dev.name, (dev.mac or "").lower(), underlay, dev.mtu or mtu, addr.ip)

    def _matches(self, dev: rtnl.Link, want: Any, mtu: int) -> bool:
        if dev.kind != "vxlan":
            return False
        d = dev.data
        return (d is not None and d.vni == want.vni and d.port == want.port and d.local == want.local
                and d.dev == want.dev and not d.learning and dev.mtu == mtu)

    def vtep(self) -> Vtep | None:
        """The VTEP as the kernel has it now (None: no device)."""

        def part(rt: rtnl.Rtnl) -> Vtep | None:
            dev = rt.get_link(self.cfg.device)
            if dev is None or dev.kind != "vxlan":
                return None
            d = dev.data
            addrs = [a.iface.ip for a in rt.addresses(dev.index) if not (a.iface.version == 6 and a.iface.is_link_local)]
            return Vtep(dev.index, dev.name, (dev.mac or "").lower(), d.local if d else None, dev.mtu or 0,
                        addrs[0] if addrs else None)

        return rtnl.run(self.host, part)

    def device_index(self) -> int | None:
        """The VXLAN device's ifindex (one lookup), None when there is none."""
        dev = rtnl.run(self.host, lambda rt: rt.get_link(self.cfg.device))
        return dev.index if dev is not None and dev.kind == "vxlan" else None

    # =================================================================== peers
    def program_peer(self, vtep: Vtep, peer: Any) -> None:
        """Route, neighbour and FDB entry of one remote host (``peer``: node, subnet, underlay,
        mac), idempotent; one batch."""

        def part(rt: rtnl.Rtnl) -> None:
            gw = vtep_address(peer.subnet)
            b = rt.batch()
            b.fdb_replace(vtep.index, peer.mac, dst=peer.underlay)
            b.neigh_replace(vtep.index, gw, peer.mac)
            b.add_route(peer.subnet, gw=gw, oif=vtep.index, onlink=True, replace=True)
            b.run()

        rtnl.run(self.host, part)

    def remove_peer(self, vtep: Vtep, peer: Any) -> None:
        """Undo :meth:`program_peer` (best effort, every step; missing entries are fine)."""

        def part(rt: rtnl.Rtnl) -> None:
            gw = vtep_address(peer.subnet)
            b = rt.batch()
            b.delete_route(peer.subnet, gw=gw, oif=vtep.index)
            b.neigh_del(vtep.index, gw)
            b.fdb_del(vtep.index, peer.mac, dst=peer.underlay)
            errors = [r for r in b.run(check=False) if isinstance(r, BaseException)]
            if errors:
                raise errors[0]

        rtnl.run(self.host, part)

    def reconcile(self, vtep: Vtep, peers: list[Any]) -> int:
        """Remove routes, neighbours and FDB entries of the device that no peer accounts for;
        the number removed."""
        fdb = {(p.mac, p.underlay) for p in peers}
        neigh = {vtep_address(p.subnet) for p in peers}
        routes = {p.subnet for p in peers}

        def part(rt: rtnl.Rtnl) -> int:
            n = 0
            fam = socket.AF_INET if vtep.address is None or vtep.address.version == 4 else socket.AF_INET6
            for r in rt.routes(fam):
                if r.oif == vtep.index and r.table == rtnl.RT_TABLE_MAIN and r.gw is not None and r.dst not in routes:
                    n += rt.delete_route(r.dst, gw=r.gw, oif=vtep.index)
            for e in rt.neigh_dump(vtep.index):
                if e.permanent and e.ip not in neigh:
                    n += rt.neigh_del(vtep.index, e.ip)
            for e in rt.fdb_dump(vtep.index):
                if e.dst is not None and (e.mac, e.dst) not in fdb and e.mac != "00:00:00:00:00:00":
                    n += rt.fdb_del(vtep.index, e.mac, dst=e.dst)
            return n

        return rtnl.run(self.host, part)

    # =================================================================== network
    def ensure_network(self, gateways: Any = ()) -> None:
        """The bridge with ``gateways`` (the VXLAN device needs the host subnet: :meth:`ensure_vtep`)."""
        self.bridge_driver().ensure_network(list(gateways))

    def remove_network(self, gateways: Any = ()) -> bool:
        """Undo :meth:`ensure_vtep` (the Docker front-end's DeleteNetwork; the CNI side never
        deletes these shared objects): this network's VXLAN device (ours: its alias), with
        every route, neighbour and FDB entry on it, then the bridge as
        :meth:`BridgeDriver.remove_network` (deleted once no container port is left).
        Idempotent; False while a container port is left on the bridge."""

        def part(rt: rtnl.Rtnl) -> None:
            dev = rt.get_link(self.cfg.device)
            if dev is not None and dev.kind == "vxlan" and dev.alias == DEVICE_ALIAS + self.cfg.network:
                rt.delete_link(index=dev.index)

        rtnl.run(self.host, part)
        return self.bridge_driver().remove_network(list(gateways))

    def _overlay_mtu(self) -> int:
        if self.mtu is None:
            vtep = self.vtep()
            if vtep is None:
                raise KernelError(f"the VXLAN device {self.cfg.device!r} of network {self.cfg.network!r} is missing: "
                                  "the overlay is not started on this host (splice agent)")
            self.mtu = vtep.mtu
        return self.mtu

    def _masq_sources(self, ips: list[IPConfig]) -> list[Any]:
        """Each address with the cluster's prefix length: traffic within clusterCIDR keeps
        its source, the rest is masqueraded."""
        cidr = self.cfg.cidr
        return [ipaddress.ip_interface(f"{ip.address.ip}/{cidr.prefixlen}") for ip in ips
                if ip.address.version == cidr.version]

    # =================================================================== ADD
    def attach(self, att: Attachment, ips: list[IPConfig], routes: list[Route], *,
               placement: str = IN_SANDBOX) -> Wiring:
        br = self.bridge_driver(self._overlay_mtu())
        routes = list(routes)
        if not self.cfg.is_default_gateway:  # at least the rest of the cluster via the bridge
            cidr = self.cfg.cidr
            for ip in ips:
                if ip.address.version == cidr.version and not any(r.dst == cidr for r in routes):
                    routes.append(Route(dst=cidr, gw=ip.gateway or ip.address.network.network_address + 1))
        wiring = br.attach(att, ips, routes, placement=placement)
        if self.cfg.ip_masq and wiring.ips:
            owner = owner_tag(att.network, att.container_id, att.ifname)
            try:
                rtnl.run(self.host, lambda _rt: _masq().add(owner, self._masq_sources(wiring.ips), iface=self.cfg.bridge))
            except BaseException as exc:
                try:
                    br.detach(att, wiring.ips)
                except Exception as e:  # noqa: BLE001 - reported on the original error
                    exc.add_note(f"rollback: detach: {getattr(e, 'msg', None) or e}")
                raise
        return wiring

    add = attach

    # =================================================================== DEL / CHECK / GC / STATUS
    def detach(self, att: Attachment, ips: list[IPConfig] | None) -> None:
        steps = Steps(f"DEL of {att.container_id}/{att.ifname}")
        if self.cfg.ip_masq:
            owner = owner_tag(att.network, att.container_id, att.ifname)
            srcs = self._masq_sources(ips) if ips else None
            steps.run(rtnl.run, self.host, lambda _rt: _masq().remove(owner, srcs, iface=self.cfg.bridge))
        steps.run(self.bridge_driver().detach, att, ips)
        steps.done()

    delete = detach

    def check(self, att: Attachment, expected: Wiring, own_addresses: list[Any] | None = None) -> None:
        self.bridge_driver().check(att, expected, own_addresses)
        vtep = self.vtep()
        if vtep is None:
            raise CheckFailed(f"the VXLAN device {self.cfg.device!r} of network {self.cfg.network!r} is missing")
        if self.cfg.ip_masq:
            owner = owner_tag(att.network, att.container_id, att.ifname)
            addrs = own_addresses or [ip.address for ip in expected.ips]
            cidr = self.cfg.cidr
            srcs = [ipaddress.ip_interface(f"{a.ip}/{cidr.prefixlen}") for a in addrs if a.version == cidr.version]
            problems = rtnl.run(self.host, lambda _rt: _masq().check(owner, srcs, iface=self.cfg.bridge))
            if problems:
                raise CheckFailed("; ".join(problems))

    def gc(self, network: str, valid: set[tuple[str, str]]) -> None:
        steps = Steps(f"GC of network {network!r}")
        steps.run(self.bridge_driver().gc, network, valid)
        if self.cfg.ip_masq:
            keep = {owner_tag(network, cid, ifn) for cid, ifn in valid}
            steps.run(rtnl.run, self.host, lambda _rt: _masq().gc(gc_prefix(network), keep.__contains__))
        steps.done()

    def status(self) -> None:
        """The bridge (as splice-bridge's STATUS) and, when it exists, the VXLAN device must be
        usable; the lease is the overlay manager's (the front-end reports it)."""
        self.bridge_driver().status()

        def part(rt: rtnl.Rtnl) -> None:
            dev = rt.get_link(self.cfg.device)
            if dev is not None and dev.kind != "vxlan":
                raise KernelError(f"{self.cfg.device!r} exists but is not a VXLAN device (kind {dev.kind or 'none'})")
            if dev is not None and not dev.up:
                raise KernelError(f"the VXLAN device {self.cfg.device!r} is down")

        rtnl.run(self.host, part)
