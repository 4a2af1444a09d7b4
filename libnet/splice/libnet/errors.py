"""Kernel-level exceptions. Front-ends map them to protocol errors in one place."""

from __future__ import annotations

import errno as _errno


class NetError(Exception):
    """Base class of every error raised by splice.libnet."""

    transient = False


class NetnsNotFound(NetError):
    """A network namespace path does not exist or is not a namespace."""


class LinkNotFound(NetError):
    """A link looked up by name or index does not exist."""


class LinkExists(NetError):
    """A link with that name already exists where we wanted to create one."""


class NameTaken(LinkExists):
    """The name an interface was to be renamed to is taken (e.g. ``ifname`` in a sandbox)."""


class Mismatch(NetError):
    """CHECK: the kernel differs from what ADD made (the message says how)."""


class NotSupported(NetError):
    """The running kernel lacks a feature (a link kind, a sysctl, an nft expression)."""


class NftError(NetError):
    """libnftables rejected a transaction."""


class TryAgain(NetError):
    """A transient condition (a concurrent creator, a busy resource): retry later."""

    transient = True


def from_errno(code: int, what: str) -> NetError:
    """Translate an errno from netlink or a syscall into a NetError subclass."""
    if code in (_errno.ENODEV, _errno.ENOENT):
        return LinkNotFound(what)
    if code == _errno.EEXIST:
        return LinkExists(what)
    if code in (_errno.EOPNOTSUPP, _errno.EAFNOSUPPORT, _errno.EPROTONOSUPPORT):
        return NotSupported(what)
    if code in (_errno.EBUSY, _errno.EAGAIN):
        return TryAgain(what)
    return NetError(f"{what}: {_errno.errorcode.get(code, code)}")
