"""One base for the nftables tables splice owns (masq.py, spoofchk.py, portmap.py).

Each of those modules keeps one table whose set/map elements carry their owner as the
element comment (``nft.tag(owner)``, at most 127 bytes), optionally backed by an
*ownership pair* per element, so that a delete can be made conditional on the owner (the
kernel ignores comments when it compares elements). What they share lives here: reading
the table back (:class:`TableState`), the converge loop, owner-checked deletes, GC by
owner and the owner listing. What differs (the layout, the fast paths that never list the
table) stays in each module.

API (pure builders return libnftables JSON command fragments for ``Nft.apply``)::

    from splice.libnet.nftowned import OwnedTable, TableState, Elem, digest
    T = OwnedTable(family, table, *, owners="owners" | None, norm_key=None, pair_sets=())

    # element objects and ownership pairs
    T.elements(set_name, [nft.elem(...), ...]) -> dict  # {"family","table","name","elem"}
    T.elem(set_name, key, comment=None, data=None) -> dict  # one element
    T.key_digest(set_name, key) -> str       # digest(set_name + " " + json.dumps(norm_key))
    T.pair_slot(set_name, key) -> (pair_set, first) | None  # where key's pair lives
    T.pair(set_name, key, owner_tag) -> dict | None  # the pair element object (None: no pairs)

    # reading and converging (list the table: O(N))
    T.read(nft) -> TableState                # table missing -> TableState.exists False
    T.converge(nft, build, attempts=5)       # read -> build(state) -> one transaction;
                                             # re-read and rebuild when it fails (a concurrent
                                             # writer); [] from build = nothing to do
    # commands built from a state
    T.delete_owned(state, e) -> list[dict]   # e as listed, with its owner's pair when the
                                             # state has it (strict: fails if changed since);
                                             # without a pair the quiet add-then-delete
    T.orphan_pairs(state, pred, keep=(), only=None) -> list[dict]
    T.remove_owned(state, pred, keys=None) -> (list[dict], set[owner])
                                             # every element whose comment satisfies pred
                                             # (restricted to keys={(set, canonical key)}),
                                             # plus pred's orphan pairs; GC and DEL-by-owner
    T.owners(state, sets=None) -> dict[owner, list[Elem]]

    TableState: exists, chains {name: obj}, rules {chain: [rule obj]}, sets {name: obj},
                objects {kind: {name}} (counters, quotas, ...),
                elems {set: {canonical key: Elem}}, pairs {(pair_set, first): {owner digest: comment}}
                get(set, key) -> Elem | None; has_pair(e, tag) -> bool;
                owned(pred, sets=None) -> [Elem]
    Elem: set, key (JSON as listed: reusable in a delete), data (maps; None for sets), comment
    digest(text) -> 15 hex digits of sha256 (fits the 16-byte ``ifname`` key type)
    nft.stale_owners(prefix, keep) -> pred   # the GC predicate, in nft.py

Ownership pairs. With ``owners="owners"`` every element ``(set, key)`` of owner ``o`` can
have the pair ``key_digest(set, key) . digest(tag(o))`` in the set ``owners`` (type
``ifname . ifname``, commented with the owner). Deleting the pair and the element in one
transaction is a kernel-checked compare-and-delete: when the element now belongs to
someone else the pair is absent, the transaction fails and removes nothing. A module
with another pair layout overrides :meth:`OwnedTable.pair_slot` and lists the pair sets
in ``pair_sets`` (the masquerade tables of older versions pair ``address . digest`` in one
set per map). ``norm_key(set_name, key)`` maps a key as built or as listed to one hashable
canonical form (the default turns a concatenation into a tuple of its parts); it must
give both forms the same value and be idempotent (``keys`` hold canonical keys); digests
are computed from it. Elements of pair sets are parsed into ``TableState.pairs``, never
into ``elems``.

Adopting it (portmap): ``OwnedTable("inet", "splice_portmap", owners="owners",
norm_key=<portmap's _norm_key>)`` computes exactly the pairs portmap writes today
(``digest(map + " " + json.dumps(_norm_key(map, key))) . digest(owner)``), so existing
tables stay valid; its ``_State``/``_Elem``/``_delete_elem``/``_orphan_pairs``/
``_converge`` map to ``TableState``/``Elem``/``delete_owned``/``orphan_pairs``/``converge``
(portmap's interface sets without comments are plain ``elems`` here).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from . import nft as N

try:  # CPython's builtin SHA-256: hashlib would first load OpenSSL (milliseconds per process)
    from _sha256 import sha256 as _sha256  # 3.11
except ImportError:  # pragma: no cover - other interpreters
    try:
        from _sha2 import sha256 as _sha256  # 3.12+
    except ImportError:
        from hashlib import sha256 as _sha256

ATTEMPTS = 5
# listing keys that are objects (besides sets/maps, chains, rules, tables)
_OBJECT_KINDS = ("counter", "quota", "ct helper", "limit", "ct timeout", "ct expectation", "synproxy", "secmark")


def digest(text: str) -> str:
    """15 hex digits of sha256(text): fits the 16-byte ``ifname`` key type."""
    return _sha256(text.encode("utf-8")).hexdigest()[:15]


def default_norm_key(set_name: str, key: Any) -> Any:
    """A key as built (``{"concat": [...]}``) or as listed (tuple) -> a hashable form."""
    if isinstance(key, dict) and "concat" in key:
        key = key["concat"]
    if isinstance(key, list):
        key = tuple(key)
    return key


class Elem:
    """One element as listed: ``key`` (JSON, concatenations as ``{"concat": [...]}``),
    ``data`` (maps; None for sets), ``comment`` (the owner tag, or None)."""

    __slots__ = ("set", "key", "data", "comment")

    def __init__(self, set_name: str, key: Any, data: Any, comment: str | None) -> None:
        self.set = set_name
        self.key = key
        self.data = data
        self.comment = comment

    def __repr__(self) -> str:
        return f"Elem({self.set!r}, {self.key!r}, {self.data!r}, {self.comment!r})"


class TableState:
    """A table as listed (see the module docstring)."""

    def __init__(self, table: "OwnedTable", listing: list[dict] | None) -> None:
        self.table = table
        self.exists = listing is not None
        listing = listing or []
        self.sets = N.sets_in(listing)
        self.chains = N.chains_in(listing)
        self.rules: dict[str, list[dict]] = {name: [] for name in self.chains}
        self.objects: dict[str, set[str]] = {}
        for item in listing:
            if "rule" in item:
                self.rules.setdefault(item["rule"].get("chain"), []).append(item["rule"])
            else:
                for kind in _OBJECT_KINDS:
                    if kind in item:
                        self.objects.setdefault(kind, set()).add(item[kind]["name"])
        self.elems: dict[str, dict[Any, Elem]] = {}
        self.pairs: dict[tuple[str, Any], dict[str, str | None]] = {}
        norm = table.norm_key
        for name, obj in self.sets.items():
            is_pairs = table.is_pair_set(name)
            elems = self.elems.setdefault(name, {}) if not is_pairs else None
            for e in obj.get("elem", []) or []:
                key, data, comment = N.split_elem(e)
                if elems is None:
                    if isinstance(key, tuple) and len(key) == 2:
                        self.pairs.setdefault((name, key[0]), {})[key[1]] = comment
                    continue
                raw = {"concat": list(key)} if isinstance(key, tuple) else key
                elems[norm(name, raw)] = Elem(name, raw, data, comment)

    def get(self, set_name: str, key: Any) -> Elem | None:
        return self.elems.get(set_name, {}).get(self.table.norm_key(set_name, key))

    def has_pair(self, e: Elem, tag: str | None) -> bool:
        """Whether ``e``'s key carries ``tag``'s ownership pair."""
        if tag is None:
            return False
        slot = self.table.pair_slot(e.set, e.key)
        return slot is not None and digest(tag) in self.pairs.get(slot, {})

    def owned(self, pred: Callable[[str | None], bool], sets: Iterable[str] | None = None) -> list[Elem]:
        names = self.elems if sets is None else [s for s in sets if s in self.elems]
        return [e for name in names for e in self.elems[name].values() if pred(e.comment)]


class OwnedTable:
    """The description of one owned table and the shared operations on it."""

    def __init__(self, family: str, name: str, *, owners: str | None = None,
                 norm_key: Callable[[str, Any], Any] | None = None, pair_sets: Iterable[str] = ()) -> None:
        self.family = family
        self.name = name
        self.owners_set = owners
        self.norm_key = norm_key or default_norm_key
        self.pair_sets = frozenset(pair_sets) | ({owners} if owners else frozenset())

    # -- builders ---------------------------------------------------------------
    def elements(self, set_name: str, elems: list[Any]) -> dict:
        return N.elements(self.family, self.name, set_name, elems)

    def elem(self, set_name: str, key: Any, comment: str | None = None, data: Any = None) -> dict:
        return self.elements(set_name, [N.elem(key, comment, data)])

    def is_pair_set(self, set_name: str) -> bool:
        return set_name in self.pair_sets

    def key_digest(self, set_name: str, key: Any) -> str:
        return digest(set_name + " " + json.dumps(self.norm_key(set_name, key)))

    def pair_slot(self, set_name: str, key: Any) -> tuple[str, Any] | None:
        """(pair set, first part of the pair) for element ``key`` of ``set_name``; None
        when such elements have no ownership pairs."""
        if self.owners_set is None:
            return None
        return self.owners_set, self.key_digest(set_name, key)

    def pair(self, set_name: str, key: Any, owner_tag: str) -> dict | None:
        """The ownership pair element object of ``owner_tag`` for ``key`` (None: no pairs)."""
        slot = self.pair_slot(set_name, key)
        if slot is None:
            return None
        return self.elem(slot[0], N.concat(slot[1], digest(owner_tag)), owner_tag)

    # -- reading and converging ---------------------------------------------------
    def parse(self, listing: list[dict] | None) -> TableState:
        return TableState(self, listing)

    def read(self, nft: N.Nft) -> TableState:
        return self.parse(nft.list_table(self.family, self.name))

    def converge(self, nft: N.Nft, build: Callable[[TableState], list[dict]], attempts: int = ATTEMPTS) -> None:
        N.converge(nft, lambda: self.read(nft), build, attempts)

    # -- commands from a state ------------------------------------------------------
    def delete_owned(self, state: TableState, e: Elem) -> list[dict]:
        """Remove ``e`` as listed. With its owner's pair in ``state`` the delete is strict
        (pair and element: a concurrent re-assignment of the key makes the transaction
        fail and the converge loop re-read); without one it is the quiet add-then-delete."""
        plain = self.elem(e.set, e.key, None, e.data)
        if state.has_pair(e, e.comment):
            return [N.delete("element", self.pair(e.set, e.key, e.comment)),  # type: ignore[arg-type]
                    N.delete("element", plain)]
        return N.delete_quietly("element", plain)

    def orphan_pairs(self, state: TableState, pred: Callable[[str | None], bool],
                     keep: Iterable[tuple[tuple[str, Any], str]] = (), only: set | None = None) -> list[dict]:
        """Quiet deletes of the pairs whose comment satisfies ``pred``, except ``keep``
        (((pair set, first), owner digest) items) and, with ``only``, pairs whose slot is
        not in ``only``."""
        keep = set(keep)
        cmds: list[dict] = []
        for slot, owners in state.pairs.items():
            if only is not None and slot not in only:
                continue
            for od, comment in owners.items():
                if pred(comment) and (slot, od) not in keep:
                    cmds += N.delete_quietly("element", self.elem(slot[0], N.concat(slot[1], od)))
        return cmds

    def remove_owned(self, state: TableState, pred: Callable[[str | None], bool],
                     keys: set[tuple[str, Any]] | None = None) -> tuple[list[dict], set[str]]:
        """Commands removing every element whose owner satisfies ``pred`` (only those whose
        (set, canonical key) is in ``keys`` when given), with their pairs, and the orphan
        pairs of those owners (their element gone or someone else's). Returns the commands
        and the owners seen."""
        cmds: list[dict] = []
        owners: set[str] = set()
        keep = set()
        for e in state.owned(pred):
            if keys is not None and (e.set, self.norm_key(e.set, e.key)) not in keys:
                continue
            cmds += self.delete_owned(state, e)
            owners.add(e.comment)  # type: ignore[arg-type]
            if state.has_pair(e, e.comment):
                keep.add((self.pair_slot(e.set, e.key), digest(e.comment)))  # type: ignore[arg-type]
        only = None
        if keys is not None:
            only = {self.pair_slot(s, k) for s, k in keys} - {None}
        orphans = self.orphan_pairs(state, pred, keep, only)
        for slot, pairs in state.pairs.items():
            if only is None or slot in only:
                owners.update(c for od, c in pairs.items() if c is not None and pred(c) and (slot, od) not in keep)
        return cmds + orphans, owners

    def owners(self, state: TableState, sets: Iterable[str] | None = None) -> dict[str, list[Elem]]:
        """owner tag ("" for elements without a comment) -> its elements."""
        out: dict[str, list[Elem]] = {}
        for e in state.owned(lambda c: True, sets):
            out.setdefault(e.comment or "", []).append(e)
        return out
