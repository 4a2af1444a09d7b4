"""``splice attach|detach|check|gc`` and ``splice status NAME``: a network's chain run by
hand, exactly as libcni runs it, through the plugin executables on the CNI path
(:class:`splice.conformance.runtime.Runtime`: ADD in order with prevResult, DEL in
reverse with the cached result, CHECK forward), with the result kept in libcni's cache
(:mod:`splice.plugins.cli.common`), so a runtime's later DEL/CHECK/GC of the attachment
works, and the other way round.

A failed ADD is followed by a DEL of the whole chain (what a runtime does when ADD fails),
so nothing half-made stays. GC and STATUS are CNI 1.1.0 verbs: a conflist of an older
``cniVersion`` whose plugins are all splice's is run at 1.1.0 for them (splice speaks every
version; libcni would skip them).
"""

from __future__ import annotations

import argparse
import os

from splice.plugins.cli import common
from splice.plugins.cli.output import PROBLEM, CliError, UsageError, dump_json, paint, table


def _attachment_args(p: argparse.ArgumentParser, *, netns_required: bool = True) -> None:
    p.add_argument("name", metavar="NAME", help="the network")
    p.add_argument("--netns", required=netns_required, metavar="NAME|PATH",
                   help="the container's network namespace: a name under /run/netns, or a path")
    p.add_argument("--ifname", default="eth0", help="the interface in the container (default eth0)")
    p.add_argument("--container-id", default=None, metavar="ID",
                   help="default: derived from the --netns path (the same --netns finds it again)")
    common.add_location_args(p, cache=True, cni_path=True)


def add_attach_args(p: argparse.ArgumentParser) -> None:
    _attachment_args(p)
    p.add_argument("--ip", action="append", default=[], metavar="IP", help="a static address (CNI_ARGS IP=)")
    p.add_argument("--mac", default=None, help="the container interface's MAC (CNI_ARGS MAC=)")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[HOSTIP:]HOST:CONTAINER[/PROTO]",
                   help="publish a port (portMappings capability; repeatable)")
    p.add_argument("--json", action="store_true", help="print the CNI result")


def add_detach_args(p: argparse.ArgumentParser) -> None:
    _attachment_args(p, netns_required=False)


def add_check_args(p: argparse.ArgumentParser) -> None:
    _attachment_args(p, netns_required=False)


def add_gc_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dry-run", action="store_true", help="print what would go, change nothing")
    common.add_location_args(p, cache=True, cni_path=True)


# -- helpers -------------------------------------------------------------------------
def runtime(args):
    from splice.conformance.runtime import Runtime

    return Runtime(cni_path=common.cni_path(args), cache_dir=None)


def _check_plugins(rt, net: common.Network) -> None:
    for p in net.plugins:
        t = p.get("type")
        try:
            rt.find(t)
        except FileNotFoundError:
            raise CliError(f"plugin {t!r} of network {net.name!r} is not in the CNI path {':'.join(rt.cni_path)}: "
                           f"install it (splice install-cni --dir /opt/cni/bin) or pass --cni-path") from None


def _describe(e) -> str:
    msg = e.error.get("msg") if getattr(e, "error", None) else None
    details = e.error.get("details") if getattr(e, "error", None) else None
    text = f"{e.plugin} {e.command} failed"
    if e.code is not None:
        text += f" (CNI error {e.code})"
    text += f": {msg or (e.stderr or e.stdout).strip() or f'exit status {e.rc}'}"
    if details:
        text += f" [{details}]"
    return text


def parse_publish(specs: list[str]) -> list[dict]:
    out = []
    for s in specs:
        body, _, proto = s.partition("/")
        proto = proto or "tcp"
        if proto not in ("tcp", "udp", "sctp"):
            raise UsageError(f"-p {s}: protocol {proto!r} is not tcp, udp or sctp")
        host_ip = ""
        if body.startswith("["):  # [v6]:host:container
            end = body.find("]")
            host_ip, body = body[1:end], body[end + 2:]
        parts = body.split(":")
        if len(parts) == 3 and not host_ip:
            host_ip, parts = parts[0], parts[1:]
        if len(parts) != 2 or not all(x.isdigit() for x in parts):
            raise UsageError(f"-p {s}: expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp|sctp], e.g. -p 8080:80")
        hp, cp = int(parts[0]), int(parts[1])
        if not (1 <= hp <= 65535 and 1 <= cp <= 65535):
            raise UsageError(f"-p {s}: ports are 1-65535")
        m = {"hostPort": hp, "containerPort": cp, "protocol": proto}
        if host_ip:
            m["hostIP"] = host_ip
        out.append(m)
    return out


def _identity(args, net: common.Network) -> tuple[str | None, str]:
    """(netns path or None, container id)."""
    netns = common.netns_path(args.netns) if args.netns else None
    cid = args.container_id
    if cid is None:
        if netns is None:
            raise UsageError("--netns or --container-id is required")
        cid = common.default_container_id(netns)
    return netns, cid


def _conf_at(net: common.Network, version: str) -> dict:
    conf = dict(net.conf)
    if all(str(p.get("type", "")).startswith("splice-") for p in net.plugins):
        from splice.conformance.runtime import version_tuple

        if version_tuple(str(conf.get("cniVersion") or "0.1.0")) < version_tuple(version):
            conf["cniVersion"] = version
    return conf


def print_result(result: dict | None, stream=None) -> None:
    if not result:
        print("(no result)")
        return
    ifs = result.get("interfaces") or []
    rows = []
    for n, i in enumerate(ifs):
        addrs = [ip for ip in result.get("ips") or [] if ip.get("interface") == n]
        rows.append([i.get("name"), i.get("sandbox") or "(host)", i.get("mac") or "",
                     ",".join(ip.get("address", "") for ip in addrs), ",".join(ip.get("gateway") or "" for ip in addrs)])
    unbound = [ip for ip in result.get("ips") or [] if ip.get("interface") is None]
    for ip in unbound:
        rows.append(["", "", "", ip.get("address", ""), ip.get("gateway") or ""])
    table(["INTERFACE", "SANDBOX", "MAC", "ADDRESS", "GATEWAY"], rows, stream)
    routes = result.get("routes") or []
    if routes:
        print()
        table(["ROUTE", "VIA"], [[r.get("dst"), r.get("gw") or "(link)"] for r in routes], stream)


# -- attach / detach / check ---------------------------------------------------------------
def attach(args) -> int:
    from splice.conformance.runtime import CniCallError

    net = common.find_network(args, args.name)
    netns, cid = _identity(args, net)
    if not os.path.exists(netns):
        raise CliError(f"network namespace {netns} does not exist (create it: ip netns add NAME)")
    cache = common.cache_file(args, net.name, cid, args.ifname)
    if os.path.exists(cache):
        raise CliError(f"{cid}/{args.ifname} is attached to {net.name!r} already (result cached in {cache}): "
                       f"splice detach {net.name} --netns {args.netns} first")
    cni_args: list[list[str]] = []
    if args.ip:
        cni_args.append(["IP", ",".join(args.ip)])
    if args.mac:
        cni_args.append(["MAC", args.mac])
    if cni_args:
        cni_args.insert(0, ["IgnoreUnknown", "1"])
    cap_args: dict = {}
    if args.publish:
        if not any((p.get("capabilities") or {}).get("portMappings") for p in net.plugins):
            raise CliError(f"network {net.name!r} has no plugin with the portMappings capability, so -p would be "
                           f"ignored: recreate it with splice-portmap (bridge networks get it by default)")
        cap_args["portMappings"] = parse_publish(args.publish)
    rt = runtime(args)
    _check_plugins(rt, net)
    args_str = common.cni_args_string(cni_args)
    try:
        result = rt.add(net.conf, cid, netns, args.ifname, cap_args=cap_args or None, cni_args=args_str)
    except CniCallError as e:
        # as a runtime does after a failed ADD: DEL the whole chain, without a prevResult
        undo = ""
        try:
            rt.delete(net.conf, cid, netns, args.ifname, cap_args=cap_args or None, cni_args=args_str,
                      use_cache=False)
        except CniCallError as e2:
            undo = f"; the clean-up DEL failed too: {_describe(e2)} (run splice doctor {net.name})"
        raise CliError(f"attach of {cid}/{args.ifname} to {net.name!r}: {_describe(e)}{undo}") from None
    common.write_cached(args, net, cid, args.ifname, netns, cni_args, cap_args, result)
    if args.json:
        dump_json(result)
    else:
        print(f"attached {cid}/{args.ifname} to {net.name} ({netns})")
        print_result(result)
    return 0


def _cached(args, net: common.Network, cid: str, ifname: str) -> dict | None:
    return common.read_cached(common.cache_file(args, net.name, cid, ifname))


def del_attachment(args, net: common.Network, cid: str, ifname: str, netns: str | None,
                   rec: dict | None = None) -> None:
    """DEL of the chain with the cached result (libcni's DelNetworkList), cache removed
    after a successful DEL. CliError naming the failure."""
    from splice.conformance.runtime import CniCallError

    rec = rec if rec is not None else (_cached(args, net, cid, ifname) or {})
    rt = runtime(args)
    _check_plugins(rt, net)
    cni_args = common.cni_args_string(rec.get("cniArgs"))
    cap = rec.get("capabilityArgs") or None
    if netns is None:
        netns = rec.get("netns")
    if netns and not os.path.exists(netns):
        netns = None  # gone: DEL without a namespace (the plugins clean the host side)
    try:
        rt.delete(net.conf, cid, netns, ifname, cap_args=cap, cni_args=cni_args, prev_result=rec.get("result"),
                  use_cache=False)
    except CniCallError as e:
        raise CliError(f"detach of {cid}/{ifname} from {net.name!r}: {_describe(e)} (the cached result is kept: "
                       f"fix the cause and run it again, or splice doctor {net.name})") from None
    try:
        os.unlink(common.cache_file(args, net.name, cid, ifname))
    except FileNotFoundError:
        pass


def detach(args) -> int:
    net = common.find_network(args, args.name)
    netns, cid = _identity(args, net)
    rec = _cached(args, net, cid, args.ifname)
    del_attachment(args, net, cid, args.ifname, netns, rec)
    note = "" if rec else " (no cached result: DEL ran without prevResult)"
    print(f"detached {cid}/{args.ifname} from {net.name}{note}")
    return 0


def check(args) -> int:
    from splice.conformance.runtime import CniCallError, version_tuple

    net = common.find_network(args, args.name)
    netns, cid = _identity(args, net)
    rec = _cached(args, net, cid, args.ifname)
    if not rec or "result" not in rec:
        raise CliError(f"no cached result for {cid}/{args.ifname} on {net.name!r} in {common.results_dir(args)}: "
                       f"CHECK needs the ADD result (attached with splice attach, or by a runtime using this cache "
                       f"directory; --cache-dir)")
    netns = netns or rec.get("netns")
    if not netns:
        raise UsageError("--netns is required (the cached result does not name the namespace)")
    conf = _conf_at(net, "0.4.0")
    if version_tuple(str(conf.get("cniVersion"))) < (0, 4, 0):
        raise CliError(f"network {net.name!r} has cniVersion {conf.get('cniVersion')}: CHECK needs 0.4.0 or later")
    rt = runtime(args)
    _check_plugins(rt, net)
    try:
        rt.check(conf, cid, netns, args.ifname, cap_args=rec.get("capabilityArgs") or None,
                 cni_args=common.cni_args_string(rec.get("cniArgs")), prev_result=rec["result"])
    except CniCallError as e:
        print(f"{paint('FAILED', 'red')} {cid}/{args.ifname} on {net.name}: {_describe(e)}")
        print(f"  repair: splice detach {net.name} --netns {netns} --container-id {cid} --ifname {args.ifname} "
              f"&& splice attach {net.name} --netns {netns} --container-id {cid} --ifname {args.ifname}")
        return PROBLEM
    print(f"{paint('ok', 'green')} {cid}/{args.ifname} on {net.name}: CHECK passed")
    return 0


# -- status / gc -----------------------------------------------------------------------
def status(args) -> int:
    from splice.conformance.runtime import CniCallError

    net = common.find_network(args, args.name)
    conf = _conf_at(net, "1.1.0")
    rt = runtime(args)
    _check_plugins(rt, net)
    try:
        rt.status(conf)
    except CniCallError as e:
        print(f"{paint('NOT READY', 'red')} {net.name}: {_describe(e)}")
        return PROBLEM
    print(f"{paint('ready', 'green')} {net.name}: every plugin answered STATUS")
    return 0


def gc(args) -> int:
    net = common.find_network(args, args.name)
    valid = sorted(common.cached_attachments(args, net.name))
    if args.dry_run:
        from splice.plugins.cli import doctor

        stale = doctor.gc_preview(args, net, set(valid))
        if not stale:
            print(f"{net.name}: nothing to collect ({len(valid)} cached attachment(s) are the valid list)")
        else:
            table(["WOULD REMOVE", "OWNER", "WHAT"], [[k, o, w] for k, o, w in stale])
        return 0
    conf = _conf_at(net, "1.1.0")
    rt = runtime(args)
    _check_plugins(rt, net)
    errors = rt.gc(conf, valid, legacy_key=False)
    if errors:
        for e in errors:
            print(f"{paint('error', 'red')} {_describe(e)}")
        return PROBLEM
    print(f"{net.name}: GC done, {len(valid)} cached attachment(s) kept")
    return 0
