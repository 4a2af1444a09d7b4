"""Interface names and MAC addresses: validation and generation (no kernel access).

Kept apart from rtnl.py so that configuration parsing can validate names without
importing pyroute2.
"""

from __future__ import annotations

import os
import re

IFNAMSIZ = 16  # including the terminating NUL: names have at most 15 bytes

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def ifname_problem(name: object) -> str | None:
    """Why ``name`` is not a valid Linux interface name, or None when it is.

    Mirrors the kernel's ``dev_valid_name()``: 1..15 bytes, not ``.``/``..``, no ``/``,
    ``:`` or whitespace.
    """
    if not isinstance(name, str):
        return "must be a string"
    if not name:
        return "must not be empty"
    if len(name.encode()) >= IFNAMSIZ:
        return f"is longer than {IFNAMSIZ - 1} bytes"
    if name in (".", ".."):
        return "must not be '.' or '..'"
    for ch in name:
        if ch in "/:" or ch.isspace() or ch == "\0":
            return f"must not contain {ch!r}"
    return None


def valid_ifname(name: object) -> bool:
    return ifname_problem(name) is None


def normalize_mac(mac: str) -> str:
    """Lower-case ``aa:bb:cc:dd:ee:ff``; raises ValueError for anything else.

    Also rejects multicast addresses (a unicast interface address is required) and the
    all-zero address.
    """
    if not isinstance(mac, str):
        raise ValueError(f"invalid MAC address {mac!r}")
    m = mac.strip().replace("-", ":")
    if not _MAC_RE.match(m):
        raise ValueError(f"invalid MAC address {mac!r}")
    m = m.lower()
    first = int(m[:2], 16)
    if first & 0x01:
        raise ValueError(f"invalid MAC address {mac!r}: multicast bit set")
    if m == "00:00:00:00:00:00":
        raise ValueError(f"invalid MAC address {mac!r}: all zero")
    return m


def random_mac() -> str:
    """A random unicast, locally administered MAC (what the kernel's ``eth_random_addr`` makes)."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def truncate_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, never inside a character."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")
