"""Console-script entry points (pyproject ``[project.scripts]``).

Plugin modules are imported inside the functions so that each executable loads only its
own plugin; VERSION then costs skel + the plugin module's import. A plugin module that
fails to import still answers with CNI error JSON on stdout, never a bare traceback.
"""

from __future__ import annotations

import sys


def _run(module: str, cls: str) -> int:
    from splice.plugins.cni.skel import run_plugin

    try:
        plugin = getattr(__import__(module, fromlist=[cls]), cls)()
    except Exception as exc:
        import json

        from splice.plugins.cni.errors import INTERNAL
        from splice.plugins.cni.version import CURRENT

        print(f"{module}: cannot load plugin: {exc!r}", file=sys.stderr)
        print(json.dumps({"cniVersion": CURRENT, "code": INTERNAL, "msg": f"cannot load plugin {cls}",
                          "details": f"{exc.__class__.__name__}: {exc}"}))
        return 1
    return run_plugin(plugin)


def bridge() -> None:
    sys.exit(_run("splice.plugins.cni.bridge_plugin", "BridgePlugin"))


def ipam() -> None:
    sys.exit(_run("splice.plugins.cni.ipam_plugin", "SpliceIpam"))
