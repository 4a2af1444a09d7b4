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


class HostOverlap(IpamConfigError):
    """A subnet of the configuration overlaps an address or a connected route of another
    host interface (refused unless the ipam config says ``"allowOverlap": true``)."""


class PoolExhausted(IpamError):
    """No free address is left in a range set."""


class AddressUnavailable(IpamError):
    """A requested address is taken, reserved (gateway), or outside every range; or the
    attachment already holds an address in that range set."""


class StoreBusy(IpamError):
    """The store's lock could not be taken in time (transient: try again later)."""


class StoreError(IpamError):
    """The store is unusable (unreadable, corrupt, not writable)."""


# -- the pool-keyed API (splice.ipam.pools) ---------------------------------------------


class InvalidRequest(IpamConfigError):
    """A malformed pool or address request (bad CIDR, sub-range outside its pool, address
    family mismatch, sub-range without a pool, bad address space name)."""


class PoolNotFound(IpamError):
    """No pool has this id (never requested, or released)."""


class PoolOverlaps(IpamError):
    """The requested pool overlaps (or is) a pool already registered in the address space."""


class NoMoreSubnets(PoolExhausted):
    """Every subnet of the default ranges overlaps a registered pool or an excluded prefix."""


class AddressOutOfRange(AddressUnavailable):
    """The address is not inside the pool's subnet."""
