"""Port-mapping configuration: the options of the reference ``portmap`` plugin.

:func:`parse_portmap_config` takes the plugin's configuration dict (a CNI network config,
or an equivalent another front-end builds) and returns a :class:`PortmapConfig`: the
network's :class:`PortmapOptions` and the runtime's mappings, which the front-end hands
to :class:`~splice.plugins.portmap.driver.PortmapDriver` per call.
Failures raise :class:`~splice.plugins.errors.ConfigError` (or
:class:`~splice.plugins.errors.UnsupportedField`) naming the key and the value. No kernel
access.

Options (the reference portmap plugin's, same names and defaults):

* ``snat`` (bool, default true): masquerade hairpin (from the container's own subnet) and
  localhost (127.0.0.0/8) connections to published ports; IPv4 localhost also needs
  ``route_localnet`` on the container's host interface, which splice manages.
* ``masqAll`` (bool, default false): masquerade every connection to a published port
  (macvlan/ipvlan containers, whose replies bypass the host). Needs ``snat``.
* ``conditionsV4`` / ``conditionsV6`` (list of strings, or null): nft match expressions
  that must hold for this network's mappings of that family (e.g. ``["ip saddr
  192.0.2.0/24"]``, joined with spaces). Screened here for command separators; parsed by
  libnftables at the first use of a condition list, where only match expressions are
  accepted. Unlike the reference (whose last ADD's conditions apply to every network)
  they apply per network.
* ``markMasqBit`` (int 0-31): accepted for compatibility and ignored (the reference uses
  it for its iptables backend only; the nftables layout needs no packet mark).
  ``externalSetMarkChain``: iptables only, ``UnsupportedField``; both together is an
  error, as in the reference.
* ``backend``: ``"nftables"`` or absent; ``"iptables"`` is ``UnsupportedField``.
* ``runtimeConfig.portMappings`` (capability ``portMappings``): entries ``hostPort``,
  ``containerPort`` (1-65535), ``protocol`` (``tcp``/``udp``/``sctp``, any case; empty or
  absent means ``tcp``), optional ``hostIP`` (IPv4 or IPv6; ``""`` = none;
  ``0.0.0.0``/``::`` = every local address of that family only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from splice.libnet.portmap.model import Value
from splice.plugins.errors import ConfigError, UnsupportedField
from splice.plugins.portmap.mapping import PortMapping, PortMappingError

if TYPE_CHECKING:
    from splice.libnet.portmap.model import Conditions


class PortmapOptions(Value):
    """How one network publishes ports: ``snat``, ``masq_all`` and the screened condition
    lists (given per call to :class:`~splice.plugins.portmap.driver.PortmapDriver`).
    Immutable; equal options compare equal."""

    __slots__ = ("snat", "masq_all", "conditions_v4", "conditions_v6")
    snat: bool
    masq_all: bool
    conditions_v4: tuple[str, ...]
    conditions_v6: tuple[str, ...]

    def __init__(self, snat: bool = True, masq_all: bool = False, conditions_v4: Iterable[str] = (),
                 conditions_v6: Iterable[str] = ()) -> None:
        for k, v in (("snat", snat), ("masq_all", masq_all)):
            if not isinstance(v, bool):
                raise ConfigError(f"{k} must be a boolean, got {v!r}")
        for k, v in (("snat", snat), ("masq_all", masq_all), ("conditions_v4", _screened(conditions_v4)),
                     ("conditions_v6", _screened(conditions_v6))):
            object.__setattr__(self, k, v)

    def conditions(self) -> "dict[int, Conditions]":
        """version -> :class:`~splice.libnet.portmap.model.Conditions` of the families with
        conditions (each list parsed at most once, when its chain is built)."""
        if not (self.conditions_v4 or self.conditions_v6):
            return {}
        cached = _CONDITIONS.get(self)
        if cached is None:
            from splice.plugins.portmap.conditions import conditions_for

            if len(_CONDITIONS) >= 64:  # a resident process: distinct option sets are few
                _CONDITIONS.clear()
            cached = _CONDITIONS[self] = conditions_for(self.conditions_v4, self.conditions_v6)
        return cached


def _screened(conditions: Iterable[str]) -> tuple[str, ...]:
    conditions = tuple(conditions)
    if not conditions:
        return ()
    from splice.plugins.portmap.conditions import check_conditions  # only networks with conditions

    return check_conditions(conditions)


DEFAULT_OPTIONS = PortmapOptions()
_CONDITIONS: "dict[PortmapOptions, dict[int, Conditions]]" = {}


class PortmapConfig:
    """A parsed CNI network config: the network, its options and the runtime's mappings
    (a plain class: no dataclass creation cost at import)."""

    __slots__ = ("network", "options", "mark_masq_bit", "mappings")

    def __init__(self, network: str, options: PortmapOptions = DEFAULT_OPTIONS, mark_masq_bit: int | None = None,
                 mappings: tuple[PortMapping, ...] = ()) -> None:
        self.network = network
        self.options = options
        self.mark_masq_bit = mark_masq_bit
        self.mappings = mappings

    snat = property(lambda self: self.options.snat)
    masq_all = property(lambda self: self.options.masq_all)
    conditions_v4 = property(lambda self: self.options.conditions_v4)
    conditions_v6 = property(lambda self: self.options.conditions_v6)

    def __repr__(self) -> str:
        return "PortmapConfig(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


def _bool(conf: dict, key: str, default: bool) -> bool:
    v = conf.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be a boolean, got {v!r}")
    return v


def _int(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ConfigError(f"{what} must be an integer, got {v!r}")
    return v


def _conditions(conf: dict, key: str) -> tuple[str, ...]:
    v = conf.get(key)
    if v is None:
        return ()
    if not isinstance(v, list):
        raise ConfigError(f"{key} must be a list of strings, got {v!r}")
    try:
        return _screened(v)
    except PortMappingError as e:
        raise ConfigError(f"{key}: {e}") from None


def parse_mapping(entry: Any, where: str = "portMappings") -> PortMapping:
    """One ``{hostPort, containerPort, protocol, hostIP?}`` entry."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object, got {entry!r}")
    for k in ("hostPort", "containerPort"):
        if k not in entry:
            raise ConfigError(f"{where}: {k} is missing")
    host_port = _int(entry["hostPort"], f"{where}.hostPort")
    container_port = _int(entry["containerPort"], f"{where}.containerPort")
    if not 1 <= host_port <= 65535:
        raise ConfigError(f"Invalid host port number: {host_port}")
    if not 1 <= container_port <= 65535:
        raise ConfigError(f"Invalid container port number: {container_port}")
    proto = entry.get("protocol")
    if proto in (None, ""):
        proto = "tcp"
    if not isinstance(proto, str):
        raise ConfigError(f"{where}.protocol must be a string, got {proto!r}")
    host_ip = entry.get("hostIP")
    if host_ip in (None, ""):
        host_ip = None
    elif not isinstance(host_ip, str):
        raise ConfigError(f"{where}.hostIP must be a string, got {host_ip!r}")
    try:
        return PortMapping(host_port, container_port, proto, host_ip)
    except PortMappingError as e:
        raise ConfigError(f"{where}: {e}") from None


def parse_mappings(raw: Any) -> tuple[PortMapping, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"runtimeConfig.portMappings must be a list, got {type(raw).__name__}")
    return tuple(parse_mapping(e, f"portMappings[{i}]") for i, e in enumerate(raw))


def parse_portmap_config(conf: dict) -> PortmapConfig:
    if not isinstance(conf, dict):
        raise ConfigError("network configuration must be a JSON object")
    network = conf.get("name")
    if not isinstance(network, str) or not network:
        raise ConfigError("missing network name")
    snat = _bool(conf, "snat", True)
    masq_all = _bool(conf, "masqAll", False)
    backend = conf.get("backend")
    if backend not in (None, "", "nftables"):
        if backend == "iptables":
            raise UnsupportedField("backend: 'iptables' is not supported (splice-portmap uses nftables maps)")
        raise ConfigError(f"backend must be 'nftables', got {backend!r}")
    mark = conf.get("markMasqBit")
    if mark is not None and conf.get("externalSetMarkChain") is not None:
        raise ConfigError("Cannot specify externalSetMarkChain and markMasqBit")
    if conf.get("externalSetMarkChain") is not None:
        raise UnsupportedField(f"externalSetMarkChain: {conf['externalSetMarkChain']!r} is not supported "
                               "(an iptables-only option; the nftables layout needs no mark chain)")
    if mark is not None:
        mark = _int(mark, "markMasqBit")
        if not 0 <= mark <= 31:
            raise ConfigError("MasqMarkBit must be between 0 and 31")
    rc = conf.get("runtimeConfig")
    if rc is not None and not isinstance(rc, dict):
        raise ConfigError(f"runtimeConfig must be an object, got {type(rc).__name__}")
    mappings = parse_mappings((rc or {}).get("portMappings"))
    options = PortmapOptions(snat, masq_all, _conditions(conf, "conditionsV4"), _conditions(conf, "conditionsV6"))
    return PortmapConfig(network=network, options=options, mark_masq_bit=mark, mappings=mappings)
