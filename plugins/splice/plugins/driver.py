"""The driver framework: what every driver implements, and the registry of drivers.

A driver (bridge, and the macvlan/ipvlan/vxlan drivers to come) is protocol-neutral: it
takes :mod:`splice.plugins.model` objects and an explicit host
:class:`~splice.libnet.netns.Netns`, raises :mod:`splice.plugins.errors` (or libnet/ipam
errors), and knows nothing of CNI or Docker. The front-ends (the CNI adapter
:mod:`splice.plugins.cni.main_plugin`, the Docker remote driver, the CLI) look a driver
up here by kind and call the methods of :class:`Driver`.

Placement of the container end of an attachment (``attach(..., placement=...)``):

* ``IN_SANDBOX`` (CNI): the link is made inside ``att.netns`` and configured there
  (addresses, rename to ``att.ifname``, up, routes: :mod:`splice.libnet.sandbox`).
* ``IN_HOST`` (Docker's libnetwork): the link stays in the host namespace under a
  temporary name, unconfigured; the runtime moves it into the sandbox, renames it and
  sets the addresses itself. The returned ``Wiring``'s container interface has that
  temporary name and ``sandbox=None``.

Registry entries are ``"module:Class"`` strings, imported on first use: a CNI process
imports only its own driver.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from splice.libnet.netns import Netns
    from splice.plugins.model import Attachment, IPConfig, Route, Wiring

IN_SANDBOX = "sandbox"
IN_HOST = "host"

DRIVERS: dict[str, str] = {
    "bridge": "splice.plugins.bridge.driver:BridgeDriver",
    "macvlan": "splice.plugins.macvlan.driver:MacvlanDriver",
    "ipvlan": "splice.plugins.ipvlan.driver:IpvlanDriver",
    "vxlan": "splice.plugins.vxlan.driver:VxlanDriver",
}

if TYPE_CHECKING:

    class Driver(Protocol):
        """What a driver provides. ``cfg`` is what :meth:`parse_config` returned."""

        kind: str  # registry key, e.g. "bridge"
        cfg: Any
        host: Netns

        @staticmethod
        def parse_config(raw: dict) -> Any:
            """Validate a network config (a CNI plugin config, or the CNM options turned
            into the same keys): pure, no kernel access; ConfigError / UnsupportedField."""

        def __init__(self, cfg: Any, host: Netns) -> None: ...

        @property
        def installs_default_routes(self) -> bool:
            """True when attach adds default routes of its own (CHECK compares them)."""

        def ensure_network(self, gateways: list[Any] = ...) -> None:
            """The shared network objects (a bridge, a sub-interface, a VXLAN device) with
            the given gateway addresses: idempotent, safe against concurrent callers,
            never undone by a failed attach."""

        def attach(self, att: Attachment, ips: list[IPConfig], routes: list[Route], *,
                   placement: str = IN_SANDBOX) -> Wiring:
            """Wire one attachment; everything it made is undone when it fails."""

        def detach(self, att: Attachment, ips: list[IPConfig] | None) -> None:
            """Remove what ``att`` owns: idempotent, best effort, reports every failure."""

        def check(self, att: Attachment, expected: Wiring, own_addresses: list[Any] | None = None) -> None:
            """CheckFailed when the kernel differs from ``expected`` (what attach returned)."""

        def gc(self, network: str, valid: set[tuple[str, str]]) -> None:
            """Remove what attachments of ``network`` not in ``valid`` (cid, ifname) left."""

        def status(self) -> None:
            """Raise when an attach could not succeed now."""


def validate_attachment(att: "Attachment", need_netns: bool) -> None:
    """What every driver requires of an attachment: a container id, an interface name the
    kernel takes (code 4), and a sandbox path when the link goes into the sandbox."""
    from splice.libnet.names import ifname_problem
    from splice.plugins.errors import ConfigError, InvalidEnvironment

    if not att.container_id:
        raise ConfigError("container id must not be empty")
    problem = ifname_problem(att.ifname)
    if problem:
        raise InvalidEnvironment(f"interface name {att.ifname!r} is not valid: it {problem}")
    if need_netns and not att.netns:
        raise ConfigError("the sandbox network namespace path is required")


def driver_class(kind: str) -> "type[Driver]":
    """The driver class registered as ``kind`` (KeyError naming the known kinds)."""
    try:
        spec = DRIVERS[kind]
    except KeyError:
        raise KeyError(f"unknown driver {kind!r} (known: {', '.join(sorted(DRIVERS))})") from None
    module, _, cls = spec.partition(":")
    return getattr(__import__(module, fromlist=[cls]), cls)


def create(kind: str, raw_config: dict, host: "Netns") -> "Driver":
    """Parse ``raw_config`` with the driver's own parser and bind the driver to ``host``."""
    cls = driver_class(kind)
    return cls(cls.parse_config(raw_config), host)
