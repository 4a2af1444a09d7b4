"""The ipvlan driver: one ipvlan link per attachment on a master interface.

A framework driver (:mod:`splice.plugins.driver`, kind ``ipvlan``) on the shared base
:class:`splice.plugins.lowerdev.LowerDevDriver` (master resolution and checks, creation in
the sandbox, 802.1Q sub-interfaces, DEL/CHECK/GC/STATUS), as the macvlan driver. What is
ipvlan's:

* ``IFLA_IPVLAN_MODE`` l2/l3/l3s and ``IFLA_IPVLAN_FLAGS`` bridge/private/vepa.
* The link has its master's MAC: a runtime asking for a MAC gets a ConfigError (the kernel
  would refuse it anyway), CHECK compares the MAC with the master's.
* l3/l3s: the master routes by destination address, there is no next hop on the segment.
  The sandbox gets a default route via the device for each IP version it has an address
  of, and every IPAM route goes via the device; the result reports no gateway.
* The kernel's refusal in words: EBUSY (the master has a macvlan, or is a bridge/bond port).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from splice.libnet import rtnl
from splice.libnet.linkinfo import Ipvlan
from splice.plugins.errors import CheckFailed, ConfigError
from splice.plugins.ipvlan.config import parse_ipvlan_config
from splice.plugins.lowerdev import LowerDevDriver
from splice.plugins.model import Attachment, IPConfig, Route

DEFAULTS = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}


class IpvlanDriver(LowerDevDriver):
    """The ipvlan driver (framework kind ``ipvlan``)."""

    kind = "ipvlan"
    link_kind = "ipvlan"
    busy_holders = "another kind of virtual link or port (a macvlan, a bridge or bond port)"
    parse_config = staticmethod(parse_ipvlan_config)

    def link_data(self) -> Ipvlan:
        return Ipvlan(mode=self.cfg.mode, flags=self.cfg.flag)

    def container_mac(self, att: Attachment) -> str | None:
        if att.mac:
            raise ConfigError(f"an ipvlan link has the MAC of its master: it cannot take MAC {att.mac}")
        return None

    def result_gateway(self, ip: IPConfig) -> Any:
        return None if self.cfg.routed else ip.gateway

    def sandbox_routes(self, ips: list[IPConfig], routes: list[Route]) -> tuple[list[Route], dict[int, Any]]:
        if not self.cfg.routed:
            return super().sandbox_routes(ips, routes)
        out = [Route(dst=r.dst, mtu=r.mtu, advmss=r.advmss, priority=r.priority, table=r.table, scope=r.scope)
               for r in routes]
        for version in sorted({ip.address.version for ip in ips}):
            dflt = DEFAULTS[version]
            if not any(r.dst == dflt and (r.table or rtnl.RT_TABLE_MAIN) == rtnl.RT_TABLE_MAIN for r in out):
                out.append(Route(dst=dflt))
        return out, {}

    def check_link(self, link: rtnl.Link, master: rtnl.Link, ifname: str) -> None:
        mode = getattr(link.data, "mode", None)
        flags = getattr(link.data, "flags", None)
        if mode != self.cfg.mode:
            raise CheckFailed(f"ipvlan {ifname!r} is in mode {mode}, configured {self.cfg.mode}")
        if flags != self.cfg.flag:
            raise CheckFailed(f"ipvlan {ifname!r} has flag {flags}, configured {self.cfg.flag}")
        if master.mac and link.mac and link.mac.lower() != master.mac.lower():
            raise CheckFailed(f"ipvlan {ifname!r} has MAC {link.mac}, its master {master.name!r} {master.mac}")
