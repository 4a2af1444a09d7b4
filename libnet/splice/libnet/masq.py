"""Masquerade by owner, keyed by (input interface, source address): O(1) per packet and update.

Kernel objects (all in one table owned by splice)::

    table inet splice_nat {
        set src4 { type ifname . ipv4_addr }               # "br0" . 10.22.0.2 comment "<owner>"
        set src6 { type ifname . ipv6_addr }
        set net4_24 { type ifname . ipv4_addr . ipv4_addr }  # "br0" . 10.22.0.2 . 10.22.0.0 comment "<owner>"
        set net6_64 { type ifname . ipv6_addr . ipv6_addr }  # one set per prefix length in use
        set owners { type ifname . ifname }                # ownership pairs (below)
        chain postrouting {                                # type nat hook postrouting priority srcnat
            jump net4_24                                   # one per prefix length in use
            jump net6_64
            ip daddr 224.0.0.0/4 return
            ip6 daddr ff00::/8 return
            jump srcnat
        }
        chain net4_24 {                                    # traffic staying in the source's subnet
            iifname . ip saddr . ip daddr & 255.255.255.0 @net4_24 accept
        }
        chain net6_64 { iifname . ip6 saddr . ip6 daddr & ffff:ffff:ffff:ffff:: @net6_64 accept }
        chain srcnat {
            iifname . ip saddr @src4 masquerade
            iifname . ip6 saddr @src6 masquerade
        }
    }

Forwarded traffic that entered through ``iface`` (the bridge, or the ``<bridge>.<vlan>``
interface holding the gateway: ``iifname`` is set in postrouting for forwarded packets
only) from a registered source is masqueraded unless it goes to the source's own subnet
or to a multicast address, as the reference bridge plugin's ipMasq does. The key holds the
interface, so two live containers with the same address on two networks (overlapping
subnets on two bridges) have two entries and keep their NAT through each other's ADD and
DEL. The subnet test is one exact-match lookup per prefix length in use: the element
``iface . source . network address`` of ``net4_<len>`` matches when the destination masked
with the source's prefix equals the source's network.

No verdict maps: an element that jumps to a chain makes the kernel re-validate every
verdict map reachable from the base chain on each commit (O(N) per update); plain sets
keep an update's cost flat (docs/perf.md).

Ownership. Every element carries the owner as its comment (at most 127 bytes), which is
what ``nft list`` shows and what :meth:`Masquerade.list` / :meth:`Masquerade.gc` read. The
kernel ignores comments when comparing elements and libnftables 1.0.6 cannot look one
element up in JSON, so each source also has an ownership pair
``digest("src4" . key) . digest(owner)`` in ``owners`` (nftowned.py). Deleting the pair and
the elements in one transaction is a kernel-checked compare-and-delete: when the source
now belongs to someone else the pair is absent and nothing is removed.

Paths (O(1) in the number of entries unless they say "lists"):

* ``add``: one transaction of elements (``create`` of the ``src`` element: EEXIST when the
  interface and address are registered already). When it fails: ``list chains`` (cheap)
  tells a first use on the host (or the first use of a prefix length, or an upgraded
  table, below) - then one transaction creates what is missing with ``create chain`` so
  concurrent first ADDs cannot duplicate rules, plus the elements - from an existing
  entry: "re-assert" (our own pair, replaced, and our elements re-added, which fails
  unless the source carries our pair). A stale entry of another owner (IPAM gave the
  address out again on the same interface), a mix, a race or a damaged table reaches the
  slow path: it lists the table and converges it in one transaction, or raises.
* ``remove`` with sources and iface: one compare-and-delete transaction. When it fails (a
  repeated DEL, a source now someone else's, an upgraded table's entry): ``list chains``,
  the legacy compare-and-delete when legacy entries may exist, then a probe that
  succeeds iff none of our pairs is left. Only a mix or a real error lists.
* ``remove(owner, None)``, ``list``, ``check`` and ``gc`` list the table.

Paths that only add things keep a short-lived process cheap: closing a netlink socket
that committed a deletion waits for the kernel's deferred destruction (nft.py), so ``add``
deletes only on its re-assert and slow paths.

Upgrade from the layout keyed by address alone. Tables made by earlier versions hold
``map masq4 { type ipv4_addr : verdict }`` / ``masq6`` (``address : jump masq-<subnet>``),
their ownership pairs ``address . digest(owner)`` in ``masq4_owner`` / ``masq6_owner`` and
the base chain rules ``ip saddr vmap @masq4`` / ``ip6 saddr vmap @masq6``. They are kept
as a legacy path, never written again: containers wired before the upgrade keep their NAT
(their traffic misses ``src4`` and still takes the vmap), ``remove``/``gc`` remove their
entries with the old compare-and-delete, ``check`` accepts them, and the first ``add``
adds the new sets and chains next to them (``jump srcnat`` after the vmap rules). No
migration: the old entries do not say which interface they belong to. When no legacy
entry is left, :meth:`Masquerade.gc` deletes the legacy rules, maps, sets and
``masq-*`` chains. (A process of the earlier version writing to the table at the same
time is not supported: its slow path rewrites the base chain.)

Never deleted: the table, the base chain, ``srcnat``, the ``src``/``owners`` sets and the
per-prefix-length sets and chains (few; deleting a set would race with a concurrent ADD
adding an element to it).
"""

from __future__ import annotations

import json
from ipaddress import IPv4Interface, IPv6Interface, ip_address, ip_interface
from typing import Any, Callable, Iterable

from . import nft as N
from .errors import NetError, NftError
from .names import ifname_problem
from .nftowned import Elem, OwnedTable, TableState, digest

FAMILY = "inet"
TABLE = "splice_nat"
BASE_CHAIN = "postrouting"
SRC_CHAIN = "srcnat"
SRCNAT = 100
SOURCES = {4: "src4", 6: "src6"}
OWNERS = "owners"
NET_PREFIX = {4: "net4_", 6: "net6_"}
# the layout of earlier versions (keyed by address alone), kept as a legacy path
LEGACY_MAPS = {4: "masq4", 6: "masq6"}
LEGACY_OWNER_SETS = {4: "masq4_owner", 6: "masq6_owner"}
LEGACY_CHAIN_PREFIX = "masq-"
_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_PROTO = {4: "ip", 6: "ip6"}
_MULTICAST = {4: ("224.0.0.0", 4), 6: ("ff00::", 8)}

Source = IPv4Interface | IPv6Interface
Reg = tuple[str, Source]  # (interface, source)


class _NatTable(OwnedTable):
    """splice_nat: ``src`` elements have their pair in ``owners``; legacy ``masqN``
    elements ``address`` have ``address . digest`` in ``masqN_owner``; ``net`` elements
    go with their ``src`` element (no pair of their own)."""

    def pair_slot(self, set_name: str, key: Any) -> tuple[str, Any] | None:
        if set_name in SOURCES.values():
            return super().pair_slot(set_name, key)
        for v, name in LEGACY_MAPS.items():
            if set_name == name:
                return LEGACY_OWNER_SETS[v], str(key)
        return None


T = _NatTable(FAMILY, TABLE, owners=OWNERS, pair_sets=LEGACY_OWNER_SETS.values())


# -- names and keys -----------------------------------------------------------------
def net_name(version: int, prefixlen: int) -> str:
    """Set and chain of one prefix length: ``net4_24``, ``net6_64``."""
    return f"{NET_PREFIX[version]}{prefixlen}"


def _net_version_len(name: str) -> tuple[int, int] | None:
    for v, prefix in NET_PREFIX.items():
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return v, int(name[len(prefix):])
    return None


def _masked(address: Any, prefixlen: int) -> str:
    return str(ip_interface(f"{address}/{prefixlen}").network.network_address)


def src_key(iface: str, address: Any) -> dict:
    return N.concat(iface, str(address))


def net_key(iface: str, address: Any, prefixlen: int) -> dict:
    return N.concat(iface, str(address), _masked(address, prefixlen))


def src_elem(iface: str, address: Any, owner_tag: str | None) -> dict:
    return T.elem(SOURCES[address.version], src_key(iface, address), owner_tag)


def net_elem(iface: str, source: Source, owner_tag: str | None) -> dict:
    return T.elem(net_name(source.version, source.network.prefixlen),
                  net_key(iface, source.ip, source.network.prefixlen), owner_tag)


def pair_elem(iface: str, address: Any, owner_tag: str) -> dict:
    """The ownership pair of ``owner_tag`` for the source ``iface . address``."""
    return T.pair(SOURCES[address.version], src_key(iface, address), owner_tag)  # type: ignore[return-value]


# -- rules --------------------------------------------------------------------------
def _mc_rules() -> list[list[dict]]:
    out = []
    for v in (4, 6):
        addr, plen = _MULTICAST[v]
        out.append([N.match(N.payload(_PROTO[v], "daddr"), {"prefix": {"addr": addr, "len": plen}}), {"return": None}])
    return out


def _legacy_rules() -> list[list[dict]]:
    return [[{"vmap": {"key": N.payload(_PROTO[v], "saddr"), "data": "@" + LEGACY_MAPS[v]}}] for v in (4, 6)]


def _src_rules() -> list[list[dict]]:
    return [[N.match(N.concat(N.meta("iifname"), N.payload(_PROTO[v], "saddr")), "@" + SOURCES[v]),
             {"masquerade": None}] for v in (4, 6)]


def _net_rule(version: int, prefixlen: int) -> list[dict]:
    daddr: Any = N.payload(_PROTO[version], "daddr")
    bits = 32 if version == 4 else 128
    if prefixlen < bits:  # nft drops an all-ones mask; keep the listing equal to what we add
        daddr = {"&": [daddr, str(ip_interface(f"{'::' if version == 6 else '0.0.0.0'}/{prefixlen}").netmask)]}
    left = N.concat(N.meta("iifname"), N.payload(_PROTO[version], "saddr"), daddr)
    return [N.match(left, "@" + net_name(version, prefixlen)), {"accept": None}]


def _jump_rule(target: str) -> list[dict]:
    return [N.jump(target)]


def _rule(chain_name: str, expr: list[dict], verb: str = "add") -> dict:
    return {verb: {"rule": N.rule(FAMILY, TABLE, chain_name, expr)}}


def _base_chain() -> dict:
    return N.base_chain(FAMILY, TABLE, BASE_CHAIN, type="nat", hook="postrouting", prio=SRCNAT)


def _chain(name: str) -> dict:
    return N.chain(FAMILY, TABLE, name)


# -- pure builders --------------------------------------------------------------------
def build_scaffold_once(fresh: bool) -> list[dict]:
    """Sets and ``srcnat`` (guarded by ``create chain``: fails, changing nothing, when it
    exists), plus the base chain and its multicast rules when ``fresh`` (no base chain:
    also guarded). Without ``fresh`` it upgrades a legacy table: ``jump srcnat`` goes after
    the legacy rules."""
    cmds = [N.add("table", N.table(FAMILY, TABLE))]
    if fresh:
        cmds.append(N.create("chain", _base_chain()))
        cmds += [_rule(BASE_CHAIN, r) for r in _mc_rules()]
    cmds += _sets()
    cmds.append(N.create("chain", _chain(SRC_CHAIN)))
    cmds += [_rule(SRC_CHAIN, r) for r in _src_rules()]
    cmds.append(_rule(BASE_CHAIN, _jump_rule(SRC_CHAIN)))
    return cmds


def _sets() -> list[dict]:
    cmds = [N.add("set", N.set_(FAMILY, TABLE, SOURCES[v], ["ifname", _ADDR_TYPE[v]])) for v in (4, 6)]
    cmds.append(N.add("set", N.set_(FAMILY, TABLE, OWNERS, ["ifname", "ifname"])))
    return cmds


def _net_set(version: int, prefixlen: int) -> dict:
    return N.add("set", N.set_(FAMILY, TABLE, net_name(version, prefixlen), ["ifname", _ADDR_TYPE[version], _ADDR_TYPE[version]]))


def build_net_once(version: int, prefixlen: int) -> list[dict]:
    """The set and chain of one prefix length and the jump to it (inserted first in the
    base chain); fails (EEXIST, changing nothing) when the chain exists."""
    name = net_name(version, prefixlen)
    return [_net_set(version, prefixlen), N.create("chain", _chain(name)),
            _rule(name, _net_rule(version, prefixlen)), _rule(BASE_CHAIN, _jump_rule(name), "insert")]


def _base_rules(nets: Iterable[tuple[int, int]], legacy: Iterable[int]) -> list[list[dict]]:
    """The base chain as built from scratch: subnet jumps, multicast returns, the legacy
    vmaps of the versions in ``legacy``, ``jump srcnat``."""
    legacy = set(legacy)
    return ([_jump_rule(net_name(v, p)) for v, p in sorted(nets)] + _mc_rules()
            + [r for v, r in zip((4, 6), _legacy_rules()) if v in legacy] + [_jump_rule(SRC_CHAIN)])


def base_rules_ok(listed: list[list[dict]], nets: Iterable[tuple[int, int]], legacy: Iterable[int]) -> bool:
    """Whether the listed base chain does what :func:`_base_rules` does: the same rules in
    any order that keeps ``jump srcnat`` last and each multicast return before its
    version's legacy vmap (subnet jumps are inserted first, one at a time)."""
    want = _base_rules(nets, legacy)
    if sorted(map(_canon, listed)) != sorted(map(_canon, want)) or not listed or listed[-1] != _jump_rule(SRC_CHAIN):
        return False
    mc, old = _mc_rules(), _legacy_rules()
    return all(listed.index(mc[i]) < listed.index(old[i]) for i, v in enumerate((4, 6)) if v in set(legacy))


def _canon(x: Any) -> str:
    return json.dumps(x, sort_keys=True)


def _legacy_versions(state: TableState) -> list[int]:
    return [v for v in (4, 6) if LEGACY_MAPS[v] in state.sets]


def build_skeleton(state: TableState, nets: Iterable[tuple[int, int]] = ()) -> list[dict]:
    """Everything but the elements, repaired from ``state`` (slow path). Sets are added
    (idempotent); a missing chain is made with ``create`` (a concurrent creator makes the
    transaction fail and the converge loop re-read); a chain whose rules are not the
    expected ones is flushed and refilled. Healthy chains are left alone, so a subnet jump
    added concurrently is never flushed away. Keeps the legacy rules while the legacy maps
    exist."""
    have = {vl for vl in map(_net_version_len, state.chains) if vl is not None}
    new = sorted(set(nets) - have)
    every = sorted(have | set(nets))
    legacy = _legacy_versions(state)
    cmds = [N.add("table", N.table(FAMILY, TABLE))] + _sets() + [_net_set(v, p) for v, p in every]

    def chain_rules(name: str, exprs: list[list[dict]], create: dict | None = None) -> None:
        if name not in state.chains:
            cmds.append(N.create("chain", create or _chain(name)))
            cmds.extend(_rule(name, e) for e in exprs)
        elif [r["expr"] for r in state.rules.get(name, [])] != exprs:
            cmds.append(N.flush("chain", _chain(name)))
            cmds.extend(_rule(name, e) for e in exprs)

    for v, p in every:
        chain_rules(net_name(v, p), [_net_rule(v, p)])
    chain_rules(SRC_CHAIN, _src_rules())
    listed = [r["expr"] for r in state.rules.get(BASE_CHAIN, [])]
    if BASE_CHAIN in state.chains and base_rules_ok(listed, have, legacy):
        cmds.extend(_rule(BASE_CHAIN, _jump_rule(net_name(v, p)), "insert") for v, p in new)
    elif BASE_CHAIN in state.chains:  # damaged: flush and refill
        cmds.append(N.flush("chain", _chain(BASE_CHAIN)))
        cmds.extend(_rule(BASE_CHAIN, e) for e in _base_rules(every, legacy))
    else:
        cmds.append(N.create("chain", _base_chain()))
        cmds.extend(_rule(BASE_CHAIN, e) for e in _base_rules(every, legacy))
    return cmds


def build_add(owner_tag: str, regs: list[Reg]) -> list[dict]:
    """Fast-path ADD, elements only: fails when a set is missing or a source is
    registered already on its interface (``create``)."""
    cmds = []
    for iface, s in regs:
        cmds.append(N.create("element", src_elem(iface, s.ip, owner_tag)))
        cmds.append(N.add("element", net_elem(iface, s, owner_tag)))
        cmds.append(N.add("element", pair_elem(iface, s.ip, owner_tag)))
    return cmds


def build_reassert(owner_tag: str, regs: list[Reg], chains: set[str]) -> list[dict]:
    """Repeated ADD: fails (changing nothing) unless every source carries this owner's
    pair; re-adds the elements and drops the source's element of any other prefix
    length (all of them are known from the chain names)."""
    cmds = []
    for iface, s in regs:
        pair = pair_elem(iface, s.ip, owner_tag)
        cmds += [N.delete("element", pair), N.add("element", pair)]
        for name in sorted(chains):
            vl = _net_version_len(name)
            if vl and vl[0] == s.version and vl[1] != s.network.prefixlen:
                cmds += N.delete_quietly("element", T.elem(name, net_key(iface, s.ip, vl[1])))
        cmds.append(N.add("element", src_elem(iface, s.ip, owner_tag)))
        cmds.append(N.add("element", net_elem(iface, s, owner_tag)))
    return cmds


def build_remove(owner_tag: str, regs: list[Reg]) -> list[dict]:
    """Fast-path DEL: compare-and-delete; fails (removing nothing) unless all are ours."""
    cmds = []
    for iface, s in regs:
        cmds.append(N.delete("element", pair_elem(iface, s.ip, owner_tag)))
        cmds.append(N.delete("element", src_elem(iface, s.ip, None)))
        cmds.append(N.delete("element", net_elem(iface, s, None)))
    return cmds


def build_none_owned(owner_tag: str, regs: list[tuple[str, Any]]) -> list[dict]:
    """Probe: succeeds (changing nothing) iff no ``(iface, address)`` carries this owner's pair."""
    cmds = []
    for iface, a in regs:
        cmds += N.absent_probe("element", pair_elem(iface, a, owner_tag))
    return cmds


# legacy builders (tables of earlier versions)
def legacy_map_elem(address: Any) -> dict:
    return T.elem(LEGACY_MAPS[address.version], str(address))


def legacy_pair(address: Any, owner_tag: str) -> dict:
    return T.pair(LEGACY_MAPS[address.version], str(address), owner_tag)  # type: ignore[return-value]


def build_legacy_remove(owner_tag: str, addresses: list[Any]) -> list[dict]:
    """The earlier versions' compare-and-delete of ``address : jump masq-<subnet>``."""
    cmds = []
    for a in addresses:
        cmds += [N.delete("element", legacy_pair(a, owner_tag)), N.delete("element", legacy_map_elem(a))]
    return cmds


def build_legacy_none_owned(owner_tag: str, addresses: list[Any]) -> list[dict]:
    cmds = []
    for a in addresses:
        cmds += N.absent_probe("element", legacy_pair(a, owner_tag))
    return cmds


def legacy_subnet_chain(network: Any) -> str:
    """The earlier versions' chain of one subnet: ``masq-10.22.0.0-24``, ``masq-fd00__-64``."""
    return f"{LEGACY_CHAIN_PREFIX}{str(network.network_address).replace(':', '_')}-{network.prefixlen}"


# -- state read back from a listing ------------------------------------------------
def _registrations(state: TableState) -> list[tuple[str, Any, Elem]]:
    """(iface, address, element) of every ``src`` element."""
    out = []
    for v in (4, 6):
        for key, e in state.elems.get(SOURCES[v], {}).items():
            if isinstance(key, tuple) and len(key) == 2:
                out.append((key[0], ip_address(key[1]), e))
    return out


def _net_elems(state: TableState) -> list[tuple[int, str, Any, Elem]]:
    """(prefix length, iface, address, element) of every ``net`` element."""
    out = []
    for name, elems in state.elems.items():
        vl = _net_version_len(name)
        if vl is None:
            continue
        for key, e in elems.items():
            if isinstance(key, tuple) and len(key) == 3:
                out.append((vl[1], key[0], ip_address(key[1]), e))
    return out


def _legacy_entries(state: TableState) -> dict[Any, Elem]:
    return {ip_address(e.key): e for v in (4, 6) for e in state.elems.get(LEGACY_MAPS[v], {}).values()}


def _legacy_present(chains: Iterable[str]) -> bool:
    """Legacy entries may exist: each jumps to a ``masq-*`` chain, which cannot be
    deleted while an element refers to it."""
    return any(c.startswith(LEGACY_CHAIN_PREFIX) for c in chains)


def _referenced_chains(state: TableState) -> set[str]:
    out = set()
    for e in _legacy_entries(state).values():
        if isinstance(e.data, dict):
            for verdict in ("jump", "goto"):
                if verdict in e.data:
                    out.add(e.data[verdict].get("target"))
    return out


class Masquerade:
    """Masquerade entries keyed by (interface, source address), tagged with their owner."""

    def __init__(self, nft: N.Nft | None = None) -> None:
        self.nft = nft or N.Nft()

    # -- ADD ----------------------------------------------------------------
    def add(self, owner: str, sources: Iterable[Source | str], *, iface: str | None = None) -> None:
        """Masquerade traffic from ``sources`` entering through ``iface`` and leaving their
        subnets; idempotent.

        ``iface``: the interface the containers' traffic is routed in from (the bridge, or
        ``<bridge>.<vlan>`` holding the gateway). None falls back to the interface of the
        route to each source, which is ambiguous when two bridges hold the same subnet:
        callers should pass it. A source already registered on that interface to another
        owner (a stale entry: IPAM gave the address out again) is taken over atomically.
        """
        tag = N.tag(owner)
        regs = _regs(sources, iface, resolve=True)
        if not regs:
            return
        nft = self.nft
        if nft.try_apply(build_add(tag, regs)):
            return
        # first use on this host, of a prefix length, an upgraded table, or an entry exists
        chains = nft.chain_names(FAMILY, TABLE)
        setup = []
        if SRC_CHAIN not in chains:
            setup += build_scaffold_once(fresh=BASE_CHAIN not in chains)
        for v, plen in _prefixes(regs):
            if net_name(v, plen) not in chains:
                setup += build_net_once(v, plen)
        if setup:
            if nft.try_apply(setup + build_add(tag, regs)):
                return
        elif nft.try_apply(build_reassert(tag, regs, chains)):
            return  # a repeated ADD: every source already carried our ownership pair
        # someone else's entry (a stale one for an address IPAM gave out again), a mix,
        # a race, a damaged table, or a real error: list the table and converge, or raise
        d = digest(tag)

        def build(state: TableState) -> list[dict]:
            cmds = build_skeleton(state, _prefixes(regs))
            nets = _net_elems(state)
            for iface_, s in regs:
                a, plen = s.ip, s.network.prefixlen
                slot = T.pair_slot(SOURCES[a.version], src_key(iface_, a))
                for od in state.pairs.get(slot, {}):  # type: ignore[arg-type]
                    if od != d:  # the previous owner's pair
                        cmds += N.delete_quietly("element", T.elem(OWNERS, N.concat(slot[1], od)))  # type: ignore[index]
                cmds.append(N.add("element", pair_elem(iface_, a, tag)))
                e = state.get(SOURCES[a.version], src_key(iface_, a))
                if e is not None and e.comment != tag:
                    cmds += N.delete_quietly("element", T.elem(e.set, e.key))
                cmds.append(N.add("element", src_elem(iface_, a, tag)))
                for p, i, addr, ne in nets:
                    if i == iface_ and addr == a and not (p == plen and ne.comment == tag):
                        cmds += N.delete_quietly("element", T.elem(ne.set, ne.key))
                cmds.append(N.add("element", net_elem(iface_, s, tag)))
            return cmds

        T.converge(nft, build)

    # -- DEL ----------------------------------------------------------------
    def remove(self, owner: str, sources: Iterable[Source | str] | None = None, *,
               iface: str | None = None) -> None:
        """Remove ``owner``'s entries (those for ``sources``, or all of them when None).

        ``iface`` as given to :meth:`add` (None: the interface of the route to each source;
        without one, the table is listed). Sources may be plain addresses (then the table
        is listed). Idempotent; an entry now registered to another owner is left alone;
        entries made by earlier versions (keyed by address alone) are removed too.
        """
        tag = N.tag(owner)
        wanted: set | None = None
        if sources is not None:
            sources = list(sources)
            wanted = {_address(s) for s in sources}
            if not wanted:
                return
            addresses = sorted(wanted, key=_sort_key)
            exact = [s for s in sources if not isinstance(s, str) and hasattr(s, "network")] \
                + [ip_interface(s) for s in sources if isinstance(s, str) and "/" in s]
            regs = _regs(exact, iface, resolve=True, strict=False) if len(exact) == len(sources) else []
            nft = self.nft
            if regs and len(regs) == len(wanted) and nft.try_apply(build_remove(tag, regs)):
                return
            # a repeated DEL, a source given to someone else since, an entry of an earlier
            # version, or no table at all
            chains = nft.chain_names(FAMILY, TABLE)
            if not chains:
                return
            legacy = _legacy_present(chains)
            if legacy and nft.try_apply(build_legacy_remove(tag, addresses)):
                return
            if iface is not None and regs and len(regs) == len(wanted):
                # (not with a routed guess: the entry may be on another interface)
                probe = build_none_owned(tag, [(i, s.ip) for i, s in regs])
                if legacy:
                    probe += build_legacy_none_owned(tag, addresses)
                if nft.try_apply(probe):
                    return
            # some ours and some not, no interface known, or a real error: read the table

        def build(state: TableState) -> list[dict]:
            keys: set | None = None
            if wanted is not None:
                keys = set()
                for i, a, e in _registrations(state):
                    if a in wanted and (iface is None or i == iface):
                        keys.add((e.set, T.norm_key(e.set, e.key)))
                for _, i, a, e in _net_elems(state):
                    if a in wanted and (iface is None or i == iface):
                        keys.add((e.set, T.norm_key(e.set, e.key)))
                for a in wanted:
                    keys.add((LEGACY_MAPS[a.version], str(a)))
                    if iface is not None:
                        keys.add((SOURCES[a.version], T.norm_key(SOURCES[a.version], src_key(iface, a))))
            return T.remove_owned(state, lambda c: c == tag, keys)[0]

        T.converge(self.nft, build)

    # -- queries ------------------------------------------------------------
    def list(self) -> dict[str, list]:
        """owner -> source addresses registered for it (on any interface, legacy included)."""
        state = T.read(self.nft)
        out: dict[str, set] = {}
        for _, a, e in _registrations(state):
            out.setdefault(e.comment or "", set()).add(a)
        for a, e in _legacy_entries(state).items():
            out.setdefault(e.comment or "", set()).add(a)
        return {o: sorted(addrs, key=_sort_key) for o, addrs in out.items()}

    def entries(self) -> dict[str, list[tuple[str | None, Any]]]:
        """owner -> [(interface, address)] (interface None for entries of earlier versions)."""
        state = T.read(self.nft)
        out: dict[str, list[tuple[str | None, Any]]] = {}
        for i, a, e in _registrations(state):
            out.setdefault(e.comment or "", []).append((i, a))
        for a, e in _legacy_entries(state).items():
            out.setdefault(e.comment or "", []).append((None, a))
        return {o: sorted(v, key=lambda ia: (ia[0] or "", _sort_key(ia[1]))) for o, v in out.items()}

    def check(self, owner: str, sources: Iterable[Source | str], *, iface: str | None = None) -> list[str]:
        """Human-readable problems with ``owner``'s entries; [] when all are in place.

        ``iface`` as given to :meth:`add` (None: any interface). An entry made by an
        earlier version for the address (keyed by address alone) counts as in place.
        """
        tag = N.tag(owner)
        srcs = [ip_interface(s) if isinstance(s, str) else s for s in sources]
        state = T.read(self.nft)
        where = f"table {FAMILY} {TABLE}"
        if not state.exists:
            return [f"{where} does not exist"]
        problems = []
        base = [r["expr"] for r in state.rules.get(BASE_CHAIN, [])]
        have = {vl for vl in map(_net_version_len, state.chains) if vl is not None}
        if BASE_CHAIN not in state.chains:
            problems.append(f"{where}: base chain {BASE_CHAIN} is missing")
        elif not base_rules_ok(base, have, _legacy_versions(state)):
            problems.append(f"{where}: chain {BASE_CHAIN} does not hold the expected rules")
        if [r["expr"] for r in state.rules.get(SRC_CHAIN, [])] != _src_rules():
            problems.append(f"{where}: chain {SRC_CHAIN} does not hold the expected rules")
        d = digest(tag)
        regs = _registrations(state)
        nets = _net_elems(state)
        legacy = _legacy_entries(state)
        for s in srcs:
            a = getattr(s, "ip", s)
            mine = [(i, e) for i, addr, e in regs if addr == a and (iface is None or i == iface)]
            if iface is None and any(e.comment == tag for _, e in mine):
                mine = [(i, e) for i, e in mine if e.comment == tag]  # others' on other interfaces
            if not mine:
                old = legacy.get(a)
                if old is not None and old.comment == tag and d in state.pairs.get(T.pair_slot(old.set, old.key), {}):  # type: ignore[arg-type]
                    if hasattr(s, "network") and old.data != N.jump(legacy_subnet_chain(s.network)):
                        problems.append(f"masquerade entry for {a} points to {old.data!r}, "
                                        f"expected jump {legacy_subnet_chain(s.network)}")
                    continue  # an entry of an earlier version
                on = f" on {iface}" if iface is not None else ""
                problems.append(f"no masquerade entry for {a}{on} (owner {tag!r})")
                continue
            for i, e in mine:
                if e.comment != tag:
                    problems.append(f"masquerade entry for {a} on {i} belongs to {e.comment!r}, not {tag!r}")
                    continue
                if not state.has_pair(e, tag):
                    problems.append(f"ownership pair for {a} on {i} (owner {tag!r}) is missing")
                if not hasattr(s, "network"):
                    continue
                plen = s.network.prefixlen
                name = net_name(a.version, plen)
                if state.get(name, net_key(i, a, plen)) is None:
                    problems.append(f"no subnet entry {i} . {a} . {s.network} in {name}")
                for p, ni, na, _ in nets:
                    if ni == i and na == a and p != plen:
                        problems.append(f"{a} on {i} also has a subnet entry for prefix length {p}")
                if [r["expr"] for r in state.rules.get(name, [])] != [_net_rule(a.version, plen)]:
                    problems.append(f"chain {name} does not hold the expected rule")
                elif _jump_rule(name) not in base:
                    problems.append(f"chain {BASE_CHAIN} does not jump to {name}")
        return problems

    # -- GC -----------------------------------------------------------------
    def gc(self, prefix: str, keep: Callable[[str], bool]) -> list[str]:
        """Remove entries whose owner starts with ``prefix`` and ``keep(owner)`` is False.

        Returns the owners removed. Afterwards prunes the legacy objects nothing uses.
        """
        stale = N.stale_owners(prefix, keep)
        removed: set[str] = set()

        def build(state: TableState) -> list[dict]:
            cmds, owners = T.remove_owned(state, stale)
            removed.clear()
            removed.update(owners)
            return cmds

        T.converge(self.nft, build)
        self._prune_legacy(T.read(self.nft))
        return sorted(removed)

    # -- internals -----------------------------------------------------------
    def _prune_legacy(self, state: TableState) -> None:
        """Best effort, one transaction each: with no legacy entry and pair left, delete
        the legacy rules, maps, sets and chains; otherwise the ``masq-*`` chains no entry
        jumps to (a delete that races with a change fails and changes nothing)."""
        legacy_sets = [n for n in (*LEGACY_MAPS.values(), *LEGACY_OWNER_SETS.values()) if n in state.sets]
        if not legacy_sets and not _legacy_present(state.chains):
            return
        used = _referenced_chains(state)
        chains = [n for n in state.chains if n.startswith(LEGACY_CHAIN_PREFIX)]
        empty = not used and not any(state.elems.get(n) for n in legacy_sets) \
            and not any(slot[0] in LEGACY_OWNER_SETS.values() for slot in state.pairs)
        if empty:
            cmds = []
            for r in state.rules.get(BASE_CHAIN, []):
                if any(isinstance(x, dict) and "vmap" in x and x["vmap"].get("data") in
                       ("@" + LEGACY_MAPS[4], "@" + LEGACY_MAPS[6]) for x in r["expr"]):
                    cmds.append(N.delete("rule", {"family": FAMILY, "table": TABLE, "chain": BASE_CHAIN,
                                                   "handle": r["handle"]}))
            cmds += [N.delete("chain", _chain(n)) for n in chains]
            for n in legacy_sets:
                kind = "map" if n in LEGACY_MAPS.values() else "set"
                cmds.append(N.delete(kind, {"family": FAMILY, "table": TABLE, "name": n}))
            if self.nft.try_apply(cmds):
                return
        for name in chains:
            if name not in used:
                try:
                    self.nft.apply([N.delete("chain", _chain(name))])
                except NftError:
                    pass


# -- helpers ----------------------------------------------------------------------
def _regs(sources: Iterable[Source | str], iface: str | None, *, resolve: bool, strict: bool = True) -> list[Reg]:
    """(iface, source) per distinct source address, sorted. ``iface`` None: the
    interface of the route to the source (``strict``: raise when there is none;
    otherwise that source is left out)."""
    if iface is not None:
        problem = ifname_problem(iface)
        if problem:
            raise ValueError(f"masquerade interface {iface!r} {problem}")
    out: dict[Any, Source] = {}
    for s in sources:
        src = ip_interface(s) if isinstance(s, str) else s
        if not isinstance(src, (IPv4Interface, IPv6Interface)):
            raise TypeError(f"masquerade source must be an IPv4Interface/IPv6Interface, got {s!r}")
        out[src.ip] = src
    regs = []
    for a in sorted(out, key=_sort_key):
        name = iface if iface is not None else (_route_iface(a) if resolve else None)
        if name is None:
            if strict:
                raise NetError(f"masquerade: no route to {a}: pass the interface (iface=...)")
            continue
        regs.append((name, out[a]))
    return regs


def _route_iface(address: Any) -> str | None:
    from . import conntrack

    oif = conntrack.route_oif(address)
    return conntrack.ifname(oif) if oif else None


def _address(s: Any) -> Any:
    if isinstance(s, str):
        return ip_interface(s).ip
    return getattr(s, "ip", s)


def _prefixes(regs: list[Reg]) -> list[tuple[int, int]]:
    return sorted({(s.version, s.network.prefixlen) for _, s in regs})


def _sort_key(a: Any) -> tuple[int, int]:
    return (a.version, int(a))
