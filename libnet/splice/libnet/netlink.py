"""Netlink in the standard library: the wire format and one request/reply socket.

Just what :mod:`splice.libnet.rtnl` needs (see netlink(7), rtnetlink(7) and the kernel's
``include/uapi/linux/netlink.h``):

* attributes: :func:`attr` and :func:`nest` build them, :func:`attrs` / :func:`attr_map`
  read them without decoding any value (values are decoded by whoever asks for one);
* :class:`Socket`: one ``NETLINK_ROUTE`` socket with extended ACKs (the kernel's error
  text), capped ACKs (errors do not echo the request back) and strict dump checking
  (``NETLINK_GET_STRICT_CHK``, Linux >= 4.20: dumps filtered by the request header);
* :meth:`Socket.transact` sends any number of requests in ONE ``send`` and reads every
  answer in one pass. The kernel handles the messages of one send in order and
  answers each on its own (``netlink_rcv_skb``: an ACK or an error per request with
  ``NLM_F_ACK``, whatever happened to the previous ones), so a batch of N requests costs
  one system call each way instead of N round trips.

A socket belongs to the network namespace of the thread that created it, and is not
thread-safe.
"""

from __future__ import annotations

import _socket
import os
import struct

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


# -- attributes --------------------------------------------------------------------------
def attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return _NLA.pack(size, kind) + payload + b"\0" * (-size % 4)


def nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def u8(kind: int, value: int) -> bytes:
    return attr(kind, bytes((value,)))


def u16(kind: int, value: int) -> bytes:
    return attr(kind, _U16.pack(value))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def be16(kind: int, value: int) -> bytes:
    return attr(kind, _BE16.pack(value))


def strz(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


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

    ``replies``: the bodies (after the netlink header) of the data messages the kernel
    sent for it (a dump's entries, a GET's answer, an ``NLM_F_ECHO`` copy), with their
    message types in ``types``. ``error``: 0 or a positive errno; ``extack``: the
    kernel's explanation of an error, if it gave one. ``interrupted``: a dump saw
    ``NLM_F_DUMP_INTR`` (the table changed while it was read; ask again).
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
