"""rtnetlink through pyroute2: the link, address, route and bridge operations of the drivers.

Namespaces are explicit. An :class:`Rtnl` is one netlink socket bound to the network
namespace of the thread that opens it, so open and use it inside
:meth:`splice.libnet.netns.Netns.run`; :func:`run` does both::

    created = rtnl.run(host, lambda rt: rt.add_bridge("cni0"))

Lookups are by name with one ``RTM_GETLINK`` (``link('get', ifname=...)``), never by
dumping and filtering (a dump can be inconsistent while other agents change links).
Only :meth:`Rtnl.dump_links` dumps, for garbage collection.

Every netlink failure is re-raised as a :mod:`splice.libnet.errors` exception with a
message naming the operation; "already exists" / "already gone" outcomes that callers
routinely tolerate are return values instead (documented per method).

Lean import: ``import pyroute2`` runs the package ``__init__``, which imports the whole
public API (IPDB, NDB, conntrack, ...; ~140 ms). This module installs a stand-in package
module for ``pyroute2`` (same ``__path__``, the real ``__init__`` not executed) before
importing ``pyroute2.iproute.linux``, unless ``pyroute2`` is already imported. Names of
the full public API stay reachable: the first access of a non-submodule attribute on the
stand-in (``from pyroute2 import NDB``) executes the real ``__init__`` into it.
"""

from __future__ import annotations

import errno as _errno
import functools
import importlib.util
import ipaddress
import os
import socket
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

from .errors import LinkExists, LinkNotFound, NetError, NotSupported, from_errno
from .netns import Netns

T = TypeVar("T")


def _lean_pyroute2() -> None:
    """Make ``pyroute2`` importable without running its heavy ``__init__``."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or not spec.submodule_search_locations or spec.loader is None:
        return  # let the ordinary import report the problem
    pkg = types.ModuleType("pyroute2")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__file__ = spec.origin
    pkg.__spec__ = spec
    pkg.__package__ = "pyroute2"
    pkg.__loader__ = spec.loader
    state = {"full": False}

    def _is_submodule(name: str) -> bool:
        for d in pkg.__path__:
            if os.path.isdir(os.path.join(d, name)) or os.path.isfile(os.path.join(d, name + ".py")):
                return True
        return False

    def __getattr__(name: str) -> Any:  # PEP 562: only for names not (yet) in the module
        if name.startswith("__") or state["full"] or _is_submodule(name):
            raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")
        state["full"] = True
        spec.loader.exec_module(pkg)  # type: ignore[union-attr]  # the real __init__, once
        return getattr(pkg, name)

    pkg.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules["pyroute2"] = pkg


_lean_pyroute2()

from pyroute2.config import log as _pyroute2_log  # noqa: E402,F401  (NullHandler on the 'pyroute2' logger)
from pyroute2.iproute.linux import IPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402

IFF_UP = 0x1
IFF_PROMISC = 0x100
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
BRIDGE_MODE_HAIRPIN = 1
BRIDGE_VLAN_INFO_PVID = 0x2
BRIDGE_VLAN_INFO_UNTAGGED = 0x4
AF_BRIDGE = 7
RTEXT_FILTER_BRVLAN = 1 << 1
RT_TABLE_MAIN = 254

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# -- results -----------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    """What one RTM_NEWLINK message says about a link (the fields splice uses).

    ``brport`` and ``vlan_filtering`` are decoded on first access only: pyroute2 decodes
    nested attributes lazily, and a bridge's IFLA_INFO_DATA (or a port's slave data) is
    the most expensive part of the message.
    """

    index: int
    name: str
    kind: str | None = None
    mac: str | None = None
    mtu: int | None = None
    flags: int = 0
    master: int | None = None
    alias: str | None = None
    peer_index: int | None = None  # IFLA_LINK (for a veth: the peer's ifindex, maybe in another netns)
    peer_netnsid: int | None = None  # IFLA_LINK_NETNSID: set when the peer lives in another netns
    operstate: str | None = None
    slave_kind: str | None = None
    _info_data: Any = field(default=None, repr=False, compare=False)
    _slave_data: Any = field(default=None, repr=False, compare=False)

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def promisc(self) -> bool:
        return bool(self.flags & IFF_PROMISC)

    @functools.cached_property
    def brport(self) -> Mapping[str, int]:
        """IFLA_BRPORT_{MODE,ISOLATED,STATE} of a bridge port, keys without prefix, lower case."""
        out: dict[str, int] = {}
        if self.slave_kind == "bridge" and self._slave_data is not None:
            for name, value in self._slave_data.get("attrs", ()):
                if name in ("IFLA_BRPORT_MODE", "IFLA_BRPORT_ISOLATED", "IFLA_BRPORT_STATE"):
                    out[name[len("IFLA_BRPORT_"):].lower()] = value
        return out

    @functools.cached_property
    def vlan_filtering(self) -> bool | None:
        """IFLA_BR_VLAN_FILTERING of a bridge; None for other links."""
        if self.kind != "bridge" or self._info_data is None:
            return None
        for name, value in self._info_data.get("attrs", ()):
            if name == "IFLA_BR_VLAN_FILTERING":
                return bool(value)
        return None

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


# -- errors ------------------------------------------------------------------------
def _error(e: NetlinkError, what: str) -> NetError:
    code = e.code or 0
    return from_errno(code, f"{what}: {os.strerror(code) if code else e}")


_LINK_ATTRS = {
    "IFLA_IFNAME": "name",
    "IFLA_ADDRESS": "mac",
    "IFLA_MTU": "mtu",
    "IFLA_MASTER": "master",
    "IFLA_IFALIAS": "alias",
    "IFLA_LINK": "peer_index",
    "IFLA_LINK_NETNSID": "peer_netnsid",
    "IFLA_OPERSTATE": "operstate",
}


def _nla_name(nla: Any) -> str:
    cell = getattr(nla, "cell", None)  # pyroute2's nla_slot: the name without decoding the value
    return cell[0] if cell is not None else nla[0]


_INFO_ATTRS = {
    "IFLA_INFO_KIND": "kind",
    "IFLA_INFO_SLAVE_KIND": "slave_kind",
    "IFLA_INFO_DATA": "_info_data",
    "IFLA_INFO_SLAVE_DATA": "_slave_data",
}


def _link_from_msg(msg: Any) -> Link:
    """One pass over the message's attributes (pyroute2's ``get()`` rescans them per key),
    decoding only the values we keep: pyroute2 decodes a value when it is read, and a
    link message carries ~50 attributes (IFLA_STATS64, IFLA_AF_SPEC with every IPv4/IPv6
    devconf entry, ...). Reading names only halves the cost of a lookup (0.74 -> 0.4 ms)."""
    kw: dict[str, Any] = {}
    info = None
    for nla in msg["attrs"]:
        name = _nla_name(nla)
        key = _LINK_ATTRS.get(name)
        if key is not None:
            kw[key] = nla[1]
        elif name == "IFLA_LINKINFO":
            info = nla[1]
    if info is not None:
        for nla in info.get("attrs", ()):
            key = _INFO_ATTRS.get(_nla_name(nla))
            if key is not None:
                kw[key] = nla[1]
    if not kw.get("master"):
        kw["master"] = None
    return Link(index=msg["index"], flags=msg["flags"], **kw)


def _flags(up: bool | None = None, promisc: bool | None = None) -> dict[str, int]:
    flags = change = 0
    if up is not None:
        change |= IFF_UP
        flags |= IFF_UP if up else 0
    if promisc is not None:
        change |= IFF_PROMISC
        flags |= IFF_PROMISC if promisc else 0
    return {"flags": flags, "change": change} if change else {}


# -- the socket ----------------------------------------------------------------------
class Rtnl:
    """One rtnetlink socket in the calling thread's network namespace.

    Not thread-safe: use it only on the thread that opened it, inside one
    :meth:`Netns.run`, and close it there (``with Rtnl() as rt: ...``).
    """

    def __init__(self) -> None:
        try:
            # no multicast subscriptions: requests only. NETLINK_GET_STRICT_CHK (Linux >=
            # 4.20) lets the kernel filter a dump by the header's fields (addresses of one
            # link): without it every address of the namespace comes back, one IPv6
            # link-local per container veth, and listing the bridge's addresses took 20 ms
            # with 200 attachments instead of 0.7 ms.
            try:
                self._ipr = IPRoute(groups=0, strict_check=True)
            except OSError:
                self._ipr = IPRoute(groups=0)
        except OSError as e:
            raise NetError(f"cannot open a netlink socket: {e.strerror or e}") from None

    def close(self) -> None:
        self._ipr.close()

    def _echo_link(self, **kw: Any) -> Link | None:
        """``link('add', **kw)`` with NLM_F_ECHO: the kernel answers with the new link.

        Saves the lookup that would follow a creation. None on kernels that do not echo
        RTM_NEWLINK (measured: 6.1.176 does not, 6.18 does); callers then look the link
        up by name (the needs_vm tests run that path in the 6.1 guest).
        """
        status = self._ipr.asyncore.status
        status["nlm_echo"] = True
        try:
            msgs = self._ipr.link("add", **kw)
        finally:
            status["nlm_echo"] = False
        for m in msgs or ():
            if m.get("event") == "RTM_NEWLINK" and m.get("ifname") == kw.get("ifname"):
                return _link_from_msg(m)
        return None

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- links ---------------------------------------------------------------------
    def get_link(self, name: str) -> Link | None:
        """The link called ``name`` (one RTM_GETLINK), or None when there is none."""
        try:
            return _link_from_msg(self._ipr.link("get", ifname=name)[0])
        except NetlinkError as e:
            if e.code in (_errno.ENODEV, _errno.ENOENT):
                return None
            raise _error(e, f"get link {name!r}") from None

    def get_link_by_index(self, index: int) -> Link | None:
        try:
            return _link_from_msg(self._ipr.link("get", index=index)[0])
        except NetlinkError as e:
            if e.code in (_errno.ENODEV, _errno.ENOENT):
                return None
            raise _error(e, f"get link #{index}") from None

    def require_link(self, name: str) -> Link:
        link = self.get_link(name)
        if link is None:
            raise LinkNotFound(f"link {name!r} not found")
        return link

    def dump_links(self) -> list[Link]:
        """Every link of the namespace (for garbage collection only; see module doc)."""
        try:
            return [_link_from_msg(m) for m in self._ipr.link("dump")]
        except NetlinkError as e:
            raise _error(e, "dump links") from None

    def ports_of(self, master: int) -> list[Link]:
        """Links enslaved to ``master`` (a dump; for rare decisions such as rollback)."""
        return [link for link in self.dump_links() if link.master == master]

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
        kw: dict[str, Any] = {"ifname": name, "kind": "bridge"}
        if mtu:
            kw["mtu"] = mtu
        if mac:
            kw["address"] = mac
        if vlan_filtering:
            kw["br_vlan_filtering"] = 1
        kw.update(_flags(up=True) if up else {})
        try:
            link = self._echo_link(**kw)
        except NetlinkError as e:
            if e.code == _errno.EEXIST:
                return None
            if e.code == _errno.EOPNOTSUPP and vlan_filtering:
                raise NotSupported(
                    f"create bridge {name!r} with VLAN filtering: not supported by this kernel "
                    "(CONFIG_BRIDGE_VLAN_FILTERING)"
                ) from None
            raise _error(e, f"create bridge {name!r}") from None
        return link or self.require_link(name)

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

        Creating the peer inside the target namespace avoids a namespace move (about
        18 ms of RCU grace period). ``master`` (an ifindex) and ``up`` apply to ``name``.
        Returns the new link ``name``; its ``peer_index`` is the peer's ifindex in the
        peer's namespace. Either name taken → :class:`LinkExists`.
        """
        peer_attrs: dict[str, Any] = {"ifname": peer}
        if peer_netns_fd is not None:
            peer_attrs["net_ns_fd"] = peer_netns_fd
        if mtu:
            peer_attrs["mtu"] = mtu
        if peer_mac:
            peer_attrs["address"] = peer_mac
        kw: dict[str, Any] = {"ifname": name, "kind": "veth", "peer": peer_attrs}
        if mtu:
            kw["mtu"] = mtu
        if mac:
            kw["address"] = mac
        if master:
            kw["master"] = master
        kw.update(_flags(up=True) if up else {})
        try:
            link = self._echo_link(**kw)
        except NetlinkError as e:
            if e.code == _errno.EEXIST:
                raise LinkExists(f"create veth {name!r}/{peer!r}: a link with one of these names exists") from None
            raise _error(e, f"create veth {name!r}/{peer!r}") from None
        return link or self.require_link(name)

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
        link and then brings it up.
        """
        kw: dict[str, Any] = {"index": index}
        if name is not None:
            kw["ifname"] = name
        if mtu:
            kw["mtu"] = mtu
        if mac:
            kw["address"] = mac
        if alias is not None:
            kw["ifalias"] = alias
        if master is not None:
            kw["master"] = master
        kw.update(_flags(up=up, promisc=promisc))
        try:
            self._ipr.link("set", **kw)
        except NetlinkError as e:
            if e.code == _errno.EEXIST and name is not None:
                raise LinkExists(f"rename link #{index} to {name!r}: a link with that name exists") from None
            raise _error(e, f"set link #{index}") from None

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
        kw: dict[str, Any] = {"index": link} if isinstance(link, int) else {"ifname": link}
        if alias is not None:
            kw["ifalias"] = alias
        if hairpin is not None or isolated is not None:
            kw["kind"] = "bridge_slave"
            if hairpin is not None:
                kw["mode"] = BRIDGE_MODE_HAIRPIN if hairpin else 0
            if isolated is not None:
                kw["isolated"] = 1 if isolated else 0
        if len(kw) == 1:
            return
        try:
            self._ipr.link("set", **kw)
        except NetlinkError as e:
            raise _error(e, f"set bridge port options of link {link!r}") from None

    def delete_link(self, index: int | None = None, name: str | None = None) -> bool:
        """Delete a link by index or name; False when it is already gone."""
        kw: dict[str, Any] = {"index": index} if index else {"ifname": name}
        try:
            self._ipr.link("del", **kw)
            return True
        except NetlinkError as e:
            if e.code in (_errno.ENODEV, _errno.ENOENT):
                return False
            raise _error(e, f"delete link {name or index!r}") from None

    # -- bridge VLANs ----------------------------------------------------------------
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
        flags = (BRIDGE_VLAN_INFO_PVID if pvid else 0) | (BRIDGE_VLAN_INFO_UNTAGGED if untagged else 0)
        ranged = bool(vid_end) and vid_end != vid
        if ranged and flags:
            raise ValueError("a VLAN range carries no pvid/untagged flags here")
        spec: dict[str, Any] = {"vid": f"{vid}-{vid_end}" if ranged else vid}
        if flags:
            spec["flags"] = flags  # an int: pyroute2 passes a single VLAN's flags through as given
        try:
            self._ipr.vlan_filter("add", index=index, vlan_info=spec)
        except NetlinkError as e:
            if e.code == _errno.EOPNOTSUPP:
                raise NotSupported(
                    f"add VLAN {spec['vid']} to link #{index}: bridge VLAN filtering not supported "
                    "(kernel without CONFIG_BRIDGE_VLAN_FILTERING, or the bridge has vlan_filtering 0)"
                ) from None
            raise _error(e, f"add VLAN {spec['vid']} to link #{index}") from None

    def bridge_vlans(self, index: int) -> dict[int, int]:
        """The VLANs of one bridge port (or of the bridge itself): vid -> BRIDGE_VLAN_INFO_*
        flags. Empty when VLAN filtering is off or unsupported. (An AF_BRIDGE dump with
        RTEXT_FILTER_BRVLAN: a plain RTM_GETLINK does not carry a port's VLANs.)"""
        out: dict[int, int] = {}
        try:
            msgs = self._ipr.link("dump", family=AF_BRIDGE, ext_mask=RTEXT_FILTER_BRVLAN)
        except NetlinkError as e:
            raise _error(e, f"list the VLANs of link #{index}") from None
        for m in msgs:
            if m.get("index") != index:
                continue
            spec = m.get_attr("IFLA_AF_SPEC")
            for name, info in (spec.get("attrs", ()) if spec else ()):
                if name == "IFLA_BRIDGE_VLAN_INFO":
                    out[info["vid"]] = info["flags"]
        return out

    def bridge_vlan_del(self, index: int, vid: int) -> bool:
        """Remove VLAN ``vid`` from a bridge port; False when it was not there.

        The kernel answers a deletion of an absent VLAN with success (br_vlan_info ignores
        nbp_vlan_delete's ENOENT), so presence is read first."""
        if vid not in self.bridge_vlans(index):
            return False
        try:
            self._ipr.vlan_filter("del", index=index, vlan_info={"vid": vid})
            return True
        except NetlinkError as e:
            if e.code in (_errno.ENOENT, _errno.EINVAL):
                return False
            raise _error(e, f"delete VLAN {vid} from link #{index}") from None

    # -- addresses ---------------------------------------------------------------------
    def addresses(self, index: int, family: int | None = None) -> list[Address]:
        """The addresses of one link: a dump the kernel filters by ifindex (strict
        checking; the loop below still filters, for kernels that ignore the header)."""
        kw: dict[str, Any] = {"index": index, "dump_filter": None}  # index into the request header
        if family is not None:
            kw["family"] = family
        try:
            msgs = self._ipr.addr("dump", **kw)
        except NetlinkError as e:
            raise _error(e, f"list addresses of link #{index}") from None
        out = []
        for m in msgs:
            if m.get("index") != index:
                continue
            addr = m.get("address") or m.get("local")
            if addr is None:
                continue
            flags = m.get("IFA_FLAGS")
            if flags is None:
                flags = m.get("flags") or 0
            out.append(Address(ipaddress.ip_interface(f"{addr}/{m['prefixlen']}"), flags, m.get("scope") or 0))
        return out

    def add_address(self, index: int, iface: IPInterface, *, nodad: bool = False) -> bool:
        """Add an address; False when the link already has it."""
        kw: dict[str, Any] = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
        if nodad and iface.version == 6:
            kw["flags"] = IFA_F_NODAD
        try:
            self._ipr.addr("add", **kw)
            return True
        except NetlinkError as e:
            if e.code == _errno.EEXIST:
                return False
            raise _error(e, f"add address {iface} to link #{index}") from None

    def delete_address(self, index: int, iface: IPInterface) -> bool:
        """Remove an address; False when the link does not have it (or is gone)."""
        try:
            self._ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            return True
        except NetlinkError as e:
            if e.code in (_errno.EADDRNOTAVAIL, _errno.ENODEV, _errno.ENOENT):
                return False
            raise _error(e, f"delete address {iface} from link #{index}") from None

    # -- routes ------------------------------------------------------------------------
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
    ) -> bool:
        """Add a route; False when the same route already exists."""
        kw: dict[str, Any] = {"dst": str(dst), "family": socket.AF_INET6 if dst.version == 6 else socket.AF_INET}
        if gw is not None:
            kw["gateway"] = str(gw)
        if oif:
            kw["oif"] = oif
        if priority is not None:
            kw["priority"] = priority
        if table is not None:
            kw["table"] = table
        if scope is not None:
            kw["scope"] = scope
        metrics = {}
        if mtu:
            metrics["mtu"] = mtu
        if advmss:
            metrics["advmss"] = advmss
        if metrics:
            kw["metrics"] = metrics
        try:
            self._ipr.route("add", **kw)
            return True
        except NetlinkError as e:
            if e.code == _errno.EEXIST:
                return False
            via = f" via {gw}" if gw is not None else ""
            raise _error(e, f"add route {dst}{via}") from None

    def routes(self, family: int) -> list[RouteEntry]:
        """Unicast routes of one family in every table (a dump)."""
        try:
            msgs = self._ipr.route("dump", family=family)
        except NetlinkError as e:
            raise _error(e, "dump routes") from None
        zero = "0.0.0.0" if family == socket.AF_INET else "::"
        out = []
        for m in msgs:
            if m.get("type", 1) != 1:  # RTN_UNICAST
                continue
            dst = m.get("dst") or zero
            gw = m.get("gateway")
            out.append(
                RouteEntry(
                    dst=ipaddress.ip_network(f"{dst}/{m.get('dst_len', 0)}", strict=False),
                    gw=ipaddress.ip_address(gw) if gw else None,
                    oif=m.get("oif"),
                    table=m.get("table") or m.get("RTA_TABLE") or RT_TABLE_MAIN,
                    priority=m.get("priority"),
                    scope=m.get("scope") or 0,
                )
            )
        return out


def run(ns: Netns, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(rt, *args, **kwargs)`` inside ``ns`` with a fresh :class:`Rtnl` ``rt``."""

    def body() -> T:
        with Rtnl() as rt:
            return fn(rt, *args, **kwargs)

    return ns.run(body)
