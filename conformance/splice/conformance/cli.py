"""``splice-conformance`` / ``python -m splice.conformance``: run the kit on a plugin.

    splice-conformance --cni-path DIR[:DIR...] --plugin TYPE [--ipam TYPE] [--config FILE]
                       [--class bridge|macvlan|ipvlan] [--master IF]
                       [--check ID|GLOB ...] [--json] [--list] [--statements]
    splice-conformance --cnm-socket PATH [--cnm-driver-type bridge|macvlan|ipvlan|null]
                       [--cnm-parent IF] [--netns NAME] [--check ID|GLOB ...] [--json] [--list]

The second form is the CNM section (:mod:`splice.conformance.cnm`): protocol checks of a
Docker remote network/IPAM driver over its unix socket; ``--netns`` names the namespace the
driver's kernel objects live in (read with ``ip -n NAME -j`` for the link and leak checks).

The plugin class (config template, host objects, checks that apply) follows the plugin's
name (``*macvlan*``, ``*ipvlan*``, else bridge) unless ``--class`` says otherwise. For
macvlan/ipvlan, ``--master IF`` names the master the kit makes in every throwaway host
namespace (a veth whose peer is in a throwaway "switch" namespace).

Prints one row per check (id, result, statement numbers, reason) and
``N passed, N failed, N skipped``; ``--json`` prints a machine-readable report instead.
Exit status: 0 when no check failed, 1 when one did, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from splice.conformance import cnm, kit, statements
from splice.conformance.profiles import DEFAULT_MASTER, class_for


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="splice-conformance",
        description="Black-box CNI conformance checks for a plugin binary, each derived from numbered statements of "
                    "the CNI SPEC.md (--statements prints them with their upstream sources). Every plugin call runs "
                    "inside a throwaway network namespace.")
    p.add_argument("--cni-path", required=False, action="append", default=[],
                   help="directory holding the plugin binaries (repeatable, or ':'-separated)")
    p.add_argument("--plugin", help="main plugin type under test (binary name in --cni-path), e.g. bridge")
    p.add_argument("--ipam", help="IPAM plugin type it delegates to, e.g. host-local")
    p.add_argument("--class", dest="plugin_class", default=None, choices=sorted(kit.PLUGIN_CLASSES),
                   help="plugin class (config template, checks that apply); default: by the plugin's name "
                        "(*macvlan* -> macvlan, *ipvlan* -> ipvlan, else bridge)")
    p.add_argument("--master", metavar="IF",
                   help=f"macvlan/ipvlan: name of the master interface the kit makes in each throwaway host "
                        f"namespace (default: the --config template's master, else {DEFAULT_MASTER})")
    p.add_argument("--config", help="JSON conflist template replacing the class's built-in one")
    p.add_argument("--check", "-k", action="append", default=[], metavar="ID",
                   help="run only these checks (ids or globs like 'DEL-*'; repeatable)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("--statements", action="store_true",
                   help="print the numbered CNI statements (upstream source, covering checks) and exit")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per plugin call (default 60)")
    g = p.add_argument_group("CNM (Docker remote network/IPAM driver)")
    g.add_argument("--cnm-socket", metavar="PATH", help="run the CNM checks against this plugin socket")
    g.add_argument("--cnm-driver-type", default="bridge", choices=cnm.DRIVER_TYPES,
                   help="what kind of network the driver makes (options sent, checks that apply; default bridge)")
    g.add_argument("--cnm-parent", metavar="IF", help="macvlan/ipvlan: the -o parent=IF every network gets")
    g.add_argument("--netns", metavar="NAME",
                   help="network namespace (name under /run/netns, or a path) holding the driver's kernel objects; "
                        "read only, for the link and leak checks (without it they are skipped)")
    return p


def _cnm_main(args) -> int:
    checks = cnm.select(args.check or None)
    if args.list:
        for c in checks:
            print(f"{c.id:<12} [{c.level}; {c.source}] {c.title}")
            print(f"{'':<12} {c.quote}")
        return 0
    if not checks:
        _parser().error(f"no CNM check matches {args.check}")
    cfg = cnm.CnmConfig(socket=args.cnm_socket, driver_type=args.cnm_driver_type, netns=args.netns,
                        parent=args.cnm_parent, timeout=min(args.timeout, 60.0))
    width = max(len(c.id) for c in checks)
    t0 = time.perf_counter()

    def progress(o) -> None:
        if not args.json:
            mark = {"pass": "PASS", "fail": "FAIL", "skip": "skip"}[o.result]
            print(f"{o.id:<{width}} {mark:<4}  [{o.level}] {o.reason or o.title}", flush=True)

    if not args.json:
        print(f"splice-conformance (CNM): {args.cnm_socket} as a {args.cnm_driver_type} driver"
              + (f", parent {args.cnm_parent}" if args.cnm_parent else "")
              + (f", namespace {args.netns}" if args.netns else ", no --netns (link/leak checks skipped)"),
              flush=True)
    session, outcomes = cnm.run(cfg, args.check or None, progress)
    seconds = time.perf_counter() - t0
    s = cnm.summary(outcomes)
    if args.json:
        print(json.dumps(cnm.json_report(session, outcomes, seconds), indent=2))
    else:
        print(f"implements: {', '.join(session.implements) or '-'}; address space {session.space}")
        print(f"{s['pass']} passed, {s['fail']} failed, {s['skip']} skipped in {seconds:.1f}s")
    return 1 if s["fail"] else 0


def _row(o: kit.Outcome, width: int = 11) -> str:
    mark = {"pass": "PASS", "fail": "FAIL", "skip": "skip"}[o.result]
    return f"{o.id:<{width}} {mark:<4}  [{o.spec}] {o.reason or o.title}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cnm_socket or (args.list and not args.plugin and any(
            a.startswith("--cnm") for a in (argv if argv is not None else sys.argv[1:]))):
        if args.plugin or args.cni_path:
            _parser().error("--cnm-socket runs the CNM section: --cni-path/--plugin do not apply")
        return _cnm_main(args)
    checks = kit.select(args.check or None)
    if args.statements:
        sys.stdout.write(statements.markdown(kit.select(None)))
        return 0
    if args.list:
        for c in checks:
            print(f"{c.id:<11} [{c.spec}] {c.title}")
            print(f"{'':<11} {c.quote}")
        return 0
    if not args.plugin or not args.cni_path:
        _parser().error("--cni-path and --plugin are required")
    if not checks:
        _parser().error(f"no check matches {args.check}")
    plugin_class = args.plugin_class or class_for(args.plugin)
    if args.master is not None and plugin_class not in ("macvlan", "ipvlan"):
        _parser().error(f"--master applies to the macvlan and ipvlan classes, not {plugin_class}")
    cni_path = [d for entry in args.cni_path for d in entry.split(":") if d]
    template = None
    if args.config:
        with open(args.config) as f:
            template = json.load(f)
    try:
        pcls = kit.make_class(plugin_class, args.plugin, template, args.master)
    except ValueError as e:
        _parser().error(str(e))
    master = getattr(pcls, "master", None)
    cfg = kit.KitConfig(cni_path=cni_path, plugin=args.plugin, ipam=args.ipam, plugin_class=plugin_class,
                        template=template, timeout=args.timeout, master=args.master)
    width = max(len(c.id) for c in checks)
    t0 = time.perf_counter()

    def progress(o: kit.Outcome) -> None:
        if not args.json:
            print(_row(o, width), flush=True)

    if not args.json:
        print(f"splice-conformance: plugin {args.plugin}" + (f" + IPAM {args.ipam}" if args.ipam else "")
              + f" from {':'.join(cni_path)} (class {pcls.name}"
              + (f", master {master}" if master else "") + ")", flush=True)
    session, outcomes = kit.run(cfg, args.check or None, progress)
    seconds = time.perf_counter() - t0
    s = kit.summary(outcomes)
    if args.json:
        print(kit.dumps(kit.json_report(session, outcomes, seconds)))
    else:
        print(f"versions: plugin {', '.join(session.main_versions) or '-'}"
              + (f"; IPAM {', '.join(session.ipam_versions) or '-'}" if args.ipam else ""))
        print(f"{s['pass']} passed, {s['fail']} failed, {s['skip']} skipped in {seconds:.1f}s")
    return 1 if s["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
