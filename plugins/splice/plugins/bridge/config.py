"""Bridge network configuration: the options of the reference ``bridge`` plugin.

:func:`parse_bridge_config` takes the plugin's configuration dict (CNI network config or
an equivalent built by another front-end) and returns a frozen :class:`BridgeConfig`.
It checks every option's type and range and the contradictions the reference rejects;
failures raise :class:`~splice.plugins.errors.ConfigError` (or its subclass
:class:`~splice.plugins.errors.UnsupportedField`) with a message naming the key and
the offending value. No kernel access, no pyroute2.

Keys owned by others are ignored: ``name``, ``type``, ``cniVersion``, ``ipam`` (only
consulted for ``disableContainerInterface``), ``dns``, ``runtimeConfig``, ``args``,
``prevResult``, ``capabilities``, ``cni.dev/*``, and any other unknown key (CNI
configurations routinely carry extra keys).

Decisions where the reference is silent or where splice differs:

* ``ipMasqBackend``: ``"nftables"`` is accepted; ``"iptables"`` together with
  ``ipMasq: true`` raises ``UnsupportedField`` (splice masquerades with nftables only,
  and silently using nftables would surprise tools that expect iptables chains);
  with ``ipMasq`` false the backend is irrelevant and ``"iptables"`` is accepted.
* ``preserveDefaultVlan`` defaults to **true**, as in the reference code
  (``loadNetConf``: "Set default value equal to true to maintain existing behavior").
* ``vlan`` together with ``vlanTrunk``: the access VLAN becomes the port's native
  (PVID, untagged) VLAN and the trunk VLANs are tagged; a VLAN in both is an error.
  (Older reference versions refuse the combination outright.)
* ``vlanTrunk: []`` means no trunk. An entry without ``id`` and without
  ``minID``/``maxID`` is an error (the reference ignores it silently).
* ``mtu: 0`` means "kernel default" (as in the reference); otherwise 68..65535.
* Booleans must be JSON booleans and integers JSON integers (the reference's Go JSON
  decoding rejects ``"true"`` strings as well).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from splice.libnet.names import ifname_problem
from splice.plugins.confkeys import boolean, fmt, integer
from splice.plugins.errors import ConfigError, UnsupportedField

DEFAULT_BRIDGE = "cni0"
MIN_MTU = 68
MAX_MTU = 65535
MAX_VID = 4094

_BOOLS = {
    "isGateway": "is_gateway",
    "isDefaultGateway": "is_default_gateway",
    "forceAddress": "force_address",
    "ipMasq": "ip_masq",
    "hairpinMode": "hairpin_mode",
    "promiscMode": "promisc_mode",
    "preserveDefaultVlan": "preserve_default_vlan",
    "enabledad": "enable_dad",
    "macspoofchk": "mac_spoof_check",
    "disableContainerInterface": "disable_container_interface",
    "portIsolation": "port_isolation",
}


@dataclass(frozen=True)
class BridgeConfig:
    bridge: str = DEFAULT_BRIDGE
    is_gateway: bool = False  # true as well when isDefaultGateway is
    is_default_gateway: bool = False
    force_address: bool = False
    ip_masq: bool = False
    ip_masq_backend: str = "nftables"
    mtu: int | None = None  # None: kernel default
    hairpin_mode: bool = False
    promisc_mode: bool = False
    vlan: int = 0  # 0: no access VLAN
    vlan_trunk: tuple[int, ...] = ()  # sorted, unique tagged VLAN ids
    preserve_default_vlan: bool = True
    enable_dad: bool = False
    mac_spoof_check: bool = False
    disable_container_interface: bool = False
    port_isolation: bool = False

    @property
    def vlan_filtering(self) -> bool:
        """The bridge needs vlan_filtering (set at creation only, as the reference)."""
        return bool(self.vlan or self.vlan_trunk)

    @property
    def vlan_gateway_ifname(self) -> str | None:
        """Where the gateway address goes with an access VLAN: ``<bridge>.<vlan>``."""
        return f"{self.bridge}.{self.vlan}" if self.vlan else None


def _vid(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer, got {fmt(value)}")
    if not 1 <= value <= MAX_VID:
        raise ConfigError(f"{what} must be between 1 and {MAX_VID}, got {value}")
    return value


def _vlan_trunk(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"vlanTrunk must be a list of {{\"id\"}} or {{\"minID\", \"maxID\"}} objects, got {fmt(value)}")
    vids: set[int] = set()
    for i, item in enumerate(value):
        where = f"vlanTrunk[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be an object with \"id\" or \"minID\"/\"maxID\", got {fmt(item)}")
        has_min, has_max = item.get("minID") is not None, item.get("maxID") is not None
        if has_min != has_max:
            missing = "maxID" if has_min else "minID"
            raise ConfigError(f"{where}: minID and maxID must be given together ({missing} is missing) in {fmt(item)}")
        if has_min:
            lo = _vid(item["minID"], f"{where}.minID")
            hi = _vid(item["maxID"], f"{where}.maxID")
            if hi < lo:
                raise ConfigError(f"{where}: minID {lo} is greater than maxID {hi}")
            vids.update(range(lo, hi + 1))
        if item.get("id") is not None:
            vids.add(_vid(item["id"], f"{where}.id"))
        elif not has_min:
            raise ConfigError(f"{where} needs \"id\" or \"minID\"/\"maxID\", got {fmt(item)}")
    return tuple(sorted(vids))


def parse_bridge_config(conf: dict) -> BridgeConfig:
    """Validate a bridge network configuration; see the module docstring."""
    if not isinstance(conf, dict):
        raise ConfigError(f"the network configuration must be a JSON object, got {fmt(conf)}")

    bridge = conf.get("bridge", DEFAULT_BRIDGE)
    if bridge is None:
        bridge = DEFAULT_BRIDGE
    problem = ifname_problem(bridge)
    if problem:
        raise ConfigError(f"bridge {fmt(bridge)} is not a valid interface name: it {problem}")

    flags = {attr: boolean(conf, key) for key, attr in _BOOLS.items()}
    if "preserveDefaultVlan" not in conf or conf["preserveDefaultVlan"] is None:
        flags["preserve_default_vlan"] = True
    if flags["is_default_gateway"]:
        flags["is_gateway"] = True

    backend = conf.get("ipMasqBackend")
    if backend is None:
        backend = "nftables"
    if not isinstance(backend, str):
        raise ConfigError(f"ipMasqBackend must be a string, got {fmt(backend)}")
    if backend not in ("nftables", "iptables"):
        raise ConfigError(f"ipMasqBackend must be \"nftables\" (or \"iptables\"), got {fmt(backend)}")
    if backend == "iptables":
        if flags["ip_masq"]:
            raise UnsupportedField(
                "ipMasqBackend \"iptables\" is not supported: splice masquerades with nftables only; "
                "set ipMasqBackend to \"nftables\" or leave it out"
            )
        backend = "nftables"

    mtu = integer(conf, "mtu", 0)
    if mtu and not MIN_MTU <= mtu <= MAX_MTU:
        raise ConfigError(f"mtu must be between {MIN_MTU} and {MAX_MTU} (or 0 for the kernel default), got {mtu}")

    vlan = integer(conf, "vlan", 0)
    if not 0 <= vlan <= MAX_VID:
        raise ConfigError(f"vlan must be between 0 and {MAX_VID}, got {vlan}")
    trunk = _vlan_trunk(conf.get("vlanTrunk"))
    if vlan and vlan in trunk:
        raise ConfigError(f"vlan {vlan} is also listed in vlanTrunk: a VLAN is either native (vlan) or tagged (vlanTrunk)")

    if flags["hairpin_mode"] and flags["promisc_mode"]:
        raise ConfigError("hairpinMode and promiscMode cannot both be true")

    ipam = conf.get("ipam")
    if flags["disable_container_interface"] and isinstance(ipam, dict) and ipam.get("type"):
        raise ConfigError(
            f"disableContainerInterface cannot be used with IPAM (ipam type {fmt(ipam.get('type'))}): "
            "a disabled interface gets no addresses"
        )

    if vlan and flags["is_gateway"]:
        gw_if = f"{bridge}.{vlan}"
        problem = ifname_problem(gw_if)
        if problem:
            raise ConfigError(
                f"bridge {bridge!r} with vlan {vlan} and isGateway: the gateway interface name "
                f"{gw_if!r} {problem}; use a shorter bridge name"
            )

    return BridgeConfig(
        bridge=bridge,
        ip_masq_backend=backend,
        mtu=mtu or None,
        vlan=vlan,
        vlan_trunk=trunk,
        **flags,
    )
