"""``splice net create|ls|inspect|rm``: networks as conflists in the config directory.

``create`` writes ``<config dir>/<name>.conflist``: ``splice-<driver>`` with a
``splice-ipam`` ``ipam`` (and, for the bridge, ``splice-portmap`` with the
``portMappings`` capability), validated first by the driver's own ``parse_config`` and by
the IPAM config parser, so a bad option is an error now, not at the first container.
``-f FILE`` takes a whole conflist (JSON or YAML) or the short form::

    name: web
    driver: bridge            # bridge | macvlan | ipvlan
    subnet: 10.88.0.0/16      # or a list (one per family)
    gateway: 10.88.0.1        # optional, or a list
    options: {ipMasq: true}   # driver keys; "ipam.<key>" keys go to the ipam object
    ipam: {dataDir: /var/lib/cni/splice}
"""

from __future__ import annotations

import argparse
import json
import os

from splice.plugins.cli import common
from splice.plugins.cli.output import PROBLEM, USAGE, CliError, UsageError, dump_json, table

CNI_VERSION = "1.0.0"  # what podman 4.3 / containerd 1.6 accept (README); GC/STATUS are run at 1.1.0


# -- argument parsing ------------------------------------------------------------------
def add_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="net_command", metavar="ACTION")
    c = sub.add_parser("create", help="write a network's conflist into the config directory",
                       description="Write <config dir>/NAME.conflist, validated by the driver's and the IPAM "
                                   "config parsers.")
    c.add_argument("name", nargs="?", metavar="NAME")
    c.add_argument("-f", "--file", default=None, help="a conflist, or the short form (JSON or YAML)")
    c.add_argument("--driver", "-d", choices=common.KINDS, default=None)
    c.add_argument("--subnet", action="append", default=[], metavar="CIDR", help="repeat for dual stack")
    c.add_argument("--gateway", action="append", default=[], metavar="IP")
    c.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a driver option (value parsed as JSON when it is JSON: true, 1400, [..]); "
                        "ipam.KEY=VALUE goes to the ipam object (e.g. ipam.dataDir=/var/lib/cni/splice)")
    c.add_argument("--no-portmap", action="store_true", help="bridge: no splice-portmap in the chain")
    c.add_argument("--cni-version", default=CNI_VERSION, help=f"cniVersion of the conflist (default {CNI_VERSION})")
    c.add_argument("--force", action="store_true", help="replace an existing conflist of this name")
    c.add_argument("--dry-run", action="store_true", help="print the conflist, write nothing")
    common.add_location_args(c, cache=False, cni_path=False)
    ls = sub.add_parser("ls", help="list the networks", aliases=["list"])
    ls.add_argument("--json", action="store_true")
    common.add_location_args(ls, cni_path=False)
    i = sub.add_parser("inspect", help="a network's conflist, file, attachments and lease count")
    i.add_argument("name", metavar="NAME")
    common.add_location_args(i, cni_path=False)
    r = sub.add_parser("rm", help="remove a network's conflist", aliases=["remove"])
    r.add_argument("name", metavar="NAME")
    r.add_argument("--force", action="store_true", help="even with attachments or leases left")
    common.add_location_args(r, cni_path=False)
    p.set_defaults(_net_parser=p)


def run(args) -> int:
    action = args.net_command
    if action is None:
        args._net_parser.print_help()
        return USAGE
    return {"create": create, "ls": ls, "list": ls, "inspect": inspect, "rm": rm, "remove": rm}[action](args)


# -- create ----------------------------------------------------------------------------
def _opt_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_opts(opts: list[str]) -> dict:
    out: dict = {}
    for o in opts:
        key, sep, value = o.partition("=")
        if not sep or not key:
            raise UsageError(f"-o {o!r}: expected KEY=VALUE (e.g. -o ipMasq=false, -o master=eth0)")
        out[key] = _opt_value(value)
    return out


def default_bridge(name: str) -> str:
    """``br-<name>`` when it is a valid interface name, else ``br-<12 hex of sha256(name)>``."""
    from splice.libnet.names import ifname_problem
    from splice.plugins.owners import sha256_hex

    cand = f"br-{name}"
    return cand if ifname_problem(cand) is None else "br-" + sha256_hex(name)[:12]


def _ranges(subnets: list[str], gateways: list[str], code: int) -> list[list[dict]]:
    import ipaddress

    nets = []
    for s in subnets:
        try:
            nets.append(ipaddress.ip_network(str(s).strip(), strict=True))
        except ValueError as e:
            raise CliError(f"subnet {s!r} is not a CIDR without host bits ({e})", code) from None
    gws = []
    for g in gateways:
        try:
            gws.append(ipaddress.ip_address(str(g).strip()))
        except ValueError:
            raise CliError(f"gateway {g!r} is not an IP address", code) from None
    out = []
    used = set()
    for n in nets:
        r: dict = {"subnet": str(n)}
        for g in gws:
            if g.version == n.version and g in n:
                r["gateway"] = str(g)
                used.add(g)
                break
        out.append([r])
    for g in gws:
        if g not in used:
            raise CliError(f"gateway {g} is in none of the subnets ({', '.join(map(str, nets))})", code)
    return out


def build_conflist(name: str, driver: str, subnets: list[str], gateways: list[str], options: dict, *,
                   ipam_extra: dict | None = None, portmap: bool = True, cni_version: str = CNI_VERSION,
                   code: int = USAGE) -> dict:
    if driver not in common.KINDS:
        raise CliError(f"driver {driver!r} is not one of {', '.join(common.KINDS)}", code)
    if not subnets:
        raise CliError("a subnet is required (--subnet CIDR, or subnet: in the file)", code)
    opts = dict(options)
    ipam: dict = {"type": "splice-ipam", "ranges": _ranges(subnets, gateways, code)}
    for k in [k for k in opts if k.startswith("ipam.")]:
        ipam[k[len("ipam."):]] = opts.pop(k)
    ipam.update(ipam_extra or {})
    plugin: dict = {"type": f"splice-{driver}"}
    if driver == "bridge":
        plugin.update({"bridge": default_bridge(name), "isGateway": True, "isDefaultGateway": True, "ipMasq": True})
    elif gateways:  # macvlan/ipvlan: the segment's router, when given
        ipam["routes"] = [{"dst": "0.0.0.0/0" if ":" not in g else "::/0"} for g in gateways]
    plugin.update(opts)
    plugin["ipam"] = ipam
    plugins = [plugin]
    if driver == "bridge" and portmap:
        plugins.append({"type": "splice-portmap", "capabilities": {"portMappings": True}})
    return {"cniVersion": cni_version, "name": name, "plugins": plugins}


def _load_file(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None
    text = raw.decode("utf-8", errors="replace")
    if path.endswith((".yaml", ".yml")) or not text.lstrip().startswith(("{", "[")):
        try:
            import yaml
        except ImportError:
            raise CliError(f"{path} is YAML but PyYAML is not installed (pip install pyyaml), or write it as "
                           f"JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise CliError(f"{path} is not valid YAML: {e}") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise CliError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a mapping (a conflist, or name/driver/subnet), got {type(data).__name__}")
    return data


def _from_file(data: dict, path: str, name_arg: str | None, args) -> dict:
    if "plugins" in data:
        conf = dict(data)
        if name_arg and conf.get("name") not in (None, name_arg):
            raise CliError(f"{path} names the network {conf.get('name')!r}, the command line {name_arg!r}")
        conf.setdefault("name", name_arg)
        return conf
    known = {"name", "driver", "subnet", "subnets", "gateway", "gateways", "options", "ipam", "portmap", "cniVersion"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CliError(f"{path}: unknown key(s) {', '.join(unknown)} (short form keys: {', '.join(sorted(known))}; "
                       f"or give a whole conflist with plugins:)")
    name = data.get("name") or name_arg
    if name_arg and data.get("name") not in (None, name_arg):
        raise CliError(f"{path} names the network {data.get('name')!r}, the command line {name_arg!r}")

    def listed(*keys):
        out = []
        for k in keys:
            v = data.get(k)
            if v is None:
                continue
            out.extend(v if isinstance(v, list) else [v])
        return [str(x) for x in out]

    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise CliError(f"{path}: options must be a mapping of driver keys")
    ipam = data.get("ipam") or {}
    if not isinstance(ipam, dict):
        raise CliError(f"{path}: ipam must be a mapping")
    if not name:
        raise CliError(f"{path}: no network name (name: in the file, or NAME on the command line)")
    return build_conflist(str(name), str(data.get("driver") or args.driver or "bridge"),
                          listed("subnet", "subnets"), listed("gateway", "gateways"),
                          {**options, **parse_opts(args.opt)}, ipam_extra=ipam,
                          portmap=bool(data.get("portmap", True)) and not args.no_portmap,
                          cni_version=str(data.get("cniVersion") or args.cni_version), code=PROBLEM)


def validate(conf: dict, code: int) -> None:
    """The conflist as the plugins will see it: the network name, then each splice
    plugin's config through its own parser (driver, IPAM, port mapping)."""
    from splice.ipam.config import check_network_name, parse_ipam_config
    from splice.ipam.errors import IpamConfigError

    name = conf.get("name")
    try:
        check_network_name(name)
    except IpamConfigError as e:
        raise CliError(f"network name: {e}", code) from None
    if len(str(name).encode()) > 200:
        raise CliError(f"network name of {len(str(name).encode())} bytes is too long (cache files and the IPAM "
                       f"store are named after it)", code)
    plugins = conf.get("plugins")
    if not isinstance(plugins, list) or not plugins or not all(isinstance(p, dict) for p in plugins):
        raise CliError("plugins: expected a non-empty list of plugin objects", code)
    cv = conf.get("cniVersion")
    from splice.plugins.cni.version import ALL_VERSIONS

    if cv not in ALL_VERSIONS:
        raise CliError(f"cniVersion {cv!r} is not one splice speaks ({', '.join(ALL_VERSIONS)})", code)
    for i, p in enumerate(plugins):
        t = p.get("type")
        if not isinstance(t, str) or not t:
            raise CliError(f"plugins[{i}]: no type", code)
        where = f"plugins[{i}] ({t})"
        per = {**p, "name": name, "cniVersion": cv}
        kind = t[len("splice-"):] if t.startswith("splice-") else None
        if kind in common.KINDS:
            from splice.plugins import driver as framework

            try:
                framework.driver_class(kind).parse_config(per)
            except Exception as e:  # noqa: BLE001 - ConfigError/UnsupportedField and friends: the message
                raise CliError(f"{where}: {e}", code) from None
        elif kind == "portmap":
            from splice.plugins.portmap.config import parse_portmap_config

            try:
                parse_portmap_config(per)
            except Exception as e:  # noqa: BLE001
                raise CliError(f"{where}: {e}", code) from None
        ipam = p.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "splice-ipam":
            try:
                parse_ipam_config(ipam, name)
            except IpamConfigError as e:
                raise CliError(f"{where} ipam: {e}", code) from None


def write_conflist(directory: str, conf: dict, force: bool) -> str:
    name = conf["name"]
    for net in common.networks(directory):
        if net.name == name and not force:
            raise CliError(f"network {name!r} exists already ({net.path}): remove it first (splice net rm {name}) "
                           f"or pass --force to replace it")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, f"{name}.conflist")
    tmp = f"{path}.tmp{os.getpid()}"
    # a name starting with "." is hidden from libcni's listing until the rename
    tmp = os.path.join(directory, "." + os.path.basename(tmp))
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(conf, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def create(args) -> int:
    if args.file:
        if args.subnet or args.gateway:
            raise UsageError("-f FILE and --subnet/--gateway do not go together: put them in the file")
        conf = _from_file(_load_file(args.file), args.file, args.name, args)
        code = PROBLEM
    else:
        if not args.name:
            raise UsageError("NAME is required (or -f FILE)")
        if not args.driver:
            raise UsageError(f"--driver is required ({'|'.join(common.KINDS)})")
        conf = build_conflist(args.name, args.driver, args.subnet, args.gateway, parse_opts(args.opt),
                              portmap=not args.no_portmap, cni_version=args.cni_version)
        code = USAGE
    validate(conf, code)
    if args.dry_run:
        dump_json(conf)
        return 0
    path = write_conflist(common.config_dir(args), conf, args.force)
    print(path)
    return 0


# -- ls / inspect / rm -------------------------------------------------------------------
def _lease_count(net: common.Network) -> int | None:
    """Leases in the network's splice-ipam store; None when it has none (or not ours)."""
    if not net.ipam_is_splice:
        return None
    from splice.ipam.store import DB_NAME

    try:
        db = os.path.join(net.store_dir(), DB_NAME)
    except CliError:  # a broken config lists as "-"
        return None
    if not os.path.exists(db):
        return 0
    import sqlite3

    try:  # read-only, no lock taken: a count for a listing
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2.0)
        try:
            return con.execute("SELECT count(*) FROM lease").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return None


def _summary(net: common.Network, attached: int | None) -> dict:
    main = net.main
    return {"name": net.name, "driver": net.driver_label,
            "subnets": [s for s, _ in net.subnets()], "gateways": [g for _, g in net.subnets() if g],
            "device": main.get("bridge") or main.get("master") or "",
            "attachments": attached, "leases": _lease_count(net), "file": net.path,
            "plugins": [p.get("type") for p in net.plugins]}


def ls(args) -> int:
    nets = common.networks(common.config_dir(args))
    counts = common.count_cached(common.results_dir(args), [n.name for n in nets])
    rows = [_summary(n, counts.get(n.name, 0)) for n in nets]
    if args.json:
        dump_json(rows)
        return 0
    table(["NAME", "DRIVER", "SUBNET", "DEVICE", "ATTACHED", "LEASES", "FILE"],
          [[r["name"], r["driver"], ",".join(r["subnets"]), r["device"], r["attachments"],
            "-" if r["leases"] is None else r["leases"], r["file"]] for r in rows])
    return 0


def inspect(args) -> int:
    net = common.find_network(args, args.name)
    cached = common.cached_attachments(args, net.name)
    out = _summary(net, len(cached))
    out["attached"] = [{"containerId": c, "ifname": i, "netns": rec.get("netns")} for (c, i), rec in sorted(cached.items())]
    out["conflist"] = net.conf
    dump_json(out)
    return 0


def rm(args) -> int:
    net = common.find_network(args, args.name)
    if not args.force:
        cached = common.cached_attachments(args, net.name)
        leases = _lease_count(net) or 0
        if cached or leases:
            some = ", ".join(f"{c}/{i}" for c, i in sorted(cached)[:3])
            raise CliError(f"network {net.name!r} still has {len(cached)} cached attachment(s)"
                           f"{' (' + some + ')' if some else ''} and {leases} lease(s): detach them first "
                           f"(splice detach {net.name} --netns ...), or pass --force to remove only the conflist")
    os.unlink(net.path)
    print(f"removed {net.path}")
    if net.kind == "bridge":
        print(f"(the bridge {net.main.get('bridge') or 'cni0'} is left in place, as CNI DEL leaves it)")
    return 0
