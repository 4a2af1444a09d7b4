"""Every error a driver or service raises, and the one table that gives each its protocol form.

Drivers raise these (and libnet's :mod:`splice.libnet.errors`, ipam's
:mod:`splice.ipam.errors`); a front-end never maps an exception by itself: it asks
:func:`classify`, which reads :func:`table` — the CNI error code (CNI SPEC, "Error codes";
splice's own codes are >= 100) and the HTTP status of the Docker remote-driver answer
(``{"Err": msg}``; dockerd treats any non-200 status as an error and reads ``Err``).
"""

from __future__ import annotations


class SpliceError(Exception):
    """Base class of driver errors: a clear message and optional details."""

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


class ConfigError(SpliceError):
    """The network configuration is invalid (a bad value, a contradiction)."""


class UnsupportedField(ConfigError):
    """A configuration field this driver does not support (message names key and value)."""


class InvalidEnvironment(SpliceError):
    """The call's environment is invalid (an interface or container name the kernel cannot take)."""


class InterfaceExists(SpliceError):
    """The interface to create already exists in the sandbox."""


class CheckFailed(SpliceError):
    """CHECK found the attachment different from what ADD made."""


class TryAgainLater(SpliceError):
    """A transient condition (lock timeout, concurrent creator): the caller may retry."""


class KernelError(SpliceError):
    """The kernel refused an operation (netlink, nftables)."""


class PortInUse(SpliceError):
    """A host port is already published by another attachment (nothing was changed)."""

    def __init__(self, msg: str, owner: str | None = None) -> None:
        super().__init__(msg, "the host port is published by another container; nothing was changed")
        self.owner = owner


class NotAvailable(SpliceError):
    """STATUS: the plugin cannot serve ADDs now (the overlay's subnet lease is lost or not held)."""


class LimitedConnectivity(SpliceError):
    """STATUS: ADDs work, but existing containers may have limited connectivity (etcd out of
    reach: the lease is not renewed, peer changes are not seen)."""


class AgentRequired(SpliceError):
    """The plugin needs the resident agent (``splice agent``), e.g. the VXLAN overlay, whose
    subnet lease and peer watch live there."""


class MultipleErrors(SpliceError):
    """Several steps of a best-effort operation (DEL, GC) failed: every one is in
    ``errors`` and in ``details``; the message names the first."""

    def __init__(self, what: str, errors: list[BaseException]) -> None:
        first = errors[0]
        super().__init__(
            f"{what}: {len(errors)} failures, first: {_text(first)}",
            "; ".join(_text(e) for e in errors),
        )
        self.errors = list(errors)


def _text(e: BaseException) -> str:
    return getattr(e, "msg", None) or str(e) or e.__class__.__name__


# CNI codes (CNI SPEC "Error codes"; >= 100 are splice's own).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
INTERNAL = 100
POOL_EXHAUSTED = 101
ADDRESS_UNAVAILABLE = 102
KERNEL = 103
INTERFACE_EXISTS = 104
CHECK_FAILED = 105
DELEGATE_FAILED = 106
PORT_IN_USE = 107
AGENT_REQUIRED = 108
NOT_AVAILABLE = 50  # STATUS (CNI SPEC)
LIMITED_CONNECTIVITY = 51

_TABLE: list[tuple[type, int, int]] | None = None


def table() -> list[tuple[type, int, int]]:
    """``(exception class, CNI code, HTTP status)``, most specific first."""
    global _TABLE
    if _TABLE is None:
        # imported here: a CNI process loads the lower layers' errors only on an error
        from splice.ipam import errors as ie
        from splice.libnet import errors as ne

        _TABLE = [
            (UnsupportedField, UNSUPPORTED_FIELD, 400),
            (ConfigError, INVALID_CONFIG, 400),
            (InvalidEnvironment, INVALID_ENVIRONMENT, 400),
            (InterfaceExists, INTERFACE_EXISTS, 409),
            (PortInUse, PORT_IN_USE, 409),
            (NotAvailable, NOT_AVAILABLE, 503),
            (LimitedConnectivity, LIMITED_CONNECTIVITY, 503),
            (AgentRequired, AGENT_REQUIRED, 503),
            (CheckFailed, CHECK_FAILED, 500),
            (TryAgainLater, TRY_AGAIN_LATER, 503),
            (KernelError, KERNEL, 500),
            (MultipleErrors, KERNEL, 500),
            (ie.IpamConfigError, INVALID_CONFIG, 400),
            *_cluster_rows(),
            (ie.PoolExhausted, POOL_EXHAUSTED, 507),
            (ie.AddressUnavailable, ADDRESS_UNAVAILABLE, 409),
            (ie.StoreBusy, TRY_AGAIN_LATER, 503),
            (ie.StoreError, INTERNAL, 500),
            (ie.IpamError, INTERNAL, 500),
            (ne.NameTaken, INTERFACE_EXISTS, 409),
            (ne.Mismatch, CHECK_FAILED, 500),
            (ne.TryAgain, TRY_AGAIN_LATER, 503),
            (ne.NetnsNotFound, UNKNOWN_CONTAINER, 404),
            (ne.NetError, KERNEL, 500),
        ]
        at = next(n for n, row in enumerate(_TABLE) if row[0] is ie.IpamConfigError)
        for name, code, status in (("PoolNotFound", INVALID_CONFIG, 404), ("PoolOverlaps", INVALID_CONFIG, 409)):
            cls = getattr(ie, name, None)  # the pool-keyed API's errors, where present
            if cls is not None:  # before IpamConfigError: they may derive from it
                _TABLE.insert(at, (cls, code, status))
    return _TABLE


def _cluster_rows() -> list[tuple[type, int, int]]:
    """The cluster store's error that has a form of its own: a subnet another host took (an ADD
    refused, code 50). Its other errors classify by their ipam bases."""
    try:
        from splice.ipam.cluster.errors import SubnetTaken
    except ImportError:
        return []
    return [(SubnetTaken, NOT_AVAILABLE, 409)]


def classify(exc: BaseException) -> tuple[int, int, str, str]:
    """``(CNI code, HTTP status, message, details)`` of any exception; never raises.

    Notes added to the exception (``add_note``, e.g. what a rollback could not undo) are
    appended to the details: nothing a caller should know is dropped."""
    msg = getattr(exc, "msg", None) or str(exc) or exc.__class__.__name__
    details = getattr(exc, "details", "") or ""
    notes = getattr(exc, "__notes__", None)
    if notes:
        details = "; ".join([details, *notes] if details else notes)
    for cls, code, status in table():
        if isinstance(exc, cls):
            return code, status, msg, details
    return INTERNAL, 500, f"internal error: {exc.__class__.__name__}: {msg}", details
