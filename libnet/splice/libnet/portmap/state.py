"""The portmap table as listed (the slow paths), and the converge helpers built on it."""

from __future__ import annotations

from typing import Any, Callable

from .. import nft as N
from .builders import map_elem, owner_pair
from .model import (
    FAMILY, LEGACY_REFS, MEMBER_SETS, OWNERS, SPECIFIC, TABLE, WILDCARD, Published, claim_map, digest, dnat_map, key_digest,
    norm_key,
)


class Elem:
    """One listed element of a map (keys as listed, JSON)."""

    __slots__ = ("map", "key", "data", "comment")

    def __init__(self, map_name: str, key: Any, data: Any, comment: str | None) -> None:
        self.map = map_name
        self.key = key  # as listed (JSON)
        self.data = data
        self.comment = comment


class State:
    """The table as listed: elements per map (by canonical key), ownership pairs, chains."""

    def __init__(self, listing: list[dict] | None) -> None:
        self.exists = listing is not None
        listing = listing or []
        sets = N.sets_in(listing)
        self.maps = set(sets)  # names of the sets and maps present
        self.chains = N.chains_in(listing)
        self.rules = {name: N.rules_in(listing, name) for name in self.chains}
        self.elems: dict[str, dict[Any, Elem]] = {}
        self.pairs: dict[str, dict[str, str | None]] = {}  # key digest -> {owner digest: comment}
        self.members: dict[str, set] = {name: set() for name in MEMBER_SETS}
        self.counters = {item["counter"]["name"] for item in listing if "counter" in item}
        for name, obj in sets.items():
            for e in obj.get("elem", []) or []:
                key, data, comment = N.split_elem(e)
                if name == OWNERS:
                    if isinstance(key, tuple) and len(key) == 2:
                        self.pairs.setdefault(key[0], {})[key[1]] = comment
                elif name in self.members:
                    self.members[name].add(key)
                else:
                    raw = {"concat": list(key)} if isinstance(key, tuple) else key
                    self.elems.setdefault(name, {})[norm_key(name, key)] = Elem(name, raw, data, comment)

    @property
    def legacy(self) -> bool:
        """Whether the table still has the legacy ``refs4``/``refs6`` maps."""
        return any(name in self.maps for name in LEGACY_REFS)

    def get(self, map_name: str, key: Any) -> Elem | None:
        return self.elems.get(map_name, {}).get(norm_key(map_name, key))

    def has_pair(self, e: Elem, tag: str | None) -> bool:
        return tag is not None and digest(tag) in self.pairs.get(key_digest(e.map, e.key), {})

    def owned(self, pred: Callable[[str | None], bool]) -> list[Elem]:
        """Elements (claims excluded) whose comment satisfies ``pred``."""
        return [e for name, elems in self.elems.items() if not name.startswith("claim")
                for e in elems.values() if pred(e.comment)]

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
        key = norm_key(e.map, e.key)
        data = e.data["concat"] if isinstance(e.data, dict) else e.data
        hip = ip_address(key[0]) if specific else None
        proto, port = (key[1], key[2]) if specific else (key[0], key[1])
        return Published(str(proto), int(port), hip, ip_address(data[0]), int(data[1]))
    except (TypeError, ValueError, KeyError, IndexError):
        return None


def delete_elem(state: State, e: Elem) -> list[dict]:
    """Remove ``e`` as listed, with its owner's pair when present (strict: a concurrent
    change makes the transaction fail and the caller re-reads)."""
    cmds = []
    if state.has_pair(e, e.comment):
        cmds.append(N.delete("element", owner_pair(e.map, e.key, e.comment)))  # type: ignore[arg-type]
    cmds.append(N.delete("element", map_elem(e.map, e.key)))
    return cmds


def orphan_pairs(state: State, pred: Callable[[str | None], bool], keep: set[tuple[str, str]]) -> list[dict]:
    """Delete pairs of owners matching ``pred`` whose element is gone or someone else's.
    ``keep`` holds (key digest, owner digest) pairs that stay."""
    cmds = []
    for kd, owners in state.pairs.items():
        for od, comment in owners.items():
            if pred(comment) and (kd, od) not in keep:
                cmds += N.delete_quietly("element", N.elements(FAMILY, TABLE, OWNERS, [N.concat(kd, od)]))
    return cmds


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
