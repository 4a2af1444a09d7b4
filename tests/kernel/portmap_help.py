"""Calls of the port publisher in the shape the portmap tests use (mappings + addresses).

The publisher (splice.libnet.portmap.publisher) takes expanded entries; these helpers do
the driver's expansion (splice.plugins.portmap.mapping / .conditions) first, so a test
reads as ``publish(owner, [PortMapping(8080, 80)], addresses, snat=..., conditions_v4=[...])``.
"""

from __future__ import annotations

from splice.libnet.netns import Netns
from splice.libnet.portmap.publisher import PortPublisher
from splice.plugins.portmap.conditions import conditions_for
from splice.plugins.portmap.mapping import expand


class Publisher:
    """PortPublisher with the mappings/addresses signature (expands, then delegates)."""

    def __init__(self, nft=None):
        self.p = PortPublisher(nft)

    def publish(self, owner, mappings, addresses, *, conditions_v4=(), conditions_v6=(), **kw):
        return self.p.publish(owner, expand(mappings, addresses), conditions=conditions_for(conditions_v4, conditions_v6),
                              **kw)

    def unpublish(self, owner, mappings=None, addresses=None, *, conditions_v4=(), conditions_v6=(), **kw):
        entries = expand(mappings, addresses) if mappings is not None and addresses is not None else None
        return self.p.unpublish(owner, entries, conditions=conditions_for(conditions_v4, conditions_v6), **kw)

    def check(self, owner, mappings, addresses, *, conditions_v4=(), conditions_v6=(), **kw):
        return self.p.check(owner, expand(mappings, addresses), conditions=conditions_for(conditions_v4, conditions_v6),
                            **kw)

    def __getattr__(self, name):  # gc, owners, status, prune, sync_interfaces, warnings
        return getattr(self.p, name)


def pub(ns, method: str, *args, nft=None, **kw):
    """Publisher().<method>(...) inside ``ns`` (context created and used in one run)."""
    with Netns.open(ns.path) as n:
        return n.run(lambda: getattr(Publisher(nft), method)(*args, **kw))
