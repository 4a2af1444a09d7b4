"""Kind-specific link data (``IFLA_INFO_DATA``): one small dataclass per link kind.

The same class describes a link to create (:meth:`splice.libnet.rtnl.Rtnl.add_link`
``data=``) and what the kernel reports about an existing one (:attr:`rtnl.Link.data`,
decoded on first access). Attribute numbers and values: ``include/uapi/linux/if_link.h``.
A field left ``None`` is not sent (the kernel's default applies) and, when reading back,
means the kernel did not report it.

Sending: :meth:`LinkData.info_data` lists the attributes by their pyroute2 names, encoded
by pyroute2's IFLA_INFO_DATA class of the kind (:class:`splice.libnet.netlink.linkinfo`).
Reading: :meth:`LinkData.decode` reads the attributes it needs from the kernel's bytes.

============  ================================================================
kind          class
============  ================================================================
``veth``      :class:`Veth` (creation only: the kernel reports no veth data)
``bridge``    :class:`Bridge`
``vlan``      :class:`Vlan` (802.1Q / 802.1ad on a parent link)
``macvlan``   :class:`Macvlan`
``ipvlan``    :class:`Ipvlan`
``vxlan``     :class:`Vxlan`
============  ================================================================
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, ClassVar

from . import netlink as nl

IFLA_LINKINFO = 18
IFLA_INFO_DATA = 2

IFLA_BR_VLAN_FILTERING = 7
IFLA_BR_VLAN_DEFAULT_PVID = 39

IFLA_VLAN_ID = 1
IFLA_VLAN_PROTOCOL = 5
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8

IFLA_MACVLAN_MODE = 1
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "source": 16}

IFLA_IPVLAN_MODE = 1
IFLA_IPVLAN_FLAGS = 2
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
IPVLAN_FLAGS = {"bridge": 0, "private": 1, "vepa": 2}

IFLA_VXLAN_ID = 1
IFLA_VXLAN_GROUP = 2
IFLA_VXLAN_LINK = 3
IFLA_VXLAN_LOCAL = 4
IFLA_VXLAN_TTL = 5
IFLA_VXLAN_TOS = 6
IFLA_VXLAN_LEARNING = 7
IFLA_VXLAN_AGEING = 8
IFLA_VXLAN_PORT = 15
IFLA_VXLAN_GROUP6 = 16
IFLA_VXLAN_LOCAL6 = 17
IFLA_VXLAN_UDP_CSUM = 18
IFLA_VXLAN_UDP_ZERO_CSUM6_TX = 19
IFLA_VXLAN_UDP_ZERO_CSUM6_RX = 20
IFLA_VXLAN_GBP = 23

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def mac_text(mac: str) -> str:
    """``mac`` as pyroute2 encodes it ("02:00:00:00:00:01"); ValueError if it is not one."""
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    return raw.hex(":")


def _name_of(table: dict[str, int], value: int) -> str | int:
    for name, v in table.items():
        if v == value:
            return name
    return value


def _flag(name: str, value: bool | None) -> list[tuple[str, int]]:
    return [] if value is None else [(name, 1 if value else 0)]


class LinkData:
    """Base of the kind classes: ``KIND``, :meth:`info_data`, :meth:`encode`, :meth:`decode`."""

    KIND: ClassVar[str] = ""

    def info_data(self) -> list[tuple[str, Any]]:
        """The attributes inside IFLA_INFO_DATA as pyroute2 names and values (empty: no
        IFLA_INFO_DATA at all)."""
        return []

    def encode(self) -> bytes:
        """The attributes inside IFLA_INFO_DATA, encoded (by pyroute2, as
        :meth:`splice.libnet.rtnl.Rtnl.add_link` sends them); empty: no IFLA_INFO_DATA."""
        data = self.info_data()
        if not data:
            return b""
        body = nl.encode(nl.linkmsg, [("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", self.KIND),
                                                                   ("IFLA_INFO_DATA", {"attrs": data})]})])
        return nl.attr_map(nl.attr_map(body, 16)[IFLA_LINKINFO])[IFLA_INFO_DATA]

    @classmethod
    def decode(cls, payload: bytes) -> "LinkData":
        return cls()


@dataclass(frozen=True)
class Veth(LinkData):
    """The peer of a veth pair (``VETH_INFO_PEER``). ``peer_netns_fd``: create the peer
    directly in that namespace (no namespace move afterwards)."""

    KIND: ClassVar[str] = "veth"
    peer: str = ""
    peer_netns_fd: int | None = None
    peer_mac: str | None = None
    peer_mtu: int | None = None

    def info_data(self) -> list[tuple[str, Any]]:
        peer: list[tuple[str, Any]] = [("IFLA_IFNAME", self.peer)]
        if self.peer_netns_fd is not None:
            peer.append(("IFLA_NET_NS_FD", self.peer_netns_fd))
        if self.peer_mtu:
            peer.append(("IFLA_MTU", self.peer_mtu))
        if self.peer_mac:
            peer.append(("IFLA_ADDRESS", mac_text(self.peer_mac)))
        return [("VETH_INFO_PEER", {"attrs": peer})]  # an ifinfomsg of defaults, then these


@dataclass(frozen=True)
class Bridge(LinkData):
    KIND: ClassVar[str] = "bridge"
    vlan_filtering: bool | None = None
    vlan_default_pvid: int | None = None

    def info_data(self) -> list[tuple[str, Any]]:
        out = _flag("IFLA_BR_VLAN_FILTERING", self.vlan_filtering)
        if self.vlan_default_pvid is not None:
            out.append(("IFLA_BR_VLAN_DEFAULT_PVID", self.vlan_default_pvid))
        return out

    @classmethod
    def decode(cls, payload: bytes) -> "Bridge":
        a = nl.attr_map(payload)
        vf = a.get(IFLA_BR_VLAN_FILTERING)
        pvid = a.get(IFLA_BR_VLAN_DEFAULT_PVID)
        return cls(vlan_filtering=bool(vf[0]) if vf else None, vlan_default_pvid=nl.get_u16(pvid) if pvid else None)


@dataclass(frozen=True)
class Vlan(LinkData):
    """An 802.1Q (``protocol=ETH_P_8021Q``, the default) or 802.1ad (``ETH_P_8021AD``)
    VLAN link on top of ``parent``."""

    KIND: ClassVar[str] = "vlan"
    id: int = 0
    protocol: int = ETH_P_8021Q

    def __post_init__(self) -> None:
        if not 0 < self.id < 4095:
            raise ValueError(f"VLAN id {self.id} is outside 1-4094")
        if self.protocol not in (ETH_P_8021Q, ETH_P_8021AD):
            raise ValueError(f"VLAN protocol {self.protocol:#x} is neither 802.1Q nor 802.1ad")

    def info_data(self) -> list[tuple[str, Any]]:
        return [("IFLA_VLAN_ID", self.id), ("IFLA_VLAN_PROTOCOL", self.protocol)]

    @classmethod
    def decode(cls, payload: bytes) -> "Vlan":
        a = nl.attr_map(payload)
        proto = a.get(IFLA_VLAN_PROTOCOL)
        return cls(id=nl.get_u16(a[IFLA_VLAN_ID]), protocol=nl.get_be16(proto) if proto else ETH_P_8021Q)


@dataclass(frozen=True)
class Macvlan(LinkData):
    """``mode``: ``bridge`` (the default here and in iproute2), ``private``, ``vepa``,
    ``passthru`` or ``source``."""

    KIND: ClassVar[str] = "macvlan"
    mode: str = "bridge"

    def __post_init__(self) -> None:
        if self.mode not in MACVLAN_MODES:
            raise ValueError(f"macvlan mode {self.mode!r} is not one of {', '.join(MACVLAN_MODES)}")

    def info_data(self) -> list[tuple[str, Any]]:
        return [("IFLA_MACVLAN_MODE", MACVLAN_MODES[self.mode])]

    @classmethod
    def decode(cls, payload: bytes) -> "Macvlan":
        mode = nl.attr_map(payload).get(IFLA_MACVLAN_MODE)
        return cls(mode=str(_name_of(MACVLAN_MODES, nl.get_u32(mode))) if mode else "vepa")  # kernel default


@dataclass(frozen=True)
class Ipvlan(LinkData):
    """``mode``: ``l2``, ``l3`` or ``l3s``; ``flags``: ``bridge`` (the default),
    ``private`` or ``vepa`` (IFLA_IPVLAN_FLAGS, Linux >= 4.15)."""

    KIND: ClassVar[str] = "ipvlan"
    mode: str = "l2"
    flags: str = "bridge"

    def __post_init__(self) -> None:
        if self.mode not in IPVLAN_MODES:
            raise ValueError(f"ipvlan mode {self.mode!r} is not one of {', '.join(IPVLAN_MODES)}")
        if self.flags not in IPVLAN_FLAGS:
            raise ValueError(f"ipvlan flags {self.flags!r} is not one of {', '.join(IPVLAN_FLAGS)}")

    def info_data(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = [("IFLA_IPVLAN_MODE", IPVLAN_MODES[self.mode])]
        if self.flags != "bridge":
            out.append(("IFLA_IPVLAN_FLAGS", IPVLAN_FLAGS[self.flags]))
        return out

    @classmethod
    def decode(cls, payload: bytes) -> "Ipvlan":
        a = nl.attr_map(payload)
        mode, flags = a.get(IFLA_IPVLAN_MODE), a.get(IFLA_IPVLAN_FLAGS)
        return cls(
            mode=str(_name_of(IPVLAN_MODES, nl.get_u16(mode))) if mode else "l2",
            flags=str(_name_of(IPVLAN_FLAGS, nl.get_u16(flags))) if flags else "bridge",
        )


@dataclass(frozen=True)
class Vxlan(LinkData):
    """A VXLAN device (``drivers/net/vxlan``).

    ``vni``; ``port``: the UDP destination port (the kernel's default, when None, is
    8472, not IANA's 4789); ``local``: the source address (IPv4 or IPv6); ``group``: a
    multicast group or a single remote (None: unicast, remotes come from FDB entries);
    ``dev``: the underlay link's ifindex; ``learning``: learn remote MACs from received
    packets (off for an overlay whose FDB is programmed, as flannel does); ``ttl``;
    ``udp_csum`` (IPv4 outer checksums), ``udp6_zero_csum_tx`` / ``_rx`` (IPv6: send /
    accept zero checksums); ``gbp``: group-based policy extension.
    """

    KIND: ClassVar[str] = "vxlan"
    vni: int = 0
    port: int | None = None
    local: IPAddress | None = None
    group: IPAddress | None = None
    dev: int | None = None
    learning: bool | None = None
    ttl: int | None = None
    ageing: int | None = None
    udp_csum: bool | None = None
    udp6_zero_csum_tx: bool | None = None
    udp6_zero_csum_rx: bool | None = None
    gbp: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.vni < 1 << 24:
            raise ValueError(f"VXLAN id {self.vni} is outside 0-16777215")
        for name in ("local", "group"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                object.__setattr__(self, name, ipaddress.ip_address(v))

    def info_data(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = [("IFLA_VXLAN_ID", self.vni)]
        if self.port is not None:
            out.append(("IFLA_VXLAN_PORT", self.port))
        if self.local is not None:
            out.append(("IFLA_VXLAN_LOCAL6" if self.local.version == 6 else "IFLA_VXLAN_LOCAL", str(self.local)))
        if self.group is not None:
            out.append(("IFLA_VXLAN_GROUP6" if self.group.version == 6 else "IFLA_VXLAN_GROUP", str(self.group)))
        if self.dev:
            out.append(("IFLA_VXLAN_LINK", self.dev))
        if self.ttl is not None:
            out.append(("IFLA_VXLAN_TTL", self.ttl))
        if self.ageing is not None:
            out.append(("IFLA_VXLAN_AGEING", self.ageing))
        out += _flag("IFLA_VXLAN_LEARNING", self.learning)
        out += _flag("IFLA_VXLAN_UDP_CSUM", self.udp_csum)
        out += _flag("IFLA_VXLAN_UDP_ZERO_CSUM6_TX", self.udp6_zero_csum_tx)
        out += _flag("IFLA_VXLAN_UDP_ZERO_CSUM6_RX", self.udp6_zero_csum_rx)
        if self.gbp:
            out.append(("IFLA_VXLAN_GBP", True))  # a flag attribute: present = on
        return out

    @classmethod
    def decode(cls, payload: bytes) -> "Vxlan":
        a = nl.attr_map(payload)

        def addr(k4: int, k6: int) -> IPAddress | None:
            v = a.get(k4) or a.get(k6)
            return ipaddress.ip_address(v) if v and any(v) else None

        def flag(k: int) -> bool | None:
            v = a.get(k)
            return bool(v[0]) if v else None

        port, dev, ttl, ageing = a.get(IFLA_VXLAN_PORT), a.get(IFLA_VXLAN_LINK), a.get(IFLA_VXLAN_TTL), a.get(IFLA_VXLAN_AGEING)
        return cls(
            vni=nl.get_u32(a[IFLA_VXLAN_ID]),
            port=nl.get_be16(port) if port else None,
            local=addr(IFLA_VXLAN_LOCAL, IFLA_VXLAN_LOCAL6),
            group=addr(IFLA_VXLAN_GROUP, IFLA_VXLAN_GROUP6),
            dev=(nl.get_u32(dev) or None) if dev else None,
            learning=flag(IFLA_VXLAN_LEARNING),
            ttl=ttl[0] if ttl else None,
            ageing=nl.get_u32(ageing) if ageing else None,
            udp_csum=flag(IFLA_VXLAN_UDP_CSUM),
            udp6_zero_csum_tx=flag(IFLA_VXLAN_UDP_ZERO_CSUM6_TX),
            udp6_zero_csum_rx=flag(IFLA_VXLAN_UDP_ZERO_CSUM6_RX),
            gbp=IFLA_VXLAN_GBP in a,
        )


KINDS: dict[str, type[LinkData]] = {c.KIND: c for c in (Veth, Bridge, Vlan, Macvlan, Ipvlan, Vxlan)}


def decode(kind: str | None, payload: bytes | None) -> LinkData | None:
    """The kind class for ``kind`` decoded from an IFLA_INFO_DATA payload; None for a
    kind without a class here, or without data (a veth)."""
    cls = KINDS.get(kind or "")
    if cls is None or cls is Veth or payload is None:
        return None
    return cls.decode(payload)
