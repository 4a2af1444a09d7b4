"""IPAM for upper plugins: ``splice-ipam`` in-process, any other type from CNI_PATH.

Rolling back a failed ADD (IPAM DEL) is the caller's job, not this module's.
"""

from __future__ import annotations

from splice.plugins.errors import ConfigError

IN_PROCESS = "splice-ipam"


def has_ipam(config: dict) -> bool:
    """True unless the config has no ``ipam`` or an empty one (``{}`` = L2 only)."""
    return bool(config.get("ipam"))


def ipam_type(config: dict) -> str:
    """``config["ipam"]["type"]``; ConfigError (code 7) if missing or not a string."""
    ipam = config.get("ipam")
    if not isinstance(ipam, dict):
        raise ConfigError("missing ipam section" if ipam is None else "ipam must be an object")
    t = ipam.get("type")
    if not isinstance(t, str) or not t:
        raise ConfigError("ipam has no type")
    return t


def _local():
    from splice.plugins.cni import ipam_plugin

    return ipam_plugin


def _delegate(command: str, a, t: str):
    from splice.plugins.cni.delegate import delegate

    return delegate(command, t, a)


def ipam_add(a) -> dict:
    """Allocate: the canonical (1.1.0-shaped) IPAM result."""
    t = ipam_type(a.config)
    if t == IN_PROCESS:
        return _local().ipam_add(a)
    result = _delegate("ADD", a, t)
    assert result is not None
    return result


def ipam_del(a) -> list:
    """Release: the released leases (in-process) or [] (delegated)."""
    t = ipam_type(a.config)
    if t == IN_PROCESS:
        return list(_local().ipam_del(a) or [])
    _delegate("DEL", a, t)
    return []


def ipam_check(a) -> list:
    """CHECK the IPAM; returns splice-ipam's leases (our own addresses), [] for a delegate."""
    t = ipam_type(a.config)
    if t == IN_PROCESS:
        return list(_local().ipam_check(a) or [])
    _delegate("CHECK", a, t)
    return []


def ipam_status(a) -> None:
    t = ipam_type(a.config)
    if t == IN_PROCESS:
        _local().ipam_status(a)
    else:
        _delegate("STATUS", a, t)


def ipam_gc(a) -> None:
    t = ipam_type(a.config)
    if t == IN_PROCESS:
        _local().ipam_gc(a)
    else:
        _delegate("GC", a, t)
