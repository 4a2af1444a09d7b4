"""Pure builders of the portmap table's libnftables commands (no kernel access).

Scaffolding (table, maps, sets) is an nft text batch (:func:`scaffold_text`, see there
why); chains, rules and elements are libnftables JSON fragments for :mod:`splice.libnet.nft`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterable

from .. import nft as N
from ..errors import NftError
from .model import (
    ADDR_TYPE, DSTNAT, FAMILY, FILTER, GUARD, HAIRPIN, HOSTPORTS, IP, LOCALHOST, LOCALNET, MASQ_ALL, NFPROTO,
    OWNERS, SPECIFIC, SRCNAT, TABLE, WILDCARD, Masq, Published, claim_map, cond_map, digest, dnat_map, key_digest,
    legacy_refs_map, refs_map,
)

if TYPE_CHECKING:
    from .state import State


# -- scaffolding -----------------------------------------------------------------------------
def scaffold_text() -> str:
    """Table, maps and sets as an nft text batch (``add``: idempotent, deletes nothing).

    Text, not JSON: libnftables 1.0.6 cannot create a map with concatenated data from
    JSON (``"map": [..]`` silently makes a plain set, and a rule using it then crashes
    the JSON parser), so the table is created through :func:`apply_text`.
    """
    t = f"{FAMILY} {TABLE}"
    lines = [f"add table {t}"]
    for v in (4, 6):
        a = ADDR_TYPE[v]
        lines += [
            f"add map {t} {dnat_map(v, False)} {{ type inet_proto . inet_service : {a} . inet_service; }}",
            f"add map {t} {dnat_map(v, True)} {{ type {a} . inet_proto . inet_service : {a} . inet_service; }}",
            f"add map {t} {cond_map(v, False)} {{ type inet_proto . inet_service : verdict; }}",
            f"add map {t} {cond_map(v, True)} {{ type {a} . inet_proto . inet_service : verdict; }}",
            f"add map {t} {claim_map(v)} {{ type inet_proto . inet_service : mark; }}",
            f"add map {t} {refs_map(v)} {{ type ifname . {a} . {a} : counter; }}",
        ]
    lines += [f"add set {t} {OWNERS} {{ type ifname . ifname; }}", f"add set {t} {HAIRPIN} {{ type ifname . ifname; }}"]
    lines += [f"add set {t} {name} {{ type ifname; }}" for name in (LOCALHOST, MASQ_ALL, LOCALNET)]
    return "\n".join(lines)


def apply_text(text: str, ctx: Any = None) -> str:
    """Run an nft text batch in the calling thread's namespace (a fresh libnftables
    context unless one is given); returns the output; raises NftError."""
    ctx = ctx or N._new_context()
    rc, out, err = ctx.cmd(text)
    if rc != 0:
        msg = " ".join(line.strip() for line in (err or "").splitlines() if line.strip())
        raise NftError(msg or f"libnftables failed (rc={rc})")
    return out


# -- chains ------------------------------------------------------------------------------------
def _l4_key(*lead: dict) -> dict:
    return N.concat(*lead, N.meta("l4proto"), N.payload("th", "dport"))


def _hostports_rules() -> list[list[dict]]:
    rules: list[list[dict]] = []
    for v in (4, 6):
        key = _l4_key(N.payload(IP[v], "daddr"))
        rules.append([{"vmap": {"key": key, "data": "@" + cond_map(v, True)}}])
        rules.append([{"dnat": {"family": IP[v], "addr": {"map": {"key": key, "data": "@" + dnat_map(v, True)}}}}])
    rules.append([N.match({"fib": {"result": "type", "flags": ["daddr"]}}, "local", "!="), {"return": None}])
    for v in (4, 6):
        nfp = N.match(N.meta("nfproto"), NFPROTO[v])
        rules.append([nfp, {"vmap": {"key": _l4_key(), "data": "@" + cond_map(v, False)}}])
        rules.append([nfp, {"dnat": {"family": IP[v], "addr": {"map": {"key": _l4_key(), "data": "@" + dnat_map(v, False)}}}}])
    return rules


def base_chain_specs(legacy: bool = False) -> list[tuple[dict, list[list[dict]]]]:
    """(chain object, its rules) of the fixed chains. ``legacy``: the table still has the
    ``refs4``/``refs6`` maps of an earlier version (registrations keyed by address only,
    made before an upgrade): postrouting looks them up too, after the current ones."""
    refs = [(refs_map(v), N.concat(N.meta("oifname"), N.payload(IP[v], "saddr"), N.payload(IP[v], "daddr")))
            for v in (4, 6)]
    if legacy:
        refs += [(legacy_refs_map(v), N.concat(N.payload(IP[v], "saddr"), N.payload(IP[v], "daddr"))) for v in (4, 6)]
    t = (FAMILY, TABLE)
    jump = [[N.jump(HOSTPORTS)]]
    ct_dnat = N.match({"ct": {"key": "status"}}, "dnat", "in")
    return [
        (N.chain(*t, HOSTPORTS), _hostports_rules()),
        (N.base_chain(*t, "prerouting", type="nat", hook="prerouting", prio=DSTNAT), jump),
        (N.base_chain(*t, "output", type="nat", hook="output", prio=DSTNAT), jump),
        (N.base_chain(*t, "postrouting", type="nat", hook="postrouting", prio=SRCNAT), [
            [ct_dnat, N.match(N.meta("oifname"), "@" + MASQ_ALL), {"masquerade": None}],
            [ct_dnat, N.match(N.concat(N.meta("iifname"), N.meta("oifname")), "@" + HAIRPIN), {"masquerade": None}],
            *[[ct_dnat, N.match(key, "@" + name), {"masquerade": None}] for name, key in refs],
            [ct_dnat, N.match(N.payload("ip", "saddr"), {"prefix": {"addr": "127.0.0.0", "len": 8}}),
             N.match(N.meta("oifname"), "@" + LOCALHOST), {"masquerade": None}],
        ]),
        (N.base_chain(*t, GUARD, type="filter", hook="prerouting", prio=FILTER), [[
            N.match(N.meta("iifname"), "@" + LOCALNET),
            N.match(N.payload("ip", "daddr"), {"prefix": {"addr": "127.0.0.0", "len": 8}}),
            N.match({"ct": {"key": "status"}}, "dnat", "!"),
            {"drop": None},
        ]]),
    ]


def _rules(chain_name: str, rules: list[list[dict]]) -> list[dict]:
    return [N.add("rule", N.rule(FAMILY, TABLE, chain_name, expr)) for expr in rules]


def build_base_chains_once() -> list[dict]:
    """The chains with their rules; fails (EEXIST, changing nothing) when one exists."""
    cmds: list[dict] = []
    for chain, rules in base_chain_specs():
        cmds.append(N.create("chain", chain))
        cmds += _rules(chain["name"], rules)
    return cmds


def _canon(x: Any) -> Any:
    """A rule expression with anonymous set members in a fixed order (nft sorts them)."""
    if isinstance(x, dict):
        return {k: (sorted((_canon(v) for v in x[k]), key=json.dumps) if k == "set" and isinstance(x[k], list)
                    else _canon(x[k])) for k in x}
    if isinstance(x, list):
        return [_canon(v) for v in x]
    return x


def rules_match(listed: list[dict] | None, expected: list[list[dict]]) -> bool:
    """Whether a chain's listed rules (``rule`` objects) are ``expected`` (expr lists)."""
    if listed is None or len(listed) != len(expected):
        return False
    return all(_canon(r.get("expr")) == _canon(e) for r, e in zip(listed, expected))


def build_base_chains(state: "State | None" = None) -> list[dict]:
    """The chains created or reset to their rules where they differ (the slow path's
    self-repair; with no ``state``, all of them)."""
    cmds: list[dict] = []
    for chain, rules in base_chain_specs(state is not None and state.legacy):
        name = chain["name"]
        if state is not None and name in state.chains and rules_match(state.rules.get(name), rules):
            continue
        cmds += [N.add("chain", chain), N.flush("chain", N.chain(FAMILY, TABLE, name))]
        cmds += _rules(name, rules)
    return cmds


def build_base_chain_reset(name: str, legacy: bool = False) -> list[dict]:
    """One fixed chain reset to its rules (flushed and filled in one transaction)."""
    for chain, rules in base_chain_specs(legacy):
        if chain["name"] == name:
            return [N.add("chain", chain), N.flush("chain", N.chain(FAMILY, TABLE, name))] + _rules(name, rules)
    raise KeyError(name)


def build_chain_once(name: str, rules: list[list[dict]]) -> list[dict]:
    return [N.create("chain", N.chain(FAMILY, TABLE, name))] + _rules(name, rules)


def build_chain(name: str, rules: list[list[dict]], state: "State | None" = None) -> list[dict]:
    """A chain created or reset to ``rules`` (nothing when ``state`` shows it as expected)."""
    if state is not None and name in state.chains and rules_match(state.rules.get(name), rules):
        return []
    return [N.add("chain", N.chain(FAMILY, TABLE, name)), N.flush("chain", N.chain(FAMILY, TABLE, name))] + _rules(name, rules)


# -- elements -------------------------------------------------------------------------------
def counter_obj(name: str) -> dict:
    return {"family": FAMILY, "table": TABLE, "name": name}


def map_elem(map_name: str, key: Any, comment: str | None = None, data: Any = None) -> dict:
    """One element of one of the table's maps/sets, as an ``elements`` object."""
    return N.elements(FAMILY, TABLE, map_name, [N.elem(key, comment, data)])


def owner_pair(map_name: str, key: Any, owner_tag: str) -> dict:
    """The ownership pair of ``owner_tag`` for ``key`` of ``map_name`` (in ``owners``),
    as ``state.T.pair`` builds it."""
    return map_elem(OWNERS, N.concat(key_digest(map_name, key), digest(owner_tag)), owner_tag)


def claim_value(p: Published) -> int:
    return SPECIFIC if p.specific else WILDCARD


def build_publish(tag: str, entries: list[Published], masqs: list[Masq], conds: dict[int, str],
                  localnet: Iterable[str] = ()) -> list[dict]:
    """Fast-path ADD, elements only (and the interface counters/entries, added
    idempotently): fails (changing nothing) when scaffolding or a condition chain is
    missing, when a key is taken (by anyone, us included), or a wildcard claim exists.
    ``conds``: version -> condition chain of the entries of that version."""
    cmds: list[dict] = []
    claimed = set()
    for p in entries:
        ck = (p.version, p.protocol, p.host_port)
        if ck not in claimed:
            claimed.add(ck)
            claim = map_elem(claim_map(p.version), p.port_key(), tag, claim_value(p))
            cmds.append(N.add("element", claim) if p.specific else N.create("element", claim))
        cmds.append(N.create("element", map_elem(p.map, p.key(), tag, p.data())))
        cmds.append(N.add("element", owner_pair(p.map, p.key(), tag)))
        if p.version in conds:
            cm = cond_map(p.version, p.specific)
            cmds.append(N.create("element", map_elem(cm, p.key(), tag, N.jump(conds[p.version]))))
            cmds.append(N.add("element", owner_pair(cm, p.key(), tag)))
    for m in masqs:
        cmds.append(N.add("counter", counter_obj(m.counter)))
        cmds.append(N.create("element", map_elem(m.map, m.key(), tag, m.counter)))
        cmds.append(N.add("element", owner_pair(m.map, m.key(), tag)))
        cmds += [N.add("element", map_elem(name, key)) for name, key in m.members()]
    for iface in localnet:
        cmds.append(N.add("element", map_elem(LOCALNET, iface)))
    return cmds


def build_unpublish(tag: str, entries: list[Published], masqs: list[Masq], cond_versions: Iterable[int]) -> list[dict]:
    """Fast-path DEL: compare-and-delete; fails (removing nothing) unless all are ours."""
    cmds: list[dict] = []
    cv = set(cond_versions)
    released = set()
    for p in entries:
        cmds.append(N.delete("element", owner_pair(p.map, p.key(), tag)))
        cmds.append(N.delete("element", map_elem(p.map, p.key())))
        if p.version in cv:
            cm = cond_map(p.version, p.specific)
            cmds.append(N.delete("element", owner_pair(cm, p.key(), tag)))
            cmds.append(N.delete("element", map_elem(cm, p.key())))
        ck = (p.version, p.protocol, p.host_port)
        if not p.specific and ck not in released:
            released.add(ck)
            cmds.append(N.delete("element", map_elem(claim_map(p.version), p.port_key())))
    for m in masqs:
        cmds.append(N.delete("element", owner_pair(m.map, m.key(), tag)))
        cmds.append(N.delete("element", map_elem(m.map, m.key())))
    return cmds


def build_none_owned(tag: str, entries: list[Published], masqs: list[Masq]) -> list[dict]:
    """Probe: succeeds (changing nothing) iff none of these keys carries this owner's pair."""
    cmds: list[dict] = []
    for p in entries:
        cmds += N.absent_probe("element", owner_pair(p.map, p.key(), tag))
    for m in masqs:
        cmds += N.absent_probe("element", owner_pair(m.map, m.key(), tag))
    return cmds
