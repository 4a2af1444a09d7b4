"""The bridge driver: a Linux bridge in the host, a veth pair per attachment.

A framework driver (:mod:`splice.plugins.driver`, kind ``bridge``): it takes
:mod:`splice.plugins.model` objects and an explicit host :class:`~splice.libnet.netns.Netns`
and knows nothing of CNI or Docker. Behaviour follows the reference ``bridge`` plugin
(containernetworking/plugins plugins/main/bridge); differences are noted where they occur.

``attach`` does its host work in one ``host.run`` and its sandbox work in one ``sandbox.run``:

* host (:meth:`BridgeDriver.ensure_network`'s part, then the port): look the bridge up
  (create it if missing, with a fixed random MAC so that ports coming and going never change
  it; ``vlan_filtering`` only at creation; ``accept_ra=0``; up; promisc), the gateway
  addresses and forwarding sysctls, then ONE ``RTM_NEWLINK`` making the veth pair with the
  host end enslaved and up and the peer created directly inside the sandbox under a
  temporary name (no namespace move, which costs an RCU grace period), then the
  alias/hairpin/isolated of the port, its VLANs, masquerade and MAC spoof check. From the
  gateway addresses until the port is tagged the bridge's lock
  (:func:`splice.libnet.locks.link_lock`) is held shared; GC and a rollback that removes a
  gateway address hold it exclusively.
* sandbox: :func:`splice.libnet.sandbox.configure` (sysctls, addresses, rename to
  ``ifname`` + up in one message — EEXIST there is the :class:`InterfaceExists` check —
  then routes). With ``placement=IN_HOST`` (Docker) the peer stays in the host under its
  temporary name and this half is the runtime's.

Both MACs of the pair are chosen here (the requested one for the sandbox side), so no
read-back is needed. Anything ADD created is undone on failure (the bridge and its
gateway addresses excepted while another port uses them).

Ownership lives in the kernel (:mod:`splice.plugins.owners`): the host veth name is derived
from ``(network, container_id, ifname)`` and carries the alias
``splice:<network>:<cid>:<ifname>``; masquerade / spoof-check entries carry the owner
tag ``"<sha256(network)[:8]> <cid> <ifname>"``. DEL and GC need nothing else.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from splice.libnet import rtnl, sandbox, sysctl
from splice.libnet.errors import LinkExists, Mismatch, NameTaken, NetnsNotFound
from splice.libnet.locks import link_lock
from splice.libnet.names import ifname_problem, normalize_mac, random_mac
from splice.libnet.netns import Netns
from splice.plugins import failpoint
from splice.plugins.bridge.config import BridgeConfig, parse_bridge_config
from splice.plugins.driver import IN_HOST, IN_SANDBOX, validate_attachment
from splice.plugins.errors import CheckFailed, ConfigError, InterfaceExists, KernelError
from splice.plugins.model import Attachment, Interface, IPConfig, Route, Wiring
from splice.plugins.owners import (
    Steps,
    alias_prefix,
    gc_prefix,
    host_veth_name,
    link_alias,
    owner_tag,
    sha256_hex,
)

GW_ALIAS_PREFIX = "splice-gw:"  # the bridge-side port of a "<bridge>.<vlan>" gateway interface
BRIDGE_ALIAS = "splice-bridge"  # on bridges splice created (their MAC is pinned)
CONTAINER_IF_INDEX = 2  # interfaces = [bridge, host veth, container]

_UNTAGGED_OURS = re.compile(r"veth[0-9a-f]{10}")  # host_veth_name()'s shape (the reference's: veth + 8 hex)


def vlan_gateway_port_name(bridge: str, vlan: int) -> str:
    return "vethg" + sha256_hex(f"{bridge}\0{vlan}")[:10]


def default_gateway(address: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> Any:
    """The reference's ``calcGatewayIP``: the first address after the network address."""
    return address.network.network_address + 1


def _masquerade() -> Any:
    from splice.libnet.masq import Masquerade

    return Masquerade()


def _spoofchk() -> Any:
    from splice.libnet.spoofchk import MacSpoofCheck

    return MacSpoofCheck()


# -- ADD bookkeeping --------------------------------------------------------------------
@dataclass
class _Plan:
    """Everything ADD decides before touching the kernel."""

    host_veth: str
    alias: str
    tmp: str
    owner: str
    host_mac: str
    peer_mac: str
    ips: list[IPConfig]
    routes: list[Route]  # as returned (IPAM routes + default routes)
    gw_addrs: list[Any]  # gateway/prefix to put on the bridge (or its VLAN interface)
    family_gw: dict[int, Any]  # gateway per IP version, for routes without one


@dataclass
class _Progress:
    """What ADD has done so far, for the rollback and the result."""

    bridge: rtnl.Link | None = None
    bridge_index: int | None = None
    bridge_mac: str | None = None
    bridge_created: bool = False
    gw_link_index: int | None = None
    added_addrs: list[Any] = field(default_factory=list)
    veth_created: bool = False
    peer_index: int | None = None  # ifindex of the new interface inside the sandbox
    masq_added: bool = False
    spoof_added: bool = False
    vlan_gw: Interface | None = None


class BridgeDriver:
    """The bridge driver (framework kind ``bridge``; see :mod:`splice.plugins.driver`)."""

    kind = "bridge"
    parse_config = staticmethod(parse_bridge_config)

    def __init__(self, cfg: BridgeConfig, host: Netns) -> None:
        self.cfg = cfg
        self.host = host

    @property
    def installs_default_routes(self) -> bool:
        return self.cfg.is_default_gateway

    @property
    def masq_iface(self) -> str:
        """The interface the containers' traffic arrives on at the host (the one holding the
        gateway): masquerade entries are keyed by it and the source address, so two
        networks with overlapping subnets on two bridges never share an entry."""
        return self.cfg.vlan_gateway_ifname or self.cfg.bridge

    # =================================================================== network
    def ensure_network(self, gateways: list[Any] = ()) -> None:  # type: ignore[assignment]
        """The bridge (and ``<bridge>.<vlan>``) with the gateway addresses ``gateways``."""
        gateways = list(gateways)

        def part(rt: rtnl.Rtnl) -> None:
            prog = _Progress()
            with link_lock(self.cfg.bridge):
                br = self._ensure_network(rt, gateways, prog)
            if gateways:
                self._gateway_done(rt, br, gateways, prog)

        rtnl.run(self.host, part)

    def _ensure_network(self, rt: rtnl.Rtnl, gw_addrs: list[Any], prog: _Progress) -> rtnl.Link:
        """Bridge, VLAN gateway interface and gateway addresses (forwarding sysctls:
        :meth:`_gateway_done`, outside the bridge lock)."""
        br = self._ensure_bridge(rt, prog)
        if gw_addrs:
            target = br
            if self.cfg.vlan:
                target = self._ensure_vlan_gateway(rt, br)
                prog.vlan_gw = Interface(name=target.name, mac=target.mac)
            self._ensure_gateway_addrs(rt, target, gw_addrs, prog)
            if prog.added_addrs and not prog.bridge_created and target.index == br.index and br.mac:
                # as the reference's ensureAddr: pin the bridge MAC (else it follows the
                # lowest port MAC as ports come and go)
                rt.set_link(br.index, mac=br.mac)
        return br

    def remove_network(self, gateways: list[Any] = ()) -> bool:  # type: ignore[assignment]
        """Undo :meth:`ensure_network` once no container port is left (the Docker front-end's
        DeleteNetwork; the CNI side never deletes bridges). A bridge splice created (alias
        ``splice-bridge``) is deleted with its VLAN gateway ports; on a bridge someone else
        made only ``gateways`` are removed. Returns False (nothing removed) while a port
        other than splice's VLAN gateway ports is on the bridge. Idempotent; holds the
        bridge's lock exclusively, as GC."""
        gateways = list(gateways)

        def part(rt: rtnl.Rtnl) -> bool:
            with link_lock(self.cfg.bridge, exclusive=True):
                br = rt.get_link(self.cfg.bridge)
                if br is None or br.kind != "bridge":
                    return True
                ports = rt.ports_of(br.index)
                gw_ports = [p for p in ports if (p.alias or "").startswith(GW_ALIAS_PREFIX)]
                if len(gw_ports) != len(ports):
                    return False
                if br.alias == BRIDGE_ALIAS:
                    for p in gw_ports:
                        rt.delete_link(index=p.index)  # takes <bridge>.<vlan> with it
                    rt.delete_link(index=br.index)
                    return True
                target = rt.get_link(self.cfg.vlan_gateway_ifname) if self.cfg.vlan else br
                if target is not None:
                    have = {a.iface for a in rt.addresses(target.index)}
                    for g in gateways:
                        if g in have:
                            rt.delete_address(target.index, g)
                return True

        return rtnl.run(self.host, part)

    def _gateway_done(self, rt: rtnl.Rtnl, br: rtnl.Link, gw_addrs: list[Any], prog: _Progress) -> None:
        versions = {a.version for a in gw_addrs}
        if 4 in versions:
            sysctl.ensure("ipv4/ip_forward", 1)
        if 6 in versions:
            sysctl.try_ensure("ipv6/conf/all/forwarding", 1)

    # =================================================================== ADD
    def attach(self, att: Attachment, ips: list[IPConfig], routes: list[Route], *,
               placement: str = IN_SANDBOX) -> Wiring:
        """Wire ``att`` to the bridge; returns what was made. Rolls back on failure.

        ``IN_SANDBOX``: the veth peer is created inside ``att.netns`` and configured there.
        ``IN_HOST``: the peer stays in the host under a temporary name, unconfigured (the
        runtime moves it); ``att.netns`` is not used."""
        in_sandbox = placement == IN_SANDBOX
        if placement not in (IN_SANDBOX, IN_HOST):
            raise ValueError(f"placement {placement!r}")
        self._validate(att, need_netns=in_sandbox)
        plan = self._plan(att, ips, routes)
        prog = _Progress()
        with contextlib.ExitStack() as stack:
            sb: Netns | None = None
            if in_sandbox:
                sb = Netns.open(att.netns)  # type: ignore[arg-type]  # NetnsNotFound when gone
                stack.callback(sb.close)
            stack.push(lambda et, ev, tb: self._rollback(ev, att, plan, prog) if ev is not None else False)
            rtnl.run(self.host, self._host_add, att, plan, prog, sb.fd if sb is not None else None)
            if sb is not None:
                try:
                    rtnl.run(sb, sandbox.configure, prog.peer_index, tmp=plan.tmp, ifname=att.ifname,
                             addresses=[ip.address for ip in plan.ips], routes=plan.routes,
                             family_gw=plan.family_gw, enable_dad=self.cfg.enable_dad,
                             up=not self.cfg.disable_container_interface, where=f"the sandbox {att.netns}")
                except NameTaken as e:
                    raise InterfaceExists(str(e)) from None
            failpoint.hit("bridge.sandbox_configured")
        interfaces = [
            Interface(name=self.cfg.bridge, mac=prog.bridge_mac),
            Interface(name=plan.host_veth, mac=plan.host_mac),
            Interface(name=att.ifname if in_sandbox else plan.tmp, mac=plan.peer_mac,
                      sandbox=att.netns if in_sandbox else None, mtu=self.cfg.mtu),
        ]
        if prog.vlan_gw is not None:
            interfaces.append(prog.vlan_gw)  # as the reference: appended after the container
        return Wiring(interfaces=interfaces, ips=plan.ips, routes=plan.routes)

    add = attach  # the CNI verb's name

    _validate = staticmethod(validate_attachment)

    def _plan(self, att: Attachment, ips: list[IPConfig], routes: list[Route]) -> _Plan:
        cfg = self.cfg
        if att.mac:
            try:
                peer_mac = normalize_mac(att.mac)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        else:
            peer_mac = random_mac()
        out_ips: list[IPConfig] = []
        family_gw: dict[int, Any] = {}
        gw_addrs: list[Any] = []
        for ip in ips:
            gw = ip.gateway
            if gw is None and cfg.is_gateway:
                gw = default_gateway(ip.address)
            out_ips.append(IPConfig(address=ip.address, gateway=gw, interface=CONTAINER_IF_INDEX))
            if gw is not None:
                family_gw.setdefault(ip.address.version, gw)
            if cfg.is_gateway:
                want = ipaddress.ip_interface(f"{gw}/{ip.address.network.prefixlen}")
                if want not in gw_addrs:
                    gw_addrs.append(want)
        out_routes = list(routes)
        if cfg.is_default_gateway:
            for version, gw in sorted(family_gw.items()):
                dflt = ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")
                # as the reference: a default route *with a gateway* from IPAM wins
                if not any(r.dst == dflt and r.gw is not None for r in out_routes):
                    out_routes.append(Route(dst=dflt, gw=gw))
        return _Plan(
            host_veth=host_veth_name(att.network, att.container_id, att.ifname),
            alias=link_alias(att.network, att.container_id, att.ifname),
            tmp="sp" + os.urandom(4).hex(),  # secrets.token_hex without its ~3 ms import
            owner=owner_tag(att.network, att.container_id, att.ifname),
            host_mac=random_mac(),
            peer_mac=peer_mac,
            ips=out_ips,
            routes=out_routes,
            gw_addrs=gw_addrs,
            family_gw=family_gw,
        )

    # -- host side -------------------------------------------------------------------
    def _host_add(self, rt: rtnl.Rtnl, att: Attachment, plan: _Plan, prog: _Progress, sandbox_fd: int | None) -> None:
        """Three netlink round trips in the usual case (the bridge and its gateway exist):
        the bridge lookup, the gateway listing, then one batch with the veth pair and the
        port's alias/hairpin/isolation (by name: right even when the creation fails)."""
        cfg = self.cfg
        # Shared hold of the bridge's lock from the gateway addresses until our port is
        # tagged: GC (which deletes untagged ports of crashed ADDs) and a rollback that
        # removes a gateway address take it exclusively, so neither sees this ADD half-way.
        with link_lock(cfg.bridge):
            br = self._ensure_network(rt, plan.gw_addrs, prog)
            if att.mac:
                self._refuse_taken_mac(rt, br, plan.peer_mac)
            b = rt.batch()
            made = b.add_veth(plan.host_veth, plan.tmp, peer_netns_fd=sandbox_fd, master=br.index, mtu=cfg.mtu,
                              mac=plan.host_mac, peer_mac=plan.peer_mac, up=True)
            # alias, hairpin, isolation: one message (IFLA_IFALIAS cannot go into the creation)
            tagged = b.set_brport(plan.host_veth, alias=plan.alias, hairpin=True if cfg.hairpin_mode else None,
                                  isolated=True if cfg.port_isolation else None)
            reread = b.get_link_by_index(br.index) if not prog.bridge_created and br.alias != BRIDGE_ALIAS else None
            res = b.run(check=False)
            veth = res[made]
            if isinstance(veth, LinkExists):
                if rt.get_link(plan.host_veth) is not None:
                    raise InterfaceExists(
                        f"attachment {att.container_id}/{att.ifname} of network {att.network!r} already exists "
                        f"(host veth {plan.host_veth}); DEL it first"
                    ) from None
                raise veth
            if isinstance(veth, BaseException):
                raise veth
            prog.veth_created = True
            failpoint.hit("bridge.veth_created")
            if isinstance(res[tagged], BaseException):
                raise res[tagged]
            prog.peer_index = veth.peer_index if veth.peer_netnsid is not None else None
            if reread is not None and isinstance(res[reread], rtnl.Link):
                # a bridge splice did not create may have an unpinned MAC, which follows
                # the lowest port MAC: read again now that our port is in
                prog.bridge_mac = res[reread].mac
        if plan.gw_addrs:
            self._gateway_done(rt, br, plan.gw_addrs, prog)
        if cfg.vlan_filtering:
            self._port_vlans(rt, veth.index, cfg.vlan, cfg.vlan_trunk)

        if cfg.ip_masq and plan.ips:
            prog.masq_added = True
            _masquerade().add(plan.owner, [ip.address for ip in plan.ips], iface=self.masq_iface)
            failpoint.hit("bridge.masq_added")
        if cfg.mac_spoof_check:
            prog.spoof_added = True
            _spoofchk().add(plan.owner, plan.host_veth, plan.peer_mac)

    def _refuse_taken_mac(self, rt: rtnl.Rtnl, br: rtnl.Link, mac: str) -> None:
        """A requested container MAC must not be the bridge's, a port's, or one the bridge
        has learned behind another port (two stations with one MAC on one segment steal
        each other's frames). One FDB dump, only when a MAC was requested; a container
        that has not sent a frame yet is not in the table."""
        taken = {e.mac.lower() for e in rt.bridge_fdb(br.index)}
        taken.add((br.mac or "").lower())
        if mac.lower() in taken:
            raise ConfigError(f"MAC address {mac} is already used on bridge {self.cfg.bridge!r} "
                              "(by the bridge, one of its ports or a container behind one)")

    def _ensure_bridge(self, rt: rtnl.Rtnl, prog: _Progress) -> rtnl.Link:
        """The bridge, created if missing (a concurrent creator's EEXIST is fine); once per ADD."""
        if prog.bridge is not None:
            return prog.bridge
        cfg = self.cfg
        created = False
        br = rt.get_link(cfg.bridge)
        if br is None:
            # a fixed MAC (NET_ADDR_SET): the bridge never takes over a port's MAC
            br = rt.add_bridge(cfg.bridge, mtu=cfg.mtu, mac=random_mac(), vlan_filtering=cfg.vlan_filtering)
            created = br is not None
            if br is None:  # a concurrent ADD created it
                br = rt.require_link(cfg.bridge)
        if br.kind != "bridge":
            raise KernelError(f"{cfg.bridge!r} already exists but is not a bridge (kind {br.kind or 'none'})")
        # we own the routes of this interface (the reference does the same)
        sysctl.try_ensure(f"ipv6/conf/{cfg.bridge}/accept_ra", 0)
        up = None if br.up else True
        promisc = True if cfg.promisc_mode and not br.promisc else None
        alias = BRIDGE_ALIAS if created else None
        if up or promisc or alias:
            rt.set_link(br.index, up=up, promisc=promisc, alias=alias)
        prog.bridge, prog.bridge_created = br, created
        prog.bridge_index, prog.bridge_mac = br.index, br.mac
        return br
    def _port_vlans(self, rt: rtnl.Rtnl, index: int, vlan: int, trunk: Iterable[int]) -> None:
        if not self.cfg.preserve_default_vlan:
            rt.bridge_vlan_del(index, 1)
        if vlan:
            rt.bridge_vlan_add(index, vlan, pvid=True, untagged=True)
        for lo, hi in _ranges(trunk):
            rt.bridge_vlan_add(index, lo, vid_end=hi)

    def _ensure_vlan_gateway(self, rt: rtnl.Rtnl, br: rtnl.Link) -> rtnl.Link:
        """``<bridge>.<vlan>``: a veth whose other end is an access port of ``vlan``.

        As the reference (``ensureVlanInterface``), which holds the gateway address when
        ``vlan`` is set. Shared by every attachment of the bridge and VLAN; never deleted.
        """
        cfg = self.cfg
        name = cfg.vlan_gateway_ifname
        assert name is not None
        link = rt.get_link(name)
        if link is not None:
            return link
        port = vlan_gateway_port_name(cfg.bridge, cfg.vlan)
        try:
            port_link = rt.add_veth(port, name, master=br.index, mtu=cfg.mtu, mac=random_mac(), peer_mac=random_mac(), up=True)
        except LinkExists:
            return rt.require_link(name)  # a concurrent ADD made it
        try:
            rt.set_brport(port_link.index, alias=f"{GW_ALIAS_PREFIX}{cfg.bridge}:{cfg.vlan}")
            self._port_vlans(rt, port_link.index, cfg.vlan, ())
            link = rt.require_link(name)
            rt.set_link(link.index, up=True)
            return link
        except BaseException:
            rt.delete_link(name=port)
            raise

    def _ensure_gateway_addrs(self, rt: rtnl.Rtnl, link: rtnl.Link, wanted: list[Any], prog: _Progress) -> None:
        """The reference's ``ensureAddr``: an IPv4 bridge holds one IPv4 address; IPv6
        addresses may coexist unless their subnets overlap. A different address in the
        way is replaced with ``forceAddress``, an error otherwise."""
        prog.gw_link_index = link.index
        existing = [a.iface for a in rt.addresses(link.index)]
        for want in wanted:
            if want in existing:
                continue
            conflicts = [
                a
                for a in existing
                if a.version == want.version
                and a not in wanted
                and not (a.version == 6 and a.is_link_local)
                and (want.version == 4 or a.network.overlaps(want.network))
            ]
            if conflicts:
                if not self.cfg.force_address:
                    raise KernelError(
                        f"{link.name!r} already has an IP address different from {want} "
                        f"({', '.join(map(str, conflicts))}); set forceAddress to replace it"
                    )
                for c in conflicts:
                    rt.delete_address(link.index, c)
                    existing.remove(c)
            if rt.add_address(link.index, want, nodad=True):
                prog.added_addrs.append(want)
            existing.append(want)


    # -- rollback ----------------------------------------------------------------------
    def _rollback(self, exc: BaseException, att: Attachment, plan: _Plan, prog: _Progress) -> bool:
        """Undo what ADD made (never the bridge); never masks the original error: what
        could not be undone is added to it as notes (the error's details)."""
        if not (prog.veth_created or prog.added_addrs or prog.masq_added or prog.spoof_added):
            return False
        try:
            problems = rtnl.run(self.host, self._undo, plan, prog)
        except BaseException as e:  # noqa: BLE001 - reported on the original error
            problems = [f"rollback failed: {e}"]
        for p in problems:
            exc.add_note(f"rollback: {p}")
        return False

    def _undo(self, rt: rtnl.Rtnl, plan: _Plan, prog: _Progress) -> list[str]:
        steps = Steps("rollback")
        if prog.spoof_added:
            steps.run(lambda: _spoofchk().remove(plan.owner, plan.host_veth, plan.peer_mac))
        if prog.masq_added:
            steps.run(lambda: _masquerade().remove(plan.owner, [ip.address for ip in plan.ips], iface=self.masq_iface))
        if prog.veth_created:
            steps.run(lambda: rt.delete_link(name=plan.host_veth))
        if prog.added_addrs and prog.gw_link_index is not None and prog.bridge_index is not None:
            steps.run(self._drop_gateway_addrs, rt, plan, prog)
        return [str(e) for e in steps.errors]

    def _drop_gateway_addrs(self, rt: rtnl.Rtnl, plan: _Plan, prog: _Progress) -> None:
        """Remove the gateway addresses this ADD added while no other container port is on
        the bridge. Exclusive hold of the bridge lock: an ADD that has already found the
        address in place holds it shared until its port exists, so it is either seen as
        a port here or has not yet looked (and will add the address again)."""
        with link_lock(self.cfg.bridge, exclusive=True):
            others = [
                p
                for p in rt.ports_of(prog.bridge_index)  # type: ignore[arg-type]
                if p.name != plan.host_veth and not (p.alias or "").startswith(GW_ALIAS_PREFIX)
            ]
            if not others:
                for a in prog.added_addrs:
                    rt.delete_address(prog.gw_link_index, a)  # type: ignore[arg-type]

    # =================================================================== DEL
    def detach(self, att: Attachment, ips: list[IPConfig] | None) -> None:
        """Remove everything ``att`` owns; idempotent and best effort.

        Succeeds when called twice, without a netns path, with a netns that no longer
        exists, and when the interfaces are already gone. Other failures are collected
        and raised at the end (one error as is, several as one :class:`MultipleErrors`
        listing each).

        The sandbox interface is removed through its peer: deleting the deterministic
        host veth deletes both ends in one operation, whether or not the sandbox still
        exists (and after a crashed ADD that never renamed the sandbox end). An
        interface called ``ifname`` in the sandbox that is *not* the peer of this
        attachment's host veth is not ours (e.g. the one that made ADD fail with
        InterfaceExists) and is left alone. The sandbox is only entered to read the
        container MAC when the spoof check is on (its removal then needs no listing).
        """
        cfg = self.cfg
        steps = Steps(f"DEL of {att.container_id}/{att.ifname}")
        host_veth = host_veth_name(att.network, att.container_id, att.ifname)
        owner = owner_tag(att.network, att.container_id, att.ifname)
        container_mac: str | None = None

        if cfg.mac_spoof_check and att.netns and ifname_problem(att.ifname) is None:
            try:
                with Netns.open(att.netns) as sb:
                    link = rtnl.run(sb, lambda rt: rt.get_link(att.ifname))
                    container_mac = link.mac if link is not None and link.kind == "veth" else None
            except NetnsNotFound:
                pass
            except Exception as e:  # noqa: BLE001 - collected
                steps.add(e)

        def host_part(rt: rtnl.Rtnl) -> None:
            if cfg.mac_spoof_check:
                if container_mac:
                    steps.run(lambda: _spoofchk().remove(owner, host_veth, container_mac))
                else:
                    steps.run(lambda: _spoofchk().remove(owner))
            if cfg.ip_masq:
                steps.run(lambda: _masquerade().remove(owner, [ip.address for ip in ips] if ips else None,
                                                       iface=self.masq_iface))
            # both ends; ENODEV (already gone) is fine; early: on the kernel's announcement
            steps.run(lambda: rt.delete_link(name=host_veth, early=True))

        steps.run(rtnl.run, self.host, host_part)
        steps.done()

    delete = detach  # the CNI verb's name

    # =================================================================== CHECK
    def check(self, att: Attachment, expected: Wiring, own_addresses: list[Any] | None = None) -> None:
        """Compare the kernel with what ADD returned; :class:`CheckFailed` on a difference.

        ``own_addresses``: the addresses ADD masqueraded (those IPAM handed out). Without
        it, the first expected address of each family on the container interface stands
        for them, so addresses that later chained plugins added are tolerated.
        """
        cfg = self.cfg
        self._validate(att, need_netns=True)
        ifs = expected.interfaces
        br_exp = next((i for i in ifs if i.name == cfg.bridge and not i.sandbox), None)
        if br_exp is None:
            raise CheckFailed(f"the expected result has no bridge interface {cfg.bridge!r}")
        cont_pos = next((n for n, i in enumerate(ifs) if i.name == att.ifname and i.sandbox == att.netns), None)
        if cont_pos is None:
            raise CheckFailed(f"the expected result has no interface {att.ifname!r} in sandbox {att.netns!r}")
        cont_exp = ifs[cont_pos]
        host_veth = host_veth_name(att.network, att.container_id, att.ifname)
        veth_exp = next((i for i in ifs if i.name == host_veth and not i.sandbox), None)
        exp_ips = [ip for ip in expected.ips if ip.interface is None or ip.interface == cont_pos]
        family_gw: dict[int, Any] = {}
        for ip in expected.ips:
            if ip.gateway is not None:
                family_gw.setdefault(ip.address.version, ip.gateway)

        masq_addrs = own_addresses
        if masq_addrs is None:
            firsts: dict[int, Any] = {}
            for ip in exp_ips:
                firsts.setdefault(ip.address.version, ip.address)
            masq_addrs = list(firsts.values())

        with Netns.open(att.netns) as sb:  # type: ignore[arg-type]
            try:
                cont = rtnl.run(sb, sandbox.check, att.ifname, kind="veth", mac=cont_exp.mac,
                                addresses=[ip.address for ip in exp_ips], routes=expected.routes,
                                family_gw=family_gw, where=f"sandbox {att.netns}")
            except Mismatch as e:
                raise CheckFailed(str(e)) from None
        rtnl.run(self.host, self._check_host, att, br_exp, veth_exp, host_veth, cont, masq_addrs)

    def _check_host(
        self,
        rt: rtnl.Rtnl,
        att: Attachment,
        br_exp: Interface,
        veth_exp: Interface | None,
        host_veth: str,
        cont: rtnl.Link,
        masq_addrs: list[Any],
    ) -> None:
        cfg = self.cfg
        br = rt.get_link(cfg.bridge)
        if br is None:
            raise CheckFailed(f"bridge {cfg.bridge!r} not found")
        if br.kind != "bridge":
            raise CheckFailed(f"{cfg.bridge!r} is a {br.kind or 'device'}, not a bridge")
        if br_exp.mac and not _same_mac(br_exp.mac, br.mac):
            raise CheckFailed(f"bridge {cfg.bridge!r} has MAC {br.mac}, expected {br_exp.mac}")
        if br.promisc != cfg.promisc_mode:
            raise CheckFailed(f"bridge {cfg.bridge!r} promiscuous mode is {br.promisc}, configured {cfg.promisc_mode}")
        veth = rt.get_link(host_veth)
        if veth is None:
            raise CheckFailed(f"host veth {host_veth} of {att.container_id}/{att.ifname} not found")
        if veth.master != br.index:
            raise CheckFailed(f"host veth {host_veth} is not a port of bridge {cfg.bridge!r}")
        if veth.peer_index != cont.index or cont.peer_index != veth.index:
            raise CheckFailed(f"host veth {host_veth} is not the peer of {att.ifname!r} in sandbox {att.netns}")
        if veth_exp is not None and veth_exp.mac and not _same_mac(veth_exp.mac, veth.mac):
            raise CheckFailed(f"host veth {host_veth} has MAC {veth.mac}, expected {veth_exp.mac}")
        if veth.hairpin != cfg.hairpin_mode:
            raise CheckFailed(f"host veth {host_veth} hairpin mode is {veth.hairpin}, configured {cfg.hairpin_mode}")
        if veth.isolated != cfg.port_isolation:
            raise CheckFailed(f"host veth {host_veth} isolation is {veth.isolated}, configured {cfg.port_isolation}")
        owner = owner_tag(att.network, att.container_id, att.ifname)
        problems: list[str] = []
        if cfg.ip_masq and masq_addrs:
            problems += _masquerade().check(owner, masq_addrs, iface=self.masq_iface)
        if cfg.mac_spoof_check and cont.mac:
            problems += _spoofchk().check(owner, host_veth, cont.mac)
        if problems:
            raise CheckFailed("; ".join(problems))

    # =================================================================== GC / STATUS
    def gc(self, network: str, valid: set[tuple[str, str]]) -> None:
        """Remove ``network``'s host veths (and nft entries) not in ``valid`` (cid, ifname).

        The one operation that dumps links. A veth is recognised by its alias
        ``splice:<network>:``; it is kept when its name is the deterministic name of a
        valid attachment (robust even when a long alias was truncated). Every failure is
        reported (:class:`MultipleErrors` when several).
        """
        cfg = self.cfg
        keep_names = {host_veth_name(network, cid, ifn) for cid, ifn in valid}
        keep_owners = {owner_tag(network, cid, ifn) for cid, ifn in valid}
        prefix = alias_prefix(network)
        steps = Steps(f"GC of network {network!r}")

        def stale(link: rtnl.Link, bridge_index: int | None) -> bool:
            if link.kind != "veth" or link.name in keep_names:
                return False
            if (link.alias or "").startswith(prefix):
                return True
            # An ADD killed between creating the veth and tagging it leaves an untagged
            # port of our bridge with our name pattern. Every ADD holds the bridge lock
            # (shared) over that window and we hold it exclusively: an untagged port we
            # see is a leftover, never another network's ADD in progress.
            return (not link.alias and bridge_index is not None and link.master == bridge_index
                    and _UNTAGGED_OURS.fullmatch(link.name) is not None)

        def host_part(rt: rtnl.Rtnl) -> None:
            with link_lock(cfg.bridge, exclusive=True):
                br = rt.get_link(cfg.bridge)
                bridge_index = br.index if br is not None else None
                for link in rt.dump_links():
                    if stale(link, bridge_index):
                        steps.run(rt.delete_link, index=link.index)
            if cfg.ip_masq:
                steps.run(lambda: _masquerade().gc(gc_prefix(network), keep_owners.__contains__))
            if cfg.mac_spoof_check:
                steps.run(lambda: _spoofchk().gc(gc_prefix(network), keep_owners.__contains__))

        steps.run(rtnl.run, self.host, host_part)
        steps.done()

    def status(self) -> None:
        """Ready unless netlink fails, or the bridge name is taken by a non-bridge, or
        the existing bridge lacks the VLAN filtering ``vlan``/``vlanTrunk`` need (it is
        only switched on at creation): conditions under which every ADD would fail."""
        cfg = self.cfg

        def part(rt: rtnl.Rtnl) -> None:
            link = rt.get_link(cfg.bridge)
            if link is None:
                return
            if link.kind != "bridge":
                raise KernelError(f"{cfg.bridge!r} exists but is not a bridge (kind {link.kind or 'none'})")
            if cfg.vlan_filtering and link.vlan_filtering is False:
                raise KernelError(
                    f"bridge {cfg.bridge!r} has VLAN filtering off, which vlan/vlanTrunk need "
                    "(it is only enabled when splice creates the bridge)"
                )

        rtnl.run(self.host, part)


# -- helpers ------------------------------------------------------------------------------
def _ranges(vids: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(set(vids)):
        if out and v == out[-1][1] + 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def _same_mac(a: str | None, b: str | None) -> bool:
    return (a or "").lower() == (b or "").lower()
