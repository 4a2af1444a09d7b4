"""Masquerade by owner: one nft map element per source address, O(1) in the packet path.

Kernel objects (all in one table owned by splice)::

    table inet splice_nat {
        map masq4 { type ipv4_addr : verdict }          # 10.22.0.2 comment "<owner>" : jump masq-10.22.0.0-24
        map masq6 { type ipv6_addr : verdict }          # fd00::2 comment "<owner>" : jump masq-fd00__-64
        set masq4_owner { type ipv4_addr . ifname }     # 10.22.0.2 . "<digest>" comment "<owner>"
        set masq6_owner { type ipv6_addr . ifname }
        chain postrouting {                             # type nat hook postrouting priority srcnat
            ip daddr 224.0.0.0/4 return
            ip saddr vmap @masq4
            ip6 daddr ff00::/8 return
            ip6 saddr vmap @masq6
        }
        chain masq-10.22.0.0-24 {                       # one per subnet, shared by its sources
            ip daddr 10.22.0.0/24 return
            masquerade
        }
    }

Traffic from a registered source to anything outside the source's own subnet and not
multicast is masqueraded, as the reference bridge's ipMasq (REFERENCE 2.2).

Ownership. Every element carries the owner as its comment (at most 127 bytes), which is
what ``nft list`` shows and what :meth:`Masquerade.list` / :meth:`Masquerade.gc` read.
libnftables 1.0.6 cannot look one element up in JSON (``get element`` ignores ``-j``) and
the kernel ignores comments when it compares elements, so a comment alone would make an
owner-checked delete cost a full listing (O(N): 5 ms at 1k, 95 ms at 10k sources).
Instead each source also has an ownership pair ``address . digest(owner)`` in
``masq4_owner``/``masq6_owner`` (``ifname`` is used there as a 16-byte string type; the
digest is 15 hex digits of sha256 of the stored owner). Deleting the pair and the map
element in one transaction is a kernel-checked compare-and-delete: if the address now
belongs to someone else the pair is absent, the transaction fails, nothing is removed.

Costs: every path below is O(1) in the number of entries unless it says "lists"
(libnftables 1.0.6 cannot ask about one element in JSON: see nft.py), measured p50:

* ``add``: one transaction holding only the elements (``create`` of the map element):
  0.15 ms. When it fails (~8 ms): ``list chains`` (cheap) tells a first use on the host
  or in a subnet (then one transaction creates the missing chains with ``create``, so
  concurrent first ADDs cannot duplicate rules, plus the elements) from an existing
  entry (then "re-assert": replace our own entries, which fails unless every address
  carries our ownership pair). A stale entry of another owner, a mix, a race, a damaged
  table or a real error reaches the slow path: it lists the table and converges it
  (replace, flush and refill chains) in one transaction, or raises.
* ``remove`` with sources: one compare-and-delete transaction, 0.14 ms. When it fails (a
  repeated DEL, an address now someone else's; ~8 ms): no chains means no table;
  otherwise a create-then-delete probe of our pairs that succeeds iff none is ours.
  Only a mix (some ours, some not) or a real error lists.
* ``remove(owner, None)``, ``list``, ``check`` and ``gc`` list the table.

Paths that only add things keep a short-lived process cheap: any transaction that
deletes (even a chain flush) makes closing the netlink socket wait ~12 ms for the
kernel's deferred destruction (perf-notes 4a), so ``add`` deletes only on its slow path.

The table, the base chain and the (possibly empty) maps are never deleted (shared by every
network, like the bridge); subnet chains no element refers to any more are pruned by
:meth:`Masquerade.gc`.
"""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface, ip_address, ip_interface
from typing import Any, Callable, Iterable

from . import nft as N
from .errors import NftError
from .nftowned import OwnedTable, TableState, digest

FAMILY = "inet"
TABLE = "splice_nat"
BASE_CHAIN = "postrouting"
SRCNAT = 100
CHAIN_PREFIX = "masq-"
MAPS = {4: "masq4", 6: "masq6"}
OWNER_SETS = {4: "masq4_owner", 6: "masq6_owner"}
_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_PROTO = {4: "ip", 6: "ip6"}
_MULTICAST = {4: ("224.0.0.0", 4), 6: ("ff00::", 8)}

Source = IPv4Interface | IPv6Interface


class _NatTable(OwnedTable):
    """splice_nat: the pair of a ``masqN`` element ``address`` is ``address . digest``
    in ``masqN_owner``."""

    def pair_slot(self, set_name: str, key: Any) -> tuple[str, Any] | None:
        for v, name in MAPS.items():
            if set_name == name:
                return OWNER_SETS[v], str(key)
        return None


T = _NatTable(FAMILY, TABLE, pair_sets=OWNER_SETS.values())


def subnet_chain(network: Any) -> str:
    """Chain name of one subnet: ``masq-10.22.0.0-24``, ``masq-fd00__-64``."""
    return f"{CHAIN_PREFIX}{str(network.network_address).replace(':', '_')}-{network.prefixlen}"


def build_scaffold() -> list[dict]:
    """Table, maps and ownership sets: ``add`` is idempotent and deletes nothing."""
    cmds = [N.add("table", N.table(FAMILY, TABLE))]
    for v in (4, 6):
        cmds.append(N.add("map", N.map_(FAMILY, TABLE, MAPS[v], _ADDR_TYPE[v], "verdict")))
        cmds.append(N.add("set", N.set_(FAMILY, TABLE, OWNER_SETS[v], [_ADDR_TYPE[v], "ifname"])))
    return cmds


def _base_rules() -> list[dict]:
    cmds = []
    for v in (4, 6):
        addr, plen = _MULTICAST[v]
        cmds.append(N.add("rule", N.rule(FAMILY, TABLE, BASE_CHAIN, [
            N.match(N.payload(_PROTO[v], "daddr"), {"prefix": {"addr": addr, "len": plen}}),
            {"return": None},
        ])))
        cmds.append(N.add("rule", N.rule(FAMILY, TABLE, BASE_CHAIN, [
            {"vmap": {"key": N.payload(_PROTO[v], "saddr"), "data": "@" + MAPS[v]}},
        ])))
    return cmds


def build_base_chain_once() -> list[dict]:
    """The base chain with its rules; fails (EEXIST, changing nothing) when it exists."""
    chain = N.base_chain(FAMILY, TABLE, BASE_CHAIN, type="nat", hook="postrouting", prio=SRCNAT)
    return [N.create("chain", chain)] + _base_rules()


def build_skeleton() -> list[dict]:
    """Scaffold plus the base chain flushed and refilled: idempotent and self-repairing,
    but the flush deletes rules (a short-lived process then pays ~12 ms closing its
    netlink socket), so only the slow path uses it."""
    chain = N.base_chain(FAMILY, TABLE, BASE_CHAIN, type="nat", hook="postrouting", prio=SRCNAT)
    return build_scaffold() + [N.add("chain", chain), N.flush("chain", N.chain(FAMILY, TABLE, BASE_CHAIN))] + _base_rules()


def _subnet_rules(network: Any) -> list[dict]:
    name = subnet_chain(network)
    proto = _PROTO[network.version]
    return [
        N.add("rule", N.rule(FAMILY, TABLE, name, [
            N.match(N.payload(proto, "daddr"), N.prefix_or_addr(network)), {"return": None}])),
        N.add("rule", N.rule(FAMILY, TABLE, name, [{"masquerade": None}])),
    ]


def build_subnet_chain_once(network: Any) -> list[dict]:
    """The subnet chain with its rules; fails (EEXIST, changing nothing) when it exists."""
    return [N.create("chain", N.chain(FAMILY, TABLE, subnet_chain(network)))] + _subnet_rules(network)


def build_subnet_chain(network: Any) -> list[dict]:
    """The subnet chain, created or reset to its two rules (converges under concurrency)."""
    name = subnet_chain(network)
    return [N.add("chain", N.chain(FAMILY, TABLE, name)), N.flush("chain", N.chain(FAMILY, TABLE, name))] + _subnet_rules(network)


def map_elem(address: Any, owner_tag: str | None, target: Any) -> dict:
    """The masqN element object for ``address``; ``target`` a chain name or verdict dict."""
    data = N.jump(target) if isinstance(target, str) else target
    return T.elem(MAPS[address.version], str(address), owner_tag, data)


def owner_elem(address: Any, owner_tag: str) -> dict:
    """The ownership pair ``address . digest(owner)``, commented with the owner."""
    return T.pair(MAPS[address.version], str(address), owner_tag)  # type: ignore[return-value]


def build_add(owner_tag: str, sources: list[Source]) -> list[dict]:
    """Fast-path ADD, elements only: fails when the scaffolding or a subnet chain is
    missing, or when a source address already has an entry (``create``)."""
    cmds = []
    for s in sources:
        cmds.append(N.create("element", map_elem(s.ip, owner_tag, subnet_chain(s.network))))
        cmds.append(N.add("element", owner_elem(s.ip, owner_tag)))
    return cmds


def build_reassert(owner_tag: str, sources: list[Source]) -> list[dict]:
    """Repeated ADD: replace our own entries; fails (changing nothing) unless every
    source already carries this owner's ownership pair."""
    cmds = []
    for s in sources:
        cmds.append(N.delete("element", owner_elem(s.ip, owner_tag)))
        cmds.append(N.delete("element", N.elements(FAMILY, TABLE, MAPS[s.ip.version], [str(s.ip)])))
    return cmds + build_add(owner_tag, sources)


def build_none_owned(owner_tag: str, addresses: list[Any]) -> list[dict]:
    """Probe: succeeds (changing nothing) iff none of ``addresses`` carries this owner's pair."""
    cmds = []
    for a in addresses:
        cmds += N.absent_probe("element", owner_elem(a, owner_tag))
    return cmds


def build_remove(owner_tag: str, addresses: list[Any]) -> list[dict]:
    """Fast-path DEL: compare-and-delete; fails (removing nothing) unless all are ours."""
    cmds = []
    for a in addresses:
        cmds.append(N.delete("element", owner_elem(a, owner_tag)))
        cmds.append(N.delete("element", N.elements(FAMILY, TABLE, MAPS[a.version], [str(a)])))
    return cmds


# -- state read back from a listing ------------------------------------------------
def _entries(state: TableState) -> dict[Any, tuple[Any, str | None]]:
    """address -> (verdict, owner comment) of the masqN entries."""
    return {ip_address(e.key): (e.data, e.comment) for v in (4, 6) for e in state.elems.get(MAPS[v], {}).values()}


def _pairs(state: TableState) -> dict[Any, dict[str, str | None]]:
    """address -> {owner digest: comment} of the ownership pairs."""
    out: dict[Any, dict[str, str | None]] = {}
    for (pair_set, first), owners in state.pairs.items():
        if pair_set in OWNER_SETS.values():
            out.setdefault(ip_address(first), {}).update(owners)
    return out


def _referenced_chains(state: TableState) -> set[str]:
    out = set()
    for data, _ in _entries(state).values():
        if isinstance(data, dict):
            for verdict in ("jump", "goto"):
                if verdict in data:
                    out.add(data[verdict].get("target"))
    return out


class Masquerade:
    """Masquerade entries keyed by source address, tagged with their owner."""

    def __init__(self, nft: N.Nft | None = None) -> None:
        self.nft = nft or N.Nft()

    # -- ADD ----------------------------------------------------------------
    def add(self, owner: str, sources: Iterable[Source | str]) -> None:
        """Masquerade traffic from ``sources`` leaving their subnets; idempotent.

        An address already registered to another owner (a stale entry: IPAM gave the
        address out again) is taken over atomically.
        """
        tag = N.tag(owner)
        srcs = _sources(sources)
        if not srcs:
            return
        nft = self.nft
        if nft.try_apply(build_add(tag, srcs)):
            return
        # first use on this host or in this subnet, or an entry exists already
        chains = nft.chain_names(FAMILY, TABLE)
        setup = []
        if BASE_CHAIN not in chains:
            setup += build_scaffold() + build_base_chain_once()
        for net in _networks(srcs):
            if subnet_chain(net) not in chains:
                setup += build_subnet_chain_once(net)
        if setup:
            if nft.try_apply(setup + build_add(tag, srcs)):
                return
        elif nft.try_apply(build_reassert(tag, srcs)):
            return  # a repeated ADD: every address already carried our ownership pair
        # someone else's entry (a stale one for an address IPAM gave out again), a mix,
        # a race, a damaged table, or a real error: list the table and converge, or raise

        def build(state: TableState) -> list[dict]:
            cmds = build_skeleton()
            for net in _networks(srcs):
                cmds += build_subnet_chain(net)
            d = digest(tag)
            entries, pairs = _entries(state), _pairs(state)
            for s in srcs:
                for other in pairs.get(s.ip, {}):
                    if other != d:  # the previous owner's pair
                        cmds += N.delete_quietly("element", N.elements(
                            FAMILY, TABLE, OWNER_SETS[s.ip.version], [N.concat(str(s.ip), other)]))
                cmds.append(N.add("element", owner_elem(s.ip, tag)))
                if s.ip in entries:
                    data, comment = entries[s.ip]
                    if data == N.jump(subnet_chain(s.network)) and comment == tag:
                        continue
                    cmds += N.delete_quietly("element", map_elem(s.ip, None, data))
                cmds.append(N.add("element", map_elem(s.ip, tag, subnet_chain(s.network))))
            return cmds

        T.converge(nft, build)

    # -- DEL ----------------------------------------------------------------
    def remove(self, owner: str, sources: Iterable[Source | str] | None = None) -> None:
        """Remove ``owner``'s entries (those for ``sources``, or all of them when None).

        Idempotent; an address now registered to another owner is left alone.
        """
        tag = N.tag(owner)
        wanted: set | None = None
        if sources is not None:
            wanted = {_address(s) for s in sources}
            if not wanted:
                return
            addresses = sorted(wanted, key=_sort_key)
            if self.nft.try_apply(build_remove(tag, addresses)):
                return
            # a repeated DEL, an address given to someone else since, or no table at all
            if not self.nft.chain_names(FAMILY, TABLE):
                return
            if self.nft.try_apply(build_none_owned(tag, addresses)):
                return
            # some ours and some not, or a real error: read the table
        keys = None if wanted is None else {(MAPS[a.version], str(a)) for a in wanted}
        T.converge(self.nft, lambda state: T.remove_owned(state, lambda c: c == tag, keys)[0])

    # -- queries ------------------------------------------------------------
    def list(self) -> dict[str, list]:
        """owner -> source addresses registered for it."""
        state = T.read(self.nft)
        out: dict[str, list] = {}
        for a, (_, comment) in sorted(_entries(state).items(), key=lambda kv: _sort_key(kv[0])):
            out.setdefault(comment or "", []).append(a)
        return out

    def check(self, owner: str, sources: Iterable[Source | str]) -> list[str]:
        """Human-readable problems with ``owner``'s entries; [] when all are in place."""
        tag = N.tag(owner)
        srcs = [ip_interface(s) if isinstance(s, str) else s for s in sources]
        state = T.read(self.nft)
        entries, pairs = _entries(state), _pairs(state)
        where = f"table {FAMILY} {TABLE}"
        if not state.exists:
            return [f"{where} does not exist"]
        problems = []
        base = state.rules.get(BASE_CHAIN)
        if base is None:
            problems.append(f"{where}: base chain {BASE_CHAIN} is missing")
        else:
            for v in (4, 6):
                if not any({"vmap": {"key": N.payload(_PROTO[v], "saddr"), "data": "@" + MAPS[v]}} in r["expr"] for r in base):
                    problems.append(f"{where}: chain {BASE_CHAIN} does not look up @{MAPS[v]}")
        d = digest(tag)
        for s in srcs:
            a = getattr(s, "ip", s)
            if a not in entries:
                problems.append(f"no masquerade entry for {a} (owner {tag!r})")
                continue
            data, comment = entries[a]
            if comment != tag:
                problems.append(f"masquerade entry for {a} belongs to {comment!r}, not {tag!r}")
            if d not in pairs.get(a, {}):
                problems.append(f"ownership pair for {a} (owner {tag!r}) is missing")
            if hasattr(s, "network"):
                name = subnet_chain(s.network)
                if data != N.jump(name):
                    problems.append(f"masquerade entry for {a} points to {data!r}, expected jump {name}")
                elif [r["expr"] for r in state.rules.get(name, [])] != [
                    r["add"]["rule"]["expr"] for r in _subnet_rules(s.network)
                ]:
                    problems.append(f"chain {name} does not hold the expected rules")
        return problems

    # -- GC -----------------------------------------------------------------
    def gc(self, prefix: str, keep: Callable[[str], bool]) -> list[str]:
        """Remove entries whose owner starts with ``prefix`` and ``keep(owner)`` is False.

        Returns the owners removed. Afterwards prunes subnet chains no entry uses.
        """
        stale = N.stale_owners(prefix, keep)
        removed: set[str] = set()

        def build(state: TableState) -> list[dict]:
            cmds, owners = T.remove_owned(state, stale)
            removed.clear()
            removed.update(owners)
            return cmds

        T.converge(self.nft, build)
        self._prune_chains(T.read(self.nft))
        return sorted(removed)

    # -- internals -----------------------------------------------------------
    def _prune_chains(self, state: TableState) -> None:
        """Delete subnet chains no element jumps to (best effort, one transaction each:
        a concurrent ADD that uses the chain makes the delete fail with EBUSY, or runs
        after it and re-creates the chain)."""
        used = _referenced_chains(state)
        for name in state.chains:
            if name.startswith(CHAIN_PREFIX) and name not in used:
                try:
                    self.nft.apply([N.delete("chain", N.chain(FAMILY, TABLE, name))])
                except NftError:
                    pass


# -- helpers ----------------------------------------------------------------------
def _sources(sources: Iterable[Source | str]) -> list[Source]:
    out: dict[Any, Source] = {}
    for s in sources:
        iface = ip_interface(s) if isinstance(s, str) else s
        if not isinstance(iface, (IPv4Interface, IPv6Interface)):
            raise TypeError(f"masquerade source must be an IPv4Interface/IPv6Interface, got {s!r}")
        out[iface.ip] = iface
    return [out[k] for k in sorted(out, key=_sort_key)]


def _address(s: Any) -> Any:
    if isinstance(s, str):
        return ip_interface(s).ip
    return getattr(s, "ip", s)


def _networks(sources: list[Source]) -> list[Any]:
    nets = {s.network: None for s in sources}
    return list(nets)


def _sort_key(a: Any) -> tuple[int, int]:
    return (a.version, int(a))
