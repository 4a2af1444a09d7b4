"""`splice-bridge`: the CNI front-end of the bridge driver.

Translates a CNI call into IPAM + driver calls; the skel does the protocol.
Heavy modules (the driver, pyroute2) are imported inside the verbs so that VERSION
stays cheap.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~2 ms on the VERSION path; annotations are strings

from splice.plugins.cni.version import ALL_VERSIONS

if TYPE_CHECKING:
    from splice.plugins.cni.skel import CmdArgs
    from splice.plugins.model import Attachment


def _mac(a: "CmdArgs") -> str | None:
    """Container MAC: runtimeConfig "mac" > args.cni.mac > CNI_ARGS MAC (CONVENTIONS.md)."""
    rc = a.config.get("runtimeConfig") or {}
    if isinstance(rc, dict) and rc.get("mac"):
        return str(rc["mac"])
    args = a.config.get("args") or {}
    cni = args.get("cni") if isinstance(args, dict) else None
    if isinstance(cni, dict) and cni.get("mac"):
        return str(cni["mac"])
    return a.args.get("MAC") or None


def _has_ipam(a: "CmdArgs") -> bool:
    from splice.plugins.cni.ipam import has_ipam

    return has_ipam(a.config)


def _attachment(a: "CmdArgs") -> "Attachment":
    from splice.plugins.model import Attachment

    return Attachment(
        network=a.config["name"],
        container_id=a.container_id or "",
        ifname=a.ifname or "",
        netns=a.netns or None,
        mac=_mac(a),
    )


def _own_routes(a: "CmdArgs", routes: list, default_gateway: bool) -> list:
    """The routes of the result that this plugin installed: those of the IPAM config
    (``ipam.routes``, the host-local/static/splice-ipam convention) and the default routes
    of isDefaultGateway. Routes other chained plugins listed are not ours to CHECK."""
    import ipaddress

    ipam = a.config.get("ipam") or {}
    dsts = set()
    for r in ipam.get("routes") or [] if isinstance(ipam, dict) else []:
        if isinstance(r, dict) and r.get("dst"):
            try:
                dsts.add(ipaddress.ip_network(r["dst"], strict=False))
            except ValueError:
                continue
    if default_gateway:
        dsts |= {ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")}
    return [r for r in routes if r.dst in dsts]


def _chain(prev: dict, own: dict) -> dict:
    """A chained ADD outputs prevResult with its own additions (SPEC: each plugin passes
    the result on, modified): prev's interfaces, ips and routes first, ours appended with
    their interface indexes shifted; fields we do not know are kept."""
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


class BridgePlugin:
    name = "splice-bridge"
    supported_versions = ALL_VERSIONS
    cni_args = frozenset({"IP", "MAC"})

    def _driver(self, a: "CmdArgs"):
        from splice.plugins.bridge.config import parse_bridge_config
        from splice.plugins.bridge.driver import BridgeDriver

        return BridgeDriver(parse_bridge_config(a.config), a.host_ns())

    def add(self, a: "CmdArgs") -> dict:
        import ipaddress

        from splice.plugins import failpoint
        from splice.plugins.cni import ipam as ipamc
        from splice.plugins.cni.types import wiring_to_result
        from splice.plugins.model import IPConfig, Route

        driver = self._driver(a)  # validates the whole config before touching anything
        att = _attachment(a)
        ipam_result: dict = {}
        if _has_ipam(a):
            ipam_result = ipamc.ipam_add(a)
        try:
            failpoint.hit("ipam.allocated")
            ips = [
                IPConfig(
                    address=ipaddress.ip_interface(ip["address"]),
                    gateway=ipaddress.ip_address(ip["gateway"]) if ip.get("gateway") else None,
                )
                for ip in ipam_result.get("ips", [])
            ]
            routes = [
                Route(
                    dst=ipaddress.ip_network(r["dst"], strict=False),
                    gw=ipaddress.ip_address(r["gw"]) if r.get("gw") else None,
                    mtu=r.get("mtu"), advmss=r.get("advmss"), priority=r.get("priority"),
                    table=r.get("table"), scope=r.get("scope"),
                )
                for r in ipam_result.get("routes", [])
            ]
            wiring = driver.add(att, ips, routes)
        except BaseException:
            if _has_ipam(a):
                try:
                    ipamc.ipam_del(a)
                except Exception:  # the original error is what the caller needs
                    pass
            raise
        result = wiring_to_result(wiring)
        dns = ipam_result.get("dns") or a.config.get("dns")
        if dns:
            result["dns"] = dns
        if a.prev_result:
            result = _chain(a.prev_result, result)
        return result

    def delete(self, a: "CmdArgs") -> None:
        from splice.plugins.cni import ipam as ipamc
        from splice.plugins.cni.types import result_to_wiring

        driver = self._driver(a)
        att = _attachment(a)
        ips = None
        if a.prev_result and a.prev_result.get("ips"):
            w = result_to_wiring(a.prev_result)
            ours = {n for n, i in enumerate(w.interfaces) if i.name == att.ifname and i.sandbox}
            ips = [ip for ip in w.ips if ip.interface in ours] or None
        driver.delete(att, ips)
        if _has_ipam(a):
            ipamc.ipam_del(a)

    def check(self, a: "CmdArgs") -> None:
        from splice.plugins.cni import ipam as ipamc
        from splice.plugins.cni.types import result_to_wiring
        from splice.plugins.errors import ConfigError

        if not a.prev_result:
            raise ConfigError("CHECK needs prevResult (the result of ADD)")
        driver = self._driver(a)
        leases = ipamc.ipam_check(a) if _has_ipam(a) else []
        expected = result_to_wiring(a.prev_result)
        # Masquerade entries exist for the addresses this ADD got from IPAM, not for
        # addresses later chained plugins added: splice-ipam says exactly which are ours;
        # with a delegated IPAM, the first address of each family on our interface is.
        own = [lease.address for lease in leases] or None
        expected.routes = _own_routes(a, expected.routes, driver.cfg.is_default_gateway)
        driver.check(_attachment(a), expected, masq_addrs=own)

    def status(self, a: "CmdArgs") -> None:
        from splice.plugins.cni import ipam as ipamc

        driver = self._driver(a)
        if _has_ipam(a):
            ipamc.ipam_status(a)
        driver.status()

    def gc(self, a: "CmdArgs") -> None:
        from splice.plugins.cni import ipam as ipamc

        driver = self._driver(a)
        from splice.plugins.cni.skel import valid_attachments

        valid = valid_attachments(a.config)
        errors: list[BaseException] = []
        try:
            driver.gc(a.config["name"], valid)
        except Exception as e:  # GC continues past failures and reports them all
            errors.append(e)
        if _has_ipam(a):
            try:
                ipamc.ipam_gc(a)
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]
