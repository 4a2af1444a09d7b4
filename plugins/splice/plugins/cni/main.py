"""Console-script entry points (pyproject ``[project.scripts]``) and the in-process path.

Every executable first tries the resident agent (``splice.plugins.agent.client``, stdlib
only: it costs no splice, pyroute2 or nftables import) and runs the plugin in-process,
with the same driver code, only when no agent answers.

In-process, plugin modules are imported inside the functions so that each executable
loads only its own plugin. VERSION takes a fast path that never imports skel (nor
dataclasses/ipaddress): it costs the plugin module's import plus
``version.run_version``, the same function ``skel.run_plugin`` uses. A plugin module
that fails to import still answers with CNI error JSON on stdout, never a bare traceback.

``python -m splice.plugins.cni.main [--in-process] KIND`` runs one plugin by kind
(``bridge``, ``ipam``, ``portmap``, ``macvlan``, ``ipvlan``); the thin executables written by
``splice install-cni`` exec ``in_process(KIND)`` (``python -I -c ...``) when there is no
agent.
"""

from __future__ import annotations

import os
import sys

# kind -> (module, class); the agent serves the same table.
PLUGINS: dict[str, tuple[str, str]] = {
    "bridge": ("splice.plugins.cni.bridge_plugin", "BridgePlugin"),
    "ipam": ("splice.plugins.cni.ipam_plugin", "SpliceIpam"),
    "portmap": ("splice.plugins.cni.portmap_plugin", "PortmapPlugin"),
    "macvlan": ("splice.plugins.cni.macvlan_plugin", "MacvlanPlugin"),
    "ipvlan": ("splice.plugins.cni.ipvlan_plugin", "IpvlanPlugin"),
    "vxlan": ("splice.plugins.cni.vxlan_plugin", "VxlanPlugin"),
}


def _load(module: str, cls: str):
    return getattr(__import__(module, fromlist=[cls]), cls)()


def load(kind: str):
    """A plugin instance of ``kind`` (KeyError, ImportError, ... when it cannot load)."""
    return _load(*PLUGINS[kind])


def load_error(module: str, cls: str, exc: BaseException) -> tuple[str, str]:
    """(stdout JSON, stderr line) for a plugin that cannot be loaded."""
    import json

    from splice.plugins.cni.errors import INTERNAL
    from splice.plugins.cni.version import CURRENT

    out = json.dumps({"cniVersion": CURRENT, "code": INTERNAL, "msg": f"cannot load plugin {cls}",
                      "details": f"{exc.__class__.__name__}: {exc}"})
    return out + "\n", f"{module}: cannot load plugin: {exc!r}\n"


def _run(module: str, cls: str) -> int:
    """Run one plugin class in this process (env, stdin, stdout of the process)."""
    try:
        plugin = _load(module, cls)
    except Exception as exc:
        out, err = load_error(module, cls, exc)
        sys.stderr.write(err)
        sys.stdout.write(out)
        return 1
    if os.environ.get("CNI_COMMAND") == "VERSION":
        from splice.plugins.cni.version import run_version

        return run_version(tuple(plugin.supported_versions), sys.stdin.buffer, sys.stdout)
    from splice.plugins.cni.skel import run_plugin

    return run_plugin(plugin)


def in_process(kind: str) -> int:
    """Run the plugin ``kind`` in this process, without asking the agent."""
    return _run(*PLUGINS[kind])


def run(kind: str) -> int:
    """The agent if one answers, else in-process."""
    from splice.plugins.agent.client import call

    rc = call(kind)
    if rc is not None:
        return rc
    return in_process(kind)


def bridge() -> None:
    sys.exit(run("bridge"))


def ipam() -> None:
    sys.exit(run("ipam"))


def portmap() -> None:
    sys.exit(run("portmap"))


def macvlan() -> None:
    sys.exit(run("macvlan"))


def ipvlan() -> None:
    sys.exit(run("ipvlan"))


def vxlan() -> None:
    sys.exit(run("vxlan"))


def _module_main(argv: list[str]) -> int:
    inproc = bool(argv) and argv[0] == "--in-process"
    rest = argv[1:] if inproc else argv
    if len(rest) != 1 or rest[0] not in PLUGINS:
        sys.stderr.write(f"usage: python -m splice.plugins.cni.main [--in-process] {{{','.join(PLUGINS)}}}\n")
        return 2
    return in_process(rest[0]) if inproc else run(rest[0])


if __name__ == "__main__":
    sys.exit(_module_main(sys.argv[1:]))
