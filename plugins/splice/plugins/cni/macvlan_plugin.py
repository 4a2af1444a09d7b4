"""`splice-macvlan`: the CNI front-end of the macvlan driver (:mod:`splice.plugins.macvlan`).

Everything CNI-specific is the generic main-plugin adapter's
(:mod:`splice.plugins.cni.main_plugin`); the skel does the protocol.
"""

from __future__ import annotations

from splice.plugins.cni.main_plugin import MainPlugin


class MacvlanPlugin(MainPlugin):
    name = "splice-macvlan"
    driver_kind = "macvlan"
