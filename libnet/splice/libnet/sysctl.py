"""Network sysctls through ``/proc/sys/net`` of the calling thread's namespace.

``/proc/sys/net`` is resolved against the network namespace of the thread that opens
the file, so these functions act on whichever namespace the caller runs in: call them
inside :meth:`splice.libnet.netns.Netns.run` of the namespace you mean. (``/sys`` is
different: it is bound at mount time and does not follow the thread.)

Keys are slash-separated paths relative to ``/proc/sys/net``, e.g.
``"ipv4/ip_forward"`` or ``"ipv6/conf/eth0/accept_dad"``; an interface name keeps its
dots (``"ipv6/conf/cni0.100/accept_ra"``), unlike the ``sysctl`` tool's dotted keys.
"""

from __future__ import annotations

import errno
import os

from .errors import NetError, NotSupported

ROOT = "/proc/sys/net"


def path(key: str) -> str:
    """Absolute path of a key; rejects anything that could escape ``/proc/sys/net``."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts) or "\0" in key:
        raise ValueError(f"invalid network sysctl key {key!r}")
    return f"{ROOT}/{key}"


def read(key: str) -> str:
    """The value of a key, stripped. Missing key → :class:`NotSupported`."""
    p = path(key)
    try:
        with open(p, "r") as f:
            return f.read().strip()
    except FileNotFoundError:
        raise NotSupported(f"sysctl net/{key} does not exist") from None
    except OSError as e:
        raise NetError(f"cannot read sysctl net/{key}: {e.strerror}") from None


def write(key: str, value: str | int) -> None:
    """Write a key. Missing key → :class:`NotSupported`; other failures → :class:`NetError`."""
    p = path(key)
    data = f"{value}\n".encode()
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotSupported(f"sysctl net/{key} does not exist") from None
    except OSError as e:
        raise NetError(f"cannot open sysctl net/{key}: {e.strerror}") from None
    try:
        os.write(fd, data)
    except OSError as e:
        if e.errno == errno.EINVAL:
            raise NetError(f"sysctl net/{key}: invalid value {value!r}") from None
        raise NetError(f"cannot write sysctl net/{key}: {e.strerror}") from None
    finally:
        os.close(fd)


def ensure(key: str, value: str | int) -> bool:
    """Set a key to ``value`` unless it already has it; True when it was written.

    Reading first keeps repeated calls cheap and avoids needless writes (some keys,
    such as ``ipv4/ip_forward``, reset other settings on every write).
    """
    want = str(value)
    if read(key) == want:
        return False
    write(key, want)
    return True


def try_ensure(key: str, value: str | int) -> bool:
    """:func:`ensure`, ignoring a missing key (e.g. IPv6 disabled); True when written."""
    try:
        return ensure(key, value)
    except NotSupported:
        return False
