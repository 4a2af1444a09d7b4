"""``splice``: the command line of the suite.

Subcommands live in :data:`COMMANDS` (name -> help, argument builder, runner); a runner
imports what it needs when it runs, so ``splice status`` never loads pyroute2. Add a
command by adding an entry.

* ``splice agent [--socket PATH] [--workers N] [--max-connections N] [-v] [--node NAME]
  [--state-dir DIR]``: the resident agent (:mod:`splice.plugins.agent.server`; ``--node`` and
  ``--state-dir`` are the overlay's: :mod:`splice.plugins.vxlan.overlay`).
* ``splice driver [--plugins-dir DIR] [--state-dir DIR] [--ipam-dir DIR] [-v]``: the Docker
  remote network + IPAM driver daemon (:mod:`splice.plugins.cnm.daemon`).
* ``splice status [--socket PATH]``: is an agent alive there? Prints its status JSON;
  exit 0 alive, 1 not. ``splice status NAME``: the CNI STATUS of network NAME's chain.
* The operator commands (docs/design.md "The operator CLI"), each in its own module,
  imported only when it runs: ``net`` (net.py), ``attach``/``detach``/``check``/``gc``
  (attach.py), ``ipam`` (ipam.py), ``doctor`` (doctor.py), ``install``/``uninstall``
  (install.py); output and errors: output.py,
  locations and the result cache: common.py.
* ``splice install-cni --dir /opt/cni/bin [--lib DIR] [--linked | --client-only]``: writes
  the CNI executables ``splice-bridge``, ``splice-ipam``, ``splice-portmap``, ``splice-macvlan``,
  ``splice-ipvlan``, ``splice-vxlan`` as standalone thin clients (see below).

Installed executables. Each is a ``#!/usr/bin/python3 -IS`` launcher of a few lines that
imports ``splice/plugins/agent/client.py`` (its cached bytecode, cheaper than compiling the
file inline on every call; a zipapp would add runpy) and calls it with its plugin kind and
the in-process fallback (``<python> -I -c '...; from splice.plugins.cni.main import
in_process; ...' <kind>``, exec'd when no agent answers, stdin untouched).

Where they import from:

* default, self-contained: ``install-cni`` copies the splice runtime packages and the
  distributions splice requires, if any, into ``LIB/<digest>/`` (LIB = ``DIR/.splice``),
  compiles them with the target interpreter and writes ``LIB/splice`` (this command line,
  e.g. ``LIB/splice agent`` for contrib/systemd). The executables and their fallback run
  the base interpreter on that copy and name nothing of this installation, so a checkout
  and its .venv may move or go. Same start-up as ``--linked``.
* ``--linked``: import from this installation (for development; moving it breaks them
  until ``install-cni`` runs again).
* ``--client-only``: the client inline, no fallback (an agent elsewhere, e.g. a DaemonSet).

Why not the pip console scripts: their interpreter is the venv's python with ``site``
(system site-packages, the editable-install finder, pathlib), about three times the
start-up of ``/usr/bin/python3 -IS``; ``-I`` keeps ``PYTHON*`` variables and the user site
out, ``-S`` skips ``site`` (the client needs nothing outside the interpreter's built-ins).
The interpreter defaults to this Python's base interpreter (``/usr/bin/python3`` on Debian),
never a ``python3`` looked up on ``PATH`` (a pyenv shim costs an order of magnitude more).
Measured with ``bench/startup.py``; figures in README "Performance".
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

ENV_SOCKET = "SPLICE_AGENT_SOCKET"
DEFAULT_SOCKET = "/run/splice/agent.sock"
CNI_EXECUTABLES = {"splice-bridge": "bridge", "splice-ipam": "ipam", "splice-portmap": "portmap",
                   "splice-macvlan": "macvlan", "splice-ipvlan": "ipvlan", "splice-vxlan": "vxlan"}
FALLBACK_CODE = "import sys; from splice.plugins.cni.main import in_process; sys.exit(in_process(sys.argv[1]))"


def _default_socket() -> str:
    return os.environ.get(ENV_SOCKET) or DEFAULT_SOCKET


# -- agent --------------------------------------------------------------------------
def _agent_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", default=None, help=f"unix socket (default ${ENV_SOCKET} or {DEFAULT_SOCKET})")
    p.add_argument("--workers", type=int, default=16, help="calls served at once (default 16)")
    p.add_argument("--grace", type=float, default=60.0, help="seconds to finish calls in flight on SIGTERM")
    p.add_argument("--max-connections", type=int, default=256,
                   help="connections open at once (being read, queued, served); more are declined: those "
                        "clients run in-process (default 256)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every call")
    p.add_argument("--node", default=None, help="this host's node name in multi-host networks (default: the host name)")
    p.add_argument("--state-dir", default="/var/lib/splice/agent",
                   help="the agent's state, e.g. subnet leases (default /var/lib/splice/agent)")


def _agent(args: argparse.Namespace) -> int:
    from splice.plugins.agent.server import serve

    return serve(args.socket or _default_socket(), workers=args.workers, verbose=args.verbose, grace=args.grace,
                 max_connections=args.max_connections, node=args.node, state_dir=args.state_dir)


# -- driver (Docker) ------------------------------------------------------------------
def _driver_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plugins-dir", default="/run/docker/plugins",
                   help="where the plugin sockets go (default /run/docker/plugins): splice-bridge.sock, ... and "
                        "splice.sock (IPAM only)")
    p.add_argument("--state-dir", default="/var/lib/splice/cnm",
                   help="networks and endpoints (default /var/lib/splice/cnm)")
    p.add_argument("--ipam-dir", default="/var/lib/splice/ipam", help="the pool IPAM store (default /var/lib/splice/ipam)")
    p.add_argument("--default-address-pool", action="append", default=None, metavar="base=CIDR,size=N",
                   help="default pools of the IPAM driver, as dockerd's flag (repeatable; default "
                        "base=10.200.0.0/16,size=24 and this host's ULA /48 in /64s)")
    p.add_argument("--drivers", default=None, help="comma-separated driver kinds to serve (default: all known)")
    p.add_argument("--node", default=None,
                   help="this host's node name in splice-overlay networks' etcd records (default: the host name)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every call")


def _driver(args: argparse.Namespace) -> int:
    from splice.plugins.cnm.daemon import parse_pool, serve

    pools = None
    if args.default_address_pool:
        try:
            pools = [parse_pool(t) for t in args.default_address_pool]
        except ValueError as e:
            print(f"splice driver: --default-address-pool: {e}", file=sys.stderr)
            return 2
    kinds = [k.strip() for k in args.drivers.split(",") if k.strip()] if args.drivers else None
    return serve(args.plugins_dir, args.state_dir, args.ipam_dir, verbose=args.verbose, default_pools=pools,
                 kinds=kinds, node=args.node)


# -- status -------------------------------------------------------------------------
def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", default=None, metavar="NAME",
                   help="a network: run the CNI STATUS of its chain (without: ask the agent)")
    p.add_argument("--socket", default=None, help=f"unix socket (default ${ENV_SOCKET} or {DEFAULT_SOCKET})")
    p.add_argument("--timeout", type=float, default=5.0)
    for flag in ("--config-dir", "--cache-dir", "--cni-path"):  # as every operator command (cli/common.py)
        p.add_argument(flag, default=None, help=argparse.SUPPRESS)


def _status(args: argparse.Namespace) -> int:
    if args.name is not None:  # `splice status NAME`: the network's STATUS (cli/attach.py)
        from splice.plugins.cli.attach import status
        from splice.plugins.cli.output import run_guarded

        return run_guarded("status", status, args)
    from splice.plugins.agent import client

    path = args.socket or _default_socket()
    sock = client.connect(path.encode(), timeout=args.timeout)
    if sock is None:
        print(f"splice: no agent listening on {path}", file=sys.stderr)
        return 1
    try:
        rc, out, err = client.request(sock, b"_ping", b"", b"")
    except (OSError, EOFError, ValueError) as e:
        print(f"splice: the agent on {path} did not answer: {e}", file=sys.stderr)
        return 1
    finally:
        sock.close()
    sys.stdout.write(out.decode(errors="replace"))
    if err:
        sys.stderr.write(err.decode(errors="replace"))
    return 0 if rc == 0 else 1


# -- install-cni --------------------------------------------------------------------
BUNDLE_DIR = ".splice"  # default library directory, inside the CNI bin directory
RUNTIME_PACKAGES = ("libnet", "ipam", "plugins")  # the splice.* packages the plugins and the agent need
KEEP_BUNDLES = 2  # the new bundle and the previous one (calls in flight may still import from it)


def _install_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, help="CNI bin directory, e.g. /opt/cni/bin")
    p.add_argument("--lib", default=None,
                   help=f"where the copied splice library goes (default: DIR/{BUNDLE_DIR}); "
                        f"it also gets the `splice` command for the agent (LIB/splice agent)")
    p.add_argument("--python", default=None,
                   help="interpreter of the executables (default: this Python's base interpreter, e.g. /usr/bin/python3)")
    p.add_argument("--socket", default=None,
                   help=f"agent socket compiled in as the default (${ENV_SOCKET} still overrides; default {DEFAULT_SOCKET})")
    p.add_argument("--plugins", default=",".join(CNI_EXECUTABLES), help="comma-separated executable names")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--linked", dest="mode", action="store_const", const="linked",
                      help="no copy: the executables import from THIS installation (a checkout's .venv): they "
                           "break when it moves or goes; run install-cni again then (for development)")
    mode.add_argument("--client-only", dest="mode", action="store_const", const="client-only",
                      help="only the thin client, inline, no library: for hosts where an agent runs elsewhere "
                           "(no agent -> CNI error JSON)")
    p.set_defaults(mode="bundle")


def base_interpreter() -> str:
    """The real interpreter behind this one (a venv's python is a symlink to it)."""
    cand = getattr(sys, "_base_executable", None) or sys.executable
    for pretty in ("/usr/bin/python3",):  # prefer the stable Debian name when it is the same file
        try:
            if os.path.samefile(pretty, cand):
                return pretty
        except OSError:
            pass
    return cand


def client_script(kind: str, python: str, fallback: list[str], socket: str | None, *,
                  self_contained: bool = False, client_dir: str | None = None) -> str:
    """The text of one thin-client executable.

    Default: a launcher that imports ``client`` from ``client_dir`` (this installation's
    package directory, or the bundle's copy), whose ``.pyc`` is cached, instead of
    compiling ~250 lines on every call. ``self_contained``: the whole client inline,
    for a host where splice is not installed at all (the agent elsewhere, e.g. a
    DaemonSet); the fallback then fails with CNI error JSON when there is no agent.
    """
    import json

    from splice.plugins.agent import client

    header = (f"#!{python} -IS\n"
              f"# splice-{kind}: thin CNI client written by `splice install-cni`; re-run it instead of editing.\n")
    call = f"sys.exit(standalone({kind!r}, {fallback!r}, {socket!r}))\n"
    if self_contained:
        with open(client.__file__, encoding="utf-8") as f:
            body = f.read()
        return header + body + "\n\nif __name__ == \"__main__\":\n    " + call
    directory = client_dir or os.path.dirname(os.path.abspath(client.__file__))
    missing = json.dumps({"cniVersion": "1.1.0", "code": 100, "msg": "splice is not installed where this executable expects it",
                          "details": f"cannot import the thin client from {directory}: run `splice install-cni` again"})
    return (header
            + "import sys\n"
            + f"sys.path.insert(0, {directory!r})\n"
            + "try:\n"
            + "    from client import standalone\n"
            + "except ImportError:\n"
            + f"    sys.stdout.write({missing + chr(10)!r})\n"
            + "    sys.exit(1)\n"
            + call)


def _fallback_code(bundle: str | None) -> str:
    """The ``-c`` program an executable execs when no agent answers (stdin untouched)."""
    if bundle is None:
        return FALLBACK_CODE
    # -I drops PYTHONPATH: the bundle goes first on sys.path from here
    return f"import sys; sys.path.insert(0, {bundle!r}); " + FALLBACK_CODE.split("; ", 1)[1]


def _bundle_sources() -> list[tuple[str, str]]:
    """(source directory or file, path inside the bundle) for everything the in-process
    plugins and the agent import that the base interpreter does not have: the splice
    runtime packages and the distributions they require (if any), recursively.
    (libnftables' bindings, ``nftables``, come from the system: Debian python3-nftables.)"""
    import importlib
    import importlib.metadata as md
    import re

    out: list[tuple[str, str]] = []
    for name in RUNTIME_PACKAGES:
        mod = importlib.import_module(f"splice.{name}")
        out.append((os.path.dirname(os.path.abspath(mod.__file__)), os.path.join("splice", name)))
    try:
        md.distribution("splice")
    except md.PackageNotFoundError:  # running from a bundle (LIB/splice install-cni): no metadata;
        # the bundle's other top-level entries are the dependencies it was made with
        root = os.path.dirname(os.path.dirname(out[0][0]))
        for entry in sorted(os.listdir(root)):
            if entry not in ("splice", "__pycache__"):
                out.append((os.path.join(root, entry), entry))
        return out
    seen: set[str] = set()
    todo = ["splice"]
    while todo:
        dist_name = todo.pop()
        try:
            reqs = md.requires(dist_name) or []
        except md.PackageNotFoundError:
            continue
        for req in reqs:
            if ";" in req:  # markers: extras (test) and platform conditions are not runtime needs here
                continue
            dep = re.split(r"[\s<>=!~\[(]", req, maxsplit=1)[0]
            if not dep or dep.lower() in seen:
                continue
            seen.add(dep.lower())
            try:
                dist = md.distribution(dep)
            except md.PackageNotFoundError:  # stale metadata of an editable install: not needed
                continue
            todo.append(dep)
            tops: set[str] = set()
            for f in dist.files or []:
                first = f.parts[0]
                if first in ("..", "__pycache__") or first.endswith((".dist-info", ".egg-info", ".data")):
                    continue
                tops.add(first)
            for top in sorted(tops):
                src = str(dist.locate_file(top))
                if os.path.exists(src):
                    out.append((src, top))
    return out


def _copy_bundle(target: str, sources: list[tuple[str, str]]) -> None:
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    for src, rel in sources:
        dst = os.path.join(target, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, dst, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)


def _tree_digest(sources: list[tuple[str, str]]) -> str:
    import hashlib

    h = hashlib.sha256()
    for src, rel in sources:
        files = [(src, rel)] if not os.path.isdir(src) else [
            (os.path.join(root, f), os.path.join(rel, os.path.relpath(os.path.join(root, f), src)))
            for root, dirs, names in os.walk(src) for f in names
            if "__pycache__" not in root.split(os.sep) and not f.endswith((".pyc", ".pyo"))]
        for path, name in sorted(files, key=lambda x: x[1]):
            h.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def install_bundle(lib: str, python: str) -> str:
    """Copy the splice runtime and its dependencies into ``lib/<digest>`` (once per content),
    compile it with ``python``, and return that directory. Older bundles beyond the
    previous one are removed."""
    import shutil
    import subprocess

    sources = _bundle_sources()
    os.makedirs(lib, mode=0o755, exist_ok=True)
    bundle = os.path.join(lib, _tree_digest(sources))
    if not os.path.isdir(bundle):
        tmp = f"{bundle}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _copy_bundle(tmp, sources)
            # bytecode for the target interpreter (its own cache tag), paths as they will be
            subprocess.run([python, "-I", "-m", "compileall", "-q", "-j", "0", "-s", tmp, "-p", bundle, tmp],
                           check=True, stdout=subprocess.DEVNULL)
            os.rename(tmp, bundle)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    os.utime(bundle)  # newest: kept by the pruning below
    bundles = sorted((e for e in os.scandir(lib) if e.is_dir(follow_symlinks=False) and len(e.name) == 16
                      and all(c in "0123456789abcdef" for c in e.name)),
                     key=lambda e: e.stat().st_mtime, reverse=True)
    for old in bundles[KEEP_BUNDLES:]:
        if old.path != bundle:
            shutil.rmtree(old.path, ignore_errors=True)
    return bundle


def _write_executable(target: str, text: str) -> None:
    tmp = f"{target}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)  # atomic: a runtime never execs a half-written file


def install_cni(directory: str, *, python: str | None = None, socket: str | None = None,
                names: list[str] | None = None, mode: str = "bundle", lib: str | None = None) -> list[str]:
    """Write the thin-client executables into ``directory``; their paths (and, in the
    default ``bundle`` mode, the path of ``LIB/splice``, the command line for the agent).

    ``bundle``: self-contained: a copy of the splice runtime (and what it requires) in ``lib``
    (default ``directory/.splice``), the executables and their in-process fallback run the
    base interpreter on that copy, so nothing refers to this installation (a checkout and
    its .venv may move or go). ``linked``: the executables import from this installation.
    ``client-only``: the client inline, no fallback.
    """
    if mode not in ("bundle", "linked", "client-only"):
        raise ValueError(f"unknown install mode {mode!r}")
    python = python or base_interpreter()
    for name in names or list(CNI_EXECUTABLES):
        if name not in CNI_EXECUTABLES:
            raise SystemExit(f"splice install-cni: unknown executable {name!r} (known: {', '.join(CNI_EXECUTABLES)})")
    os.makedirs(directory, exist_ok=True)
    bundle = client_dir = None
    interpreter = sys.executable
    if mode == "bundle":
        bundle = install_bundle(os.path.abspath(lib or os.path.join(directory, BUNDLE_DIR)), python)
        client_dir = os.path.join(bundle, "splice", "plugins", "agent")
        interpreter = python
    elif mode == "linked":
        import py_compile

        from splice.plugins.agent import client

        try:  # the launcher imports the cached bytecode (same interpreter version as ours)
            py_compile.compile(client.__file__, doraise=True)
        except (OSError, py_compile.PyCompileError):
            pass  # the first call compiles it then
    written = []
    for name in names or list(CNI_EXECUTABLES):
        kind = CNI_EXECUTABLES[name]
        # -c, not -m (runpy is slower); -I: no PYTHON* variables, no user site, no cwd
        fallback = [interpreter, "-I", "-c", _fallback_code(bundle), kind]
        text = client_script(kind, python, fallback, socket, self_contained=mode == "client-only",
                             client_dir=client_dir)
        target = os.path.join(directory, name)
        _write_executable(target, text)
        written.append(target)
    if bundle is not None:
        cli = os.path.join(os.path.dirname(bundle), "splice")
        _write_executable(cli, f"#!{python} -I\n"
                               f"# `splice` from the bundle written by `splice install-cni`: `{cli} agent` runs the agent.\n"
                               f"import sys\nsys.path.insert(0, {bundle!r})\n"
                               "from splice.plugins.cli.main import main\nsys.exit(main())\n")
        written.append(cli)
    return written


def _install(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.plugins.split(",") if n.strip()]
    for path in install_cni(args.dir, python=args.python, socket=args.socket, names=names, mode=args.mode,
                            lib=args.lib):
        print(path)
    return 0


# -- dispatch -----------------------------------------------------------------------
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "agent": ("run the resident agent the CNI executables talk to", _agent_args, _agent),
    "status": ("ask the agent whether it is alive", _status_args, _status),
    "driver": ("run the Docker remote network and IPAM driver (splice-bridge, splice-macvlan, ... sockets)",
               _driver_args, _driver),
    "install-cni": ("write the thin-client CNI executables into a CNI bin directory, self-contained: with a copy "
                    "of splice in DIR/.splice, so they do not depend on this checkout or its .venv",
                    _install_args, _install),
}


def _operator(module: str, builder: str, runner: str, cmd: str):
    """Argument builder and runner of an operator command in ``cli/<module>.py``, imported
    only when that command runs (``splice agent`` imports none of them)."""
    def add_args(p: argparse.ArgumentParser) -> None:
        import importlib

        getattr(importlib.import_module(f"splice.plugins.cli.{module}"), builder)(p)

    def run(args: argparse.Namespace) -> int:
        import importlib

        from splice.plugins.cli.output import run_guarded

        return run_guarded(cmd, getattr(importlib.import_module(f"splice.plugins.cli.{module}"), runner), args)

    return add_args, run


COMMANDS.update({
    "net": ("networks: create (a conflist in the config directory), ls, inspect, rm",
            *_operator("net", "add_args", "run", "net")),
    "attach": ("run a network's chain (ADD) for a namespace, as a runtime does; the result is cached",
               *_operator("attach", "add_attach_args", "attach", "attach")),
    "detach": ("run a network's chain in reverse (DEL) with the cached result",
               *_operator("attach", "add_detach_args", "detach", "detach")),
    "check": ("run CHECK of a network's chain against the cached result",
              *_operator("attach", "add_check_args", "check", "check")),
    "gc": ("the CNI GC of a network, the valid attachments taken from the result cache",
           *_operator("attach", "add_gc_args", "gc", "gc")),
    "ipam": ("a network's addresses: ls, release", *_operator("ipam", "add_args", "run", "ipam")),
    "doctor": ("compare what should exist (networks, leases, cached results) with the kernel; --fix repairs",
               *_operator("doctor", "add_args", "run", "doctor")),
    "install": ("install-cni, plus systemd units (--systemd) and Docker plugin spec files (--docker); recorded "
                "in a manifest", *_operator("install", "add_install_args", "install", "install")),
    "uninstall": ("remove exactly what splice install recorded in its manifest",
                  *_operator("install", "add_uninstall_args", "uninstall", "uninstall")),
})


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            import importlib.metadata as md

            version = md.version("splice")
        except Exception:  # noqa: BLE001 - a bundle has no metadata
            version = "unknown (no package metadata: a bundle written by install-cni)"
        print(f"splice {version}")
        parser.exit()


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``only``, the arguments of that command alone are built
    (the others are listed for help but import nothing)."""
    ap = argparse.ArgumentParser(prog="splice", description="splice container networking")
    ap.add_argument("--version", action=_Version)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, _run) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            add_args(sp)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None) if argv else None
    ap = parser(first if first in COMMANDS else None)
    args = ap.parse_args(argv)
    if not args.command:
        ap.print_help(sys.stderr)
        return 2
    return COMMANDS[args.command][2](args)


if __name__ == "__main__":
    sys.exit(main())
