"""The port publisher: applies already-expanded :class:`~.model.Published` entries for an owner.

See the package docstring (:mod:`splice.libnet.portmap`) for the table, the semantics
and the cost of each path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from .. import nft as N
from ..errors import NetError, NftError, NotSupported
from .builders import (
    apply_text, base_chain_specs, build_base_chain_reset, build_base_chains, build_base_chains_once, build_chain,
    build_chain_once, build_none_owned, build_publish, build_unpublish, claim_value, counter_obj, map_elem,
    owner_pair, rules_match, scaffold_text,
)
from .model import (
    BASE_CHAINS, FAMILY, LEGACY_REFS, LOCALNET, MEMBER_SETS, NFPROTO_INET, OWNERS, TABLE, Conditions, Masq,
    PortConflict, Published, claim_map, cond_map, dnat_map, interface_needs, is_refs_map, legacy_refs_map,
    member_iface, norm_key,
)

if TYPE_CHECKING:
    from .state import State
    from ipaddress import IPv4Address, IPv6Address

    IPAddr = IPv4Address | IPv6Address

ATTEMPTS = 5


def _addresses(entries: Iterable[Published]) -> dict[int, "IPAddr"]:
    """version -> the container address of the entries of that version."""
    out: dict[int, Any] = {}
    for p in entries:
        out.setdefault(p.version, p.address)
    return out


class PortPublisher:
    """Host ports of containers, keyed by owner (see the package docstring).

    ``conditions`` arguments: version -> :class:`~.model.Conditions` for the families
    whose mappings are conditioned (the others are unconditional). ``ifaces``: the
    attachment's host-side interfaces (its bridge first), when the caller knows them:
    see :func:`masq_iface`.
    """

    def __init__(self, nft: N.Nft | None = None) -> None:
        self.nft = nft or N.Nft()
        self.warnings: list[str] = []  # best-effort steps that failed (the caller logs them)

    # -- ADD ----------------------------------------------------------------------
    def publish(self, owner: str, entries: list[Published], *, snat: bool = True, masq_all: bool = False,
                conditions: Mapping[int, Conditions] | None = None, flush_udp: bool = True,
                ifaces: Sequence[str] = ()) -> list[Published]:
        """Publish ``entries`` (one container: one address per family).

        Returns the entries now in place. Idempotent for the same owner (a repeated call
        converges the owner's elements to exactly these). Raises :class:`PortConflict`
        (nothing changed) when another owner has one of the ports.
        """
        if not entries:
            return []
        tag = N.tag(owner)
        entries = list(entries)
        addrs = _addresses(entries)
        conds = {v: c for v, c in (conditions or {}).items() if v in addrs}
        chains = {v: c.chain for v, c in conds.items()}
        masqs = self._masqs(addrs, masq_all, ifaces)[0] if snat else []
        localnet = self._localnet_to_enable(masqs)
        nft = self.nft
        fast = build_publish(tag, entries, masqs, chains, localnet)
        if not nft.try_apply(fast):
            have = nft.chain_names(FAMILY, TABLE)
            setup: list[dict] = []
            if not set(BASE_CHAINS) <= have:
                apply_text(scaffold_text())
                setup += build_base_chains_once()
            for c in conds.values():
                if c.chain not in have:
                    setup += build_chain_once(c.chain, c.rules())
            if not (setup and nft.try_apply(setup + fast)):
                self._publish_slow(tag, entries, masqs, conds, localnet)
        self._enable_localnet(localnet)
        if flush_udp:
            self._flush_udp(entries)
        return entries

    def _masqs(self, addrs: dict[int, Any], masq_all: bool, ifaces: Sequence[str]) -> tuple[list[Masq], bool]:
        """The registrations of the container's addresses, and whether an address has no
        interface to register on (no route and no ``ifaces``: nothing is registered)."""
        out, unresolved = [], False
        for v in sorted(addrs):
            iface = masq_iface(addrs[v], ifaces)
            if iface:
                out.append(Masq(addrs[v], iface, masq_all))
            else:
                unresolved = True
        return out, unresolved

    def _localnet_to_enable(self, masqs: list[Masq]) -> list[str]:
        from .. import sysctl

        out = []
        for s in masqs:
            if s.address.version == 4 and s.iface:
                try:
                    if sysctl.read(f"ipv4/conf/{s.iface}/route_localnet") == "0":
                        out.append(s.iface)
                except NotSupported:
                    pass
        return out

    def _enable_localnet(self, ifaces: list[str]) -> None:
        from .. import sysctl

        for iface in ifaces:
            sysctl.try_ensure(f"ipv4/conf/{iface}/route_localnet", 1)

    def _flush_udp(self, entries: list[Published]) -> None:
        ports: dict[int, set[int]] = {}
        for p in entries:
            if p.protocol == "udp":
                ports.setdefault(p.version, set()).add(p.host_port)
        if not ports:
            return
        from .. import conntrack

        for v, ps in sorted(ports.items()):
            try:  # as the reference: informative only, the mapping is in place
                conntrack.flush_udp(ps, v)
            except NetError as e:
                self.warnings.append(f"failed to delete stale UDP conntrack entries for IPv{v} ports "
                                     f"{sorted(ps)}: {e}")

    def _publish_slow(self, tag: str, entries: list[Published], masqs: list[Masq],
                      conds: dict[int, Conditions], localnet: list[str]) -> None:
        from .state import Elem, claims_fix, delete_elem, orphan_pairs, pair_id  # the slow paths only

        apply_text(scaffold_text())

        def build(state: State) -> list[dict]:
            cmds = build_base_chains(state)
            for c in conds.values():
                cmds += build_chain(c.chain, c.rules(), state)
            want: dict[tuple[str, Any], tuple[Any, Any]] = {}  # (map, canonical key) -> (key, data)
            what: dict[tuple[str, Any], Published] = {}
            for p in entries:
                maps = [p.map] + ([cond_map(p.version, p.specific)] if p.version in conds else [])
                for m in maps:
                    k = (m, norm_key(m, p.key()))
                    want[k] = (p.key(), p.data() if m == p.map else N.jump(conds[p.version].chain))
                    what[k] = p
            takeover = set()
            for m in masqs:
                k = (m.map, norm_key(m.map, m.key()))
                want[k] = (m.key(), m.counter)
                takeover.add(k)
                cmds.append(N.add("counter", counter_obj(m.counter)))
                cmds += [N.add("element", map_elem(name, key)) for name, key in m.members()]
            # a port held by another owner is a conflict; a masquerade registration of
            # another owner is stale (its address was given out again) and is taken over
            for k in want:
                e = state.elems.get(k[0], {}).get(k[1])
                if e is not None and e.comment != tag and k not in takeover:
                    raise PortConflict(what[k].describe(), e.comment)
            for p in entries:
                self._check_overlap(state, tag, p)
            after = {m: dict(elems) for m, elems in state.elems.items()}
            handled: set[tuple[str, str]] = set()
            for e in state.owned(lambda c: c == tag):
                k = (e.set, norm_key(e.set, e.key))
                if k not in want:  # ours from an earlier call with other mappings
                    cmds += delete_elem(state, e)
                    after[e.set].pop(k[1], None)
                    handled.add(pair_id(e.set, e.key, tag))
            for k, (key, data) in want.items():
                e = state.elems.get(k[0], {}).get(k[1])
                if e is not None and e.comment == tag and e.data == data:
                    if not state.has_pair(e, tag):
                        cmds.append(N.add("element", owner_pair(k[0], key, tag)))
                else:
                    if e is not None:
                        cmds += delete_elem(state, e)
                        if e.comment and state.has_pair(e, e.comment):
                            handled.add(pair_id(e.set, e.key, e.comment))
                    cmds.append(N.add("element", map_elem(k[0], key, tag, data)))
                    cmds.append(N.add("element", owner_pair(k[0], key, tag)))
                handled.add(pair_id(k[0], key, tag))
                after.setdefault(k[0], {})[k[1]] = Elem(k[0], key, data, tag)
            cmds += orphan_pairs(state, lambda c: c == tag, handled)
            cmds += claims_fix(state, after)
            for iface in localnet:
                cmds.append(N.add("element", map_elem(LOCALNET, iface)))
            return cmds

        self._converge(build)

    def _check_overlap(self, state: State, tag: str, p: Published) -> None:
        """Raise PortConflict when ``p`` overlaps a live mapping of another owner published
        on every address vs. on a given address (or the other way round)."""
        if p.specific:
            e = state.get(dnat_map(p.version, False), p.port_key())
            if e is not None and e.comment != tag:
                raise PortConflict(p.describe(), e.comment, f"the same port on every IPv{p.version} address")
            return
        for e in state.elems.get(dnat_map(p.version, True), {}).values():
            k = norm_key(e.set, e.key)
            if (k[1], k[2]) == (p.protocol, p.host_port) and e.comment != tag:
                raise PortConflict(p.describe(), e.comment, f"the same port on {k[0]}")

    # -- DEL ----------------------------------------------------------------------
    def unpublish(self, owner: str, entries: list[Published] | None = None, *, snat: bool = True,
                  conditions: Mapping[int, Any] | Iterable[int] = (), ifaces: Sequence[str] = ()) -> list[Published]:
        """Remove ``owner``'s elements; idempotent; never touches another owner's.

        With ``entries`` (what publish got) this is one transaction; without them
        (``None``: e.g. a DEL without prevResult) the table is listed and every element of
        the owner goes. ``conditions``: the versions (or a version -> Conditions mapping)
        whose entries were published with conditions. The table is listed too when an
        address has no interface now (its registration's key is unknown), and when the
        fast transaction fails while some element is still the owner's (a registration
        made before an upgrade, a route that changed). Returns what was removed when known.
        """
        tag = N.tag(owner)
        removed: list[Published] = []
        masq_removed = False
        specific_released: set[tuple[int, str, int]] = set()
        listed = True
        if entries is not None:
            entries = list(entries)
            if not entries:
                return []
            addrs = _addresses(entries)
            masqs, unresolved = self._masqs(addrs, False, ifaces) if snat else ([], False)
            cv = [v for v in conditions if v in addrs]
            if unresolved:
                pass  # listed below
            elif self.nft.try_apply(build_unpublish(tag, entries, masqs, cv)):
                listed = False
                removed = entries
                masq_removed = bool(masqs)
                specific_released = {(p.version, p.protocol, p.host_port) for p in entries if p.specific}
            else:
                # a repeated DEL, a partial ADD, or nothing here at all
                if not self.nft.chain_names(FAMILY, TABLE):
                    return []
                if self.nft.try_apply(build_none_owned(tag, entries, masqs)):
                    return []
        if listed:
            out: dict[str, Any] = {}
            self._remove_owned(lambda c: c == tag, out)
            removed = out.get("published", [])
            masq_removed = out.get("masq", False)
            specific_released = set()  # _remove_owned fixed the claims from the listing
        if specific_released:
            self._release_claims(specific_released)
        if masq_removed:
            self.sync_interfaces()
        return removed

    def _remove_owned(self, stale: Callable[[str | None], bool], out: dict[str, Any]) -> None:
        """One converge transaction removing every element whose owner is ``stale``, the
        owners' pairs, and the claims no mapping backs any more."""
        from .state import claims_fix, delete_elem, orphan_pairs, pair_id

        def build(state: State) -> list[dict]:
            cmds: list[dict] = []
            drop = state.owned(stale)
            out["published"] = [p for c, p in state.published() if stale(c)]
            out["masq"] = any(is_refs_map(e.set) for e in drop)
            out["owners"] = sorted({e.comment for e in drop if e.comment is not None}
                                   | {c for owners in state.pairs.values() for c in owners.values()
                                      if c is not None and stale(c)})
            after = {m: dict(elems) for m, elems in state.elems.items()}
            for e in drop:
                cmds += delete_elem(state, e)
                after.get(e.set, {}).pop(norm_key(e.set, e.key), None)
            keep = {pair_id(e.set, e.key, e.comment) for e in drop if e.comment and state.has_pair(e, e.comment)}
            cmds += orphan_pairs(state, stale, keep)
            cmds += claims_fix(state, after)
            return cmds

        self._converge(build)

    def _release_claims(self, released: set[tuple[int, str, int]]) -> None:
        """After given-address mappings went: drop the claims of ports no given-address
        mapping uses any more (lists only the ``dnat*_ip`` maps). Each delete is guarded
        by a probe that no wildcard mapping took the port meanwhile."""
        live: set[tuple[int, str, int]] = set()
        for v in {r[0] for r in released}:
            try:
                listing = self.nft.list_json({"map": {"family": FAMILY, "table": TABLE, "name": dnat_map(v, True)}})
            except NftError:
                return
            for obj in N.sets_in(listing).values():
                for e in obj.get("elem", []) or []:
                    key, _, _ = N.split_elem(e)
                    k = norm_key(dnat_map(v, True), key)
                    live.add((v, k[1], k[2]))
        for v, proto, port in sorted(released - live):
            dummy = N.concat("0.0.0.0" if v == 4 else "::", 0)
            probe = N.absent_probe("element", map_elem(dnat_map(v, False), N.concat(proto, port), None, dummy))
            self.nft.try_apply(probe + [N.delete("element", map_elem(claim_map(v), N.concat(proto, port)))])

    # -- interface entries and route_localnet --------------------------------------
    def _members(self) -> dict[str, set]:
        """The interface entry sets (each small: one element per interface)."""
        from .state import State

        out: dict[str, set] = {name: set() for name in MEMBER_SETS}
        for name in MEMBER_SETS:
            try:
                listing = self.nft.list_json({"set": {"family": FAMILY, "table": TABLE, "name": name}})
            except NftError:
                continue
            out[name] = State(listing).members(name)
        return out

    def sync_interfaces(self) -> list[str]:
        """Remove the ``hairpin``/``localhost``/``masq_all`` entries no container needs any
        more, and switch route_localnet back to 0 on the ``@localnet`` interfaces none
        needs (counted by the kernel: use counts of the interface counters). Returns the
        interfaces changed. Safe against a concurrent publish: after the removal it counts
        again and restores what a new user needs."""
        from .. import conntrack, sysctl

        members = self._members()
        ifaces = sorted({member_iface(k) for keys in members.values() for k in keys})
        if not ifaces:
            return []
        uses = conntrack.nft_object_uses(NFPROTO_INET, TABLE)
        drop: list[tuple[str, Any, str]] = []  # (set, element key, iface)
        for iface in ifaces:
            needs = interface_needs(uses, iface)
            for name, keys in members.items():
                for k in keys:
                    if member_iface(k) == iface and not needs[name]:
                        drop.append((name, N.concat(*k) if isinstance(k, tuple) else k, iface))
        if not drop:
            return []
        for name, _k, iface in drop:
            if name == LOCALNET:
                try:
                    sysctl.write(f"ipv4/conf/{iface}/route_localnet", 0)
                except NotSupported:  # the interface is gone
                    pass
        cmds = []
        for name, k, _iface in drop:
            cmds += N.delete_quietly("element", map_elem(name, k))
        self.nft.try_apply(cmds)
        # a publish may have registered a container meanwhile: give back what it needs
        again = conntrack.nft_object_uses(NFPROTO_INET, TABLE)
        restore = [(name, k, iface) for name, k, iface in drop if interface_needs(again, iface)[name]]
        if restore:
            self.nft.try_apply([N.add("element", map_elem(name, k)) for name, k, _i in restore])
            for name, _k, iface in restore:
                if name == LOCALNET:
                    sysctl.try_ensure(f"ipv4/conf/{iface}/route_localnet", 1)
        return sorted({iface for _n, _k, iface in drop} - {iface for _n, _k, iface in restore})

    # -- queries ------------------------------------------------------------------
    def owners(self) -> dict[str, list[Published]]:
        """owner -> its DNAT elements."""
        out: dict[str, list[Published]] = {}
        for comment, p in self._state().published():
            out.setdefault(comment or "", []).append(p)
        return out

    def check(self, owner: str, entries: list[Published], *, snat: bool = True, masq_all: bool = False,
              conditions: Mapping[int, Conditions] | None = None, ifaces: Sequence[str] = ()) -> list[str]:
        """Human-readable problems with ``owner``'s elements; [] when all are in place."""
        from .. import sysctl

        if not entries:
            return []
        tag = N.tag(owner)
        addrs = _addresses(entries)
        conds = {v: c for v, c in (conditions or {}).items() if v in addrs}
        state = self._state()
        where = f"table {FAMILY} {TABLE}"
        if not state.exists:
            return [f"{where} does not exist"]
        problems = []
        for chain, rules in base_chain_specs(state.legacy):
            if chain["name"] not in state.chains:
                problems.append(f"{where}: chain {chain['name']} is missing")
            elif not rules_match(state.rules.get(chain["name"]), rules):
                problems.append(f"{where}: chain {chain['name']} does not hold the expected rules")

        def expect(m: str, key: Any, data: Any, what: str) -> None:
            e = state.get(m, key)
            if e is None:
                problems.append(f"{what}: no element in {m} (owner {tag!r})")
            elif e.comment != tag:
                problems.append(f"{what}: the element in {m} belongs to {e.comment!r}, not {tag!r}")
            else:
                if e.data != data:
                    problems.append(f"{what}: element in {m} points to {e.data!r}, expected {data!r}")
                if not state.has_pair(e, tag):
                    problems.append(f"{what}: ownership pair in {OWNERS} is missing")

        for p in entries:
            expect(p.map, p.key(), p.data(), str(p))
            c = state.get(claim_map(p.version), p.port_key())
            if c is None or c.data != claim_value(p):
                problems.append(f"{p}: claim in {claim_map(p.version)} is missing or wrong")
            if p.version in conds:
                expect(cond_map(p.version, p.specific), p.key(), N.jump(conds[p.version].chain), str(p))
        if snat:
            for m in self._masqs(addrs, masq_all, ifaces)[0]:
                legacy = state.get(legacy_refs_map(m.address.version), m.legacy_key())
                if state.get(m.map, m.key()) is None and legacy is not None and legacy.comment == tag:
                    expect(legacy.set, m.legacy_key(), m.counter, f"masquerade of {m.address}")  # before an upgrade
                else:
                    expect(m.map, m.key(), m.counter, f"masquerade of {m.address} on {m.iface}")
                for name, key in m.members():
                    k = norm_key(name, key)
                    if k not in state.members(name):
                        problems.append(f"masquerade of {m.address}: {name} has no entry {k!r}")
                if m.address.version == 4:
                    try:
                        if sysctl.read(f"ipv4/conf/{m.iface}/route_localnet") != "1":
                            problems.append(f"route_localnet is off on {m.iface}")
                    except NotSupported:
                        problems.append(f"interface {m.iface} has no route_localnet setting")
        return problems

    def status(self) -> None:
        """Raise when nftables cannot be used here (libnftables missing, kernel refusing)."""
        self.nft.chain_names(FAMILY, TABLE)

    # -- GC -----------------------------------------------------------------------
    def gc(self, prefix: str, keep: Callable[[str], bool]) -> list[str]:
        """Remove elements whose owner starts with ``prefix`` and ``keep(owner)`` is False.

        Returns the owners removed. Afterwards removes the interface entries and counters
        and the condition chains nothing uses, and switches route_localnet back where
        nothing needs it.
        """
        stale = N.stale_owners(prefix, keep)

        if not self.nft.chain_names(FAMILY, TABLE):
            return []
        out: dict[str, Any] = {}
        self._remove_owned(stale, out)
        self.sync_interfaces()
        self.prune()
        return list(out.get("owners", []))

    def prune(self) -> list[str]:
        """Delete the interface counters and condition chains nothing references (best
        effort: a concurrent publish that uses one makes its delete fail with EBUSY).
        Returns their names."""
        from .. import conntrack

        state = self._state()
        chain_uses = conntrack.nft_chain_uses(NFPROTO_INET, TABLE)
        obj_uses = conntrack.nft_object_uses(NFPROTO_INET, TABLE)
        gone = []
        for name in sorted(state.chains):
            if name.startswith(("cond4-", "cond6-")) and chain_uses.get(name, 0) - len(state.rules.get(name, [])) <= 0:
                if self.nft.try_apply([N.flush("chain", N.chain(FAMILY, TABLE, name)),
                                       N.delete("chain", N.chain(FAMILY, TABLE, name))]):
                    gone.append(name)
        for name in sorted(state.counters):
            if obj_uses.get(name, 0) <= 0 and self.nft.try_apply([N.delete("counter", counter_obj(name))]):
                gone.append(name)
        legacy = [name for name in LEGACY_REFS if name in state.sets]
        if legacy and not any(state.elems.get(name) for name in legacy):
            # the registrations made before an upgrade are all gone: drop their maps and
            # the postrouting rules looking them up (one transaction; a concurrent change
            # of postrouting makes it fail, and the next prune tries again)
            apply_text(scaffold_text())  # the current maps, which postrouting looks up
            cmds = build_base_chain_reset("postrouting")
            cmds += [N.delete("map", {"family": FAMILY, "table": TABLE, "name": name}) for name in legacy]
            if self.nft.try_apply(cmds):
                gone += legacy
        return gone

    # -- internals ----------------------------------------------------------------
    def _state(self) -> State:
        from .state import State

        return State(self.nft.list_table(FAMILY, TABLE))

    def _converge(self, build: Callable[[State], list[dict]]) -> None:
        N.converge(self.nft, self._state, build, ATTEMPTS)


def masq_iface(address: "IPAddr", ifaces: Sequence[str] = ()) -> str | None:
    """The interface a container address is reached by, its registrations' key: the
    route's interface, when it is one of the attachment's host-side interfaces
    ``ifaces`` (or none are given); otherwise the first of ``ifaces`` (the routing table
    leads elsewhere: an overlapping subnet on another bridge, a VRF). None: no route and
    no ``ifaces``."""
    routed = route_iface(address)
    if not ifaces or routed in ifaces:
        return routed
    return ifaces[0]


def route_iface(address: "IPAddr") -> str | None:
    """Name of the interface the route to ``address`` leaves through (None: no route)."""
    from .. import conntrack

    oif = conntrack.route_oif(address)
    name = conntrack.ifname(oif) if oif else None
    return None if name == "lo" else name
