"""macvlan network configuration: the options of the reference ``macvlan`` plugin
(containernetworking/plugins plugins/main/macvlan, README).

:func:`parse_macvlan_config` is pure (no kernel access): ConfigError / UnsupportedField
naming the key. Keys: ``master`` (default: the interface of the default route, resolved
at ADD, in the sandbox with ``linkInContainer``), ``mode`` (``bridge`` default,
``private``, ``vepa``, ``passthru``), ``mtu`` (0/absent: the master's; never more than
the master's, checked at ADD), ``mac`` (the lowest-precedence container MAC: the
runtime's ``runtimeConfig.mac`` / ``args.cni.mac`` / ``CNI_ARGS MAC`` win, as the
reference's loadConf), ``linkInContainer`` (the master lives in the sandbox), ``ipam``
(the adapter's). Other keys are ignored, as CNI configurations carry extra ones.

Not yet: 802.1Q sub-interfaces (a ``master`` written ``<parent>.<vid>``, or ``vlan``):
UnsupportedField. ``source`` mode is not offered by the reference either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from splice.libnet.names import ifname_problem, normalize_mac
from splice.plugins.errors import ConfigError, UnsupportedField

MODES = ("bridge", "private", "vepa", "passthru")
MIN_MTU = 68
MAX_MTU = 65535
_VLAN_MASTER = re.compile(r".+\.\d+")
VLAN_LATER = "VLAN sub-interfaces are not supported by the macvlan driver yet (they come next)"


@dataclass(frozen=True)
class MacvlanConfig:
    master: str | None = None  # None: the default route's interface
    mode: str = "bridge"
    mtu: int | None = None  # None: the master's
    mac: str | None = None  # normalized; the runtime's MAC (att.mac) wins
    link_in_container: bool = False


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_macvlan_config(conf: dict) -> MacvlanConfig:
    if not isinstance(conf, dict):
        raise ConfigError(f"the network configuration must be a JSON object, got {_fmt(conf)}")
    master = conf.get("master")
    if master in (None, ""):
        master = None
    else:
        if not isinstance(master, str):
            raise ConfigError(f"master must be a string, got {_fmt(master)}")
        problem = ifname_problem(master)
        if problem:
            raise ConfigError(f"master {_fmt(master)} is not a valid interface name: it {problem}")
        if _VLAN_MASTER.fullmatch(master):
            raise UnsupportedField(f"master {master!r} is written <parent>.<vid>: {VLAN_LATER}")
    if conf.get("vlan") not in (None, 0):
        raise UnsupportedField(f"vlan {_fmt(conf.get('vlan'))}: {VLAN_LATER}")

    mode = conf.get("mode")
    if mode in (None, ""):
        mode = "bridge"
    if not isinstance(mode, str) or mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {_fmt(mode)}")

    mtu = conf.get("mtu", 0)
    if mtu is None:
        mtu = 0
    if isinstance(mtu, bool) or not isinstance(mtu, int):
        raise ConfigError(f"mtu must be an integer, got {_fmt(mtu)}")
    if mtu and not MIN_MTU <= mtu <= MAX_MTU:
        raise ConfigError(f"mtu must be between {MIN_MTU} and {MAX_MTU} (or 0 for the master's), got {mtu}")

    mac = conf.get("mac")
    if mac in (None, ""):
        mac = None
    else:
        if not isinstance(mac, str):
            raise ConfigError(f"mac must be a MAC address string, got {_fmt(mac)}")
        try:
            mac = normalize_mac(mac)
        except ValueError as e:
            raise ConfigError(f"mac: {e}") from None

    lic = conf.get("linkInContainer", False)
    if lic is None:
        lic = False
    if not isinstance(lic, bool):
        raise ConfigError(f"linkInContainer must be a boolean, got {_fmt(lic)}")
    return MacvlanConfig(master=master, mode=mode, mtu=mtu or None, mac=mac, link_in_container=lic)
