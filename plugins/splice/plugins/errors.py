"""Protocol-neutral driver errors. Each front-end (CNI, CNM) maps them once."""

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


class InterfaceExists(SpliceError):
    """The interface to create already exists in the sandbox."""


class CheckFailed(SpliceError):
    """CHECK found the attachment different from what ADD made."""


class TryAgainLater(SpliceError):
    """A transient condition (lock timeout, concurrent creator): the caller may retry."""


class KernelError(SpliceError):
    """The kernel refused an operation (netlink, nftables)."""
