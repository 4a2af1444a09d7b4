"""Console-script entry points (pyproject ``[project.scripts]``).

Plugin modules are imported inside the functions so that each executable loads only its
own plugin. VERSION takes a fast path that never imports skel (nor dataclasses/ipaddress):
it costs the plugin module's import plus ``version.run_version``, the same function
``skel.run_plugin`` uses. A plugin module that fails to import still answers with CNI error
JSON on stdout, never a bare traceback.
"""

from __future__ import annotations

import os
import sys


def _load(module: str, cls: str):
    return getattr(__import__(module, fromlist=[cls]), cls)()


def _run(module: str, cls: str) -> int:
    try:
        plugin = _load(module, cls)
    except Exception as exc:
        import json

        from splice.plugins.cni.errors import INTERNAL
        from splice.plugins.cni.version import CURRENT

        print(f"{module}: cannot load plugin: {exc!r}", file=sys.stderr)
        print(json.dumps({"cniVersion": CURRENT, "code": INTERNAL, "msg": f"cannot load plugin {cls}",
                          "details": f"{exc.__class__.__name__}: {exc}"}))
        return 1
    if os.environ.get("CNI_COMMAND") == "VERSION":
        from splice.plugins.cni.version import run_version

        return run_version(tuple(plugin.supported_versions), sys.stdin.buffer, sys.stdout)
    from splice.plugins.cni.skel import run_plugin

    return run_plugin(plugin)


def bridge() -> None:
    sys.exit(_run("splice.plugins.cni.bridge_plugin", "BridgePlugin"))


def ipam() -> None:
    sys.exit(_run("splice.plugins.cni.ipam_plugin", "SpliceIpam"))


def portmap() -> None:
    sys.exit(_run("splice.plugins.cni.portmap_plugin", "PortmapPlugin"))
