"""The port-publishing service: publishes an attachment's ports in the host namespace.

Protocol-neutral: the CNI ``splice-portmap`` plugin and the Docker driver's
``ProgramExternalConnectivity`` / ``RevokeExternalConnectivity`` call the same methods,
with the mappings and the options given per call (Docker hands them over per endpoint,
not in a network config)::

    svc = PortmapDriver(host)                       # host: a Netns
    svc.publish(att, mappings, addresses, options, host_ifaces)  # -> list[Published]; PortInUse, ConfigError
    svc.unpublish(att, mappings, addresses, options, host_ifaces)  # None/None: every element of att
    svc.check(att, mappings, addresses, options, host_ifaces)    # CheckFailed
    svc.gc(network, valid)                          # valid: {(container id, ifname)}
    svc.status()
    svc.warnings                                    # best-effort steps that failed

``mappings``: :class:`~splice.plugins.portmap.mapping.PortMapping`; ``addresses``: the
container's addresses (``IPConfig``, ip_interface or ip address objects, strings);
``options``: :class:`~splice.plugins.portmap.config.PortmapOptions` (default: snat on);
``host_ifaces``: the attachment's host-side interfaces, its bridge first (optional, see
:func:`host_interfaces`): with overlapping subnets on two bridges the routing table cannot
tell which bridge a container address is on, the attachment can.
The service expands the mappings (policy: :mod:`.mapping`, :mod:`.conditions`) and runs
:class:`splice.libnet.portmap.publisher.PortPublisher` inside ``host``. Owner of the
elements: :func:`splice.plugins.owners.owner_tag` of the attachment, the tag the bridge's
masquerade entries carry too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

from splice.libnet.errors import NetError
from splice.libnet.portmap.model import PortConflict, Published
from splice.libnet.portmap.publisher import PortPublisher
from splice.plugins.errors import CheckFailed, KernelError, PortInUse, SpliceError
from splice.plugins.owners import describe_owner, gc_prefix, owner_tag
from splice.plugins.portmap.config import DEFAULT_OPTIONS, PortmapOptions
from splice.plugins.portmap.mapping import PortMapping, expand

if TYPE_CHECKING:  # the model is not imported at run time (import cost of a CNI process)
    from splice.libnet.netns import Netns
    from splice.plugins.model import Attachment, IPConfig

__all__ = ["PortmapDriver", "PortInUse", "host_interfaces", "owner_tag", "gc_prefix", "describe_owner"]


def host_interfaces(interfaces: Iterable[Any] | None) -> list[str]:
    """Names of the host-side interfaces of an attachment, in order: CNI result
    ``interfaces`` entries (dicts) or :class:`~splice.plugins.model.Interface` objects
    without a ``sandbox`` (a bridge plugin lists the bridge first)."""
    out = []
    for i in interfaces or ():
        name, sandbox = (i.get("name"), i.get("sandbox")) if isinstance(i, dict) else (i.name, i.sandbox)
        if name and not sandbox and isinstance(name, str):
            out.append(name)
    return out


def _addresses(ips: Iterable[Any] | None) -> list[Any] | None:
    """The addresses of ``IPConfig`` objects (or the addresses themselves); None stays None."""
    if ips is None:
        return None
    return [getattr(ip, "address", ip) for ip in ips]


class PortmapDriver:
    """The port-publishing service of one host namespace (see the module docstring)."""

    def __init__(self, host: "Netns") -> None:
        self.host = host
        self.warnings: list[str] = []

    # -- the service ----------------------------------------------------------------
    def publish(self, att: "Attachment", mappings: Iterable[PortMapping], addresses: Iterable["IPConfig | Any"],
                options: PortmapOptions = DEFAULT_OPTIONS, host_ifaces: Sequence[str] = ()) -> list[Published]:
        """Publish ``mappings`` to the attachment's addresses (the first of each family).

        Idempotent: a repeated call converges the attachment's elements to exactly these.
        Raises :class:`PortInUse` (nothing changed) when another attachment holds a port,
        :class:`~.mapping.PortMappingError` (a ConfigError) for contradictory mappings or
        invalid conditions. Returns the DNAT entries in place.
        """
        entries = expand(mappings, _addresses(addresses) or [])
        if not entries:
            return []
        owner = owner_tag(att.network, att.container_id, att.ifname)
        conds = options.conditions()
        ifaces = tuple(host_ifaces)
        return self._run(lambda pub: pub.publish(owner, entries, snat=options.snat, masq_all=options.masq_all,
                                                 conditions=conds, ifaces=ifaces))

    def unpublish(self, att: "Attachment", mappings: Iterable[PortMapping] | None = None,
                  addresses: Iterable["IPConfig | Any"] | None = None,
                  options: PortmapOptions = DEFAULT_OPTIONS, host_ifaces: Sequence[str] = ()) -> list[Published]:
        """Remove the attachment's mappings; idempotent; never another attachment's.

        With the mappings and addresses publish got: one transaction. With either None
        (a DEL without prevResult, a Docker revoke): every element of the attachment is
        found by its owner tag (lists the table). Returns what was removed when known.
        """
        addrs = _addresses(addresses)
        entries = expand(mappings, addrs) if mappings is not None and addrs else None
        if entries is not None and not entries:
            return []
        owner = owner_tag(att.network, att.container_id, att.ifname)
        conds = options.conditions()
        ifaces = tuple(host_ifaces)
        return self._run(lambda pub: pub.unpublish(owner, entries, snat=options.snat, conditions=conds,
                                                   ifaces=ifaces))

    def check(self, att: "Attachment", mappings: Iterable[PortMapping], addresses: Any = None,
              options: PortmapOptions = DEFAULT_OPTIONS, host_ifaces: Sequence[str] = ()) -> None:
        """Raise :class:`CheckFailed` naming every difference from what publish made."""
        entries = expand(mappings, _addresses(addresses) or [])
        if not entries:
            return
        owner = owner_tag(att.network, att.container_id, att.ifname)
        conds = options.conditions()
        ifaces = tuple(host_ifaces)
        problems = self._run(lambda pub: pub.check(owner, entries, snat=options.snat, masq_all=options.masq_all,
                                                   conditions=conds, ifaces=ifaces))
        if problems:
            raise CheckFailed("; ".join(problems))

    def gc(self, network: str, valid: set[tuple[str, str]]) -> list[str]:
        """Remove the mappings of ``network``'s attachments not in ``valid`` (cid, ifname).
        Returns the owner tags removed."""
        keep = {owner_tag(network, cid, ifn) for cid, ifn in valid}
        return self._run(lambda pub: pub.gc(gc_prefix(network), keep.__contains__))

    def status(self) -> None:
        """Raise when nftables cannot be used in the host namespace."""
        self._run(lambda pub: pub.status())

    # -- internals ------------------------------------------------------------------
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
        except (SpliceError, NetError):
            raise
        except OSError as e:
            raise KernelError(f"port mapping: {e}") from None
