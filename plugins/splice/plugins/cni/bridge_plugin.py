"""`splice-bridge`: the CNI front-end of the bridge driver (:mod:`splice.plugins.bridge`).

Everything CNI-specific is the generic main-plugin adapter's
(:mod:`splice.plugins.cni.main_plugin`); the skel does the protocol.
"""

from __future__ import annotations

from splice.plugins.cni.main_plugin import MainPlugin


class BridgePlugin(MainPlugin):
    name = "splice-bridge"
    driver_kind = "bridge"
