"""The portmap table as listed (the slow paths), and the converge helpers built on it.

The reading, the ownership pairs, owner-checked deletes and the converge loop are the
shared owned-table base (:mod:`splice.libnet.nftowned`, table :data:`T`); this
module adds the portmap views of a listing and the claims repair.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from .. import nft as N
from ..nftowned import Elem, OwnedTable, TableState, digest
from .builders import map_elem
from .model import FAMILY, LEGACY_REFS, OWNERS, SPECIFIC, TABLE, WILDCARD, Published, claim_map, dnat_map, norm_key

# The owned table (splice.libnet.nftowned): elements commented with their owner, each with
# the ownership pair ``digest(map + " " + json(canonical key)) . digest(owner)`` in
# ``owners`` (builders.owner_pair writes the same pairs on the fast paths).
T = OwnedTable(FAMILY, TABLE, owners=OWNERS, norm_key=norm_key)

__all__ = ["T", "Elem", "State", "claims_fix", "delete_elem", "orphan_pairs", "pair_id", "published_from"]


class State(TableState):
    """The portmap table as listed: elements per map (by canonical key), ownership pairs,
    chains, rules, counters (:class:`~splice.libnet.nftowned.TableState`), plus:"""

    def __init__(self, listing: list[dict] | None) -> None:
        super().__init__(T, listing)

    @property
    def legacy(self) -> bool:
        """Whether the table still has the legacy ``refs4``/``refs6`` maps."""
        return any(name in self.sets for name in LEGACY_REFS)

    @property
    def counters(self) -> set[str]:
        return self.objects.get("counter", set())

    def members(self, set_name: str) -> set:
        """The (canonical) entries of one of the interface sets."""
        return set(self.elems.get(set_name, {}))

    def owned(self, pred: Callable[[str | None], bool], sets: Iterable[str] | None = None) -> list[Elem]:
        """Elements whose comment satisfies ``pred``; claims excluded unless ``sets`` says
        otherwise (a claim is one owner's comment on a port others may share)."""
        if sets is None:
            sets = [name for name in self.elems if not name.startswith("claim")]
        return super().owned(pred, sets)

    def published(self) -> list[tuple[str | None, Published]]:
        out = []
        for v in (4, 6):
            for specific in (False, True):
                for e in self.elems.get(dnat_map(v, specific), {}).values():
                    p = published_from(e, v, specific)
                    if p is not None:
                        out.append((e.comment, p))
        return out


def published_from(e: Elem, version: int, specific: bool) -> Published | None:
    from ipaddress import ip_address

    try:
        key = norm_key(e.set, e.key)
        data = e.data["concat"] if isinstance(e.data, dict) else e.data
        hip = ip_address(key[0]) if specific else None
        proto, port = (key[1], key[2]) if specific else (key[0], key[1])
        return Published(str(proto), int(port), hip, ip_address(data[0]), int(data[1]))
    except (TypeError, ValueError, KeyError, IndexError):
        return None


def pair_id(map_name: str, key: Any, tag: str) -> tuple:
    """The identity of ``tag``'s ownership pair for ``key`` (the ``keep`` items of
    :func:`orphan_pairs`)."""
    return (T.pair_slot(map_name, key), digest(tag))


def delete_elem(state: State, e: Elem) -> list[dict]:
    """Remove ``e`` as listed: with its owner's pair when the state has it (strict: a
    concurrent change makes the transaction fail and the caller re-reads), else quietly."""
    return T.delete_owned(state, e)


def orphan_pairs(state: State, pred: Callable[[str | None], bool], keep: set[tuple]) -> list[dict]:
    """Delete pairs of owners matching ``pred`` whose element is gone or someone else's.
    ``keep`` holds the :func:`pair_id` of pairs that stay."""
    return T.orphan_pairs(state, pred, keep)


def claims_fix(state: State, after: dict[str, dict[Any, Elem]]) -> list[dict]:
    """Make the claims match the mappings that will exist (``after``, by map and canonical
    key): delete claims no mapping backs or whose kind is wrong, add the missing ones
    (commented with one owner of the port)."""
    cmds = []
    for v in (4, 6):
        need: dict[Any, tuple[int, str | None]] = {}
        for nk, e in after.get(dnat_map(v, True), {}).items():
            need.setdefault((nk[1], nk[2]), (SPECIFIC, e.comment))
        for nk, e in after.get(dnat_map(v, False), {}).items():
            need[nk] = (WILDCARD, e.comment)  # a contradiction (both kinds) keeps the wildcard
        have = state.elems.get(claim_map(v), {})
        for nk, e in have.items():
            if nk not in need or e.data != need[nk][0]:
                cmds.append(N.delete("element", map_elem(claim_map(v), e.key)))
        for nk, (value, comment) in need.items():
            e = have.get(nk)
            if e is None or e.data != value:
                cmds.append(N.add("element", map_elem(claim_map(v), N.concat(*nk), comment, value)))
    return cmds
