"""ipvlan network configuration: the options of the reference ``ipvlan`` plugin
(containernetworking/plugins plugins/main/ipvlan, README) and Docker's ipvlan driver.

:func:`parse_ipvlan_config` is pure (no kernel access): ConfigError naming the key. Keys:
``master`` (default: the interface of the default route, resolved at ADD), ``vlan`` (802.1Q,
as macvlan: a ``master`` written ``<parent>.<vid>`` means the same), ``mode`` (``l2``
default, ``l3``, ``l3s``), ``flag`` (``bridge`` default, ``private``, ``vepa``: Docker's
``ipvlan_flag``, the kernel's ``IFLA_IPVLAN_FLAGS``), ``mtu`` (0/absent: the master's;
never more than the master's, checked at ADD — the kernel itself would accept more),
``linkInContainer``, ``ipam`` (the adapter's). An ipvlan link has its master's MAC: there is
no ``mac`` key. Other keys are ignored, as CNI configurations carry extra ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from splice.plugins.confkeys import choice
from splice.plugins.macvlan.config import parse_lower_common

MODES = ("l2", "l3", "l3s")
FLAGS = ("bridge", "private", "vepa")


@dataclass(frozen=True)
class IpvlanConfig:
    master: str | None = None  # None: the default route's interface
    mode: str = "l2"
    flag: str = "bridge"
    mtu: int | None = None  # None: the master's
    link_in_container: bool = False
    vlan_parent: str | None = None
    vlan: int | None = None

    @property
    def routed(self) -> bool:
        """l3/l3s: the device routes; the sandbox's routes go via the device, not a gateway."""
        return self.mode != "l2"


def parse_ipvlan_config(conf: dict) -> IpvlanConfig:
    common = parse_lower_common(conf)
    mode = choice(conf, "mode", MODES, "l2")
    flag = choice(conf, "flag", FLAGS, "bridge")
    return IpvlanConfig(mode=mode, flag=flag, **common)
