"""The macvlan driver: one macvlan link per attachment on a master interface.

A framework driver (:mod:`splice.plugins.driver`, kind ``macvlan``) on the shared base
:class:`splice.plugins.lowerdev.LowerDevDriver` (master resolution and checks, creation in
the sandbox, 802.1Q sub-interfaces, DEL/CHECK/GC/STATUS). What is macvlan's: the mode
(bridge/private/vepa/passthru), the container MAC (runtime's > config's), the kernel's
refusals in words (EBUSY: another kind of link owns the master; EINVAL: passthru).
"""

from __future__ import annotations

from splice.libnet import rtnl
from splice.libnet.errors import NetError
from splice.libnet.linkinfo import Macvlan
from splice.libnet.names import normalize_mac
from splice.plugins.errors import CheckFailed, ConfigError, KernelError
from splice.plugins.lowerdev import LowerDevDriver
from splice.plugins.macvlan.config import parse_macvlan_config
from splice.plugins.model import Attachment


class MacvlanDriver(LowerDevDriver):
    """The macvlan driver (framework kind ``macvlan``)."""

    kind = "macvlan"
    link_kind = "macvlan"
    parse_config = staticmethod(parse_macvlan_config)

    def link_data(self) -> Macvlan:
        return Macvlan(mode=self.cfg.mode)

    def container_mac(self, att: Attachment) -> str | None:
        mac = att.mac or self.cfg.mac
        if not mac:
            return None
        try:
            return normalize_mac(mac)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def check_link(self, link: rtnl.Link, master: rtnl.Link, ifname: str) -> None:
        mode = getattr(link.data, "mode", None)
        if mode != self.cfg.mode:
            raise CheckFailed(f"macvlan {ifname!r} is in mode {mode}, configured {self.cfg.mode}")

    busy_holders = "another kind of virtual link or port (an ipvlan, a bridge or bond port)"

    def _kernel_refused(self, e: NetError, master: rtnl.Link) -> Exception:
        text = str(e)
        if text.endswith("EINVAL") or "Invalid argument" in text:
            if self.cfg.mode == "passthru":
                return KernelError(
                    f"a passthru macvlan takes master {master.name!r} alone, and it already has a macvlan "
                    f"(the kernel answers EINVAL; {text})")
            return KernelError(
                f"master {master.name!r} refuses a new macvlan: it carries a passthru macvlan, which takes it "
                f"alone (the kernel answers EINVAL; {text})")
        return super()._kernel_refused(e, master)
