"""``splice``: the command line of the suite.

Subcommands live in :data:`COMMANDS` (name -> help, argument builder, runner); a runner
imports what it needs when it runs, so ``splice status`` never loads pyroute2. Add a
command by adding an entry.

* ``splice agent [--socket PATH] [--workers N] [-v]``: the resident agent
  (:mod:`splice.plugins.agent.server`).
* ``splice status [--socket PATH]``: is an agent alive there? Prints its status JSON;
  exit 0 alive, 1 not.
* ``splice install-cni --dir /opt/cni/bin``: writes the CNI executables ``splice-bridge``,
  ``splice-ipam``, ``splice-portmap`` as standalone thin clients (see below).

Installed executables. Each is a ``#!/usr/bin/python3 -IS`` launcher of a few lines that
imports ``splice/plugins/agent/client.py`` from this installation (its cached bytecode:
importing it costs 0.5 ms where compiling the file inline cost 2 ms per call; a zipapp
costs 5 ms more, runpy) and calls it with its plugin kind and the in-process fallback
(``<this python> -I -c 'from splice.plugins.cni.main import in_process; ...' <kind>``,
exec'd when no agent answers, stdin untouched). ``--self-contained`` inlines the client instead, for hosts that
only get the executables. Why not the pip console scripts: their interpreter is
the venv's python with ``site`` (system site-packages, the editable-install finder,
pathlib): ``venv python -c pass`` costs 21.6 ms here against 6.8 ms for
``/usr/bin/python3 -IS -c pass``; ``-I`` keeps ``PYTHON*`` variables and the user site out,
``-S`` skips ``site`` (the client needs nothing outside the interpreter's built-ins). The
interpreter defaults to this Python's base interpreter (``/usr/bin/python3`` on Debian),
never a ``python3`` looked up on ``PATH`` (a pyenv shim alone costs ~110 ms). Measured
with ``bench/startup.py``; figures in README "Performance".
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

ENV_SOCKET = "SPLICE_AGENT_SOCKET"
DEFAULT_SOCKET = "/run/splice/agent.sock"
CNI_EXECUTABLES = {"splice-bridge": "bridge", "splice-ipam": "ipam", "splice-portmap": "portmap"}
FALLBACK_CODE = "import sys; from splice.plugins.cni.main import in_process; sys.exit(in_process(sys.argv[1]))"


def _default_socket() -> str:
    return os.environ.get(ENV_SOCKET) or DEFAULT_SOCKET


# -- agent --------------------------------------------------------------------------
def _agent_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", default=None, help=f"unix socket (default ${ENV_SOCKET} or {DEFAULT_SOCKET})")
    p.add_argument("--workers", type=int, default=16, help="calls served at once (default 16)")
    p.add_argument("--grace", type=float, default=60.0, help="seconds to finish calls in flight on SIGTERM")
    p.add_argument("-v", "--verbose", action="store_true", help="log every call")


def _agent(args: argparse.Namespace) -> int:
    from splice.plugins.agent.server import serve

    return serve(args.socket or _default_socket(), workers=args.workers, verbose=args.verbose, grace=args.grace)


# -- status -------------------------------------------------------------------------
def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", default=None, help=f"unix socket (default ${ENV_SOCKET} or {DEFAULT_SOCKET})")
    p.add_argument("--timeout", type=float, default=5.0)


def _status(args: argparse.Namespace) -> int:
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
def _install_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, help="CNI bin directory, e.g. /opt/cni/bin")
    p.add_argument("--python", default=None,
                   help="interpreter of the thin clients (default: this Python's base interpreter, e.g. /usr/bin/python3)")
    p.add_argument("--socket", default=None,
                   help=f"agent socket compiled in as the default (${ENV_SOCKET} still overrides; default {DEFAULT_SOCKET})")
    p.add_argument("--plugins", default=",".join(CNI_EXECUTABLES), help="comma-separated executable names")
    p.add_argument("--self-contained", action="store_true",
                   help="put the whole client into each executable (for hosts without this splice installation)")


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
                  self_contained: bool = False) -> str:
    """The text of one thin-client executable.

    Default: a launcher that imports ``client`` from this installation's package
    directory, whose ``.pyc`` is cached (0.5 ms), instead of compiling ~250 lines on every
    call (2 ms). ``self_contained``: the whole client inline, for a host where splice is
    not installed at this path (the agent elsewhere, e.g. a DaemonSet); the fallback then
    fails with CNI error JSON when there is no agent.
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
    directory = os.path.dirname(os.path.abspath(client.__file__))
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


def install_cni(directory: str, *, python: str | None = None, socket: str | None = None,
                names: list[str] | None = None, self_contained: bool = False) -> list[str]:
    """Write the thin-client executables into ``directory``; their paths."""
    python = python or base_interpreter()
    os.makedirs(directory, exist_ok=True)
    if not self_contained:
        import py_compile

        from splice.plugins.agent import client

        try:  # the launcher imports the cached bytecode (same interpreter version as ours)
            py_compile.compile(client.__file__, doraise=True)
        except (OSError, py_compile.PyCompileError):
            pass  # the first call compiles it then
    written = []
    for name in names or list(CNI_EXECUTABLES):
        if name not in CNI_EXECUTABLES:
            raise SystemExit(f"splice install-cni: unknown executable {name!r} (known: {', '.join(CNI_EXECUTABLES)})")
        kind = CNI_EXECUTABLES[name]
        # -c, not -m: runpy costs ~4 ms; -I: no PYTHON* variables, no user site, no cwd
        fallback = [sys.executable, "-I", "-c", FALLBACK_CODE, kind]
        text = client_script(kind, python, fallback, socket, self_contained=self_contained)
        target = os.path.join(directory, name)
        tmp = f"{target}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: a runtime never execs a half-written file
        written.append(target)
    return written


def _install(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.plugins.split(",") if n.strip()]
    for path in install_cni(args.dir, python=args.python, socket=args.socket, names=names,
                            self_contained=args.self_contained):
        print(path)
    return 0


# -- dispatch -----------------------------------------------------------------------
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "agent": ("run the resident agent the CNI executables talk to", _agent_args, _agent),
    "status": ("ask the agent whether it is alive", _status_args, _status),
    "install-cni": ("write the thin-client CNI executables into a CNI bin directory", _install_args, _install),
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="splice", description="splice container networking")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, _run) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if not args.command:
        ap.print_help(sys.stderr)
        return 2
    return COMMANDS[args.command][2](args)


if __name__ == "__main__":
    sys.exit(main())
