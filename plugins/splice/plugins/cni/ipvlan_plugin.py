"""`splice-ipvlan`: the CNI front-end of the ipvlan driver (:mod:`splice.plugins.ipvlan`).

Everything CNI-specific is the generic main-plugin adapter's
(:mod:`splice.plugins.cni.main_plugin`); the skel does the protocol.
"""

from __future__ import annotations

from splice.plugins.cni.main_plugin import MainPlugin


class IpvlanPlugin(MainPlugin):
    name = "splice-ipvlan"
    driver_kind = "ipvlan"
