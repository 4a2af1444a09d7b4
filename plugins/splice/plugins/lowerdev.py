"""Drivers of a link stacked on a master interface (macvlan, ipvlan): the shared base.

:class:`LowerDevDriver` is a framework driver (:mod:`splice.plugins.driver`) without a
kind; :class:`~splice.plugins.macvlan.driver.MacvlanDriver` and
:class:`~splice.plugins.ipvlan.driver.IpvlanDriver` say what differs (the link's kind and
``IFLA_INFO_DATA``, the MAC, the routes, the kernel's refusals in words). Protocol-neutral.
Behaviour follows the reference ``macvlan``/``ipvlan`` plugins (containernetworking/plugins
plugins/main/); differences are noted where they occur.

ADD (``IN_SANDBOX``): resolve the master in the host (in the sandbox with
``linkInContainer``; without ``master``, the interface of the default route, one route
dump as the reference's ``getDefaultRouteInterfaceName``), check it (exists, not the
loopback, not a bridge port, ``mtu`` not above its MTU), then ONE ``RTM_NEWLINK`` that
creates the link under a temporary name directly inside the sandbox (the reference
creates in the host and moves; creating in place saves the move), then in the sandbox one
batch that sets the owner alias (:func:`splice.plugins.owners.link_alias`) under the
temporary name and reads the link back, then :func:`splice.libnet.sandbox.configure`
(addresses, rename to ``ifname`` + up, routes). ``IN_HOST``: the link stays in the host
under its temporary name, tagged, unconfigured. Anything made is deleted on failure.

DEL: the sandbox's ``ifname`` when it carries this attachment's alias, else any link of
this kind in the sandbox with that alias (a crashed ADD's temporary name). Without the
sandbox there is nothing to do: the link dies with its namespace.

802.1Q (``master`` ``<parent>.<vid>`` or ``vlan``): ADD first runs
:func:`splice.plugins.vlans.ensure` in the host with the attachment's owner tag as its user
(the sub-interface is made when missing and this user registered, under its lock), then
creates the link on it; a failure after that deletes the link and releases the user.
DEL releases the user once the link is gone (or its sandbox is), in every form; the last
release of a splice-made sub-interface deletes it. GC releases this network's users that
are not valid any more, then :func:`splice.plugins.vlans.gc`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from typing import Any

from splice.libnet import rtnl, sandbox
from splice.libnet.errors import LinkExists, Mismatch, NameTaken, NetError, NetnsNotFound, NotSupported, TryAgain
from splice.libnet.names import ifname_problem
from splice.libnet.netns import Netns
from splice.plugins import vlans
from splice.plugins.driver import IN_HOST, IN_SANDBOX, validate_attachment
from splice.plugins.errors import CheckFailed, ConfigError, InterfaceExists, KernelError
from splice.plugins.model import Attachment, Interface, IPConfig, Route, Wiring
from splice.plugins.owners import Steps, gc_prefix, link_alias, owner_tag

IFF_LOOPBACK = 0x8
CONTAINER_IF_INDEX = 0  # interfaces = [container] (as the reference)


def default_route_ifindex(rt: rtnl.Rtnl) -> int | None:
    """The outgoing interface of the main table's default route (IPv4 first, then IPv6;
    the lowest metric), as the reference's getDefaultRouteInterfaceName."""
    for fam, dflt in ((socket.AF_INET, ipaddress.ip_network("0.0.0.0/0")), (socket.AF_INET6, ipaddress.ip_network("::/0"))):
        try:
            routes = [r for r in rt.routes(fam) if r.dst == dflt and r.oif and r.table == rtnl.RT_TABLE_MAIN]
        except NotSupported:
            continue
        if routes:
            return min(routes, key=lambda r: r.priority or 0).oif
    return None


class LowerDevDriver:
    """A link of kind :attr:`link_kind` on a master; subclasses set ``kind``,
    ``parse_config`` and the hooks below. ``cfg`` has ``master``, ``mode``, ``mtu``,
    ``link_in_container``, ``vlan_parent``, ``vlan`` (see the macvlan/ipvlan configs)."""

    kind = ""
    link_kind = ""
    installs_default_routes = False
    # Chained without ipam: the addresses and routes of prevResult go onto the link (the
    # adapter's hook, splice.plugins.cni.main_plugin).
    uses_prev_result_addresses = True

    def __init__(self, cfg: Any, host: Netns) -> None:
        self.cfg = cfg
        self.host = host

    def ensure_network(self, gateways: Any = ()) -> None:
        """Nothing shared to make ahead: an 802.1Q sub-interface is made (and registered)
        by the ADD that uses it, so that its last DEL can remove it."""

    def _vlan_user(self, att: Attachment) -> str:
        return owner_tag(att.network, att.container_id, att.ifname)

    def _release_vlan(self, user: str) -> None:
        name = self.cfg.master
        assert name is not None
        rtnl.run(self.host, lambda rt: vlans.release(rt, name, user=user))

    # =================================================================== master
    def _master(self, rt: rtnl.Rtnl, where: str) -> rtnl.Link:
        """The master link, checked; ConfigError naming what is wrong."""
        cfg = self.cfg
        if cfg.master is None:
            index = default_route_ifindex(rt)
            link = rt.get_link_by_index(index) if index else None
            if link is None:
                raise ConfigError(f"no master given and {where} has no default route to take it from; set \"master\"")
        else:
            link = rt.get_link(cfg.master)
            if link is None:
                raise ConfigError(f"master {cfg.master!r} not found in {where}")
        if link.flags & IFF_LOOPBACK or link.name == "lo":
            raise ConfigError(f"master {link.name!r} is the loopback: a {self.link_kind} needs an Ethernet master")
        if link.master is not None:
            raise ConfigError(f"master {link.name!r} is a port of another device (ifindex {link.master}, "
                              f"{link.slave_kind or 'a master'}): a {self.link_kind} cannot share it")
        if cfg.mtu and link.mtu and cfg.mtu > link.mtu:
            raise ConfigError(f"mtu {cfg.mtu} is larger than the MTU {link.mtu} of master {link.name!r}")
        return link

    # =================================================================== hooks
    def link_data(self) -> Any:
        """The ``IFLA_INFO_DATA`` of the new link (a :mod:`splice.libnet.linkinfo` object)."""
        raise NotImplementedError

    def container_mac(self, att: Attachment) -> str | None:
        """The MAC to give the new link (None: the kernel's choice); ConfigError when the
        attachment asks for one this kind cannot have."""
        return None

    def sandbox_routes(self, ips: list[IPConfig], routes: list[Route]) -> tuple[list[Route], dict[int, Any]]:
        """The routes to install in the sandbox and the gateway per IP version for routes
        without one: by default the routes as given, via the first gateway of each version."""
        family_gw: dict[int, Any] = {}
        for ip in ips:
            if ip.gateway is not None:
                family_gw.setdefault(ip.address.version, ip.gateway)
        return list(routes), family_gw

    def result_gateway(self, ip: IPConfig) -> Any:
        """The gateway the result reports for ``ip`` (default: the IPAM's)."""
        return ip.gateway

    def check_link(self, link: rtnl.Link, master: rtnl.Link, ifname: str) -> None:
        """CheckFailed when the link's kind-specific attributes differ from the config."""

    # what else may hold a master's rx handler (EBUSY), in words
    busy_holders = "another kind of virtual link or port"

    def _kernel_refused(self, e: NetError, master: rtnl.Link) -> Exception:
        """The kernel's refusal of a new link, in words (EBUSY: another rx handler owns the
        master; anything else as it came)."""
        if isinstance(e, TryAgain):
            return KernelError(
                f"master {master.name!r} is in use by {self.busy_holders}: the kernel refuses "
                f"{'an' if self.link_kind[0] in 'aeiou' else 'a'} {self.link_kind} on it (EBUSY; {e})")
        return e

    # =================================================================== ADD
    def attach(self, att: Attachment, ips: list[IPConfig], routes: list[Route], *,
               placement: str = IN_SANDBOX) -> Wiring:
        in_sandbox = placement == IN_SANDBOX
        if placement not in (IN_SANDBOX, IN_HOST):
            raise ValueError(f"placement {placement!r}")
        self._validate(att, need_netns=in_sandbox or self.cfg.link_in_container)
        mac = self.container_mac(att)
        tmp = "sp" + os.urandom(4).hex()  # secrets.token_hex without importing secrets (hmac, hashlib: ~3 ms)
        alias = link_alias(att.network, att.container_id, att.ifname)
        out_ips = [IPConfig(address=ip.address, gateway=self.result_gateway(ip), interface=CONTAINER_IF_INDEX)
                   for ip in ips]
        routes, family_gw = self.sandbox_routes(out_ips, routes)
        made: dict[str, Any] = {}  # "ns": the Netns holding the new link, "index" there; "vlan": user

        with contextlib.ExitStack() as stack:
            sb: Netns | None = None
            if att.netns and (in_sandbox or self.cfg.link_in_container):
                sb = Netns.open(att.netns)  # NetnsNotFound when gone
                stack.callback(sb.close)
            stack.push(lambda et, ev, tb: self._rollback(ev, made, tmp) if ev is not None else False)
            if self.cfg.vlan is not None:  # the sub-interface (made when missing), this user registered
                user = self._vlan_user(att)
                parent, vid = self.cfg.vlan_parent, self.cfg.vlan
                rtnl.run(self.host, lambda rt: vlans.ensure(rt, parent, vid, user=user))
                made["vlan"] = user
            if self.cfg.link_in_container:
                assert sb is not None
                link = rtnl.run(sb, self._create, tmp, alias, mac, None, f"the sandbox {att.netns}", made, sb)
            else:
                link = rtnl.run(self.host, self._create, tmp, alias, mac, sb.fd if in_sandbox and sb else None,
                                "the host namespace", made, self.host)
                if in_sandbox:
                    made["ns"] = sb
            if in_sandbox:
                assert sb is not None
                made_here = link

                def in_sb(rt: rtnl.Rtnl) -> rtnl.Link:  # one visit: tag (made from the host) and configure
                    new = made_here if made_here is not None else self._tag(rt, tmp, alias, made)
                    sandbox.configure(rt, new.index, tmp=tmp, ifname=att.ifname,
                                      addresses=[ip.address for ip in out_ips], routes=routes, family_gw=family_gw,
                                      where=f"the sandbox {att.netns}")
                    return new

                try:
                    link = rtnl.run(sb, in_sb)
                except NameTaken as e:
                    raise InterfaceExists(str(e)) from None
        iface = Interface(name=att.ifname if in_sandbox else tmp, mac=link.mac,
                          sandbox=att.netns if in_sandbox else None, mtu=self.cfg.mtu)
        return Wiring(interfaces=[iface], ips=out_ips, routes=list(routes))

    add = attach

    _validate = staticmethod(validate_attachment)

    def _create(self, rt: rtnl.Rtnl, tmp: str, alias: str, mac: str | None, netns_fd: int | None,
                where: str, made: dict, ns: Netns) -> rtnl.Link | None:
        """Check the master and create the link (in ``netns_fd`` when given). Returns the
        tagged link, or None when it was created in another namespace."""
        master = self._master(rt, where)
        data = self.link_data()
        kind = self.link_kind
        try:
            try:
                rt.add_link(kind, tmp, parent=master.index, netns_fd=netns_fd, mtu=self.cfg.mtu,
                            mac=mac, data=data)
            except NotSupported:
                if netns_fd is None:
                    raise
                # a kernel that cannot create it in place: create here, move under the
                # temporary name (the reference's order), rename there
                rt.add_link(kind, tmp, parent=master.index, mtu=self.cfg.mtu, mac=mac, data=data)
                made["ns"], made["name"] = ns, tmp
                rt.move_link(rt.require_link(tmp).index, netns_fd)
                made.pop("ns"), made.pop("name")
                return None
        except LinkExists:
            raise InterfaceExists(f"a link called {tmp!r} exists in {where}") from None
        except (TryAgain, NetError) as e:
            if isinstance(e, (LinkExists, NotSupported)):
                raise
            raise self._kernel_refused(e, master) from None
        if netns_fd is not None:
            return None
        made["ns"], made["name"] = ns, tmp
        return self._tag(rt, tmp, alias, made)

    def _tag(self, rt: rtnl.Rtnl, tmp: str, alias: str, made: dict) -> rtnl.Link:
        """Owner alias under the temporary name, and the link read back: one round trip."""
        b = rt.batch()
        b.set_brport(tmp, alias=alias)
        got = b.get_link(tmp)
        res = b.run(check=False)
        link = res[got]
        if isinstance(link, rtnl.Link):
            made["index"] = link.index
        elif isinstance(link, BaseException):
            raise link
        else:
            raise NetError(f"the new {self.link_kind} {tmp!r} vanished")
        if isinstance(res[0], BaseException):
            raise res[0]
        return link

    def _rollback(self, exc: BaseException, made: dict, tmp: str) -> bool:
        self._rollback_link(exc, made, tmp)
        user = made.get("vlan")
        if user is not None:  # after the link is gone: the last user deletes a sub-interface it made
            try:
                self._release_vlan(user)
            except BaseException as e:  # noqa: BLE001 - reported on the original error
                exc.add_note(f"rollback: release the 802.1Q sub-interface {self.cfg.master!r}: {e}")
        return False

    def _rollback_link(self, exc: BaseException, made: dict, tmp: str) -> None:
        ns = made.get("ns")
        if ns is None:
            return
        index, name = made.get("index"), made.get("name", tmp)

        def undo(rt: rtnl.Rtnl) -> None:
            if index is not None:
                rt.delete_link(index=index)
            else:
                rt.delete_link(name=name)

        try:
            rtnl.run(ns, undo)
        except BaseException as e:  # noqa: BLE001 - reported on the original error
            exc.add_note(f"rollback: delete {self.link_kind} {name!r}: {e}")
            made["vlan"] = None  # still on the sub-interface: keep its user registered

    # =================================================================== DEL
    def detach(self, att: Attachment, ips: list[IPConfig] | None) -> None:
        """Delete the sandbox link carrying this attachment's alias; idempotent. Without
        the sandbox (no path, or gone) there is nothing to do there. With 802.1Q, then
        release this attachment's registration on the sub-interface (every DEL form)."""
        steps = Steps(f"DEL of {att.container_id}/{att.ifname}")
        if att.netns and ifname_problem(att.ifname) is None:
            self._detach_link(att, steps)
        if self.cfg.vlan is not None and not steps.errors:  # the link is gone (else: kept registered)
            steps.run(self._release_vlan, self._vlan_user(att))
        steps.done()

    def _detach_link(self, att: Attachment, steps: Steps) -> None:
        alias = link_alias(att.network, att.container_id, att.ifname)

        def part(rt: rtnl.Rtnl) -> None:
            link = rt.get_link(att.ifname)
            if link is not None and link.alias == alias:
                rt.delete_link(index=link.index, early=True)  # returns on the kernel's announcement
                return
            for other in rt.dump_links():  # a crashed ADD's temporary name
                if other.alias == alias and other.kind == self.link_kind:
                    steps.run(rt.delete_link, index=other.index)

        try:
            with Netns.open(att.netns) as sb:  # type: ignore[arg-type]
                steps.run(rtnl.run, sb, part)
        except NetnsNotFound:
            return

    delete = detach

    # =================================================================== CHECK
    def check(self, att: Attachment, expected: Wiring, own_addresses: list[Any] | None = None) -> None:
        cfg = self.cfg
        self._validate(att, need_netns=True)
        ifs = expected.interfaces
        pos = next((n for n, i in enumerate(ifs) if i.name == att.ifname and i.sandbox == att.netns), None)
        if pos is None:
            raise CheckFailed(f"the expected result has no interface {att.ifname!r} in sandbox {att.netns!r}")
        exp = ifs[pos]
        exp_ips = [ip for ip in expected.ips if ip.interface is None or ip.interface == pos]
        exp_routes, family_gw = self.sandbox_routes(exp_ips, expected.routes)
        alias = link_alias(att.network, att.container_id, att.ifname)

        def in_sandbox(rt: rtnl.Rtnl) -> tuple[rtnl.Link, rtnl.Link | None]:
            link = sandbox.check(rt, att.ifname, kind=self.link_kind, mac=exp.mac,
                                 addresses=[ip.address for ip in exp_ips], routes=exp_routes,
                                 family_gw=family_gw, where=f"sandbox {att.netns}")
            master = self._master(rt, f"the sandbox {att.netns}") if cfg.link_in_container else None
            return link, master

        with Netns.open(att.netns) as sb:  # type: ignore[arg-type]
            try:
                link, master = rtnl.run(sb, in_sandbox)
            except Mismatch as e:
                raise CheckFailed(str(e)) from None
        if link.alias != alias:
            raise CheckFailed(f"interface {att.ifname!r} in sandbox {att.netns} is not this attachment's {self.link_kind} "
                              f"(alias {link.alias!r})")
        if master is None:
            try:
                master = rtnl.run(self.host, self._master, "the host namespace")
            except ConfigError as e:
                raise CheckFailed(str(e)) from None
        if link.parent_index != master.index:
            raise CheckFailed(f"{self.link_kind} {att.ifname!r} is not on master {master.name!r} "
                              f"(its lower link is ifindex {link.parent_index})")
        want_mtu = cfg.mtu or master.mtu
        if want_mtu and link.mtu != want_mtu:
            raise CheckFailed(f"{self.link_kind} {att.ifname!r} has MTU {link.mtu}, expected {want_mtu}")
        self.check_link(link, master, att.ifname)

    # =================================================================== GC / STATUS
    def gc(self, network: str, valid: set[tuple[str, str]]) -> None:
        """The link lives (and dies) in its sandbox; in the host, the 802.1Q registrations
        of this network's users that are not in ``valid`` are released, then every
        splice-made sub-interface that nothing uses is deleted (:func:`vlans.gc`)."""
        prefix = gc_prefix(network)
        keep = {owner_tag(network, cid, ifname) for cid, ifname in valid}
        steps = Steps(f"GC of network {network!r}")

        def part(rt: rtnl.Rtnl) -> None:
            for link in rt.dump_links():
                if not vlans.is_ours(link):
                    continue
                for user in sorted(vlans.users(rt, link.name)):
                    if user.startswith(prefix) and user not in keep:
                        steps.run(vlans.release, rt, link.name, user=user)
            steps.run(vlans.gc, rt)

        steps.run(rtnl.run, self.host, part)
        steps.done()

    def status(self) -> None:
        """The master exists, is usable and is up (with ``linkInContainer`` it lives in
        sandboxes: nothing to look at)."""
        if self.cfg.link_in_container:
            return

        def part(rt: rtnl.Rtnl) -> None:
            if self.cfg.vlan is not None:  # the sub-interface is made by the first ADD: its parent
                parent = rt.get_link(self.cfg.vlan_parent)
                if parent is None:
                    raise ConfigError(f"parent link {self.cfg.vlan_parent!r} of the VLAN sub-interface "
                                      f"{self.cfg.master!r} not found in the host namespace")
                if parent.flags & IFF_LOOPBACK:
                    raise ConfigError(f"parent link {parent.name!r} is the loopback: it cannot carry 802.1Q VLANs")
                if not parent.up:
                    raise KernelError(f"parent link {parent.name!r} of the VLAN sub-interface {self.cfg.master!r} is down")
                return
            master = self._master(rt, "the host namespace")
            if not master.up:
                raise KernelError(f"master {master.name!r} is down")

        rtnl.run(self.host, part)
