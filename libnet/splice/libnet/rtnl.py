"""rtnetlink: the link, address, route, bridge, FDB and neighbour operations of the drivers.

Namespaces are explicit. An :class:`Rtnl` is one netlink socket bound to the network
namespace of the thread that opens it, so open and use it inside
:meth:`splice.libnet.netns.Netns.run`; :func:`run` does both::

    created = rtnl.run(host, lambda rt: rt.add_bridge("cni0"))

Requests are built with pyroute2's message classes (``ifinfmsg``, ``ifaddrmsg``,
``rtmsg``, ``ndmsg``, the IFLA_LINKINFO encoders of each kind), imported without the rest
of pyroute2 (:mod:`splice.libnet.netlink`), and sent on splice's own socket. Replies are
not parsed by pyroute2: they are decoded only as far as the caller reads them (a link
message carries ~50 attributes; :class:`Link` keeps a dozen, and its kind-specific data
is decoded on first access), with the attribute numbers of the kernel's uapi headers
(``linux/rtnetlink.h``, ``if_link.h``, ``if_addr.h``, ``neighbour.h``, ``if_bridge.h``).

Lookups are by name with one ``RTM_GETLINK``, never by dumping and filtering (a dump can
be inconsistent while other agents change links). Only :meth:`Rtnl.dump_links` /
:meth:`Rtnl.ports_of` dump links, for garbage collection and rare decisions.

Batches: :meth:`Rtnl.batch` queues requests and sends them in one ``send``; the kernel
answers each one in order (one ACK or error each), read in one pass. See :class:`Batch`.

Every netlink failure is re-raised as a :mod:`splice.libnet.errors` exception whose
message names the operation (and carries the kernel's extended-ACK text when it gave
one); "already exists" / "already gone" outcomes that callers routinely tolerate are
return values instead (documented per method).
"""

from __future__ import annotations

import dataclasses
import errno as _errno
import _socket
import functools
import ipaddress
import os
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

from . import netlink as nl
from .errors import LinkExists, LinkNotFound, NetError, NotSupported, from_errno
from .linkinfo import (  # noqa: F401  (re-exported: rtnl.Vlan, rtnl.Vxlan, ...)
    ETH_P_8021AD,
    ETH_P_8021Q,
    Bridge,
    Ipvlan,
    LinkData,
    Macvlan,
    Veth,
    Vlan,
    Vxlan,
)
from . import linkinfo
from .netns import Netns

T = TypeVar("T")

AF_UNSPEC = 0
AF_INET = 2
AF_INET6 = 10
AF_BRIDGE = 7

# message types (linux/rtnetlink.h)
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30

# link attributes (linux/if_link.h)
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_MASTER = 10
IFLA_OPERSTATE = 16
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_AF_SPEC = 26
IFLA_NET_NS_FD = 28
IFLA_EXT_MASK = 29
IFLA_LINK_NETNSID = 37
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_INFO_SLAVE_KIND = 4
IFLA_INFO_SLAVE_DATA = 5
IFLA_BRPORT_STATE = 1
IFLA_BRPORT_MODE = 4
IFLA_BRPORT_ISOLATED = 33
IFLA_BRIDGE_VLAN_INFO = 2
RTEXT_FILTER_BRVLAN = 1 << 1
RTEXT_FILTER_SKIP_STATS = 1 << 3

IFF_UP = 0x1
IFF_PROMISC = 0x100
BRIDGE_MODE_HAIRPIN = 1
BRIDGE_VLAN_INFO_PVID = 0x2
BRIDGE_VLAN_INFO_UNTAGGED = 0x4
BRIDGE_VLAN_INFO_RANGE_BEGIN = 0x8
BRIDGE_VLAN_INFO_RANGE_END = 0x10
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

# addresses (linux/if_addr.h)
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40

# routes
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_METRICS = 8
RTA_TABLE = 15
RTAX_MTU = 2
RTAX_ADVMSS = 8
RT_TABLE_UNSPEC = 0
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RTN_UNICAST = 1
RTNH_F_ONLINK = 4

# neighbours and FDB entries (linux/neighbour.h)
NDA_DST = 1
NDA_LLADDR = 2
NDA_VLAN = 5
NDA_PORT = 6
NDA_VNI = 7
NDA_IFINDEX = 8
NDA_MASTER = 9
NTF_SELF = 0x02
NTF_MASTER = 0x04
NUD_PERMANENT = 0x80

# reading the fixed part of replies
_IFINFO = struct.Struct("=BxHiII")  # struct ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # struct ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # struct rtmsg
_NDMSG = struct.Struct("=BxxxiHBB")  # struct ndmsg: family, (pad1, pad2), ifindex, state, flags, type
_VLAN_INFO = struct.Struct("=HH")  # struct bridge_vlan_info: flags, vid
_GET_EXT = ("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)  # lookups do not need the counters

BATCH_CHUNK = 16  # requests per send: their answers must fit the default receive buffer

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# -- results -----------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    """What one RTM_NEWLINK message says about a link (the fields splice uses).

    ``brport``, ``data`` and ``vlan_filtering`` are decoded on first access only.
    ``peer_index`` is IFLA_LINK: a veth's peer, or the parent (lower) link of a vlan,
    macvlan or ipvlan link (also :attr:`parent_index`); ``peer_netnsid`` is set when
    that link lives in another namespace.
    """

    index: int
    name: str
    kind: str | None = None
    mac: str | None = None
    mtu: int | None = None
    flags: int = 0
    master: int | None = None
    alias: str | None = None
    peer_index: int | None = None  # IFLA_LINK
    peer_netnsid: int | None = None  # IFLA_LINK_NETNSID
    operstate: str | None = None
    slave_kind: str | None = None
    _info_data: bytes | None = field(default=None, repr=False, compare=False)
    _slave_data: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def promisc(self) -> bool:
        return bool(self.flags & IFF_PROMISC)

    @property
    def parent_index(self) -> int | None:
        """The lower link of a vlan / macvlan / ipvlan link (IFLA_LINK; for a vxlan link
        see ``data.dev``)."""
        return self.peer_index

    @functools.cached_property
    def data(self) -> LinkData | None:
        """The kind-specific data (:class:`Bridge`, :class:`Vlan`, :class:`Macvlan`,
        :class:`Ipvlan`, :class:`Vxlan`), or None for other kinds (and veth)."""
        return linkinfo.decode(self.kind, self._info_data)

    @functools.cached_property
    def brport(self) -> Mapping[str, int]:
        """IFLA_BRPORT_{MODE,ISOLATED,STATE} of a bridge port, keys without prefix, lower case."""
        out: dict[str, int] = {}
        if self.slave_kind == "bridge" and self._slave_data is not None:
            a = nl.attr_map(self._slave_data)
            for key, kind in (("state", IFLA_BRPORT_STATE), ("mode", IFLA_BRPORT_MODE), ("isolated", IFLA_BRPORT_ISOLATED)):
                if kind in a:
                    out[key] = a[kind][0]
        return out

    @functools.cached_property
    def vlan_filtering(self) -> bool | None:
        """IFLA_BR_VLAN_FILTERING of a bridge; None for other links."""
        data = self.data
        return data.vlan_filtering if isinstance(data, Bridge) else None

    @property
    def hairpin(self) -> bool:
        return bool(self.brport.get("mode", 0) == BRIDGE_MODE_HAIRPIN)

    @property
    def isolated(self) -> bool:
        return bool(self.brport.get("isolated", 0))


@dataclass(frozen=True)
class Address:
    iface: IPInterface
    flags: int = 0
    scope: int = 0

    @property
    def tentative(self) -> bool:
        return bool(self.flags & IFA_F_TENTATIVE)

    @property
    def dad_failed(self) -> bool:
        return bool(self.flags & IFA_F_DADFAILED)


@dataclass(frozen=True)
class RouteEntry:
    dst: IPNetwork
    gw: IPAddress | None = None
    oif: int | None = None
    table: int = RT_TABLE_MAIN
    priority: int | None = None
    scope: int = 0


@dataclass(frozen=True)
class FdbEntry:
    """One forwarding-database entry (``bridge fdb``): ``dst``, ``vni``, ``port`` are a
    VXLAN remote's (None: the device's default); ``master``: the bridge (ifindex) whose
    table holds the entry (NDA_MASTER), None for the device's own table (NTF_SELF in
    ``flags``, e.g. a vxlan device's)."""

    mac: str
    ifindex: int
    dst: IPAddress | None = None
    vni: int | None = None
    port: int | None = None
    vlan: int | None = None
    state: int = 0
    flags: int = 0
    master: int | None = None

    @property
    def permanent(self) -> bool:
        return bool(self.state & NUD_PERMANENT)


@dataclass(frozen=True)
class Neighbour:
    """One neighbour (ARP / NDP) entry."""

    ip: IPAddress
    mac: str | None
    ifindex: int
    state: int = 0
    flags: int = 0

    @property
    def permanent(self) -> bool:
        return bool(self.state & NUD_PERMANENT)


# -- decoding ------------------------------------------------------------------------
def _link(body: bytes) -> Link:
    """A Link from an RTM_NEWLINK body: only the kept attributes are decoded."""
    _family, _type, index, flags, _change = _IFINFO.unpack_from(body)
    a = nl.attr_map(body, 16)
    kind = slave_kind = info_data = slave_data = None
    info = a.get(IFLA_LINKINFO)
    if info is not None:
        i = nl.attr_map(info)
        if IFLA_INFO_KIND in i:
            kind = nl.get_str(i[IFLA_INFO_KIND])
        if IFLA_INFO_SLAVE_KIND in i:
            slave_kind = nl.get_str(i[IFLA_INFO_SLAVE_KIND])
        info_data = i.get(IFLA_INFO_DATA)
        slave_data = i.get(IFLA_INFO_SLAVE_DATA)
    v = a.get(IFLA_ADDRESS)
    mac = v.hex(":") if v else None
    v = a.get(IFLA_MTU)
    mtu = nl.get_u32(v) if v else None
    v = a.get(IFLA_MASTER)
    master = nl.get_u32(v) or None if v else None
    v = a.get(IFLA_IFALIAS)
    alias = nl.get_str(v) if v else None
    v = a.get(IFLA_LINK)
    peer = nl.get_u32(v) if v else None
    v = a.get(IFLA_LINK_NETNSID)
    netnsid = nl.get_i32(v) if v else None
    v = a.get(IFLA_OPERSTATE)
    oper = (OPERSTATES[v[0]] if v[0] < len(OPERSTATES) else str(v[0])) if v else None
    return Link(index, nl.get_str(a.get(IFLA_IFNAME, b"")), kind, mac, mtu, flags, master, alias, peer, netnsid,
                oper, slave_kind, info_data, slave_data)


def _ip(payload: bytes) -> IPAddress:
    return ipaddress.ip_address(payload)


def _family(version: int) -> int:
    return AF_INET6 if version == 6 else AF_INET


def _error(req: nl.Request, what: str) -> NetError:
    return from_errno(req.error, f"{what}: {req.strerror()}")


# -- operations ------------------------------------------------------------------------
class _Op:
    """One request and how to turn its answer into a value (or an exception)."""

    __slots__ = ("req", "finish")

    def __init__(self, req: nl.Request, finish: Callable[[nl.Request], Any]) -> None:
        self.req = req
        self.finish = finish


def _ack(what: str, ok: tuple[int, ...] = (), ok_value: Any = None, value: Any = None,
         exists: type[NetError] | None = None) -> Callable[[nl.Request], Any]:
    """An answer that is only an ACK: ``value``; errno in ``ok`` -> ``ok_value``;
    EEXIST -> ``exists`` (when given); other errors -> NetError."""

    def finish(req: nl.Request) -> Any:
        if not req.error:
            return value
        if req.error in ok:
            return ok_value
        if exists is not None and req.error == _errno.EEXIST:
            raise exists(f"{what}: {req.strerror()}")
        raise _error(req, what)

    return finish


def _link_body(
    index: int = 0,
    *,
    family: int = AF_UNSPEC,
    flags: int = 0,
    change: int = 0,
    name: str | None = None,
    mtu: int | None = None,
    mac: str | None = None,
    master: int | None = None,
    alias: str | None = None,
    netns_fd: int | None = None,
    parent: int | None = None,
    kind: str | None = None,
    data: LinkData | None = None,
    slave_kind: str | None = None,
    slave_data: list[tuple[str, Any]] | None = None,
    extra: tuple[tuple[str, Any], ...] = (),
) -> bytes:
    """An RTM_*LINK body (pyroute2's link message, :class:`splice.libnet.netlink.linkmsg`)."""
    attrs: list[tuple[str, Any]] = []
    if name is not None:
        attrs.append(("IFLA_IFNAME", name))
    if mtu:
        attrs.append(("IFLA_MTU", mtu))
    if mac:
        attrs.append(("IFLA_ADDRESS", linkinfo.mac_text(mac)))
    if master is not None:
        attrs.append(("IFLA_MASTER", master))
    if alias is not None:
        attrs.append(("IFLA_IFALIAS", alias))
    if netns_fd is not None:
        attrs.append(("IFLA_NET_NS_FD", netns_fd))
    if parent is not None:
        attrs.append(("IFLA_LINK", parent))
    if kind is not None or slave_kind is not None:
        info: list[tuple[str, Any]] = []
        if kind is not None:
            info.append(("IFLA_INFO_KIND", kind))
            info_data = data.info_data() if data is not None else []
            if info_data:
                info.append(("IFLA_INFO_DATA", {"attrs": info_data}))
        if slave_kind is not None:
            info.append(("IFLA_INFO_KIND", slave_kind + "_slave"))  # pyroute2 picks the slave class by it
            info.append(("IFLA_INFO_SLAVE_DATA", {"attrs": slave_data or []}))
        attrs.append(("IFLA_LINKINFO", {"attrs": info}))
    attrs.extend(extra)
    return nl.encode(nl.linkmsg, attrs, family=family, index=index, flags=flags, change=change)


def _flags(up: bool | None = None, promisc: bool | None = None) -> tuple[int, int]:
    flags = change = 0
    if up is not None:
        change |= IFF_UP
        flags |= IFF_UP if up else 0
    if promisc is not None:
        change |= IFF_PROMISC
        flags |= IFF_PROMISC if promisc else 0
    return flags, change


# -- the socket ----------------------------------------------------------------------
class Rtnl:
    """One rtnetlink socket in the calling thread's network namespace.

    Not thread-safe: use it only on the thread that opened it, inside one
    :meth:`Netns.run`, and close it there (``with Rtnl() as rt: ...``).
    """

    def __init__(self) -> None:
        try:
            self._nl = nl.Socket()
        except OSError as e:
            raise NetError(f"cannot open a netlink socket: {e.strerror or e}") from None

    def close(self) -> None:
        self._nl.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transact(self, reqs: list[nl.Request]) -> None:
        try:
            self._nl.transact(reqs)
            for req in reqs:
                tries = 0
                while req.interrupted and tries < 5:  # NLM_F_DUMP_INTR: read the table again
                    tries += 1
                    self._nl.transact([req])
        except OSError as e:
            raise NetError(f"netlink: {e.strerror or e}") from None

    def _run(self, op: _Op) -> Any:
        self._transact([op.req])
        return op.finish(op.req)

    def batch(self) -> "Batch":
        """A :class:`Batch` of requests for this socket, sent by ``Batch.run()``."""
        return Batch(self)

    # -- links ---------------------------------------------------------------------
    def _get_link_op(self, name: str | None = None, index: int = 0) -> _Op:
        body = _link_body(index, name=name, extra=(_GET_EXT,))
        what = f"get link {name!r}" if name is not None else f"get link #{index}"

        def finish(req: nl.Request) -> Link | None:
            if req.error:
                if req.error in (_errno.ENODEV, _errno.ENOENT):
                    return None
                raise _error(req, what)
            return _link(req.replies[0])

        return _Op(nl.Request(RTM_GETLINK, 0, body), finish)

    def get_link(self, name: str) -> Link | None:
        """The link called ``name`` (one RTM_GETLINK), or None when there is none."""
        return self._run(self._get_link_op(name))

    def get_link_by_index(self, index: int) -> Link | None:
        return self._run(self._get_link_op(index=index))

    def require_link(self, name: str) -> Link:
        link = self.get_link(name)
        if link is None:
            raise LinkNotFound(f"link {name!r} not found")
        return link

    def _dump_links_op(self, master: int | None = None) -> _Op:
        body = _link_body(master=master, extra=(_GET_EXT,))  # IFLA_MASTER: filtered by the kernel (and below)

        def finish(req: nl.Request) -> list[Link]:
            if req.error:
                raise _error(req, "dump links")
            links = [_link(b) for t, b in zip(req.types, req.replies) if t == RTM_NEWLINK]
            return links if master is None else [link for link in links if link.master == master]

        return _Op(nl.Request(RTM_GETLINK, 0, body, dump=True), finish)

    def dump_links(self) -> list[Link]:
        """Every link of the namespace (for garbage collection only; see module doc)."""
        return self._run(self._dump_links_op())

    def ports_of(self, master: int) -> list[Link]:
        """Links enslaved to ``master`` (a dump the kernel filters; for rare decisions
        such as rollback)."""
        return self._run(self._dump_links_op(master))

    def _add_link_op(
        self,
        kind: str,
        name: str,
        *,
        parent: int | None = None,
        netns_fd: int | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        up: bool = False,
        master: int | None = None,
        data: LinkData | None = None,
        on_error: Callable[[nl.Request], Any] | None = None,
    ) -> _Op:
        if data is not None and data.KIND != kind:
            raise ValueError(f"{type(data).__name__} data for a link of kind {kind!r}")
        flags, change = _flags(up=True) if up else (0, 0)
        body = _link_body(flags=flags, change=change, name=name, mtu=mtu, mac=mac, master=master,
                          netns_fd=netns_fd, parent=parent, kind=kind, data=data)
        req = nl.Request(RTM_NEWLINK, nl.NLM_F_CREATE | nl.NLM_F_EXCL | nl.NLM_F_ECHO, body)
        what = f"create {kind} {name!r}"

        def finish(req: nl.Request) -> Any:
            if req.error:
                if on_error is not None:
                    return on_error(req)
                if req.error == _errno.EEXIST:
                    raise LinkExists(f"{what}: a link with that name exists")
                if req.error == _errno.EOPNOTSUPP:
                    raise NotSupported(f"{what}: {req.strerror()} (no {kind} support in this kernel?)")
                raise _error(req, what)
            # NLM_F_ECHO: the kernel answers with the new link (since Linux 6.3,
            # rtnl_newlink_create -> rtnl_configure_link); not for a link created in another
            # namespace (the copy goes to that namespace's sockets) nor on older kernels.
            # The copy is made before IFLA_MASTER is applied (do_set_master follows
            # rtnl_configure_link), and a failed enslavement fails the creation: the new
            # link is a port of ``master``.
            for t, b in zip(req.types, req.replies):
                if t == RTM_NEWLINK:
                    link = _link(b)
                    if link.name == name:
                        return link if not master or link.master == master else dataclasses.replace(link, master=master)
            return None if netns_fd is not None else self.require_link(name)

        return _Op(req, finish)

    def add_link(
        self,
        kind: str,
        name: str,
        *,
        parent: int | None = None,
        netns_fd: int | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        up: bool = False,
        master: int | None = None,
        data: LinkData | None = None,
    ) -> Link | None:
        """Create a link of ``kind`` in one RTM_NEWLINK (``NLM_F_EXCL``).

        ``parent``: the lower link's ifindex in THIS namespace (IFLA_LINK: vlan, macvlan,
        ipvlan); ``data``: the kind's :class:`LinkData` (``Vlan(10)``, ``Vxlan(vni=1)``,
        ``Veth(peer=...)``, ...). ``netns_fd``: create the link directly in that
        namespace (IFLA_NET_NS_FD; the kernel registers it there, its parent staying
        here: no namespace move); create it under a temporary name and rename it there
        (:meth:`set_link` ``name=``) once configured.

        Returns the new link, as the kernel echoes it (or looked up by name on kernels
        that do not echo). The echo is the link before it was enslaved: ``master`` is
        filled in from the request, but bridge-port data (``slave_kind``, ``brport``)
        needs a lookup. With ``netns_fd`` the kernel echoes nothing to this namespace:
        the answer is None; look the link up in its namespace by name.
        A link with that name exists → :class:`LinkExists` (also when it exists in the
        ``netns_fd`` namespace); an unknown kind → :class:`NotSupported`.
        """
        return self._run(self._add_link_op(kind, name, parent=parent, netns_fd=netns_fd, mtu=mtu, mac=mac, up=up,
                                           master=master, data=data))

    def _add_bridge_op(self, name: str, *, mtu: int | None = None, mac: str | None = None,
                       vlan_filtering: bool = False, up: bool = False) -> _Op:
        def on_error(req: nl.Request) -> None:
            if req.error == _errno.EEXIST:
                return None
            if req.error == _errno.EOPNOTSUPP and vlan_filtering:
                raise NotSupported(
                    f"create bridge {name!r} with VLAN filtering: not supported by this kernel "
                    "(CONFIG_BRIDGE_VLAN_FILTERING)"
                )
            raise _error(req, f"create bridge {name!r}")

        return self._add_link_op("bridge", name, mtu=mtu, mac=mac, up=up,
                                 data=Bridge(vlan_filtering=True) if vlan_filtering else None, on_error=on_error)

    def add_bridge(
        self,
        name: str,
        *,
        mtu: int | None = None,
        mac: str | None = None,
        vlan_filtering: bool = False,
        up: bool = False,
    ) -> Link | None:
        """Create a bridge; the new link, or None when a link with that name exists.

        ``vlan_filtering`` on a kernel without CONFIG_BRIDGE_VLAN_FILTERING raises
        :class:`NotSupported`.
        """
        return self._run(self._add_bridge_op(name, mtu=mtu, mac=mac, vlan_filtering=vlan_filtering, up=up))

    def _add_veth_op(self, name: str, peer: str, *, peer_netns_fd: int | None = None, master: int | None = None,
                     mtu: int | None = None, mac: str | None = None, peer_mac: str | None = None,
                     up: bool = False) -> _Op:
        what = f"create veth {name!r}/{peer!r}"

        def on_error(req: nl.Request) -> None:
            if req.error == _errno.EEXIST:
                raise LinkExists(f"{what}: a link with one of these names exists")
            raise _error(req, what)

        data = Veth(peer=peer, peer_netns_fd=peer_netns_fd, peer_mac=peer_mac, peer_mtu=mtu)
        return self._add_link_op("veth", name, mtu=mtu, mac=mac, up=up, master=master, data=data, on_error=on_error)

    def add_veth(
        self,
        name: str,
        peer: str,
        *,
        peer_netns_fd: int | None = None,
        master: int | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        peer_mac: str | None = None,
        up: bool = False,
    ) -> Link:
        """Create a veth pair in one RTM_NEWLINK; the peer directly in ``peer_netns_fd``.

        Creating the peer inside the target namespace avoids a namespace move (an RCU
        grace period). ``master`` (an ifindex) and ``up`` apply to ``name``.
        Returns the new link ``name``; its ``peer_index`` is the peer's ifindex in the
        peer's namespace. Either name taken → :class:`LinkExists`.
        """
        return self._run(self._add_veth_op(name, peer, peer_netns_fd=peer_netns_fd, master=master, mtu=mtu,
                                           mac=mac, peer_mac=peer_mac, up=up))

    def _move_link_op(self, index: int, netns_fd: int, new_name: str | None = None) -> _Op:
        what = f"move link #{index} to another namespace" + (f" as {new_name!r}" if new_name else "")
        body = _link_body(index, name=new_name, netns_fd=netns_fd)

        def finish(req: nl.Request) -> None:
            if req.error == _errno.EEXIST:
                if new_name is not None and self.get_link_by_index(index) is None:
                    raise LinkExists(f"{what}: a link called {new_name!r} exists there; the link WAS moved, "
                                     "under its previous name")
                raise LinkExists(f"{what}: a link with that name exists there; nothing moved")
            if req.error:
                raise _error(req, what)

        return _Op(nl.Request(RTM_NEWLINK, 0, body), finish)

    def move_link(self, index: int, netns_fd: int, new_name: str | None = None) -> None:
        """Move link ``index`` into the namespace ``netns_fd``, renamed to ``new_name``
        (IFLA_NET_NS_FD + IFLA_IFNAME in one RTM_NEWLINK).

        Not atomic: the kernel (``do_setlink``) moves the link under its current name
        when that name is free in the target (trying ``new_name`` only when it is not),
        then renames it. So ``new_name`` taken there → :class:`LinkExists` AFTER the
        link moved (the message says so); the current name taken there (and
        ``new_name`` too, or None) → :class:`LinkExists`, nothing moved. The safe order
        is the one of ADD: move under a unique temporary name, then rename inside the
        target (:meth:`set_link` ``name=``; EEXIST there leaves the link where a
        rollback finds it). A move waits for an RCU grace period (milliseconds):
        prefer creating links in place (:meth:`add_link` ``netns_fd=``).
        """
        self._run(self._move_link_op(index, netns_fd, new_name))

    def _set_link_op(self, index: int, *, name: str | None = None, up: bool | None = None,
                     promisc: bool | None = None, mtu: int | None = None, mac: str | None = None,
                     alias: str | None = None, master: int | None = None) -> _Op:
        flags, change = _flags(up=up, promisc=promisc)
        body = _link_body(index, flags=flags, change=change, name=name, mtu=mtu, mac=mac, alias=alias, master=master)

        def finish(req: nl.Request) -> None:
            if req.error == _errno.EEXIST and name is not None:
                raise LinkExists(f"rename link #{index} to {name!r}: a link with that name exists")
            if req.error:
                raise _error(req, f"set link #{index}")

        return _Op(nl.Request(RTM_NEWLINK, 0, body), finish)

    def set_link(
        self,
        index: int,
        *,
        name: str | None = None,
        up: bool | None = None,
        promisc: bool | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        alias: str | None = None,
        master: int | None = None,
    ) -> None:
        """Change several attributes of one link in one RTM_NEWLINK.

        A rename is applied before the flags, so ``name=..., up=True`` renames a down
        link and then brings it up. Linux < 6.2 refuses to rename a link that is up
        (EBUSY → :class:`TryAgain`).
        """
        self._run(self._set_link_op(index, name=name, up=up, promisc=promisc, mtu=mtu, mac=mac, alias=alias,
                                    master=master))

    def _set_brport_op(self, link: int | str, *, hairpin: bool | None = None, isolated: bool | None = None,
                       alias: str | None = None) -> _Op | None:
        slave: list[tuple[str, Any]] = []
        if hairpin is not None:
            slave.append(("IFLA_BRPORT_MODE", BRIDGE_MODE_HAIRPIN if hairpin else 0))
        if isolated is not None:
            slave.append(("IFLA_BRPORT_ISOLATED", 1 if isolated else 0))
        if not slave and alias is None:
            return None
        index, name = (link, None) if isinstance(link, int) else (0, link)
        body = _link_body(index, name=name, alias=alias, slave_kind="bridge" if slave else None, slave_data=slave)
        return _Op(nl.Request(RTM_NEWLINK, 0, body), _ack(f"set bridge port options of link {link!r}"))

    def set_brport(
        self,
        link: int | str,
        *,
        hairpin: bool | None = None,
        isolated: bool | None = None,
        alias: str | None = None,
    ) -> None:
        """Bridge-port options of an enslaved link (IFLA_INFO_SLAVE_DATA), plus its alias.

        One RTM_NEWLINK; ``link`` is an ifindex or a name (the kernel resolves a name
        itself, which saves a lookup). Hairpin/isolated need the link to be a bridge port.
        """
        op = self._set_brport_op(link, hairpin=hairpin, isolated=isolated, alias=alias)
        if op is not None:
            self._run(op)

    def _delete_link_op(self, index: int | None = None, name: str | None = None) -> _Op:
        body = _link_body(index or 0, name=None if index else name)
        what = f"delete link {name or index!r}"
        return _Op(nl.Request(RTM_DELLINK, 0, body),
                   _ack(what, ok=(_errno.ENODEV, _errno.ENOENT), ok_value=False, value=True))

    def delete_link(self, index: int | None = None, name: str | None = None, *, early: bool = False) -> bool:
        """Delete a link by index or name; False when it is already gone.

        ``early``: return as soon as the kernel announces the link gone (its
        ``RTM_DELLINK`` notification) instead of when it acknowledges the request. The
        announcement comes once the link is unlisted and its addresses, routes, upper and
        lower links are gone, ~1 ms after the request; the acknowledgement comes after the
        kernel's deferred teardown (``netdev_run_todo``: an RCU barrier, then waiting for
        the last references), which runs after the rtnl lock is released and costs ~15 ms.
        That rest finishes on a background thread (its own socket in this namespace); see
        :func:`pending_deletions`. Errors (no such link, EPERM, ...) are reported exactly
        as without ``early``: they come before any announcement.
        """
        op = self._delete_link_op(index, name)
        if early and _early_slots.acquire(blocking=False):
            gone = _delete_early(op, index, name, self._nl)  # gives the slot back on every path
            if gone is not None:
                return gone
        return self._run(op)

    # -- bridge VLANs ----------------------------------------------------------------
    @staticmethod
    def _vlan_body(index: int, vid: int, vid_end: int | None = None, flags: int = 0) -> bytes:
        """An AF_BRIDGE link message with IFLA_AF_SPEC / IFLA_BRIDGE_VLAN_INFO (a range as
        two entries, RANGE_BEGIN and RANGE_END), as ``bridge vlan`` sends it."""
        if vid_end and vid_end != vid:
            infos = [{"flags": flags | BRIDGE_VLAN_INFO_RANGE_BEGIN, "vid": vid},
                     {"flags": flags | BRIDGE_VLAN_INFO_RANGE_END, "vid": vid_end}]
        else:
            infos = [{"flags": flags, "vid": vid}]
        spec = ("IFLA_AF_SPEC", {"attrs": [("IFLA_BRIDGE_VLAN_INFO", info) for info in infos]})
        return _link_body(index, family=AF_BRIDGE, extra=(spec,))

    def _bridge_vlan_add_op(self, index: int, vid: int, *, vid_end: int | None = None, pvid: bool = False,
                            untagged: bool = False) -> _Op:
        flags = (BRIDGE_VLAN_INFO_PVID if pvid else 0) | (BRIDGE_VLAN_INFO_UNTAGGED if untagged else 0)
        ranged = bool(vid_end) and vid_end != vid
        if ranged and flags:
            raise ValueError("a VLAN range carries no pvid/untagged flags here")
        label = f"{vid}-{vid_end}" if ranged else str(vid)

        def finish(req: nl.Request) -> None:
            if req.error == _errno.EOPNOTSUPP:
                raise NotSupported(
                    f"add VLAN {label} to link #{index}: bridge VLAN filtering not supported "
                    "(kernel without CONFIG_BRIDGE_VLAN_FILTERING, or the bridge has vlan_filtering 0)"
                )
            if req.error:
                raise _error(req, f"add VLAN {label} to link #{index}")

        return _Op(nl.Request(RTM_SETLINK, 0, self._vlan_body(index, vid, vid_end if ranged else None, flags)), finish)

    def bridge_vlan_add(
        self,
        index: int,
        vid: int,
        *,
        vid_end: int | None = None,
        pvid: bool = False,
        untagged: bool = False,
    ) -> None:
        """Add VLAN ``vid`` (or the range ``vid..vid_end``) to a bridge port."""
        self._run(self._bridge_vlan_add_op(index, vid, vid_end=vid_end, pvid=pvid, untagged=untagged))

    def bridge_vlans(self, index: int) -> dict[int, int]:
        """The VLANs of one bridge port (or of the bridge itself): vid -> BRIDGE_VLAN_INFO_*
        flags. Empty when VLAN filtering is off or unsupported. (An AF_BRIDGE dump with
        RTEXT_FILTER_BRVLAN: a plain RTM_GETLINK does not carry a port's VLANs, and the
        kernel does not filter bridge dumps by index.)"""
        body = _link_body(family=AF_BRIDGE, extra=(("IFLA_EXT_MASK", RTEXT_FILTER_BRVLAN),))

        def finish(req: nl.Request) -> dict[int, int]:
            if req.error:
                raise _error(req, f"list the VLANs of link #{index}")
            out: dict[int, int] = {}
            for body in req.replies:
                if _IFINFO.unpack_from(body)[2] != index:
                    continue
                spec = nl.attr_map(body, 16).get(IFLA_AF_SPEC)
                for kind, payload in nl.attrs(spec or b""):
                    if kind == IFLA_BRIDGE_VLAN_INFO:
                        flags, vid = _VLAN_INFO.unpack_from(payload)
                        out[vid] = flags
            return out

        return self._run(_Op(nl.Request(RTM_GETLINK, 0, body, dump=True), finish))

    def bridge_vlan_del(self, index: int, vid: int) -> bool:
        """Remove VLAN ``vid`` from a bridge port; False when it was not there.

        The kernel answers a deletion of an absent VLAN with success (br_vlan_info ignores
        nbp_vlan_delete's ENOENT), so presence is read first."""
        if vid not in self.bridge_vlans(index):
            return False
        req = nl.Request(RTM_DELLINK, 0, self._vlan_body(index, vid))
        return self._run(_Op(req, _ack(f"delete VLAN {vid} from link #{index}", ok=(_errno.ENOENT, _errno.EINVAL),
                                       ok_value=False, value=True)))

    # -- addresses ---------------------------------------------------------------------
    def _addresses_op(self, index: int, family: int | None = None) -> _Op:
        body = nl.encode(nl.ifaddrmsg, family=family or AF_UNSPEC, index=index)

        def finish(req: nl.Request) -> list[Address]:
            if req.error:
                raise _error(req, f"list addresses of link #{index}")
            out = []
            for body in req.replies:
                fam, plen, flags, scope, idx = _IFADDR.unpack_from(body)
                if idx != index:  # kernels without strict checking ignore the header
                    continue
                a = nl.attr_map(body, 8)
                raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)  # with a peer, IFA_ADDRESS is the peer's
                if raw is None:
                    continue
                if IFA_FLAGS in a:
                    flags = nl.get_u32(a[IFA_FLAGS])
                cls = ipaddress.IPv6Interface if fam == AF_INET6 else ipaddress.IPv4Interface
                out.append(Address(cls((raw, plen)), flags, scope))
            return out

        return _Op(nl.Request(RTM_GETADDR, 0, body, dump=True), finish)

    def addresses(self, index: int, family: int | None = None) -> list[Address]:
        """The addresses of one link: a dump the kernel filters by ifindex (strict
        checking; the answer is filtered again, for kernels that ignore the header)."""
        return self._run(self._addresses_op(index, family))

    def _address_body(self, index: int, iface: IPInterface, nodad: bool = False) -> bytes:
        ip = str(iface.ip)
        attrs: list[tuple[str, Any]] = [("IFA_ADDRESS", ip)]
        if iface.version == 4:
            attrs.append(("IFA_LOCAL", ip))
        elif nodad:
            attrs.append(("IFA_FLAGS", IFA_F_NODAD))
        return nl.encode(nl.ifaddrmsg, attrs, family=_family(iface.version), prefixlen=iface.network.prefixlen,
                         index=index)

    def _add_address_op(self, index: int, iface: IPInterface, *, nodad: bool = False) -> _Op:
        req = nl.Request(RTM_NEWADDR, nl.NLM_F_CREATE | nl.NLM_F_EXCL, self._address_body(index, iface, nodad))
        return _Op(req, _ack(f"add address {iface} to link #{index}", ok=(_errno.EEXIST,), ok_value=False, value=True))

    def add_address(self, index: int, iface: IPInterface, *, nodad: bool = False) -> bool:
        """Add an address; False when the link already has it. ``nodad``: IPv6 only."""
        return self._run(self._add_address_op(index, iface, nodad=nodad))

    def _delete_address_op(self, index: int, iface: IPInterface) -> _Op:
        req = nl.Request(RTM_DELADDR, 0, self._address_body(index, iface))
        return _Op(req, _ack(f"delete address {iface} from link #{index}",
                             ok=(_errno.EADDRNOTAVAIL, _errno.ENODEV, _errno.ENOENT), ok_value=False, value=True))

    def delete_address(self, index: int, iface: IPInterface) -> bool:
        """Remove an address; False when the link does not have it (or is gone)."""
        return self._run(self._delete_address_op(index, iface))

    # -- routes ------------------------------------------------------------------------
    def _route_body(self, dst: IPNetwork, gw: IPAddress | None, oif: int | None, priority: int | None,
                    table: int | None, scope: int | None, onlink: bool = False, mtu: int | None = None,
                    advmss: int | None = None) -> bytes:
        table = RT_TABLE_MAIN if table is None else table
        if gw is not None and gw.version != dst.version:
            raise ValueError(f"gateway {gw} is not an IPv{dst.version} address (route {dst})")
        attrs: list[tuple[str, Any]] = []
        if dst.prefixlen:
            attrs.append(("RTA_DST", str(dst.network_address)))
        if gw is not None:
            attrs.append(("RTA_GATEWAY", str(gw)))
        if oif:
            attrs.append(("RTA_OIF", oif))
        if priority is not None:
            attrs.append(("RTA_PRIORITY", priority))
        if table >= 256:
            attrs.append(("RTA_TABLE", table))
        metrics = ([("RTAX_MTU", mtu)] if mtu else []) + ([("RTAX_ADVMSS", advmss)] if advmss else [])
        if metrics:
            attrs.append(("RTA_METRICS", {"attrs": metrics}))
        return nl.encode(nl.rtmsg, attrs, family=_family(dst.version), dst_len=dst.prefixlen, src_len=0, tos=0,
                         table=table if table < 256 else RT_TABLE_UNSPEC, proto=RTPROT_STATIC, scope=scope or 0,
                         type=RTN_UNICAST, flags=RTNH_F_ONLINK if onlink else 0)

    def _add_route_op(self, dst: IPNetwork, *, gw: IPAddress | None = None, oif: int | None = None,
                      mtu: int | None = None, advmss: int | None = None, priority: int | None = None,
                      table: int | None = None, scope: int | None = None, onlink: bool = False,
                      replace: bool = False) -> _Op:
        body = self._route_body(dst, gw, oif, priority, table, scope, onlink, mtu, advmss)
        flags = nl.NLM_F_CREATE | (nl.NLM_F_REPLACE if replace else nl.NLM_F_EXCL)
        via = f" via {gw}" if gw is not None else ""
        return _Op(nl.Request(RTM_NEWROUTE, flags, body),
                   _ack(f"add route {dst}{via}", ok=(_errno.EEXIST,), ok_value=False, value=True))

    def add_route(
        self,
        dst: IPNetwork,
        *,
        gw: IPAddress | None = None,
        oif: int | None = None,
        mtu: int | None = None,
        advmss: int | None = None,
        priority: int | None = None,
        table: int | None = None,
        scope: int | None = None,
        onlink: bool = False,
        replace: bool = False,
    ) -> bool:
        """Add a route; False when the same route already exists. ``onlink``: the gateway
        is on the link whatever the addresses say (RTNH_F_ONLINK: a VXLAN overlay's
        routes via remote VTEP addresses); ``replace``: create or replace (always True)."""
        return self._run(self._add_route_op(dst, gw=gw, oif=oif, mtu=mtu, advmss=advmss, priority=priority,
                                            table=table, scope=scope, onlink=onlink, replace=replace))

    def _delete_route_op(self, dst: IPNetwork, *, gw: IPAddress | None = None, oif: int | None = None,
                         priority: int | None = None, table: int | None = None) -> _Op:
        body = self._route_body(dst, gw, oif, priority, table, None)
        return _Op(nl.Request(RTM_DELROUTE, 0, body),
                   _ack(f"delete route {dst}", ok=(_errno.ESRCH, _errno.ENODEV), ok_value=False, value=True))

    def delete_route(self, dst: IPNetwork, *, gw: IPAddress | None = None, oif: int | None = None,
                     priority: int | None = None, table: int | None = None) -> bool:
        """Delete a route; False when there is no such route."""
        return self._run(self._delete_route_op(dst, gw=gw, oif=oif, priority=priority, table=table))

    def _routes_op(self, family: int) -> _Op:
        body = nl.encode(nl.rtmsg, family=family, table=0, proto=0, scope=0, type=0)

        def finish(req: nl.Request) -> list[RouteEntry]:
            if req.error:
                raise _error(req, "dump routes")
            cls = ipaddress.IPv6Network if family == AF_INET6 else ipaddress.IPv4Network
            zero = bytes(16 if family == AF_INET6 else 4)
            out = []
            for body in req.replies:
                fam, dst_len, _src, _tos, table, _proto, scope, rtype, _flags = _RTMSG.unpack_from(body)
                if rtype != RTN_UNICAST or fam != family:
                    continue
                a = nl.attr_map(body, 12)
                gw, oif, prio, tbl = a.get(RTA_GATEWAY), a.get(RTA_OIF), a.get(RTA_PRIORITY), a.get(RTA_TABLE)
                out.append(RouteEntry(
                    dst=cls((a.get(RTA_DST, zero), dst_len), strict=False),
                    gw=_ip(gw) if gw else None,
                    oif=nl.get_u32(oif) if oif else None,
                    table=nl.get_u32(tbl) if tbl else (table or RT_TABLE_MAIN),
                    priority=nl.get_u32(prio) if prio else None,
                    scope=scope,
                ))
            return out

        return _Op(nl.Request(RTM_GETROUTE, 0, body, dump=True), finish)

    def routes(self, family: int) -> list[RouteEntry]:
        """Unicast routes of one family in every table (a dump)."""
        return self._run(self._routes_op(family))

    # -- FDB entries ---------------------------------------------------------------------
    def _fdb_body(self, ifindex: int, mac: str, dst: IPAddress | None, vni: int | None, port: int | None,
                  vlan: int | None, master: bool) -> bytes:
        attrs: list[tuple[str, Any]] = [("NDA_LLADDR", linkinfo.mac_text(mac))]
        if dst is not None:
            attrs.append(("NDA_DST", str(dst)))
        if vlan is not None:
            attrs.append(("NDA_VLAN", vlan))
        if port is not None:
            attrs.append(("NDA_PORT", port))
        if vni is not None:
            attrs.append(("NDA_VNI", vni))
        return nl.encode(nl.ndmsg, attrs, family=AF_BRIDGE, ifindex=ifindex, state=NUD_PERMANENT,
                         flags=NTF_MASTER if master else NTF_SELF, ndm_type=0)

    def _fdb_op(self, how: str, ifindex: int, mac: str, *, dst: IPAddress | None = None, vni: int | None = None,
                port: int | None = None, vlan: int | None = None, master: bool = False) -> _Op:
        body = self._fdb_body(ifindex, mac, dst, vni, port, vlan, master)
        what = f"{how} FDB entry {mac}" + (f" dst {dst}" if dst is not None else "") + f" on link #{ifindex}"
        if how == "delete":
            return _Op(nl.Request(RTM_DELNEIGH, 0, body),
                       _ack(what, ok=(_errno.ENOENT,), ok_value=False, value=True))
        flags = nl.NLM_F_CREATE | {"add": nl.NLM_F_EXCL, "append": nl.NLM_F_APPEND, "replace": nl.NLM_F_REPLACE}[how]
        if how != "add":
            return _Op(nl.Request(RTM_NEWNEIGH, flags, body), _ack(what))
        return _Op(nl.Request(RTM_NEWNEIGH, flags, body), _ack(what, ok=(_errno.EEXIST,), ok_value=False, value=True))

    def fdb_add(self, ifindex: int, mac: str, *, dst: IPAddress | None = None, vni: int | None = None,
                port: int | None = None, vlan: int | None = None, master: bool = False) -> bool:
        """Add a permanent FDB entry ``mac`` on link ``ifindex`` (``bridge fdb add``);
        False when the entry exists. On a vxlan device: ``dst`` is the remote VTEP's
        underlay address (``vni``/``port`` when not the device's). ``master``: the entry
        goes to the bridge ``ifindex`` is a port of (NTF_MASTER), not the device itself."""
        return self._run(self._fdb_op("add", ifindex, mac, dst=dst, vni=vni, port=port, vlan=vlan, master=master))

    def fdb_append(self, ifindex: int, mac: str, *, dst: IPAddress | None = None, vni: int | None = None,
                   port: int | None = None, vlan: int | None = None, master: bool = False) -> None:
        """Add one more remote to a vxlan FDB entry (``bridge fdb append``: head-end
        replication with the all-zeros MAC); idempotent (the kernel accepts a remote
        that is there)."""
        self._run(self._fdb_op("append", ifindex, mac, dst=dst, vni=vni, port=port, vlan=vlan, master=master))

    def fdb_replace(self, ifindex: int, mac: str, *, dst: IPAddress | None = None, vni: int | None = None,
                    port: int | None = None, vlan: int | None = None, master: bool = False) -> None:
        """Create or replace an FDB entry (``bridge fdb replace``): idempotent."""
        self._run(self._fdb_op("replace", ifindex, mac, dst=dst, vni=vni, port=port, vlan=vlan, master=master))

    def fdb_del(self, ifindex: int, mac: str, *, dst: IPAddress | None = None, vni: int | None = None,
                vlan: int | None = None, master: bool = False) -> bool:
        """Delete an FDB entry (only the remote ``dst`` of a vxlan entry, when given);
        False when there is no entry for ``mac``. With ``dst`` the kernel answers success
        when ``mac`` has an entry without that remote (``__vxlan_fdb_delete``): True then
        means "that remote is not there (any more)"."""
        return self._run(self._fdb_op("delete", ifindex, mac, dst=dst, vni=vni, vlan=vlan, master=master))

    def _fdb_dump_op(self, ifindex: int, bridge: int | None = None) -> _Op:
        if bridge is None:
            body = nl.encode(nl.ndmsg, family=AF_BRIDGE, ifindex=ifindex)
        else:  # every entry of the bridge's table (the kernel filters by NDA_MASTER)
            body = nl.encode(nl.ndmsg, [("NDA_MASTER", bridge)], family=AF_BRIDGE, ifindex=0)

        def finish(req: nl.Request) -> list[FdbEntry]:
            if req.error:
                raise _error(req, f"dump the FDB of link #{ifindex if bridge is None else bridge}")
            out = []
            for body in req.replies:
                _fam, idx, state, flags, _type = _NDMSG.unpack_from(body)
                a = nl.attr_map(body, 12)
                master = a.get(NDA_MASTER)
                if bridge is None and idx != ifindex:
                    continue
                if bridge is not None and not (idx == bridge or (master and nl.get_u32(master) == bridge)):
                    continue
                if NDA_LLADDR not in a:
                    continue
                dst, vni, port, vlan = a.get(NDA_DST), a.get(NDA_VNI), a.get(NDA_PORT), a.get(NDA_VLAN)
                out.append(FdbEntry(
                    mac=a[NDA_LLADDR].hex(":"),
                    ifindex=idx,
                    dst=_ip(dst) if dst else None,
                    vni=nl.get_u32(vni) if vni else None,
                    port=nl.get_be16(port) if port else None,
                    vlan=nl.get_u16(vlan) if vlan else None,
                    state=state,
                    flags=flags,
                    master=nl.get_u32(master) if master else None,
                ))
            return out

        return _Op(nl.Request(RTM_GETNEIGH, 0, body, dump=True), finish)

    def fdb_dump(self, ifindex: int) -> list[FdbEntry]:
        """The FDB entries of one link (an AF_BRIDGE neighbour dump the kernel filters by
        ifindex)."""
        return self._run(self._fdb_dump_op(ifindex))

    def bridge_fdb(self, bridge: int) -> list[FdbEntry]:
        """Every entry of a bridge's forwarding table: the bridge's and its ports' own MACs
        (permanent) and the MACs learned behind its ports (one dump)."""
        return self._run(self._fdb_dump_op(0, bridge=bridge))

    # -- neighbours ----------------------------------------------------------------------
    def _neigh_op(self, how: str, ifindex: int, ip: IPAddress, mac: str | None = None) -> _Op:
        attrs: list[tuple[str, Any]] = [("NDA_DST", str(ip))]
        if mac is not None:
            attrs.append(("NDA_LLADDR", linkinfo.mac_text(mac)))
        body = nl.encode(nl.ndmsg, attrs, family=_family(ip.version), ifindex=ifindex, state=NUD_PERMANENT, flags=0,
                         ndm_type=RTN_UNICAST)
        what = f"{how} neighbour {ip}" + (f" lladdr {mac}" if mac else "") + f" on link #{ifindex}"
        if how == "delete":
            return _Op(nl.Request(RTM_DELNEIGH, 0, body), _ack(what, ok=(_errno.ENOENT,), ok_value=False, value=True))
        if how == "replace":
            return _Op(nl.Request(RTM_NEWNEIGH, nl.NLM_F_CREATE | nl.NLM_F_REPLACE, body), _ack(what))
        return _Op(nl.Request(RTM_NEWNEIGH, nl.NLM_F_CREATE | nl.NLM_F_EXCL, body),
                   _ack(what, ok=(_errno.EEXIST,), ok_value=False, value=True))

    def neigh_add(self, ifindex: int, ip: IPAddress, mac: str) -> bool:
        """Add a permanent neighbour entry ``ip lladdr mac``; False when ``ip`` already
        has an entry on the link (whatever its MAC: use :meth:`neigh_replace`)."""
        return self._run(self._neigh_op("add", ifindex, ip, mac))

    def neigh_replace(self, ifindex: int, ip: IPAddress, mac: str) -> None:
        """Create or replace a permanent neighbour entry: idempotent."""
        self._run(self._neigh_op("replace", ifindex, ip, mac))

    def neigh_del(self, ifindex: int, ip: IPAddress) -> bool:
        """Delete the neighbour entry of ``ip``; False when there is none."""
        return self._run(self._neigh_op("delete", ifindex, ip))

    def _neigh_dump_op(self, ifindex: int, family: int | None = None) -> _Op:
        body = nl.encode(nl.ndmsg, [("NDA_IFINDEX", ifindex)], family=family or AF_UNSPEC)

        def finish(req: nl.Request) -> list[Neighbour]:
            if req.error:
                raise _error(req, f"dump the neighbours of link #{ifindex}")
            out = []
            for body in req.replies:
                fam, idx, state, flags, _type = _NDMSG.unpack_from(body)
                if idx != ifindex or fam not in (AF_INET, AF_INET6):
                    continue
                a = nl.attr_map(body, 12)
                if NDA_DST not in a:
                    continue
                mac = a.get(NDA_LLADDR)
                out.append(Neighbour(_ip(a[NDA_DST]), mac.hex(":") if mac else None, idx, state, flags))
            return out

        return _Op(nl.Request(RTM_GETNEIGH, 0, body, dump=True), finish)

    def neigh_dump(self, ifindex: int, family: int | None = None) -> list[Neighbour]:
        """The neighbour entries of one link (a dump the kernel filters by NDA_IFINDEX)."""
        return self._run(self._neigh_dump_op(ifindex, family))


# -- early deletion (Rtnl.delete_link(early=True)) -----------------------------------------
RTMGRP_LINK = 1
SO_NETNS_COOKIE = 71  # asm-generic/socket.h
MAX_EARLY_DELETIONS = 64  # background deletions at once; beyond, callers wait for the ACK
_early_slots = threading.BoundedSemaphore(MAX_EARLY_DELETIONS)
_early_cond = threading.Condition()
_early_pending = 0


def pending_deletions() -> int:
    """How many early deletions are still inside the kernel (their links already gone)."""
    return _early_pending


def wait_deletions(timeout: float | None = None) -> bool:
    """Wait until no early deletion is inside the kernel; False on timeout."""
    with _early_cond:
        return _early_cond.wait_for(lambda: _early_pending == 0, timeout)


def _announced(data: bytes, index: int | None, name: str | None) -> bool:
    """Whether a datagram of link notifications holds the RTM_DELLINK of this link."""
    i, n = 0, len(data)
    while i + 16 <= n:
        size, kind = nl.HDR.unpack_from(data, i)[:2]
        if size < 16 or i + size > n:
            return False
        if kind == RTM_DELLINK and size >= 32:
            got = _IFINFO.unpack_from(data, i + 16)[2]
            if index:
                if got == index:
                    return True
            elif name is not None:
                raw = nl.attr_map(data[i + 32:i + size]).get(IFLA_IFNAME)
                if raw is not None and nl.get_str(raw) == name:
                    return True
        i += (size + 3) & ~3
    return False


def _netns_cookie(sock: Any) -> int:
    return int.from_bytes(sock.getsockopt(_socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")


def _delete_early(op: _Op, index: int | None, name: str | None, owner: nl.Socket) -> bool | None:
    """Send ``op`` (an RTM_DELLINK) on a background thread and return when the kernel
    announces the link gone, or with the request's own answer when that comes first
    (an error, or a kernel that does not announce). None: no watch was possible (the
    caller deletes the plain way): also when this thread is not in the namespace of the
    ``owner`` socket (the Rtnl's), whose namespace the new sockets must share (compared
    by ``SO_NETNS_COOKIE``, Linux >= 5.14; without it, the plain way). The caller holds
    one ``_early_slots`` slot: given back here when no background thread starts, else by
    that thread."""
    global _early_pending
    import select  # here: only deletions need it (CNI processes import this module)

    try:
        mon = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, nl.NETLINK_ROUTE)
    except OSError:
        _early_slots.release()
        return None
    try:
        if _netns_cookie(mon) != _netns_cookie(owner._sock):
            raise OSError("not in the Rtnl's namespace")
        mon.bind((0, RTMGRP_LINK))  # subscribed before the request is sent: no announcement missed
        sock = nl.Socket()  # in this thread's namespace, for the background thread alone
    except OSError:
        mon.close()
        _early_slots.release()
        return None
    r, w = os.pipe()
    lock = threading.Lock()
    state: dict[str, Any] = {}

    def background() -> None:
        global _early_pending
        try:
            sock.transact([op.req])
        except OSError as e:
            state["oserror"] = e
        finally:
            sock.close()
            with lock:
                state["done"] = True
                if state.get("detached"):  # the caller returned on the announcement
                    os.close(r)
                else:
                    try:
                        os.write(w, b"x")
                    except OSError:  # the caller is gone (it closed r on an error)
                        pass
                os.close(w)
            with _early_cond:
                _early_pending -= 1
                _early_cond.notify_all()
            _early_slots.release()

    with _early_cond:
        _early_pending += 1
    try:
        threading.Thread(target=background, name="splice-dellink", daemon=True).start()
    except BaseException:
        with _early_cond:
            _early_pending -= 1
        mon.close()
        sock.close()
        os.close(r)
        os.close(w)
        _early_slots.release()
        raise
    gone = False
    try:
        poller = select.poll()
        poller.register(mon.fileno(), select.POLLIN)
        poller.register(r, select.POLLIN)
        watching = True
        while not gone:
            fds = [fd for fd, _ in poller.poll()]
            if r in fds:
                break
            if watching:
                try:
                    data = mon.recv(nl.RECV_SIZE)
                except BlockingIOError:
                    continue
                except OSError:  # ENOBUFS: notifications were dropped; wait for the answer
                    poller.unregister(mon.fileno())
                    watching = False
                    continue
                gone = _announced(data, index, name)
    finally:
        mon.close()
        with lock:
            if gone and not state.get("done"):
                state["detached"] = True  # the background thread closes r
            else:
                os.close(r)
    if gone:
        return True
    if "oserror" in state:
        e = state["oserror"]
        raise NetError(f"netlink: {e.strerror or e}")
    return op.finish(op.req)


# -- batches -------------------------------------------------------------------------------
BATCHABLE = (
    "get_link", "get_link_by_index", "dump_links", "ports_of",
    "add_link", "add_bridge", "add_veth", "move_link", "set_link", "set_brport", "delete_link",
    "bridge_vlan_add", "addresses", "add_address", "delete_address",
    "add_route", "delete_route", "routes",
    "fdb_add", "fdb_append", "fdb_replace", "fdb_del", "fdb_dump", "bridge_fdb",
    "neigh_add", "neigh_replace", "neigh_del", "neigh_dump",
)
_BUILDERS: dict[str, Callable[..., _Op | None]] = {
    "get_link": lambda rt, name: rt._get_link_op(name),
    "get_link_by_index": lambda rt, index: rt._get_link_op(index=index),
    "dump_links": lambda rt: rt._dump_links_op(),
    "ports_of": lambda rt, master: rt._dump_links_op(master),
    "bridge_fdb": lambda rt, bridge: rt._fdb_dump_op(0, bridge=bridge),
    "fdb_add": lambda rt, *a, **kw: rt._fdb_op("add", *a, **kw),
    "fdb_append": lambda rt, *a, **kw: rt._fdb_op("append", *a, **kw),
    "fdb_replace": lambda rt, *a, **kw: rt._fdb_op("replace", *a, **kw),
    "fdb_del": lambda rt, *a, **kw: rt._fdb_op("delete", *a, **kw),
    "neigh_add": lambda rt, *a: rt._neigh_op("add", *a),
    "neigh_replace": lambda rt, *a: rt._neigh_op("replace", *a),
    "neigh_del": lambda rt, *a: rt._neigh_op("delete", *a),
}


class Batch:
    """Requests queued on one :class:`Rtnl`, sent together by :meth:`run`.

    Every method of :data:`BATCHABLE` exists here with the signature it has on
    :class:`Rtnl`; calling it queues the request (and returns its position) instead of
    running it. :meth:`run` sends the queue in one ``send`` (up to :data:`BATCH_CHUNK`
    requests per send), reads every answer in one pass, and answers, per request, what
    the :class:`Rtnl` method would have returned, or the exception it would have
    raised.

    The kernel carries out every request, in order, whatever happened to the previous
    ones: queue only requests that are right even if an earlier one failed (e.g. the
    port options of a veth by name after its creation: when the creation fails with
    EEXIST they apply to the link already called so). Requests that need an earlier
    answer (an ifindex) belong in a later batch. At most one dump per batch.
    """

    def __init__(self, rt: Rtnl) -> None:
        self._rt = rt
        self._ops: list[_Op | None] = []
        self.results: list[Any] = []

    def __len__(self) -> int:
        return len(self._ops)

    def _queue(self, op: _Op | None) -> int:
        self._ops.append(op)
        return len(self._ops) - 1

    def run(self, check: bool = True) -> list[Any]:
        """Send the queued requests; their answers in order (also in :attr:`results`).

        ``check``: raise the first failure (after every answer is in, so
        :attr:`results` holds the other outcomes); else failures are returned in place
        as exception objects. The queue is emptied.
        """
        ops, self._ops = self._ops, []
        reqs = [op.req for op in ops if op is not None]
        if sum(1 for r in reqs if r.dump) > 1:
            raise ValueError("a batch holds at most one dump (the kernel runs one dump per socket at a time)")
        for i in range(0, len(reqs), BATCH_CHUNK):
            self._rt._transact(reqs[i:i + BATCH_CHUNK])
        results: list[Any] = []
        for op in ops:
            if op is None:
                results.append(None)
                continue
            try:
                results.append(op.finish(op.req))
            except NetError as e:
                results.append(e)
        self.results = results
        if check:
            for r in results:
                if isinstance(r, NetError):
                    raise r
        return results


def _batch_method(name: str) -> Callable[..., int]:
    builder = _BUILDERS.get(name) or (lambda rt, *a, **kw: getattr(rt, f"_{name}_op")(*a, **kw))

    def method(self: Batch, *args: Any, **kwargs: Any) -> int:
        return self._queue(builder(self._rt, *args, **kwargs))

    method.__name__ = name
    method.__doc__ = f"Queue :meth:`Rtnl.{name}` (see there)."
    return method


for _name in BATCHABLE:
    setattr(Batch, _name, _batch_method(_name))


def run(ns: Netns, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(rt, *args, **kwargs)`` inside ``ns`` with a fresh :class:`Rtnl` ``rt``."""

    def body() -> T:
        with Rtnl() as rt:
            return fn(rt, *args, **kwargs)

    return ns.run(body)
