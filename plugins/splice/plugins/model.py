"""Protocol-neutral data model shared by drivers and front-ends.

Drivers take and return these; the CNI front-end converts them to and from CNI
results (splice.plugins.cni.types), the CNM front-end to Docker's JSON.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Union

IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(frozen=True)
class Attachment:
    """One container interface on one network: the owner of everything ADD makes."""

    network: str  # network name (CNI conflist "name" / Docker network id)
    container_id: str
    ifname: str  # interface name inside the sandbox
    netns: str | None = None  # sandbox namespace path; None when unknown/gone (DEL)
    mac: str | None = None  # requested MAC of the sandbox interface

    @property
    def key(self) -> tuple[str, str]:
        return (self.container_id, self.ifname)


@dataclass(frozen=True)
class IPConfig:
    """An address for the sandbox interface, as IPAM handed it out."""

    address: IPInterface  # address with the subnet's prefix length
    gateway: IPAddress | None = None
    interface: int | None = None  # index into Wiring.interfaces


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    gw: IPAddress | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str | None = None
    sandbox: str | None = None  # namespace path for sandbox interfaces, None for host ones
    mtu: int | None = None


@dataclass
class DNS:
    nameservers: list[str] = field(default_factory=list)
    domain: str | None = None
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)


@dataclass
class Wiring:
    """What an attachment looks like after ADD (the neutral form of a CNI result)."""

    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)
