"""Netlink for :mod:`splice.libnet.rtnl`: pyroute2's message classes, one socket, lazy replies.

* Requests are built with pyroute2's low-level message classes (``ifinfmsg``,
  ``ifaddrmsg``, ``rtmsg``, ``ndmsg`` and the nested ``IFLA_LINKINFO`` encoders of each
  link kind): :func:`encode` gives the message body for :class:`Request`.
* Replies are not parsed by pyroute2 (it decodes every attribute of a message; a link
  message carries ~50): :func:`attrs` / :func:`attr_map` walk the attributes and decode
  no value; whoever reads a field decodes it (:func:`get_u32`, ...).
* :class:`Socket`: one ``NETLINK_ROUTE`` socket with extended ACKs (the kernel's error
  text), capped ACKs (errors do not echo the request back) and strict dump checking
  (``NETLINK_GET_STRICT_CHK``, Linux >= 4.20: dumps filtered by the request header).
  :meth:`Socket.transact` sends any number of requests in ONE ``send`` and reads every
  answer in one pass. The kernel handles the messages of one send in order and answers
  each on its own (``netlink_rcv_skb``: an ACK or an error per request with
  ``NLM_F_ACK``, whatever happened to the previous ones), so a batch of N requests costs
  one system call each way instead of N round trips.

Lean import: ``import pyroute2`` runs the package ``__init__``, which imports its whole
public API (NDB, IPRoute, IPDB, conntrack, ...; docs/perf.md). Only the message classes
are needed here, so :func:`_lean_pyroute2` puts the ``pyroute2`` package module in
``sys.modules`` without running that ``__init__`` (unless pyroute2 is imported already);
the first access of any other public name (``pyroute2.IPRoute``, ``from pyroute2 import
NDB``, ``pyroute2.__version__``, ``dir(pyroute2)``) runs the real ``__init__`` in that
same module object, so the rest of the process sees the full API. Only for the pyroute2
releases of :data:`PYROUTE2_SUPPORTED` (the range pyproject.toml pins and the tests
check); any other release is imported in full.

A socket belongs to the network namespace of the thread that created it, and is not
thread-safe.
"""

from __future__ import annotations

import _socket
import importlib
import importlib.machinery
import importlib.util
import os
import struct
import sys
import threading
from typing import Any

PYROUTE2_SUPPORTED = ((0, 9, 5), (0, 10))  # [low, high): pyproject.toml's pin


def _version(text: str) -> tuple[int, ...]:
    """(0, 9, 7) from "0.9.7" (leading digits of each part; stops at the first part without)."""
    out = []
    for part in text.split("."):
        digits = part[:len(part) - len(part.lstrip("0123456789"))]
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _lean_pyroute2() -> None:
    """Register the ``pyroute2`` package module without executing its ``__init__`` (see
    the module doc); the real ``__init__`` runs on the first access of a public name."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # the ordinary import reports it
    pkg = importlib.util.module_from_spec(spec)
    lock = threading.RLock()
    state = {"full": False}

    def full() -> None:
        with lock:  # other threads wait here until the __init__ has run
            if state["full"]:
                return
            state["full"] = True
            try:
                spec.loader.exec_module(pkg)  # type: ignore[union-attr]
            finally:
                for name in ("__getattr__", "__dir__"):
                    if pkg.__dict__.get(name) in (__getattr__, __dir__):
                        del pkg.__dict__[name]

    def __getattr__(name: str) -> Any:  # PEP 562: only names the module lacks (so far)
        if name.startswith("__") and name.endswith("__") and name not in ("__all__", "__version__"):
            raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")  # import machinery probes
        if not state["full"] and importlib.machinery.PathFinder.find_spec(f"pyroute2.{name}", pkg.__path__):
            return importlib.import_module(f"pyroute2.{name}")  # a submodule: just that one
        full()
        try:
            return pkg.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'pyroute2' has no attribute {name!r}") from None

    def __dir__() -> list[str]:
        full()
        return sorted(pkg.__dict__)

    pkg.__getattr__ = __getattr__  # type: ignore[attr-defined]
    pkg.__dir__ = __dir__  # type: ignore[attr-defined]
    sys.modules["pyroute2"] = pkg
    try:
        from pyroute2.config.version import __version__ as version
    except ImportError:
        version = ""
    low, high = PYROUTE2_SUPPORTED
    if not low <= _version(version) < high:
        full()  # a release this lean import was not checked against: the plain import


_lean_pyroute2()

from pyroute2.netlink import nla, nlmsg  # noqa: E402
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg  # noqa: E402,F401  (rtnl builds with these)
from pyroute2.netlink.rtnl.ifinfmsg import ifinfbase, ifinfmsg  # noqa: E402,F401
from pyroute2.netlink.rtnl.ndmsg import ndmsg  # noqa: E402,F401
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # noqa: E402,F401


class ipvlan_data(nla):
    """IFLA_INFO_DATA of an ipvlan link: pyroute2 0.9's ``ipvlan`` class lacks
    IFLA_IPVLAN_FLAGS (Linux >= 4.15), and an attribute a class lacks is not sent."""

    prefix = "IFLA_"
    nla_map = (("IFLA_IPVLAN_UNSPEC", "none"), ("IFLA_IPVLAN_MODE", "uint16"), ("IFLA_IPVLAN_FLAGS", "uint16"))


class linkinfo(ifinfmsg.ifinfo):
    """pyroute2's IFLA_LINKINFO, the kind data classes of :class:`ipvlan_data` added."""

    data_map = {**ifinfmsg.ifinfo.data_map, "ipvlan": ipvlan_data}


class linkmsg(ifinfbase, nlmsg):
    """pyroute2's ``ifinfmsg`` (built the same way: ``ifinfbase`` + ``nlmsg``) with two
    changes: IFLA_LINKINFO is :class:`linkinfo`, and IFLA_IFALIAS is sent without a
    trailing NUL (as iproute2 does: the kernel refuses a 255-byte alias plus a NUL)."""

    nla_map = tuple(("IFLA_IFALIAS", "string") if e[0] == "IFLA_IFALIAS" else e for e in ifinfbase.nla_map)
    ifinfo = linkinfo


def encode(cls: type, attrs: list | tuple = (), **fields: Any) -> bytes:
    """The body (after the netlink header, which :class:`Socket` writes) of a pyroute2
    message of class ``cls`` with these header ``fields`` and attributes (pyroute2
    names and values: ``[("IFLA_IFNAME", "eth0"), ...]``)."""
    msg = cls()
    for key, value in fields.items():
        msg[key] = value
    msg["attrs"] = list(attrs)
    msg.encode()
    return bytes(msg.data[16:])


NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_ECHO = 0x8
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLM_F_CAPPED = 0x100  # in an NLMSG_ERROR: the request was not copied back
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR / NLMSG_DONE: extended ACK attributes follow

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSGERR_ATTR_MSG = 1

NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

HDR = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
_NLA = struct.Struct("=HH")
_I32 = struct.Struct("=i")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_BE16 = struct.Struct(">H")

RECV_SIZE = 1 << 16  # > the kernel's largest dump message (32 KiB, netlink_dump)


# -- reading replies -----------------------------------------------------------------------
def attrs(data: bytes, offset: int = 0, end: int | None = None):
    """(type, payload) of each attribute of ``data[offset:end]``; values stay undecoded."""
    end = len(data) if end is None else end
    unpack = _NLA.unpack_from
    while offset + 4 <= end:
        size, kind = unpack(data, offset)
        if size < 4:
            return
        yield kind & NLA_TYPE_MASK, data[offset + 4:offset + size]
        offset += (size + 3) & ~3


def attr_map(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """type -> payload (the last one of each type)."""
    out: dict[int, bytes] = {}
    end = len(data)
    unpack = _NLA.unpack_from
    while offset + 4 <= end:
        size, kind = unpack(data, offset)
        if size < 4:
            break
        out[kind & NLA_TYPE_MASK] = data[offset + 4:offset + size]
        offset += (size + 3) & ~3
    return out


def get_u8(payload: bytes) -> int:
    return payload[0]


def get_u16(payload: bytes) -> int:
    return _U16.unpack_from(payload)[0]


def get_u32(payload: bytes) -> int:
    return _U32.unpack_from(payload)[0]


def get_i32(payload: bytes) -> int:
    return _I32.unpack_from(payload)[0]


def get_be16(payload: bytes) -> int:
    return _BE16.unpack_from(payload)[0]


def get_str(payload: bytes) -> str:
    return payload.split(b"\0", 1)[0].decode(errors="replace")


# -- requests ----------------------------------------------------------------------------
class Request:
    """One request and, after :meth:`Socket.transact`, its answer.

    ``body``: the message after the netlink header (:func:`encode`). ``replies``: the
    bodies of the data messages the kernel sent for it (a dump's entries, a GET's
    answer, an ``NLM_F_ECHO`` copy), with their message types in ``types``. ``error``: 0
    or a positive errno; ``extack``: the kernel's explanation of an error, if it gave
    one. ``interrupted``: a dump saw ``NLM_F_DUMP_INTR`` (the table changed while it was
    read; ask again).
    """

    __slots__ = ("msg_type", "flags", "dump", "body", "replies", "types", "error", "extack", "interrupted", "seq")

    def __init__(self, msg_type: int, flags: int, body: bytes, dump: bool = False) -> None:
        self.msg_type = msg_type
        self.flags = flags | NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        self.dump = dump
        self.body = body
        self.replies: list[bytes] = []
        self.types: list[int] = []
        self.error = 0
        self.extack: str | None = None
        self.interrupted = False
        self.seq = 0

    def reset(self) -> None:
        self.replies, self.types = [], []
        self.error, self.extack, self.interrupted = 0, None, False

    def strerror(self) -> str:
        text = os.strerror(self.error)
        return f"{text} ({self.extack})" if self.extack else text


class Socket:
    """One netlink socket in the calling thread's network namespace (requests only: no
    multicast groups)."""

    def __init__(self, protocol: int = NETLINK_ROUTE) -> None:
        sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, protocol)
        try:
            for opt in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):
                try:
                    sock.setsockopt(SOL_NETLINK, opt, 1)
                except OSError:
                    pass  # an older kernel: plain errors
            try:
                sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
                self.strict = True
            except OSError:
                self.strict = False  # < 4.20: dumps are not filtered (callers filter again)
            sock.bind((0, 0))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._buf = bytearray(RECV_SIZE)
        self._seq = int.from_bytes(os.urandom(2), "little") << 8  # unrelated to older sockets' answers

    def close(self) -> None:
        self._sock.close()

    def transact(self, requests: list[Request]) -> None:
        """Send ``requests`` in one datagram, then read until each one is answered.

        Fills in each request's ``replies`` / ``error``; never raises for an error the
        kernel reports about one request (``OSError`` only for the socket itself).
        At most one dump per call: the kernel runs one dump per socket at a time.
        """
        pending: dict[int, Request] = {}
        out = []
        for req in requests:
            self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
            req.seq = self._seq
            req.reset()
            pending[req.seq] = req
            out.append(HDR.pack(16 + len(req.body), req.msg_type, req.flags, req.seq, 0))
            out.append(req.body)
        self._sock.send(b"".join(out))
        buf = self._buf
        unpack = HDR.unpack_from
        while pending:
            n = self._sock.recv_into(buf, RECV_SIZE, _socket.MSG_TRUNC)
            if n > RECV_SIZE:
                raise OSError(90, "netlink: answer larger than the receive buffer")  # EMSGSIZE
            i = 0
            while i + 16 <= n:
                size, kind, flags, seq, _pid = unpack(buf, i)
                if size < 16 or i + size > n:
                    raise OSError(74, "netlink: malformed message")  # EBADMSG
                req = pending.get(seq)
                if req is not None:
                    if kind == NLMSG_ERROR or kind == NLMSG_DONE:
                        if size >= 20:
                            code = -_I32.unpack_from(buf, i + 16)[0]
                            if code > 0:
                                req.error = code
                                if flags & NLM_F_ACK_TLVS:
                                    req.extack = _extack(buf, i, size, kind, flags)
                        if flags & NLM_F_DUMP_INTR:
                            req.interrupted = True
                        del pending[seq]
                    else:
                        if flags & NLM_F_DUMP_INTR:
                            req.interrupted = True
                        req.types.append(kind)
                        req.replies.append(bytes(buf[i + 16:i + size]))
                i += (size + 3) & ~3


def _extack(buf: bytearray, i: int, size: int, kind: int, flags: int) -> str | None:
    """NLMSGERR_ATTR_MSG of an error (after the errno and the request's header, or the
    whole request unless capped) or of an NLMSG_DONE (after the errno)."""
    offset = i + 20
    if kind == NLMSG_ERROR:
        if flags & NLM_F_CAPPED:
            offset += 16
        else:
            offset += (HDR.unpack_from(buf, offset)[0] + 3) & ~3
    msg = attr_map(bytes(buf[offset:i + size])).get(NLMSGERR_ATTR_MSG)
    return get_str(msg) if msg else None
