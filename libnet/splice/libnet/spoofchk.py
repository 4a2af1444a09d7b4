"""MAC spoof check on bridge ports (the ``macspoofchk`` option of the containernetworking bridge plugin).

Frames entering a bridge from a guarded port with a source MAC other than the one
registered for that port are dropped. The reference makes two chains per attachment;
here it is one rule and two sets, so the packet path is O(1) however many ports exist::

    table bridge splice_filter {
        set spoof_ifaces { type ifname }                 # "veth0a1b2c3d4e" comment "<owner>"
        set spoof_allow { type ifname . ether_addr }     # "veth0a1b2c3d4e" . 02:42:0a:16:00:02 comment "<owner>"
        chain prerouting {                               # type filter hook prerouting priority -300
            iifname @spoof_ifaces iifname . ether saddr != @spoof_allow drop
        }
    }

Ownership: both elements carry the owner as comment (127 bytes at most). The host veth
name is derived from the owner (design.md), so a port name has one owner; an ``add`` for a
port that is already guarded (a re-add, or a stale entry) replaces the port's elements
atomically. As in masq.py, ``add`` (first, next, repeated) needs no listing and deletes
nothing on its common paths; ``remove(owner)`` lists the table (O(N)); when the caller
also passes the port name and MAC it registered, the delete is one transaction (a
repeated DEL: a failed one plus a probe) without a listing.
The table and chain are never deleted (shared by every bridge in the namespace).
"""

from __future__ import annotations

from typing import Callable

from . import nft as N
from .nftowned import OwnedTable, TableState

FAMILY = "bridge"
TABLE = "splice_filter"
BASE_CHAIN = "prerouting"
PRIORITY = -300  # as the reference (before bridge nat/filter)
IFACES = "spoof_ifaces"
ALLOW = "spoof_allow"
T = OwnedTable(FAMILY, TABLE)  # no ownership pairs: a port name has one owner (module doc)


def normalize_mac(mac: str) -> str:
    """``02-42-AC-11-00-02`` / ``0242.ac11.0002`` / ``02:42:ac:11:00:02`` -> lower-case colon form."""
    hexdigits = "".join(ch for ch in mac if ch not in ":-.")
    try:
        raw = bytes.fromhex(hexdigits)
    except ValueError:
        raise ValueError(f"invalid MAC address {mac!r}") from None
    if len(raw) != 6:
        raise ValueError(f"invalid MAC address {mac!r}")
    return ":".join(f"{b:02x}" for b in raw)


def _check_ifname(name: str) -> str:
    if not name or len(name.encode()) > 15 or name in (".", "..") or any(c in name for c in "/:\0") or any(
        c.isspace() for c in name
    ):
        raise ValueError(f"invalid interface name {name!r}")
    return name


# -- pure builders --------------------------------------------------------------
def build_scaffold() -> list[dict]:
    """Table and sets: ``add`` is idempotent and deletes nothing."""
    t = (FAMILY, TABLE)
    return [
        N.add("table", N.table(*t)),
        N.add("set", N.set_(*t, IFACES, "ifname")),
        N.add("set", N.set_(*t, ALLOW, ["ifname", "ether_addr"])),
    ]


def _rule() -> dict:
    return N.add("rule", N.rule(FAMILY, TABLE, BASE_CHAIN, [
        N.match(N.meta("iifname"), "@" + IFACES),
        N.match(N.concat(N.meta("iifname"), N.payload("ether", "saddr")), "@" + ALLOW, op="!="),
        {"drop": None},
    ]))


def _base_chain() -> dict:
    return N.base_chain(FAMILY, TABLE, BASE_CHAIN, type="filter", hook="prerouting", prio=PRIORITY)


def build_chain_once() -> list[dict]:
    """The base chain and its rule; fails (EEXIST, changing nothing) when it exists."""
    return [N.create("chain", _base_chain()), _rule()]


def build_skeleton() -> list[dict]:
    """Scaffold plus the chain flushed and refilled (slow path: self-repairing)."""
    return build_scaffold() + [
        N.add("chain", _base_chain()),
        N.flush("chain", N.chain(FAMILY, TABLE, BASE_CHAIN)),
        _rule(),
    ]


def iface_elem(ifname: str, owner_tag: str | None) -> dict:
    return T.elem(IFACES, ifname, owner_tag)


def allow_elem(ifname: str, mac: str, owner_tag: str | None) -> dict:
    return T.elem(ALLOW, N.concat(ifname, mac), owner_tag)


def build_remove(ifname: str, mac: str) -> list[dict]:
    """Fast-path DEL: fails (removing nothing) unless the port is guarded with ``mac``."""
    return [
        N.delete("element", allow_elem(ifname, mac, None)),
        N.delete("element", iface_elem(ifname, None)),
    ]


def build_add(owner_tag: str, ifname: str, mac: str) -> list[dict]:
    """Fast-path ADD, elements only: fails when the table is missing or the port is
    already guarded (``create``)."""
    return [
        N.create("element", iface_elem(ifname, owner_tag)),
        N.add("element", allow_elem(ifname, mac, owner_tag)),
    ]


def _ifaces(state: TableState) -> dict[str, str | None]:
    """port name -> owner comment, from a listing."""
    return {k: e.comment for k, e in state.elems.get(IFACES, {}).items()}


def _allowed(state: TableState) -> dict[tuple[str, str], str | None]:
    """(port name, MAC) -> owner comment, from a listing."""
    return {k: e.comment for k, e in state.elems.get(ALLOW, {}).items() if isinstance(k, tuple) and len(k) == 2}


class MacSpoofCheck:
    """Source-MAC guards on bridge ports, tagged with their owner."""

    def __init__(self, nft: N.Nft | None = None) -> None:
        self.nft = nft or N.Nft()

    def add(self, owner: str, host_ifname: str, mac: str) -> None:
        """Drop frames entering the bridge from ``host_ifname`` unless their source is ``mac``."""
        tag = N.tag(owner)
        ifname = _check_ifname(host_ifname)
        mac = normalize_mac(mac)
        nft = self.nft
        if nft.try_apply(build_add(tag, ifname, mac)):
            return
        # first use in this namespace, or the port is guarded already
        if BASE_CHAIN not in nft.chain_names(FAMILY, TABLE):
            if nft.try_apply(build_scaffold() + build_chain_once() + build_add(tag, ifname, mac)):
                return
        elif nft.try_apply(build_remove(ifname, mac) + build_add(tag, ifname, mac)):
            return  # a repeated ADD (the port was guarded with this MAC): re-tagged
        # guarded with another MAC, a race, a damaged table, or a real error: list and converge

        def build(state: TableState) -> list[dict]:
            cmds = build_skeleton()
            ifaces = _ifaces(state)
            if ifname in ifaces and ifaces[ifname] != tag:
                cmds += N.delete_quietly("element", iface_elem(ifname, None))
            cmds.append(N.add("element", iface_elem(ifname, tag)))
            for (name, other), comment in _allowed(state).items():
                if name == ifname and (other != mac or comment != tag):
                    cmds += N.delete_quietly("element", allow_elem(name, other, None))
            cmds.append(N.add("element", allow_elem(ifname, mac, tag)))
            return cmds

        T.converge(nft, build)

    def remove(self, owner: str, host_ifname: str | None = None, mac: str | None = None) -> None:
        """Remove ``owner``'s guard; idempotent.

        ``host_ifname`` and ``mac`` (optional, both or neither) are what ``add`` was given:
        with them the removal is one transaction and needs no listing.
        """
        tag = N.tag(owner)
        if host_ifname is not None and mac is not None:
            ifname, mac = _check_ifname(host_ifname), normalize_mac(mac)
            if self.nft.try_apply(build_remove(ifname, mac)):
                return
            if not self.nft.chain_names(FAMILY, TABLE):
                return  # no table
            if self.nft.try_apply(N.absent_probe("element", iface_elem(ifname, None))
                                  + N.absent_probe("element", allow_elem(ifname, mac, None))):
                return  # a repeated DEL
            # registered differently (another MAC), a race, or a real error: read the table

        T.converge(self.nft, lambda state: T.remove_owned(state, lambda c: c == tag)[0])

    def check(self, owner: str, host_ifname: str, mac: str) -> list[str]:
        """Human-readable problems with ``owner``'s guard; [] when it is in place."""
        tag = N.tag(owner)
        mac = normalize_mac(mac)
        state = T.read(self.nft)
        where = f"table {FAMILY} {TABLE}"
        if not state.exists:
            return [f"{where} does not exist"]
        problems = []
        want_rule = _rule()["add"]["rule"]["expr"]
        ifaces, allow = _ifaces(state), _allowed(state)
        if BASE_CHAIN not in state.chains:
            problems.append(f"{where}: chain {BASE_CHAIN} is missing")
        elif not any(r["expr"] == want_rule for r in state.rules.get(BASE_CHAIN, [])):
            problems.append(f"{where}: chain {BASE_CHAIN} lacks the spoof-check rule")
        if host_ifname not in ifaces:
            problems.append(f"port {host_ifname} is not guarded (owner {tag!r})")
        elif ifaces[host_ifname] != tag:
            problems.append(f"port {host_ifname} is guarded for {ifaces[host_ifname]!r}, not {tag!r}")
        if (host_ifname, mac) not in allow:
            problems.append(f"{mac} is not the allowed source MAC of port {host_ifname}")
        elif allow[(host_ifname, mac)] != tag:
            problems.append(f"allowed MAC {mac} on {host_ifname} belongs to {allow[(host_ifname, mac)]!r}")
        for (name, other) in allow:
            if name == host_ifname and other != mac:
                problems.append(f"port {host_ifname} also allows source MAC {other}")
        return problems

    def gc(self, prefix: str, keep: Callable[[str], bool]) -> list[str]:
        """Remove guards whose owner starts with ``prefix`` and ``keep(owner)`` is False."""
        stale = N.stale_owners(prefix, keep)
        removed: set[str] = set()

        def build(state: TableState) -> list[dict]:
            cmds, owners = T.remove_owned(state, stale)
            removed.clear()
            removed.update(owners)
            return cmds

        T.converge(self.nft, build)
        return sorted(removed)
