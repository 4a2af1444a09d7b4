"""`splice-portmap`: the CNI front-end of the port-mapping driver (a chained plugin).

Behaviour of the reference ``portmap`` (containernetworking/plugins plugins/meta/portmap): capability ``portMappings``
(``runtimeConfig.portMappings``); without ``prevResult`` ADD fails with "must be called as
chained plugin"; without mappings ADD passes ``prevResult`` through and DEL does nothing;
the container addresses are the first IPv4 and first IPv6 address of the sandbox
interface ``CNI_IFNAME`` in ``prevResult``. Differences: a port another attachment already
publishes is an error (code 107, naming the owner; nothing changed) instead of silent
shadowing; DEL works without ``prevResult`` (the attachment's elements are found by owner);
GC removes the mappings of attachments not in the valid list; STATUS checks nftables.

Import-light: VERSION loads only this module; the driver (nftables, ipaddress) is
imported inside the verbs, pyroute2 never.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing import on the VERSION path (bench/startup.py); annotations are strings

from splice.plugins.cni.version import ALL_VERSIONS

if TYPE_CHECKING:
    from typing import Any
    from splice.plugins.cni.skel import CmdArgs


class _Attachment:
    """What the driver reads of an attachment (duck-typed ``model.Attachment``: importing
    the model's dataclasses would add to every short-lived process's start-up)."""

    __slots__ = ("network", "container_id", "ifname", "netns")

    def __init__(self, network: str, container_id: str, ifname: str, netns: str | None) -> None:
        self.network, self.container_id, self.ifname, self.netns = network, container_id, ifname, netns


def _attachment(a: "CmdArgs") -> _Attachment:
    return _Attachment(a.config["name"], a.container_id or "", a.ifname or "", a.netns or None)


def sandbox_addresses(result: dict | None, ifname: str | None) -> list[Any] | None:
    """Addresses of the sandbox interface ``ifname`` in a canonical result, as ip_interface
    objects (None without a result). As the reference: an ``ips`` entry pointing at a host
    interface or at another interface is skipped; one without ``interface`` is kept."""
    if result is None:
        return None
    import ipaddress

    ifaces = result.get("interfaces") or []
    out = []
    for ip in result.get("ips") or []:
        idx = ip.get("interface")
        if isinstance(idx, int) and 0 <= idx < len(ifaces):
            iface = ifaces[idx]
            if iface.get("name") != ifname or not iface.get("sandbox"):
                continue
        try:
            out.append(ipaddress.ip_interface(ip["address"]))
        except (KeyError, ValueError):
            continue
    return out


class PortmapPlugin:
    name = "splice-portmap"
    supported_versions = ALL_VERSIONS
    cni_args: frozenset[str] = frozenset()

    def _service(self, a: "CmdArgs") -> "tuple[Any, Any, list[str]]":
        """(config, the port-publishing service, the host interfaces of prevResult)."""
        from splice.plugins.portmap.config import parse_portmap_config
        from splice.plugins.portmap.driver import PortmapDriver, host_interfaces

        cfg = parse_portmap_config(a.config)  # validates the whole config first
        return cfg, PortmapDriver(a.host_ns()), host_interfaces((a.prev_result or {}).get("interfaces"))

    def _call(self, service: Any, fn) -> Any:
        """Run one service call; its warnings go to stderr (runtimes log plugin stderr).
        Errors (PortInUse: code 107) are mapped by the one error table."""
        import sys

        try:
            return fn()
        finally:
            for w in service.warnings:
                print(f"{self.name}: warning: {w}", file=sys.stderr)

    def add(self, a: "CmdArgs") -> dict:
        from splice.plugins.errors import ConfigError

        cfg, svc, ifaces = self._service(a)
        if a.prev_result is None:
            raise ConfigError("must be called as chained plugin")
        if cfg.mappings:
            addrs = sandbox_addresses(a.prev_result, a.ifname) or []
            self._call(svc, lambda: svc.publish(_attachment(a), cfg.mappings, addrs, cfg.options, ifaces))
        return a.prev_result

    def delete(self, a: "CmdArgs") -> None:
        cfg, svc, ifaces = self._service(a)
        if not cfg.mappings:
            return
        addrs = sandbox_addresses(a.prev_result, a.ifname)
        self._call(svc, lambda: svc.unpublish(_attachment(a), cfg.mappings if addrs else None, addrs or None,
                                              cfg.options, ifaces))

    def check(self, a: "CmdArgs") -> None:
        from splice.plugins.errors import ConfigError

        cfg, svc, ifaces = self._service(a)
        if a.prev_result is None:
            raise ConfigError("Required prevResult missing")
        if not cfg.mappings:
            return
        addrs = sandbox_addresses(a.prev_result, a.ifname) or []
        self._call(svc, lambda: svc.check(_attachment(a), cfg.mappings, addrs, cfg.options, ifaces))

    def status(self, a: "CmdArgs") -> None:
        _cfg, svc, _ = self._service(a)
        self._call(svc, svc.status)

    def gc(self, a: "CmdArgs") -> None:
        from splice.plugins.cni.skel import valid_attachments

        _cfg, svc, _ = self._service(a)
        valid = valid_attachments(a.config)
        self._call(svc, lambda: svc.gc(a.config["name"], valid))
