"""CNI error codes and the one place where exceptions become CNI error JSON."""

from __future__ import annotations

# Codes defined by the CNI specification (SPEC.md "Error").
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
INVALID_NETNS = 8  # libcni only: the plugin's own netns is CNI_NETNS
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50  # STATUS
NOT_AVAILABLE_LIMITED = 51  # STATUS: existing containers may have limited connectivity

# splice's own codes (>= 100).
INTERNAL = 100
POOL_EXHAUSTED = 101
ADDRESS_UNAVAILABLE = 102
KERNEL = 103
INTERFACE_EXISTS = 104
CHECK_FAILED = 105
DELEGATE_FAILED = 106
PORT_IN_USE = 107  # portmap: the host port is published by another container


class CniError(Exception):
    """An error to print as ``{"cniVersion", "code", "msg", "details"}``."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict:
        out: dict = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def from_exception(exc: BaseException) -> CniError:
    """Map any exception raised below the front-end to a CniError (never a traceback)."""
    if isinstance(exc, CniError):
        return exc
    # Imports are local: the executables' import path stays lean on the VERSION path.
    from splice.ipam import errors as ie
    from splice.libnet import errors as ne
    from splice.plugins import errors as pe

    msg = getattr(exc, "msg", None) or str(exc) or exc.__class__.__name__
    details = getattr(exc, "details", "") or ""
    table: list[tuple[type, int]] = [
        (pe.UnsupportedField, UNSUPPORTED_FIELD),
        (pe.ConfigError, INVALID_CONFIG),
        (pe.InterfaceExists, INTERFACE_EXISTS),
        (pe.CheckFailed, CHECK_FAILED),
        (pe.TryAgainLater, TRY_AGAIN_LATER),
        (pe.KernelError, KERNEL),
        (ie.IpamConfigError, INVALID_CONFIG),
        (ie.PoolExhausted, POOL_EXHAUSTED),
        (ie.AddressUnavailable, ADDRESS_UNAVAILABLE),
        (ie.StoreBusy, TRY_AGAIN_LATER),
        (ie.StoreError, INTERNAL),
        (ne.TryAgain, TRY_AGAIN_LATER),
        (ne.NetnsNotFound, UNKNOWN_CONTAINER),
        (ne.NetError, KERNEL),
    ]
    for cls, code in table:
        if isinstance(exc, cls):
            return CniError(code, msg, details)
    return CniError(INTERNAL, f"internal error: {exc.__class__.__name__}: {msg}")
