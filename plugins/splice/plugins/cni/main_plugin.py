"""The CNI front-end of any framework driver ("main" plugins: bridge, and later macvlan,
ipvlan, vxlan): IPAM call, rollback, prevResult chaining and result rendering, once.

A plugin module is then a few lines::

    class BridgePlugin(MainPlugin):
        name = "splice-bridge"
        driver_kind = "bridge"

ADD, in order: parse the driver config (pure; a bad config fails before anything is
made), validate the config's ``dns``, run IPAM and parse its result (a malformed IPAM
result is released again before the kernel is touched), ``driver.attach``, render the
result in the config's version. Any failure after IPAM allocated releases the addresses
and undoes the attachment (the driver undoes its own half-made work; a rendering failure
detaches); what the rollback could not undo is added to the error's details.

Heavy modules (the driver, pyroute2, ipaddress) are imported inside the verbs so that
VERSION stays cheap.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing import on the VERSION path (bench/startup.py); annotations are strings

from splice.plugins.cni.version import ALL_VERSIONS

if TYPE_CHECKING:
    from splice.plugins.cni.skel import CmdArgs
    from splice.plugins.model import Attachment


def _mac_source(a: "CmdArgs") -> "tuple[str, str | None]":
    """(where, MAC): runtimeConfig "mac" > args.cni.mac > CNI_ARGS MAC (the CNI
    conventions document's order: runtime config first). A MAC in the config that is not a
    string is a config error (code 7)."""
    from splice.plugins.errors import ConfigError

    rc = a.config.get("runtimeConfig") or {}
    args = a.config.get("args") or {}
    cni = args.get("cni") if isinstance(args, dict) else None
    for where, holder in (("runtimeConfig.mac", rc), ("args.cni.mac", cni)):
        if isinstance(holder, dict) and holder.get("mac") not in (None, ""):
            if not isinstance(holder["mac"], str):
                raise ConfigError(f"{where} must be a MAC address string, got {holder['mac']!r}")
            return where, holder["mac"]
    return "CNI_ARGS MAC", a.args.get("MAC") or None


def container_mac(a: "CmdArgs") -> str | None:
    """Container MAC (see :func:`_mac_source` for the precedence)."""
    return _mac_source(a)[1]


def check_mac(a: "CmdArgs") -> None:
    """A MAC the kernel cannot give the container interface: code 7 from the config, code 4
    from CNI_ARGS (the environment)."""
    where, mac = _mac_source(a)
    if mac:
        from splice.libnet.names import normalize_mac
        from splice.plugins.errors import ConfigError, InvalidEnvironment

        try:
            normalize_mac(mac)
        except ValueError as e:
            cls = InvalidEnvironment if where.startswith("CNI_ARGS") else ConfigError
            raise cls(f"{where}: {e}") from None


def attachment(a: "CmdArgs") -> "Attachment":
    from splice.plugins.model import Attachment

    return Attachment(
        network=a.config["name"],
        container_id=a.container_id or "",
        ifname=a.ifname or "",
        netns=a.netns or None,
        mac=container_mac(a),
    )


def own_routes(a: "CmdArgs", routes: list, default_routes: bool) -> list:
    """The routes of a result that the main plugin installed: those of the IPAM config
    (``ipam.routes``, the host-local/static/splice-ipam convention) and, when the driver
    adds them, the default routes. Routes other chained plugins listed are not ours."""
    import ipaddress

    ipam = a.config.get("ipam") or {}
    dsts = set()
    for r in ipam.get("routes") or [] if isinstance(ipam, dict) else []:
        if isinstance(r, dict) and r.get("dst"):
            try:
                dsts.add(ipaddress.ip_network(r["dst"], strict=False))
            except ValueError:
                continue
    if default_routes:
        dsts |= {ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")}
    return [r for r in routes if r.dst in dsts]


def chain(prev: dict, own: dict) -> dict:
    """A chained ADD outputs prevResult with its own additions (CNI SPEC: each plugin
    passes the result on, modified): prev's interfaces, ips and routes first, ours appended
    with their interface indexes shifted; fields we do not know are kept."""
    out = dict(prev)
    shift = len(prev.get("interfaces") or [])
    ips = []
    for ip in own.get("ips", []):
        ip = dict(ip)
        if ip.get("interface") is not None:
            ip["interface"] += shift
        ips.append(ip)
    out["interfaces"] = list(prev.get("interfaces") or []) + list(own.get("interfaces", []))
    out["ips"] = list(prev.get("ips") or []) + ips
    out["routes"] = list(prev.get("routes") or []) + list(own.get("routes", []))
    if own.get("dns"):
        out["dns"] = own["dns"]
    out["cniVersion"] = own.get("cniVersion", prev.get("cniVersion"))
    return out


def chain_on_prev_addresses(prev: dict, own: dict) -> dict:
    """A chained ADD whose driver put prevResult's addresses and routes on its own
    interface (a driver's ``uses_prev_result_addresses``, used without ``ipam``): prevResult
    with our interfaces appended and its addresses now pointing at our first interface."""
    out = dict(prev)
    shift = len(prev.get("interfaces") or [])
    out["interfaces"] = list(prev.get("interfaces") or []) + list(own.get("interfaces", []))
    out["ips"] = [dict(ip, interface=shift) for ip in prev.get("ips") or []]
    if own.get("dns"):
        out["dns"] = own["dns"]
    out["cniVersion"] = own.get("cniVersion", prev.get("cniVersion"))
    return out


def _delegate_allocated(exc: BaseException) -> bool:
    """Did a delegated IPAM's ADD succeed (exit 0) with an answer that is no valid result?
    It holds an allocation then, which its DEL releases. (A delegate whose ADD failed
    cleaned up itself, or may hold another ADD's lease: no DEL, as the reference.)"""
    from splice.plugins.cni.delegate import BadDelegateResult

    return isinstance(exc, BadDelegateResult)


class MainPlugin:
    """CNI verbs on top of ``splice.plugins.driver.create(driver_kind, ...)``."""

    name = "splice-main"
    driver_kind = ""
    supported_versions = ALL_VERSIONS
    cni_args = frozenset({"IP", "MAC"})

    def driver(self, a: "CmdArgs"):
        from splice.plugins.driver import create

        return create(self.driver_kind, a.config, a.host_ns())

    @staticmethod
    def has_ipam(a: "CmdArgs") -> bool:
        from splice.plugins.cni.ipam import has_ipam

        return has_ipam(a.config)

    # ------------------------------------------------------------------ ADD
    def add(self, a: "CmdArgs") -> dict:
        from splice.plugins import failpoint
        from splice.plugins.cni import ipam as ipamc
        from splice.plugins.cni import types
        from splice.plugins.cni.version import CURRENT

        driver = self.driver(a)  # validates the whole driver config before touching anything
        att = attachment(a)
        check_mac(a)  # before IPAM: a bad request makes nothing
        config_dns = types.config_dns(a.config.get("dns"))  # code 6 when malformed
        with_ipam = self.has_ipam(a)
        ipam_result: dict = {}
        if with_ipam:
            try:
                ipam_result = ipamc.ipam_add(a)
            except Exception as exc:
                if _delegate_allocated(exc):  # as the reference's deferred ipam.ExecDel
                    try:
                        ipamc.ipam_del(a)
                    except Exception as e:  # noqa: BLE001 - reported on the original error
                        exc.add_note(f"rollback: IPAM release: {getattr(e, 'msg', None) or e}")
                raise
        wiring = None
        try:
            failpoint.hit("ipam.allocated")
            ips: list = []
            routes: list = []
            dns = config_dns
            if ipam_result:
                from splice.plugins.model import IPConfig

                allocated = types.parse_result(ipam_result, CURRENT)  # code 6 when malformed
                own = types.result_to_wiring(allocated)
                ips = [IPConfig(address=ip.address, gateway=ip.gateway) for ip in own.ips]
                routes = list(own.routes)
                dns = allocated["dns"] or config_dns
            from_prev = not with_ipam and bool(a.prev_result) and getattr(driver, "uses_prev_result_addresses", False)
            if from_prev:  # chained without ipam: the previous plugins' addresses go onto our link
                prev = types.result_to_wiring(a.prev_result)
                ips, routes = list(prev.ips), list(prev.routes)
            wiring = driver.attach(att, ips, routes)
            result = types.wiring_to_result(wiring)
            if dns:
                result["dns"] = dns
            if from_prev:
                result = chain_on_prev_addresses(a.prev_result, result)
            elif a.prev_result:
                result = chain(a.prev_result, result)
            types.convert(result, a.version)  # a result the config's version cannot express fails here
            return result
        except BaseException as exc:
            if wiring is not None:
                try:
                    driver.detach(att, wiring.ips)
                except Exception as e:  # noqa: BLE001 - reported on the original error
                    exc.add_note(f"rollback: detach: {getattr(e, 'msg', None) or e}")
            if with_ipam:
                try:
                    ipamc.ipam_del(a)
                except Exception as e:  # noqa: BLE001 - reported on the original error
                    exc.add_note(f"rollback: IPAM release: {getattr(e, 'msg', None) or e}")
            raise

    # ------------------------------------------------------------------ DEL
    def delete(self, a: "CmdArgs") -> None:
        from splice.plugins.cni import ipam as ipamc
        from splice.plugins.owners import Steps

        driver = self.driver(a)
        att = attachment(a)
        ips = None
        if a.prev_result and a.prev_result.get("ips"):
            from splice.plugins.cni.types import result_to_wiring

            w = result_to_wiring(a.prev_result)
            ours = {n for n, i in enumerate(w.interfaces) if i.name == att.ifname and i.sandbox}
            ips = [ip for ip in w.ips if ip.interface in ours] or None
        steps = Steps(f"DEL of {att.container_id}/{att.ifname}")
        steps.run(driver.detach, att, ips)
        if self.has_ipam(a):  # released even when the kernel part failed
            steps.run(ipamc.ipam_del, a)
        steps.done()

    # ------------------------------------------------------------------ CHECK
    def check(self, a: "CmdArgs") -> None:
        from splice.plugins.cni import ipam as ipamc
        from splice.plugins.cni.types import result_to_wiring
        from splice.plugins.errors import ConfigError

        if not a.prev_result:
            raise ConfigError("CHECK needs prevResult (the result of ADD)")
        driver = self.driver(a)
        leases = ipamc.ipam_check(a) if self.has_ipam(a) else []
        expected = result_to_wiring(a.prev_result)
        # The addresses this ADD got from IPAM, not those later chained plugins added:
        # splice-ipam says exactly which are ours; with a delegated IPAM the driver takes
        # the first address of each family on our interface.
        own = [lease.address for lease in leases] or None
        expected.routes = own_routes(a, expected.routes, driver.installs_default_routes)
        driver.check(attachment(a), expected, own)

    # ------------------------------------------------------------------ STATUS / GC
    def status(self, a: "CmdArgs") -> None:
        from splice.plugins.cni import ipam as ipamc

        driver = self.driver(a)
        if self.has_ipam(a):
            ipamc.ipam_status(a)
        driver.status()

    def gc(self, a: "CmdArgs") -> None:
        """GC continues past failures and reports them all (the error's details)."""
        from splice.plugins.cni import ipam as ipamc
        from splice.plugins.cni.skel import valid_attachments
        from splice.plugins.owners import Steps

        driver = self.driver(a)
        valid = valid_attachments(a.config)
        steps = Steps(f"GC of network {a.config['name']!r}")
        steps.run(driver.gc, a.config["name"], valid)
        if self.has_ipam(a):
            steps.run(ipamc.ipam_gc, a)
        steps.done()
