"""The port-mapping driver: publishes an attachment's ports in the host namespace.

Protocol-neutral (the CNI ``splice-portmap`` plugin and the Docker driver's
``ProgramExternalConnectivity`` both call it): it takes :mod:`splice.plugins.model`
objects and a host :class:`~splice.libnet.netns.Netns`, runs
:class:`splice.libnet.portmap.publisher.PortPublisher` inside it, and turns its errors into
driver errors. Owner of the elements: ``"<sha256(network)[:8]> <container id> <ifname>"``
(design.md), the tag the bridge's masquerade entries carry too.
"""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface
from typing import TYPE_CHECKING, Any, Iterable

from splice.libnet.errors import NetError
from splice.libnet.names import truncate_utf8
from splice.libnet.netns import Netns
from splice.libnet.portmap.model import PortConflict, Published, sha256_hex
from splice.libnet.portmap.publisher import PortPublisher
from splice.plugins.errors import CheckFailed, KernelError, SpliceError
from splice.plugins.portmap.conditions import conditions_for
from splice.plugins.portmap.config import PortmapConfig
from splice.plugins.portmap.mapping import expand

if TYPE_CHECKING:  # the model is not imported at run time (import cost of a CNI process)
    from splice.plugins.model import Attachment, IPConfig

MAX_OWNER = 127


class PortInUse(SpliceError):
    """A host port is already published by another attachment (nothing was changed)."""

    def __init__(self, msg: str, owner: str | None = None) -> None:
        super().__init__(msg)
        self.owner = owner


def net8(network: str) -> str:
    return sha256_hex(network)[:8]


def owner_tag(network: str, container_id: str, ifname: str) -> str:
    return truncate_utf8(f"{net8(network)} {container_id} {ifname}", MAX_OWNER)


def gc_prefix(network: str) -> str:
    return net8(network) + " "


def describe_owner(owner: str | None) -> str:
    """``"<net8> <cid> <ifname>"`` -> ``container <cid> (interface <ifname>, network <net8>)``."""
    parts = (owner or "").split(" ")
    if len(parts) == 3 and all(parts):
        return f"container {parts[1]} (interface {parts[2]}, network {parts[0]})"
    return repr(owner) if owner else "another container"


def _addresses(ips: Iterable[Any] | None) -> list[Any] | None:
    if ips is None:
        return None
    out = []
    for ip in ips:
        a = getattr(ip, "address", ip)
        if isinstance(a, (IPv4Interface, IPv6Interface)):
            out.append(a)
    return out


class PortmapDriver:
    def __init__(self, cfg: PortmapConfig, host: Netns) -> None:
        self.cfg = cfg
        self.host = host
        self.warnings: list[str] = []

    def _run(self, fn) -> Any:
        def body() -> Any:
            pub = PortPublisher()
            try:
                return fn(pub)
            finally:
                self.warnings += pub.warnings

        try:
            return self.host.run(body)
        except PortConflict as e:
            theirs = describe_owner(e.owner)
            msg = (f"{e.what} conflicts with {e.held}, already published by {theirs}" if e.held
                   else f"{e.what} is already published by {theirs}")
            raise PortInUse(msg, e.owner) from None
        except SpliceError:
            raise
        except NetError:
            raise
        except OSError as e:
            raise KernelError(f"port mapping: {e}") from None

    def add(self, att: "Attachment", ips: Iterable["IPConfig | Any"]) -> list[Published]:
        """Publish the configured mappings to the attachment's addresses."""
        cfg = self.cfg
        if not cfg.mappings:
            return []
        owner = owner_tag(att.network, att.container_id, att.ifname)
        addrs = _addresses(ips) or []
        entries = expand(cfg.mappings, addrs)
        conds = conditions_for(cfg.conditions_v4, cfg.conditions_v6)
        return self._run(lambda pub: pub.publish(owner, entries, snat=cfg.snat, masq_all=cfg.masq_all, conditions=conds))

    def delete(self, att: "Attachment", ips: Iterable["IPConfig | Any"] | None) -> None:
        """Remove the attachment's mappings; idempotent. Without ``ips`` (no prevResult)
        every element of the attachment is found by its owner tag (lists the table)."""
        cfg = self.cfg
        if not cfg.mappings:
            return
        owner = owner_tag(att.network, att.container_id, att.ifname)
        addrs = _addresses(ips)
        if not addrs:
            addrs = None
        entries = expand(cfg.mappings, addrs) if addrs else None
        conds = conditions_for(cfg.conditions_v4, cfg.conditions_v6)
        self._run(lambda pub: pub.unpublish(owner, entries, snat=cfg.snat, conditions=conds))

    def check(self, att: "Attachment", ips: Iterable["IPConfig | Any"]) -> None:
        cfg = self.cfg
        if not cfg.mappings:
            return
        owner = owner_tag(att.network, att.container_id, att.ifname)
        addrs = _addresses(ips) or []
        entries = expand(cfg.mappings, addrs)
        conds = conditions_for(cfg.conditions_v4, cfg.conditions_v6)
        problems = self._run(lambda pub: pub.check(owner, entries, snat=cfg.snat, masq_all=cfg.masq_all,
                                                   conditions=conds))
        if problems:
            raise CheckFailed("; ".join(problems))

    def gc(self, network: str, valid: set[tuple[str, str]]) -> list[str]:
        """Remove the mappings of ``network``'s attachments not in ``valid`` (cid, ifname)."""
        keep = {owner_tag(network, cid, ifn) for cid, ifn in valid}
        return self._run(lambda pub: pub.gc(gc_prefix(network), keep.__contains__))

    def status(self) -> None:
        self._run(lambda pub: pub.status())
