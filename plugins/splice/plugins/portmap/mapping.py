"""Port mappings (``-p [host_ip:]host_port:container_port/protocol``) and their expansion.

Policy of the portmap driver, no kernel access: which mappings are valid, which container
address each one goes to, which combinations contradict each other. The result,
:class:`~splice.libnet.portmap.model.Published` entries, is what the kernel mechanism
(:class:`splice.libnet.portmap.publisher.PortPublisher`) applies.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address, ip_interface
from typing import Any, Iterable

from splice.libnet.portmap.model import PROTOCOLS, Published, Value, norm_key
from splice.plugins.errors import ConfigError

IPAddr = IPv4Address | IPv6Address


class PortMappingError(ConfigError, ValueError):
    """The mappings contradict each other (same port twice with different targets...),
    or one of them, or a condition, is invalid."""


class PortMapping(Value):
    """``-p [host_ip:]host_port:container_port/protocol``."""

    __slots__ = ("host_port", "container_port", "protocol", "host_ip")
    host_port: int
    container_port: int
    protocol: str
    host_ip: IPAddr | None

    def __init__(self, host_port: int, container_port: int, protocol: str = "tcp",
                 host_ip: IPAddr | str | None = None) -> None:
        for name, v in (("host_port", host_port), ("container_port", container_port)):
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
                raise PortMappingError(f"invalid {name} {v!r}: must be 1-65535")
        proto = protocol.lower() if isinstance(protocol, str) else protocol
        if proto not in PROTOCOLS:
            raise PortMappingError(f"invalid protocol {protocol!r}: must be one of {', '.join(PROTOCOLS)}")
        if isinstance(host_ip, str):
            try:
                host_ip = ip_address(host_ip)
            except ValueError:
                raise PortMappingError(f"invalid hostIP {host_ip!r}") from None
        elif host_ip is not None and not isinstance(host_ip, (IPv4Address, IPv6Address)):
            raise PortMappingError(f"invalid hostIP {host_ip!r}")
        for k, v in (("host_port", host_port), ("container_port", container_port), ("protocol", proto),
                     ("host_ip", host_ip)):
            object.__setattr__(self, k, v)


def container_addresses(addresses: Iterable[Any]) -> dict[int, Any]:
    """version -> the first usable address of that family (an ip_interface), as the
    reference takes the first IPv4 and the first IPv6 address of the sandbox interface."""
    out: dict[int, Any] = {}
    for a in addresses:
        iface = ip_interface(a) if isinstance(a, str) else a
        if isinstance(iface, (IPv4Address, IPv6Address)):
            iface = ip_interface(iface)
        if not isinstance(iface, (IPv4Interface, IPv6Interface)):
            raise TypeError(f"container address must be an IP interface/address, got {a!r}")
        if iface.ip.is_link_local or iface.ip.is_loopback or iface.ip.is_unspecified:
            continue
        out.setdefault(iface.version, iface)
    return out


def expand(mappings: Iterable[PortMapping], addresses: Iterable[Any]) -> list[Published]:
    """The DNAT elements of ``mappings`` for a container with ``addresses``.

    A mapping without host_ip applies to each family the container has; one with host_ip
    only when the container has that family (as the reference); ``0.0.0.0`` / ``::``
    mean every local address of that family. Raises :class:`PortMappingError` for the
    same port mapped twice to different targets, or published both on every address and
    on a given address of one family.
    """
    first = container_addresses(addresses)
    out: dict[tuple, Published] = {}
    for m in mappings:
        versions = sorted(first) if m.host_ip is None else [v for v in (m.host_ip.version,) if v in first]
        for v in versions:
            hip = None if m.host_ip is None or m.host_ip.is_unspecified else m.host_ip
            p = Published(m.protocol, m.host_port, hip, first[v].ip, m.container_port)
            k = (p.map, norm_key(p.map, p.key()))
            if k in out and out[k] != p:
                raise PortMappingError(f"{p.describe()} is mapped twice ({out[k]} and {p})")
            out[k] = p
    ports: dict[tuple, set[bool]] = {}
    for p in out.values():
        ports.setdefault((p.version, p.protocol, p.host_port), set()).add(p.specific)
    for (v, proto, port), kinds in ports.items():
        if len(kinds) > 1:
            raise PortMappingError(f"host port {proto}/{port} is published both on every IPv{v} address "
                                   "and on a given address")
    return sorted(out.values(), key=lambda p: (p.version, p.specific, str(p.host_ip), p.protocol, p.host_port))
