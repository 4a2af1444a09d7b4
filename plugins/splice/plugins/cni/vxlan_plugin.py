"""`splice-vxlan`: the CNI front-end of the VXLAN overlay driver (:mod:`splice.plugins.vxlan`).

The generic main-plugin adapter (:mod:`splice.plugins.cni.main_plugin`) does the verbs; this
adds the overlay: ADD and STATUS need the agent's overlay manager (the host's subnet lease
and the peer watch, :mod:`splice.plugins.vxlan.overlay`; without an agent: code 108), and
the IPAM range is the host's leased subnet (``splice-ipam``, the config's ``ipam`` with
``ranges`` set from the subnet), so an ADD never waits on etcd once the subnet is held.
DEL, CHECK and GC need no agent.
"""

from __future__ import annotations

from splice.plugins.cni.main_plugin import MainPlugin


class VxlanPlugin(MainPlugin):
    name = "splice-vxlan"
    driver_kind = "vxlan"

    _raw: dict | None = None  # the config as the runtime gave it (before the range is set)
    _driver = None  # one driver per call (a plugin instance serves one call)

    def driver(self, a):
        if self._driver is None:
            from splice.plugins.driver import create

            self._driver = create(self.driver_kind, self._raw or a.config, a.host_ns())
        return self._driver

    def _overlay(self, a):
        """The started overlay of this network (the whole config validated first: code 7)."""
        from splice.plugins.vxlan import overlay

        driver = self.driver(a)
        ov = overlay.manager().overlay(driver.cfg)
        driver.mtu = ov.vtep.mtu  # known: no device lookup in the ADD
        return ov

    def _ipam(self, a, subnet=None) -> None:
        """``ipam`` is splice-ipam (the config may leave it out); its range the host's subnet."""
        if self._raw is None:
            self._raw = a.config
        ipam = dict(a.config.get("ipam") or {}) if isinstance(a.config.get("ipam"), dict) else {}
        ipam.setdefault("type", "splice-ipam")
        config = dict(a.config, ipam=ipam)
        if subnet is not None:  # the bridge (gateway) and the device (VTEP address: an IPv6 /128 is a
            # connected route) are the network's own: IPAM's host-overlap check names them so
            config["bridge"], config["master"] = self.driver(a).cfg.bridge, self.driver(a).cfg.device
            ipam["ranges"] = [[{"subnet": str(subnet)}]]
            rc = a.config.get("runtimeConfig")
            if isinstance(rc, dict) and "ipRanges" in rc:  # the range is the lease's, not the runtime's
                config["runtimeConfig"] = {k: v for k, v in rc.items() if k != "ipRanges"}
        a.config = config

    def add(self, a) -> dict:
        self.driver(a)  # a bad config is code 7 before anything else
        ov = self._overlay(a)
        ov.check_device()
        self._ipam(a, ov.subnet_for_add())
        return super().add(a)

    def status(self, a) -> None:
        from splice.ipam.cluster.errors import ClusterConfigError, ClusterError, SubnetTaken
        from splice.plugins.errors import NotAvailable

        self.driver(a)
        try:
            ov = self._overlay(a)
        except ClusterError as e:
            if isinstance(e, (ClusterConfigError, SubnetTaken)):
                raise
            raise NotAvailable(f"network {a.config.get('name')}: the overlay cannot start: {e.msg}", e.details) from None
        ov.check_status()
        self._ipam(a, ov.lease.status().subnet)
        super().status(a)

    def delete(self, a) -> None:
        self._ipam(a)
        super().delete(a)

    def check(self, a) -> None:
        self._ipam(a)
        super().check(a)

    def gc(self, a) -> None:
        self._ipam(a)
        super().gc(a)
