"""CNI error JSON: :class:`CniError` and the one place where exceptions become one.

The codes and the exception -> code table live in :mod:`splice.plugins.errors` (shared with
the Docker front-end); this module only adds what is CNI's alone.
"""

from __future__ import annotations

from splice.plugins.errors import (  # noqa: F401  (re-exported: the CNI codes)
    ADDRESS_UNAVAILABLE,
    CHECK_FAILED,
    DECODE_FAILURE,
    DELEGATE_FAILED,
    INCOMPATIBLE_VERSION,
    INTERFACE_EXISTS,
    INTERNAL,
    INVALID_CONFIG,
    INVALID_ENVIRONMENT,
    IO_FAILURE,
    KERNEL,
    POOL_EXHAUSTED,
    PORT_IN_USE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    UNSUPPORTED_FIELD,
)

__all__ = [
    "ADDRESS_UNAVAILABLE", "CHECK_FAILED", "DECODE_FAILURE", "DELEGATE_FAILED", "INCOMPATIBLE_VERSION",
    "INTERFACE_EXISTS", "INTERNAL", "INVALID_CONFIG", "INVALID_ENVIRONMENT", "IO_FAILURE", "KERNEL",
    "POOL_EXHAUSTED", "PORT_IN_USE", "TRY_AGAIN_LATER", "UNKNOWN_CONTAINER", "UNSUPPORTED_FIELD",
    "INVALID_NETNS", "NOT_AVAILABLE", "NOT_AVAILABLE_LIMITED", "CniError", "from_exception",
]

INVALID_NETNS = 8  # libcni only: the plugin's own netns is CNI_NETNS
NOT_AVAILABLE = 50  # STATUS
NOT_AVAILABLE_LIMITED = 51  # STATUS: existing containers may have limited connectivity


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
        notes = getattr(exc, "__notes__", None)
        if notes:
            exc.details = "; ".join([exc.details, *notes] if exc.details else notes)
            exc.__notes__ = []
        return exc
    from splice.plugins.errors import classify

    code, _status, msg, details = classify(exc)
    return CniError(code, msg, details)
