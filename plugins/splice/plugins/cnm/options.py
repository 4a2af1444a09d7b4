"""Docker's network options, translated into a driver's own config keys; the table of the
driver kinds the daemon serves.

Docker hands ``docker network create -o k=v`` over as strings in
``Options["com.docker.network.generic"]``, and ``--internal`` / ``--ipv6`` as
``com.docker.network.internal`` / ``com.docker.network.enable_ipv6``. :func:`translate`
turns them into the dict a driver's ``parse_config`` validates (the same keys as a CNI
config), so a bad value fails with the driver's own message, before anything is made.
Options of a kind's Docker namespace that splice does not implement are refused
(:class:`UnsupportedField`), never silently ignored; any other key is ignored, as Docker's
built-in drivers do. splice's own options are ``splice.<key>``, for the keys listed per
kind in :data:`KINDS` (values: ``true``/``false``, integers, or JSON for lists/objects).

Adding a kind (e.g. ipvlan) is one :class:`Kind` entry: its framework driver kind, its
socket name, and its option names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from splice.plugins.confkeys import fmt
from splice.plugins.errors import ConfigError, UnsupportedField

GENERIC = "com.docker.network.generic"
INTERNAL = "com.docker.network.internal"
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
MTU = "com.docker.network.driver.mtu"
IFACE_PREFIX = "com.docker.network.container_iface_prefix"
BRIDGE_PREFIX = "com.docker.network.bridge."
BRIDGE_NAME = BRIDGE_PREFIX + "name"
ENABLE_ICC = BRIDGE_PREFIX + "enable_icc"
ENABLE_MASQ = BRIDGE_PREFIX + "enable_ip_masquerade"
HOST_BINDING_IPV4 = BRIDGE_PREFIX + "host_binding_ipv4"
SPLICE_PREFIX = "splice."
DEFAULT_DST_PREFIX = "eth"


@dataclass(frozen=True)
class Kind:
    """One driver kind served over its own socket."""

    kind: str  # the framework registry key (splice.plugins.driver.DRIVERS)
    plugin: str  # the plugin name: the socket is <plugins dir>/<plugin>.sock
    options: dict[str, str] = field(default_factory=dict)  # Docker -o name -> driver key (strings)
    splice_keys: tuple[str, ...] = ()  # driver keys settable as splice.<key>
    # The container end comes back to the host namespace after Leave (a macvlan/ipvlan, not
    # a veth pair): DeleteEndpoint detaches it there.
    detach_in_host: bool = False
    bridge: bool = False  # the bridge options below apply
    needs_parent: bool = False  # no "parent": refused (splice makes no dummy parent)
    report_mac: bool = True  # CreateEndpoint answers the MAC it chose (an ipvlan has its master's)
    overlay: bool = False  # a VXLAN overlay: the daemon hosts its overlay manager, IPAM from the host's leased subnet


KINDS: dict[str, Kind] = {
    "bridge": Kind("bridge", "splice-bridge", bridge=True,
                   splice_keys=("macspoofchk", "hairpinMode", "promiscMode", "vlan", "vlanTrunk",
                                "preserveDefaultVlan", "forceAddress", "portIsolation")),
    "macvlan": Kind("macvlan", "splice-macvlan", options={"parent": "master", "macvlan_mode": "mode"},
                    detach_in_host=True, needs_parent=True),
    "ipvlan": Kind("ipvlan", "splice-ipvlan", options={"parent": "master", "ipvlan_mode": "mode",
                                                       "ipvlan_flag": "flag"},
                   detach_in_host=True, needs_parent=True, report_mac=False),
    # splice.<key> are the vxlan driver's own keys (docs/design.md "splice-overlay"); splice.name is the
    # overlay's name in etcd, shared by every host (Docker's network ids differ per host)
    "vxlan": Kind("vxlan", "splice-overlay", overlay=True,
                  splice_keys=("name", "vni", "etcd", "clusterCIDR", "subnetLen", "port", "vtepInterface", "mtu",
                               "ipMasq", "leaseTTL", "hairpinMode", "macspoofchk", "bridge", "device")),
}


@dataclass
class NetworkOptions:
    """What the front-end itself needs of a network's options (the driver gets ``config``)."""

    config: dict
    internal: bool = False
    ipv6: bool = False
    host_binding_ipv4: str | None = None
    dst_prefix: str = DEFAULT_DST_PREFIX


def parse_bool(value: Any, key: str) -> bool:
    """Go's strconv.ParseBool forms (Docker's), or a JSON boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in ("1", "t", "T", "TRUE", "true", "True"):
            return True
        if value in ("0", "f", "F", "FALSE", "false", "False"):
            return False
    raise ConfigError(f"option {key} must be a boolean (true or false), got {fmt(value)}")


def parse_int(value: Any, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            pass
    raise ConfigError(f"option {key} must be an integer, got {fmt(value)}")


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"option {key} must be a string, got {fmt(value)}")
    return value


def _splice_value(value: Any) -> Any:
    """``splice.<key>`` values: JSON when they parse as JSON (true, 10, [..]), else the string."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def translate(kind: Kind, network_id: str, options: Any, has_gateway: bool) -> NetworkOptions:
    """CreateNetwork ``Options`` -> the driver config and the front-end's options.
    ConfigError / UnsupportedField naming the option; nothing is looked up in the kernel."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f"Options must be an object, got {fmt(options)}")
    generic = options.get(GENERIC) or {}
    if not isinstance(generic, dict):
        raise ConfigError(f"option {GENERIC} must be an object, got {fmt(generic)}")
    internal = parse_bool(options.get(INTERNAL, False), INTERNAL)
    ipv6 = parse_bool(options.get(ENABLE_IPV6, False), ENABLE_IPV6)
    out = NetworkOptions(config={}, internal=internal, ipv6=ipv6)
    cfg = out.config
    if IFACE_PREFIX in generic:
        prefix = _string(generic[IFACE_PREFIX], IFACE_PREFIX)
        if not prefix or len(prefix) > 12 or not prefix.isascii() or not prefix.replace("-", "").isalnum():
            raise ConfigError(f"option {IFACE_PREFIX} must be 1-12 letters or digits, got {fmt(prefix)}")
        out.dst_prefix = prefix
    if MTU in generic:
        mtu = parse_int(generic[MTU], MTU)
        if mtu:
            cfg["mtu"] = mtu

    if kind.bridge:
        for key in generic:
            if key.startswith(BRIDGE_PREFIX) and key not in (BRIDGE_NAME, ENABLE_ICC, ENABLE_MASQ, HOST_BINDING_IPV4):
                raise UnsupportedField(f"option {key} is not supported by {kind.plugin} (supported: {BRIDGE_NAME}, "
                                       f"{ENABLE_ICC}, {ENABLE_MASQ}, {HOST_BINDING_IPV4}, {MTU})")
        name = generic.get(BRIDGE_NAME)
        cfg["bridge"] = _string(name, BRIDGE_NAME) if name not in (None, "") else "br-" + network_id[:12]
        cfg["isGateway"] = has_gateway  # the gateway addresses go on the bridge
        cfg["isDefaultGateway"] = False  # libnetwork sets the container's routes (Join's Gateway)
        masq = parse_bool(generic.get(ENABLE_MASQ, True), ENABLE_MASQ)
        cfg["ipMasq"] = masq and not internal
        icc = parse_bool(generic.get(ENABLE_ICC, True), ENABLE_ICC)
        if not icc:
            cfg["portIsolation"] = True  # isolated ports reach the host and the gateway, not each other
        hb = generic.get(HOST_BINDING_IPV4)
        if hb not in (None, ""):
            import ipaddress

            try:
                addr = ipaddress.ip_address(_string(hb, HOST_BINDING_IPV4))
            except ValueError:
                raise ConfigError(f"option {HOST_BINDING_IPV4} must be an IP address, got {fmt(hb)}") from None
            out.host_binding_ipv4 = str(addr)
    for docker_key, driver_key in kind.options.items():
        if docker_key in generic and generic[docker_key] not in (None, ""):
            cfg[driver_key] = _string(generic[docker_key], docker_key)
    if kind.overlay:
        masq = parse_bool(generic.get(SPLICE_PREFIX + "ipMasq", True), SPLICE_PREFIX + "ipMasq")
        cfg["ipMasq"] = masq and not internal  # as Docker's networks: containers reach the outside
        cfg["isDefaultGateway"] = False  # libnetwork sets the container's routes (Join's Gateway)
    if kind.needs_parent and not cfg.get("master"):
        raise ConfigError(f"{kind.plugin} networks need -o parent=<interface> (or <interface>.<vlan id> for an "
                          "802.1Q sub-interface made on demand); splice makes no dummy parent")
    for key, value in generic.items():
        if not key.startswith(SPLICE_PREFIX):
            continue
        own = key[len(SPLICE_PREFIX):]
        if own not in kind.splice_keys:
            known = ", ".join(SPLICE_PREFIX + k for k in kind.splice_keys) or "none"
            raise UnsupportedField(f"option {key} is not known to {kind.plugin} (known: {known})")
        if kind.overlay and own == "ipMasq":
            continue  # done above (Go ParseBool forms)
        cfg[own] = _splice_value(value)
    if kind.overlay:
        name, vni = cfg.get("name"), cfg.get("vni")
        if name is None:  # (no vni: parse_config says vni is required)
            cfg["name"] = f"vxlan{vni}" if isinstance(vni, int) and not isinstance(vni, bool) else "vxlan"
        elif not isinstance(name, str):
            cfg["name"] = str(name)
    return out
