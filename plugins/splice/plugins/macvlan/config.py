"""macvlan network configuration: the options of the reference ``macvlan`` plugin
(containernetworking/plugins plugins/main/macvlan, README).

:func:`parse_macvlan_config` is pure (no kernel access): ConfigError / UnsupportedField
naming the key. Keys: ``master`` (default: the interface of the default route, resolved
at ADD, in the sandbox with ``linkInContainer``), ``mode`` (``bridge`` default,
``private``, ``vepa``, ``passthru``), ``mtu`` (0/absent: the master's; never more than
the master's, checked at ADD), ``mac`` (the lowest-precedence container MAC: the
runtime's ``runtimeConfig.mac`` / ``args.cni.mac`` / ``CNI_ARGS MAC`` win, as the
reference's loadConf), ``linkInContainer`` (the master lives in the sandbox), ``ipam``
(the adapter's), ``vlan`` (an 802.1Q VID: the master is the sub-interface
``<master>.<vid>``; a ``master`` written ``<parent>.<vid>`` means the same, see
:func:`splice.plugins.vlans.parse_master`; ``0``/absent: none). The sub-interface is made at
ADD when missing (:mod:`splice.plugins.vlans`), so it is not looked at here. Other keys are
ignored, as CNI configurations carry extra ones. ``source`` mode is not offered by the
reference either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from splice.libnet.names import ifname_problem, normalize_mac
from splice.plugins import vlans
from splice.plugins.confkeys import boolean, choice, fmt, integer
from splice.plugins.errors import ConfigError, UnsupportedField

MODES = ("bridge", "private", "vepa", "passthru")
MIN_MTU = 68
MAX_MTU = 65535


@dataclass(frozen=True)
class MacvlanConfig:
    master: str | None = None  # None: the default route's interface
    mode: str = "bridge"
    mtu: int | None = None  # None: the master's
    mac: str | None = None  # normalized; the runtime's MAC (att.mac) wins
    link_in_container: bool = False
    # 802.1Q: master is then the sub-interface "<vlan_parent>.<vlan>", made at ADD when missing
    vlan_parent: str | None = None
    vlan: int | None = None


def parse_lower_common(conf: dict) -> dict[str, Any]:
    """The keys every link-on-a-master driver shares (macvlan, ipvlan): ``master``/``vlan``
    (802.1Q), ``mtu``, ``linkInContainer``; a dict of the config's fields."""
    if not isinstance(conf, dict):
        raise ConfigError(f"the network configuration must be a JSON object, got {fmt(conf)}")
    master = conf.get("master")
    if master in (None, ""):
        master = None
    else:
        if not isinstance(master, str):
            raise ConfigError(f"master must be a string, got {fmt(master)}")
        problem = ifname_problem(master)
        if problem:
            raise ConfigError(f"master {fmt(master)} is not a valid interface name: it {problem}")
    vlan = conf.get("vlan")
    if vlan == 0 and not isinstance(vlan, bool):
        vlan = None  # 0: no VLAN (as mtu 0)
    parent = vid = None
    if master is not None:
        parent, vid = vlans.parse_master(master, vlan)
        if vid is not None:
            master = vlans.subif_name(parent, vid)
        else:
            parent = None
    elif vlan is not None:
        raise ConfigError(f"vlan {fmt(vlan)} needs a master: the 802.1Q sub-interface is made on it")

    mtu = integer(conf, "mtu", 0)
    if mtu and not MIN_MTU <= mtu <= MAX_MTU:
        raise ConfigError(f"mtu must be between {MIN_MTU} and {MAX_MTU} (or 0 for the master's), got {mtu}")

    lic = boolean(conf, "linkInContainer")
    if lic and vid is not None:
        raise UnsupportedField(f"linkInContainer with an 802.1Q master ({master!r}): splice makes and shares "
                               f"sub-interfaces in the host only")
    return {"master": master, "mtu": mtu or None, "link_in_container": lic, "vlan_parent": parent, "vlan": vid}


def parse_macvlan_config(conf: dict) -> MacvlanConfig:
    common = parse_lower_common(conf)
    mode = choice(conf, "mode", MODES, "bridge")
    mac = conf.get("mac")
    if mac in (None, ""):
        mac = None
    else:
        if not isinstance(mac, str):
            raise ConfigError(f"mac must be a MAC address string, got {fmt(mac)}")
        try:
            mac = normalize_mac(mac)
        except ValueError as e:
            raise ConfigError(f"mac: {e}") from None
    return MacvlanConfig(mode=mode, mac=mac, **common)
