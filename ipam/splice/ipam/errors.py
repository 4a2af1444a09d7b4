"""IPAM errors (protocol-neutral)."""

from __future__ import annotations


class IpamError(Exception):
    """Base class of every IPAM error."""

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


class IpamConfigError(IpamError):
    """The IPAM configuration is invalid (bad subnet, range outside subnet, ...)."""


class PoolExhausted(IpamError):
    """No free address is left in a range set."""


class AddressUnavailable(IpamError):
    """A requested address is taken, reserved (gateway), or outside every range; or the
    attachment already holds an address in that range set."""


class StoreBusy(IpamError):
    """The store's lock could not be taken in time (transient: try again later)."""


class StoreError(IpamError):
    """The store is unusable (unreadable, corrupt, not writable)."""
