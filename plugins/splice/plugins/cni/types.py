"""CNI results: one canonical form (the 1.1.0 shape) and conversion at the edges.

The canonical result is a plain dict::

    {"cniVersion": "1.1.0",
     "interfaces": [{"name", "mac"?, "mtu"?, "sandbox"?, "socketPath"?, "pciID"?}],
     "ips": [{"address": "cidr", "gateway"?: "ip", "interface"?: int}],
     "routes": [{"dst": "cidr", "gw"?, "mtu"?, "advmss"?, "priority"?, "table"?, "scope"?}],
     "dns": {"nameservers"?, "domain"?, "search"?, "options"?}}

``interfaces``, ``ips`` and ``routes`` are always present (maybe empty); ``dns`` is always
a dict (maybe empty). Addresses are normalised the way the Go library prints them
(``str(ipaddress.ip_interface(...))``); a route ``dst`` keeps its host bits, as Go does.

``to_canonical(result, version)`` reads any version's wire shape (and validates it);
``convert(canonical, to_version)`` renders the wire shape of one version. Keys splice does
not know are kept in the canonical dict and emitted only when rendering 1.1.0 (older
versions get exactly their schema). Conversion rules follow containernetworking/cni
pkg/types/{020,040,100} and CNI SPEC.md "Result".
"""

from __future__ import annotations

import ipaddress

from splice.plugins.cni import version as ver
from splice.plugins.cni.errors import DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG, CniError

# Fields the 1.1.0 spec added; dropped when rendering anything older.
IFACE_FIELDS_1_1 = ("mtu", "socketPath", "pciID")
ROUTE_FIELDS_1_1 = ("mtu", "advmss", "priority", "table", "scope")
IFACE_FIELDS = ("name", "mac", "mtu", "sandbox", "socketPath", "pciID")
IP_FIELDS = ("interface", "address", "gateway")
ROUTE_FIELDS = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")
DNS_FIELDS = ("nameservers", "domain", "search", "options")
TOP_FIELDS = ("cniVersion", "interfaces", "ips", "routes", "dns")


def _bad(where: str, what: str) -> CniError:
    return CniError(DECODE_FAILURE, f"invalid result: {where}: {what}")


# --- field validators (each returns the normalised value) ---------------------------------


def _cidr(value: object, where: str) -> str:
    if not isinstance(value, str) or "/" not in value:
        raise _bad(where, f"{value!r} is not a CIDR address")
    try:
        return str(ipaddress.ip_interface(value))
    except ValueError:
        raise _bad(where, f"{value!r} is not a CIDR address") from None


def _ip(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _bad(where, f"{value!r} is not an IP address")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _bad(where, f"{value!r} is not an IP address") from None


def _uint(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(where, f"{value!r} is not a non-negative integer")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _bad(where, f"{value!r} is not a string")
    return value


def _list(value: object, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(where, f"expected a list, got {type(value).__name__}")
    return value


def _obj(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise _bad(where, f"expected an object, got {type(value).__name__}")
    return value


def _strlist(value: object, where: str) -> list[str]:
    return [_str(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where))]


def _extra(d: dict, known: tuple[str, ...]) -> dict:
    """Keys splice does not know (passed through when rendering 1.1.0)."""
    return {k: v for k, v in d.items() if k not in known}


# --- canonical parts ----------------------------------------------------------------------


def _interface(d: object, where: str) -> dict:
    d = _obj(d, where)
    out: dict = {"name": _str(d.get("name"), f"{where}.name")}
    if not out["name"]:
        raise _bad(f"{where}.name", "empty interface name")
    for key in IFACE_FIELDS[1:]:  # Go's field order: name, mac, mtu, sandbox, socketPath, pciID
        if key == "mtu":
            if d.get("mtu") not in (None, 0):
                out["mtu"] = _uint(d["mtu"], f"{where}.mtu")
        elif d.get(key) not in (None, ""):
            out[key] = _str(d[key], f"{where}.{key}")
    out.update(_extra(d, IFACE_FIELDS))
    return out


def _ipconfig(d: object, where: str, n_interfaces: int) -> dict:
    d = _obj(d, where)
    out: dict = {}
    if d.get("interface") is not None:
        idx = d["interface"]
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise _bad(f"{where}.interface", f"{idx!r} is not an integer")
        if not 0 <= idx < n_interfaces:
            raise CniError(
                INVALID_CONFIG,
                f"invalid result: {where}.interface: index {idx} out of range ({n_interfaces} interfaces)",
            )
        out["interface"] = idx
    out["address"] = _cidr(d.get("address"), f"{where}.address")
    if d.get("gateway") not in (None, ""):
        out["gateway"] = _ip(d["gateway"], f"{where}.gateway")
    out.update(_extra(d, IP_FIELDS + ("version",)))
    return out


def _route(d: object, where: str) -> dict:
    d = _obj(d, where)
    out: dict = {"dst": _cidr(d.get("dst"), f"{where}.dst")}
    if d.get("gw") not in (None, ""):
        out["gw"] = _ip(d["gw"], f"{where}.gw")
    for key in ROUTE_FIELDS_1_1:
        if d.get(key) is not None:
            out[key] = _uint(d[key], f"{where}.{key}")
    out.update(_extra(d, ROUTE_FIELDS))
    return out


def _dns(d: object, where: str = "dns") -> dict:
    if d is None:
        return {}
    d = _obj(d, where)
    out: dict = {}
    for key in ("nameservers", "search", "options"):
        values = _strlist(d.get(key), f"{where}.{key}")
        if values:
            out[key] = values
    if d.get("domain") not in (None, ""):
        out["domain"] = _str(d["domain"], f"{where}.domain")
    out.update(_extra(d, DNS_FIELDS))
    return out


def config_dns(value: object, where: str = "dns") -> dict:
    """A network config's ``dns`` (the result's DNS object, CNI SPEC) validated and
    normalised; CniError code 6 naming the config field when it is malformed."""
    try:
        dns = _dns(value, where)
    except CniError as exc:
        msg = exc.msg.replace("invalid result: ", "", 1)
        raise CniError(exc.code, f"invalid network config: {msg}", exc.details) from None
    for key in DNS_FIELDS:  # they end up in a resolv.conf: one line each, no control characters
        for i, v in enumerate(dns[key] if isinstance(dns.get(key), list) else [dns.get(key)]):
            if isinstance(v, str) and any(c < " " or c == "\x7f" for c in v):
                at = f"{where}.{key}" + (f"[{i}]" if isinstance(dns[key], list) else "")
                raise CniError(DECODE_FAILURE, f"invalid network config: {at}: {v!r} holds a control character")
    return dns


def _from_02x(result: dict) -> dict:
    ips: list[dict] = []
    routes: list[dict] = []
    for key, cls in (("ip4", ipaddress.IPv4Interface), ("ip6", ipaddress.IPv6Interface)):
        block = result.get(key)
        if block is None:
            continue
        block = _obj(block, key)
        address = _cidr(block.get("ip"), f"{key}.ip")
        if not isinstance(ipaddress.ip_interface(address), cls):
            raise _bad(f"{key}.ip", f"{address} is not an IPv{key[-1]} address")
        ip: dict = {"address": address}
        if block.get("gateway") not in (None, ""):
            ip["gateway"] = _ip(block["gateway"], f"{key}.gateway")
        ips.append(ip)
        for i, r in enumerate(_list(block.get("routes"), f"{key}.routes")):
            route = _route(r, f"{key}.routes[{i}]")
            routes.append({k: route[k] for k in ("dst", "gw") if k in route})
    out = {"cniVersion": ver.CURRENT, "interfaces": [], "ips": ips, "routes": routes, "dns": _dns(result.get("dns"))}
    out.update(_extra(result, TOP_FIELDS + ("ip4", "ip6")))
    return out


def to_canonical(result: dict, version: str) -> dict:
    """Parse a result of spec ``version`` (any of the 7) into the canonical 1.1.0 dict.

    Raises CniError: 1 for an unknown version, 6 for a malformed result, 7 for an
    ``ips[].interface`` index outside ``interfaces``.
    """
    if not ver.is_known(version):
        raise CniError(INCOMPATIBLE_VERSION, f"unsupported result version {version!r}",
                       f"known versions: {', '.join(ver.ALL_VERSIONS)}")
    result = _obj(result, "result")
    if not ver.has_multiple_ips(version):
        return _from_02x(result)
    ips_key = "ips"
    if version == "0.3.0" and "ips" not in result and isinstance(result.get("ip"), list):
        ips_key = "ip"  # the 0.3.0 spec misnamed the field (fixed by 0.3.1)
    interfaces = [_interface(d, f"interfaces[{i}]") for i, d in enumerate(_list(result.get("interfaces"), "interfaces"))]
    ips = [_ipconfig(d, f"ips[{i}]", len(interfaces)) for i, d in enumerate(_list(result.get(ips_key), ips_key))]
    routes = [_route(d, f"routes[{i}]") for i, d in enumerate(_list(result.get("routes"), "routes"))]
    out = {"cniVersion": ver.CURRENT, "interfaces": interfaces, "ips": ips, "routes": routes,
           "dns": _dns(result.get("dns"))}
    out.update(_extra(result, TOP_FIELDS + ((ips_key,) if ips_key == "ip" else ())))
    return out


def parse_result(result: dict, default_version: str) -> dict:
    """``to_canonical`` using the result's own ``cniVersion`` (``default_version`` if absent)."""
    result = _obj(result, "result")
    v = result.get("cniVersion")
    if v in (None, ""):
        v = default_version
    if not isinstance(v, str):
        raise _bad("cniVersion", f"{v!r} is not a string")
    return to_canonical(result, v)


# --- rendering ----------------------------------------------------------------------------


def _family(cidr: str) -> str:
    return "4" if ipaddress.ip_interface(cidr).version == 4 else "6"


def _to_02x(c: dict, to_version: str) -> dict:
    out: dict = {"cniVersion": to_version}
    for ip in c["ips"]:
        key = "ip" + _family(ip["address"])
        if key not in out:
            block = {"ip": ip["address"]}
            if "gateway" in ip:
                block["gateway"] = ip["gateway"]
            out[key] = block
        if "ip4" in out and "ip6" in out:
            break
    if "ip4" not in out and "ip6" not in out:
        raise CniError(INCOMPATIBLE_VERSION, "cannot convert: no valid IP addresses",
                       f"a {to_version} result needs at least one IP address")
    for route in c["routes"]:
        key = "ip" + _family(route["dst"])
        if key in out:
            out[key].setdefault("routes", []).append({k: route[k] for k in ("dst", "gw") if k in route})
    # key order as the Go 020 struct prints it
    out = {k: out[k] for k in ("cniVersion", "ip4", "ip6") if k in out}
    if c["dns"]:
        out["dns"] = {k: c["dns"][k] for k in DNS_FIELDS if k in c["dns"]}
    return out


def convert(canonical: dict, to_version: str) -> dict:
    """Render a canonical result (validated again here) as a ``to_version`` result.

    1.1.0 -> 1.0.0 and older drops interface mtu/socketPath/pciID and route
    mtu/advmss/priority/table/scope; 0.3.x/0.4.0 add ``ips[].version``; 0.1.0/0.2.0 keep
    the first IPv4 and first IPv6 address as ``ip4``/``ip6`` with routes split by family
    (no IP at all -> CniError 1 "cannot convert: no valid IP addresses"). Empty lists and
    an empty ``dns`` are omitted.
    """
    if not ver.is_known(to_version):
        raise CniError(INCOMPATIBLE_VERSION, f"cannot convert a result to unknown version {to_version!r}",
                       f"known versions: {', '.join(ver.ALL_VERSIONS)}")
    c = to_canonical(canonical, ver.CURRENT)
    if not ver.has_multiple_ips(to_version):
        return _to_02x(c, to_version)
    current = to_version == ver.CURRENT
    with_version = ver.has_ip_version_field(to_version)

    def pick(d: dict, fields: tuple[str, ...], drop: tuple[str, ...] = ()) -> dict:
        if current:
            return dict(d)
        return {k: d[k] for k in fields if k in d and k not in drop}

    out: dict = {"cniVersion": to_version}
    if c["interfaces"]:
        out["interfaces"] = [pick(i, IFACE_FIELDS, IFACE_FIELDS_1_1) for i in c["interfaces"]]
    if c["ips"]:
        ips = []
        for ip in c["ips"]:
            entry = pick(ip, IP_FIELDS)
            if with_version:
                entry = {"version": _family(ip["address"]), **entry}
            ips.append(entry)
        out["ips"] = ips
    if c["routes"]:
        out["routes"] = [pick(r, ROUTE_FIELDS, ROUTE_FIELDS_1_1) for r in c["routes"]]
    if c["dns"]:
        out["dns"] = pick(c["dns"], DNS_FIELDS)
    if current:
        out.update(_extra(c, TOP_FIELDS))
    return out


# --- the neutral model --------------------------------------------------------------------


def wiring_to_result(w) -> dict:
    """A driver's ``splice.plugins.model.Wiring`` as a canonical result dict."""
    interfaces = []
    for itf in w.interfaces:
        d: dict = {"name": itf.name}
        if itf.mac:
            d["mac"] = itf.mac
        if itf.mtu:
            d["mtu"] = itf.mtu
        if itf.sandbox:
            d["sandbox"] = itf.sandbox
        interfaces.append(d)
    ips = []
    for ip in w.ips:
        d = {}
        if ip.interface is not None:
            d["interface"] = ip.interface
        d["address"] = str(ip.address)
        if ip.gateway is not None:
            d["gateway"] = str(ip.gateway)
        ips.append(d)
    routes = []
    for r in w.routes:
        d = {"dst": str(r.dst)}
        if r.gw is not None:
            d["gw"] = str(r.gw)
        for key in ROUTE_FIELDS_1_1:
            value = getattr(r, key)
            if value is not None:
                d[key] = value
        routes.append(d)
    dns: dict = {}
    if w.dns.nameservers:
        dns["nameservers"] = list(w.dns.nameservers)
    if w.dns.domain:
        dns["domain"] = w.dns.domain
    if w.dns.search:
        dns["search"] = list(w.dns.search)
    if w.dns.options:
        dns["options"] = list(w.dns.options)
    # validate (e.g. an IPConfig.interface index outside interfaces) and normalise
    return to_canonical({"interfaces": interfaces, "ips": ips, "routes": routes, "dns": dns}, ver.CURRENT)


def result_to_wiring(d: dict):
    """A result dict (canonical, or any version carrying its ``cniVersion``) as a ``Wiring``."""
    from splice.plugins.model import DNS, Interface, IPConfig, Route, Wiring

    c = parse_result(d, ver.CURRENT)
    return Wiring(
        interfaces=[
            Interface(name=i["name"], mac=i.get("mac"), sandbox=i.get("sandbox"), mtu=i.get("mtu"))
            for i in c["interfaces"]
        ],
        ips=[
            IPConfig(
                address=ipaddress.ip_interface(ip["address"]),
                gateway=ipaddress.ip_address(ip["gateway"]) if "gateway" in ip else None,
                interface=ip.get("interface"),
            )
            for ip in c["ips"]
        ],
        routes=[
            Route(
                dst=ipaddress.ip_network(r["dst"], strict=False),
                gw=ipaddress.ip_address(r["gw"]) if "gw" in r else None,
                **{k: r.get(k) for k in ROUTE_FIELDS_1_1},
            )
            for r in c["routes"]
        ],
        dns=DNS(
            nameservers=list(c["dns"].get("nameservers", [])),
            domain=c["dns"].get("domain"),
            search=list(c["dns"].get("search", [])),
            options=list(c["dns"].get("options", [])),
        ),
    )
