"""The sandbox half of ADD and CHECK, for every driver: configure the interface a driver put
into a container's namespace, and compare it with what ADD returned.

Call these with an :class:`~splice.libnet.rtnl.Rtnl` opened inside the sandbox
(``rtnl.run(sandbox, sandbox.configure, ...)``). They know links, addresses and routes,
nothing of CNI or Docker: addresses are ``ipaddress`` interfaces, routes any objects with the
attributes ``dst, gw, mtu, advmss, priority, table, scope`` (``splice.plugins.model.Route``).

:func:`configure` order (as the reference plugins' ``ipam.ConfigureIface``, with the rename
folded in): sysctls of the still temporary name, then one netlink batch: addresses (DAD off
unless ``enable_dad``), ONE ``RTM_NEWLINK`` that renames to ``ifname`` and brings the link up
(EEXIST there is the "interface already exists" check, at no extra round trip) and the routes
(after the DAD settle, in a second batch, with ``enable_dad``).
"""

from __future__ import annotations

import socket
import time
from typing import Any, Iterable

from . import sysctl
from .errors import LinkExists, Mismatch, NameTaken, NetError
from .rtnl import RT_TABLE_MAIN, Link, RouteEntry, Rtnl

RT_SCOPE_LINK = 253
DAD_SETTLE_TIMEOUT = 10.0  # seconds, with enable_dad only (as the reference's SettleAddresses)


def configure(
    rt: Rtnl,
    index: int | None,
    *,
    tmp: str,
    ifname: str,
    addresses: Iterable[Any],
    routes: Iterable[Any] = (),
    family_gw: dict[int, Any] | None = None,
    enable_dad: bool = False,
    up: bool = True,
    where: str = "the sandbox",
) -> int:
    """Configure the new interface ``tmp`` (ifindex ``index``, None to look it up) as
    ``ifname``; returns its ifindex. ``family_gw``: the gateway per IP version for routes
    without one (a route with neither gets link scope, IPv4). With ``up`` False the link is
    renamed but stays down and no route is added (``disableContainerInterface``)."""
    addresses = list(addresses)
    if index is None:  # the creation was not echoed: look the new link up by its name
        link = rt.get_link(tmp)
        if link is None:
            raise NetError(f"the new interface {tmp!r} vanished from {where}")
        index = link.index
    if enable_dad:
        sysctl.try_ensure(f"ipv6/conf/{tmp}/enhanced_dad", 1)
        sysctl.try_ensure(f"ipv6/conf/{tmp}/accept_dad", 1)
    else:
        sysctl.try_ensure(f"ipv6/conf/{tmp}/accept_dad", 0)
    sysctl.try_ensure(f"ipv4/conf/{tmp}/arp_notify", 1)
    # One round trip: the addresses, the rename + up, and (unless DAD must settle first)
    # the routes. The kernel runs every request whatever the previous ones did, so the
    # answers are read in order: the first failure is the error (a taken name first).
    b = rt.batch()
    for a in addresses:
        b.add_address(index, a, nodad=not enable_dad)
    renamed = b.set_link(index, name=ifname, up=up)
    settle_first = enable_dad and any(a.version == 6 for a in addresses)
    if up and not settle_first:
        _queue_routes(b, index, routes, family_gw)
    res = b.run(check=False)
    if isinstance(res[renamed], LinkExists):
        raise NameTaken(f"interface {ifname!r} already exists in {where}")
    for r in res:
        if isinstance(r, BaseException):
            raise r
    if not up:
        return index
    if settle_first:
        settle(rt, index, ifname)
        b = rt.batch()
        _queue_routes(b, index, routes, family_gw)
        b.run(check=True)
    return index


def _queue_routes(b: Any, index: int, routes: Iterable[Any], family_gw: dict[int, Any] | None) -> None:
    gws = family_gw or {}
    for r in routes:
        gw = r.gw if r.gw is not None else gws.get(r.dst.version)
        scope = r.scope
        if scope is None and gw is None and r.dst.version == 4:
            scope = RT_SCOPE_LINK
        b.add_route(r.dst, gw=gw, oif=index, mtu=r.mtu, advmss=r.advmss, priority=r.priority, table=r.table,
                    scope=scope)


def settle(rt: Rtnl, index: int, ifname: str, timeout: float = DAD_SETTLE_TIMEOUT) -> None:
    """Wait until DAD has finished on the link's IPv6 addresses (NetError on a duplicate)."""
    deadline = time.monotonic() + timeout
    while True:
        addrs = [a for a in rt.addresses(index, socket.AF_INET6) if not a.iface.is_link_local]
        failed = [str(a.iface) for a in addrs if a.dad_failed]
        if failed:
            raise NetError(f"duplicate address detected for {', '.join(failed)} on {ifname}")
        if not any(a.tentative for a in addrs):
            return
        if time.monotonic() > deadline:
            raise NetError(f"IPv6 addresses on {ifname} still tentative after {timeout:g} s")
        time.sleep(0.05)


def check(
    rt: Rtnl,
    ifname: str,
    *,
    kind: str | None,
    mac: str | None,
    addresses: Iterable[Any],
    routes: Iterable[Any] = (),
    family_gw: dict[int, Any] | None = None,
    where: str = "the sandbox",
) -> Link:
    """The interface ``ifname`` has the ``kind`` (None: any), the ``mac`` (None: any), every
    address and every route (with a gateway from ``family_gw`` when the route has none);
    :class:`Mismatch` naming the first difference. Returns the link."""
    link = rt.get_link(ifname)
    if link is None:
        raise Mismatch(f"interface {ifname!r} not found in {where}")
    if kind is not None and link.kind != kind:
        raise Mismatch(f"interface {ifname!r} in {where} is a {link.kind or 'device'}, not a {kind}")
    if mac and (mac or "").lower() != (link.mac or "").lower():
        raise Mismatch(f"interface {ifname!r} has MAC {link.mac}, expected {mac}")
    have = {a.iface for a in rt.addresses(link.index)}
    for a in addresses:
        if a not in have:
            raise Mismatch(f"address {a} not found on {ifname!r} in {where}")
    tables: dict[int, list[RouteEntry]] = {}
    gws = family_gw or {}
    for r in routes:
        fam = socket.AF_INET6 if r.dst.version == 6 else socket.AF_INET
        if fam not in tables:
            tables[fam] = rt.routes(fam)
        gw = r.gw if r.gw is not None else gws.get(r.dst.version)
        table = r.table or RT_TABLE_MAIN
        if not any(e.dst == r.dst and e.gw == gw and e.table == table for e in tables[fam]):
            via = f" via {gw}" if gw is not None else ""
            raise Mismatch(f"route {r.dst}{via} not found in {where}")
    return link
