"""A minimal netlink client in the standard library: conntrack flush, route and chain queries.

Why not pyroute2: a CNI plugin is a short-lived process, and importing anything from
pyroute2 runs its package ``__init__`` (a large part of a plugin's start-up, docs/perf.md);
``socket`` + ``struct`` cost next to nothing. This module speaks just enough netlink for the port publisher
(libnet/portmap/):

* :func:`flush_udp` - delete the UDP conntrack entries whose original destination port is
  one of ``ports`` (ctnetlink: one filtered dump, ``IPCTNL_MSG_CT_GET`` with ``CTA_FILTER``
  so the kernel only returns matching entries, then one ``IPCTNL_MSG_CT_DELETE`` per entry
  with the tuple exactly as dumped). This is what the reference portmap does after ADD
  (stale UDP entries would otherwise keep steering a client's datagrams past the new DNAT).
  The kernel-side filter exists since Linux 5.8; on an older kernel the dump returns every
  entry and the same filter is applied here.
* :func:`route_oif` - the output interface of the route to an address (``RTM_GETROUTE``,
  the kernel's own answer, policy routing included).
* :func:`nft_chain_uses`, :func:`nft_object_uses` - the use count of every chain / named
  object of one nftables table (``NFT_MSG_GETCHAIN`` / ``NFT_MSG_GETOBJ`` dump,
  ``NFTA_CHAIN_USE`` / ``NFTA_OBJ_USE``: for an object, the number of rules and object-map
  elements referring to it). libnftables does not expose them; the port publisher uses
  object use counts as reference counts the kernel keeps.

Every socket is created in the calling thread's network namespace (call inside
``Netns.run``). Netfilter sockets come from :func:`netfilter`: closing one while the
kernel still has nf_tables objects to destroy (after any commit that deleted something,
by anyone) waits for that destruction (an RCU grace period; nft.py). A
short-lived process pays that once whatever it does; a resident one (the agent, which
shares its libnftables contexts per namespace for this very reason, ``nft.share_contexts``)
would pay it on every call, so while contexts are shared the netfilter socket of each
namespace is kept too, and closed after being idle for :data:`SHARED_IDLE_S`.
"""

from __future__ import annotations

import _socket  # the C module: ``socket`` would build its IntEnums at import (per process)
import errno
import os
import struct
import threading
import time
from contextlib import contextmanager
from typing import Iterable, Iterator

from .errors import NetError

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
_NLA_TYPE_MASK = 0x3FFF

# nfnetlink subsystems and messages
NFNL_SUBSYS_CTNETLINK = 1
NFNL_SUBSYS_NFTABLES = 10
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
NFT_MSG_GETCHAIN = 4
NFT_MSG_GETOBJ = 19

# ctnetlink attributes (linux/netfilter/nfnetlink_conntrack.h)
CTA_TUPLE_ORIG = 1
CTA_ZONE = 18
CTA_FILTER = 25
CTA_TUPLE_PROTO = 2
CTA_PROTO_NUM = 1
CTA_PROTO_DST_PORT = 3
CTA_FILTER_ORIG_FLAGS = 1
CTA_FILTER_REPLY_FLAGS = 2
# net/netfilter/nf_conntrack_netlink.c: CTA_FILTER_FLAG(CTA_PROTO_NUM), CTA_FILTER_FLAG(CTA_PROTO_DST_PORT)
_FILTER_PROTO_NUM = 1 << 3
_FILTER_PROTO_DST_PORT = 1 << 5

# nf_tables chain and object attributes
NFTA_CHAIN_TABLE = 1
NFTA_CHAIN_NAME = 3
NFTA_CHAIN_USE = 6
NFTA_OBJ_TABLE = 1
NFTA_OBJ_NAME = 2
NFTA_OBJ_TYPE = 3
NFTA_OBJ_USE = 5
NFT_OBJECT_COUNTER = 1

# rtnetlink
RTM_GETROUTE = 26
RTA_DST = 1
RTA_OIF = 4

IPPROTO_UDP = 17
_FAMILY = {4: _socket.AF_INET, 6: _socket.AF_INET6}


# -- attribute helpers ---------------------------------------------------------------
def nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def nest(kind: int, *parts: bytes) -> bytes:
    return nla(kind | NLA_F_NESTED, b"".join(parts))


def attrs(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(type, payload, the whole attribute as sent) for each attribute in ``data``."""
    i = 0
    while i + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, i)
        if size < 4:
            return
        yield kind & _NLA_TYPE_MASK, data[i + 4:i + size], data[i:i + size]
        i += (size + 3) & ~3


def attr_map(data: bytes) -> dict[int, bytes]:
    return {k: v for k, v, _ in attrs(data)}


class Netlink:
    """One netlink socket; :meth:`request` sends a message and collects the replies."""

    def __init__(self, protocol: int) -> None:
        self.sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, protocol)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg_type: int, flags: int, header: bytes, payload: bytes = b"") -> list[tuple[int, bytes]]:
        """Send one request; return [(type, body after ``header``)] of the replies.

        Dumps run until NLMSG_DONE, other requests carry NLM_F_ACK and run until the
        acknowledgement. A negative errno in the answer raises :class:`OSError`.
        """
        self.seq += 1
        seq = self.seq
        flags |= NLM_F_REQUEST
        if not flags & NLM_F_DUMP:
            flags |= NLM_F_ACK
        body = header + payload
        self.sock.send(struct.pack("=IHHII", 16 + len(body), msg_type, flags, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        hlen = len(header)
        while True:
            data = self.sock.recv(1 << 16)
            i = 0
            while i + 16 <= len(data):
                size, kind, _flags, rseq, _pid = struct.unpack_from("=IHHII", data, i)
                if size < 16:
                    raise NetError("netlink: malformed message")
                msg = data[i + 16:i + size]
                i += (size + 3) & ~3
                if rseq != seq:
                    continue  # a late answer to an earlier request
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = struct.unpack_from("=i", msg)[0]
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return out  # the ACK
                out.append((kind, msg[hlen:]))


# -- netfilter sockets: one per call, or kept per namespace in a resident process ------------
SHARED_IDLE_S = 30.0
SHARED_MAX = 64  # kept sockets; exceeded while every kept one is in use


class _Kept:
    """A kept socket. ``users`` (changed under ``_shared_lock``) counts the callers that got
    it and have not finished; it is closed only when nobody uses it: by eviction or
    pruning when ``users`` is 0, or by its last user when it was ``retired`` meanwhile."""

    __slots__ = ("nl", "lock", "last", "users", "retired")

    def __init__(self, nl: "Netlink") -> None:
        self.nl = nl
        self.lock = threading.Lock()  # one request sequence at a time
        self.last = time.monotonic()
        self.users = 0
        self.retired = False


_shared: dict[tuple[int, int], _Kept] | None = None
_shared_lock = threading.Lock()


def share_sockets(enabled: bool = True) -> None:
    """Keep one netfilter socket per namespace (on), or close them all (off; a socket in
    use is closed when its user is done)."""
    global _shared
    with _shared_lock:
        old, _shared = _shared, ({} if enabled else None)
        idle = _retire((old or {}).values())
    for kept in idle:
        kept.nl.close()


def _retire(entries: Iterable[_Kept]) -> list[_Kept]:
    """Mark ``entries`` (removed from the table) retired; the unused ones, to close now.
    Called under ``_shared_lock``."""
    idle = []
    for kept in entries:
        kept.retired = True
        if not kept.users:
            idle.append(kept)
    return idle


def prune_sockets(idle_s: float = SHARED_IDLE_S) -> int:
    """Close the kept sockets unused for ``idle_s`` seconds; how many were closed."""
    now = time.monotonic()
    dropped = []
    with _shared_lock:
        for key, kept in list((_shared or {}).items()):
            if now - kept.last >= idle_s and not kept.users:
                dropped += _retire([_shared.pop(key)])  # type: ignore[union-attr]
    for kept in dropped:
        kept.nl.close()
    return len(dropped)


def _sharing() -> bool:
    global _shared
    if _shared is not None:
        return True
    from . import nft

    if getattr(nft, "_shared", None) is None:  # nftables contexts are not shared either
        return False
    with _shared_lock:
        if _shared is None:
            _shared = {}
    return True


def _take(key: tuple[int, int]) -> _Kept:
    """The kept socket of ``key`` (made if missing), counted as in use; at the cap the
    least recently used socket nobody uses is closed (none: the table grows past the cap)."""
    victims: list[_Kept] = []
    with _shared_lock:
        table = _shared
        kept = table.get(key) if table is not None else None
        if kept is None:
            kept = _Kept(Netlink(NETLINK_NETFILTER))
            if table is None:
                kept.retired = True  # sharing was switched off meanwhile: closed after use
            else:
                if len(table) >= SHARED_MAX:
                    idle = [k for k, v in table.items() if not v.users]
                    if idle:
                        victims = _retire([table.pop(min(idle, key=lambda k: table[k].last))])
                table[key] = kept
        kept.users += 1
        kept.last = time.monotonic()
    for victim in victims:
        victim.nl.close()
    return kept


def _give_back(kept: _Kept) -> None:
    with _shared_lock:
        kept.users -= 1
        close = kept.retired and not kept.users
    if close:
        kept.nl.close()


@contextmanager
def netfilter() -> Iterator["Netlink"]:
    """A NETLINK_NETFILTER socket in the calling thread's namespace, for one request
    sequence (kept and reused per namespace while sockets are shared, see the module doc)."""
    if not _sharing():
        nl = Netlink(NETLINK_NETFILTER)
        try:
            yield nl
        finally:
            nl.close()
        return
    prune_sockets()
    st = os.stat("/proc/thread-self/ns/net")
    kept = _take((st.st_dev, st.st_ino))
    try:
        with kept.lock:
            kept.last = time.monotonic()
            yield kept.nl
    finally:
        _give_back(kept)


def _nfgen(family: int) -> bytes:
    return struct.pack("=BBH", family, 0, 0)  # nfgenmsg: family, version 0, res_id 0


# -- conntrack --------------------------------------------------------------------------
def _udp_dport(tuple_attr: bytes) -> int | None:
    """Original destination port of a UDP tuple (None for other protocols)."""
    t = attr_map(tuple_attr)
    proto = t.get(CTA_TUPLE_PROTO)
    if proto is None:
        return None
    p = attr_map(proto)
    if p.get(CTA_PROTO_NUM) != bytes([IPPROTO_UDP]) or CTA_PROTO_DST_PORT not in p:
        return None
    return struct.unpack(">H", p[CTA_PROTO_DST_PORT])[0]


def _dump_filter(port: int) -> bytes:
    return (nest(CTA_TUPLE_ORIG, nest(CTA_TUPLE_PROTO, nla(CTA_PROTO_NUM, bytes([IPPROTO_UDP])),
                                      nla(CTA_PROTO_DST_PORT, struct.pack(">H", port))))
            + nest(CTA_FILTER, nla(CTA_FILTER_ORIG_FLAGS, struct.pack("=I", _FILTER_PROTO_NUM | _FILTER_PROTO_DST_PORT)),
                   nla(CTA_FILTER_REPLY_FLAGS, struct.pack("=I", 0))))


def flush_udp(ports: Iterable[int], version: int) -> int:
    """Delete UDP conntrack entries of one IP version whose original destination port is in
    ``ports``; returns how many were deleted. Entries that vanish meanwhile are fine."""
    wanted = set(ports)
    if not wanted:
        return 0
    family = _FAMILY[version]
    deleted = 0
    ct_get = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
    ct_del = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
    try:
        sock = netfilter()
        nl = sock.__enter__()
    except OSError as e:
        raise NetError(f"conntrack: cannot open a netlink socket: {e.strerror}") from None
    try:
        for port in sorted(wanted):
            try:
                entries = nl.request(ct_get, NLM_F_DUMP, _nfgen(family), _dump_filter(port))
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # no CTA_FILTER (< 5.8): dump all
                    entries = nl.request(ct_get, NLM_F_DUMP, _nfgen(family))
                elif e.errno in (errno.ENOENT, errno.EPROTONOSUPPORT):  # conntrack not loaded
                    return deleted
                else:
                    raise NetError(f"conntrack dump failed: {e.strerror}") from None
            for _kind, body in entries:
                orig = zone = None
                for k, payload, whole in attrs(body):
                    if k == CTA_TUPLE_ORIG:
                        orig = (payload, whole)
                    elif k == CTA_ZONE:
                        zone = whole
                if orig is None or _udp_dport(orig[0]) not in wanted:
                    continue
                try:
                    nl.request(ct_del, 0, _nfgen(family), orig[1] + (zone or b""))
                    deleted += 1
                except OSError as e:
                    if e.errno != errno.ENOENT:  # gone meanwhile: fine
                        raise NetError(f"conntrack delete failed: {e.strerror}") from None
    finally:
        sock.__exit__(None, None, None)
    return deleted


# -- routes -----------------------------------------------------------------------------
def ifname(index: int) -> str | None:
    """Name of interface ``index`` in the calling thread's namespace (None when gone)."""
    try:
        return _socket.if_indextoname(index)
    except OSError:
        return None


def route_oif(address) -> int | None:
    """Index of the output interface of the route to ``address`` (an ipaddress object), or
    None when there is no route (or it is a local/unreachable route without a device)."""
    family = _FAMILY[address.version]
    plen = address.max_prefixlen
    # struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
    header = struct.pack("=BBBBBBBBI", family, plen, 0, 0, 0, 0, 0, 0, 0)
    try:
        with Netlink(NETLINK_ROUTE) as nl:
            replies = nl.request(RTM_GETROUTE, 0, header, nla(RTA_DST, address.packed))
    except OSError as e:
        if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENOENT, errno.EINVAL):
            return None
        raise NetError(f"route lookup for {address} failed: {e.strerror}") from None
    for _kind, body in replies:
        oif = attr_map(body).get(RTA_OIF)
        if oif is not None:
            return struct.unpack("=I", oif)[0]
    return None


# -- nftables chain use counts -----------------------------------------------------------
def nft_chain_uses(family: int, table: str) -> dict[str, int]:
    """name -> ``use`` of every chain of ``table`` (empty when the table is missing).

    ``family`` is the nfproto number (``NFPROTO_INET`` = 1, ``NFPROTO_IPV4`` = 2, ...).
    """
    msg = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN
    out: dict[str, int] = {}
    try:
        with netfilter() as nl:
            replies = nl.request(msg, NLM_F_DUMP, _nfgen(family))
    except OSError as e:
        raise NetError(f"nftables chain dump failed: {e.strerror}") from None
    want = table.encode()
    for _kind, body in replies:
        a = attr_map(body)
        if a.get(NFTA_CHAIN_TABLE, b"").rstrip(b"\0") != want or NFTA_CHAIN_NAME not in a:
            continue
        use = a.get(NFTA_CHAIN_USE)
        out[a[NFTA_CHAIN_NAME].rstrip(b"\0").decode(errors="replace")] = struct.unpack(">I", use)[0] if use else 0
    return out


def nft_object_uses(family: int, table: str, obj_type: int = NFT_OBJECT_COUNTER) -> dict[str, int]:
    """name -> ``use`` of every named object of ``obj_type`` (default: counters) of ``table``."""
    msg = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETOBJ
    want = table.encode()
    request = nla(NFTA_OBJ_TABLE, want + b"\0") + nla(NFTA_OBJ_TYPE, struct.pack(">I", obj_type))
    out: dict[str, int] = {}
    try:
        with netfilter() as nl:
            replies = nl.request(msg, NLM_F_DUMP, _nfgen(family), request)
    except OSError as e:
        if e.errno == errno.ENOENT:  # no such table
            return out
        raise NetError(f"nftables object dump failed: {e.strerror}") from None
    for _kind, body in replies:
        a = attr_map(body)
        if a.get(NFTA_OBJ_TABLE, b"").rstrip(b"\0") != want or NFTA_OBJ_NAME not in a:
            continue
        if NFTA_OBJ_TYPE in a and struct.unpack(">I", a[NFTA_OBJ_TYPE])[0] != obj_type:
            continue
        use = a.get(NFTA_OBJ_USE)
        out[a[NFTA_OBJ_NAME].rstrip(b"\0").decode(errors="replace")] = struct.unpack(">I", use)[0] if use else 0
    return out
