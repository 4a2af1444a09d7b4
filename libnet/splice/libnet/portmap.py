"""Port publishing (host port -> container address:port) on nftables maps: O(1) per mapping.

Protocol-neutral: :class:`PortPublisher` takes an owner string, :class:`PortMapping` objects
and the container's addresses; the CNI ``splice-portmap`` plugin and the Docker driver
(``ProgramExternalConnectivity``) call the same code. Like every libnet piece it works in
the calling thread's network namespace (use it inside ``Netns.run`` of the host).

Kernel objects (one table owned by splice; the packet path and every update are lookups
in hash maps, whatever the number of mappings)::

    table inet splice_portmap {
        # DNAT targets: one element per published port, comment = owner
        map dnat4    { type inet_proto . inet_service : ipv4_addr . inet_service }          # tcp . 8080 : 10.77.0.2 . 80
        map dnat4_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service } # hostIP given
        map dnat6    { type inet_proto . inet_service : ipv6_addr . inet_service }
        map dnat6_ip { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service }
        # port claims: 1 = published on every local address, 2 = on given addresses only
        map claim4   { type inet_proto . inet_service : mark }
        map claim6   { type inet_proto . inet_service : mark }
        # mappings of networks with conditionsV4/V6: same keys -> jump cond4-<hash>
        map cond4 / cond4_ip / cond6 / cond6_ip { ... : verdict }
        # masquerade registrations (snat): address . address -> "users4:<iface>" (a named
        # counter; its use count is the number of containers that need the interface's
        # entries below). Looked up as a set for the self-hairpin rule.
        map refs4    { type ipv4_addr . ipv4_addr : counter }      # 10.77.0.2 . 10.77.0.2 : "users4:cni0"
        map refs6    { type ipv6_addr . ipv6_addr : counter }      # masqAll: "all6:cni0"
        counter users4:<iface>, users6:<iface>, all4:<iface>, all6:<iface>
        # interfaces with published containers, for the masquerade rules
        set hairpin   { type ifname . ifname }                     # "cni0" . "cni0"
        set localhost { type ifname }                              # IPv4 localhost allowed out of it
        set masq_all  { type ifname }                              # masqAll networks
        # interfaces on which splice switched route_localnet on
        set localnet  { type ifname }
        # ownership pairs: digest(map, key) . digest(owner), comment = owner
        set owners    { type ifname . ifname }

        chain prerouting  { type nat hook prerouting priority dstnat; jump hostports }
        chain output      { type nat hook output priority dstnat; jump hostports }
        chain hostports {
            ip daddr . meta l4proto . th dport vmap @cond4_ip
            dnat ip to ip daddr . meta l4proto . th dport map @dnat4_ip
            ip6 daddr . meta l4proto . th dport vmap @cond6_ip
            dnat ip6 to ip6 daddr . meta l4proto . th dport map @dnat6_ip
            fib daddr type != local return
            meta nfproto ipv4 meta l4proto . th dport vmap @cond4
            meta nfproto ipv4 dnat ip to meta l4proto . th dport map @dnat4
            meta nfproto ipv6 meta l4proto . th dport vmap @cond6
            meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @dnat6
        }
        chain cond4-<hash> { <conditionsV4> return; accept }      # one per distinct condition list
        chain postrouting { type nat hook postrouting priority srcnat;
            ct status dnat oifname @masq_all masquerade
            ct status dnat iifname . oifname @hairpin masquerade
            ct status dnat ip saddr . ip daddr @refs4 masquerade
            ct status dnat ip6 saddr . ip6 daddr @refs6 masquerade
            ct status dnat ip saddr 127.0.0.0/8 oifname @localhost masquerade }
        chain localnet_guard { type filter hook prerouting priority filter;
            iifname @localnet ip daddr 127.0.0.0/8 ct status ! dnat drop }
    }

Semantics (REFERENCE 2.6 where the reference has them):

* A mapping without ``host_ip`` is published on every local address of each family the
  container has (``fib daddr type local``, prerouting and output); ``0.0.0.0`` / ``::``
  mean every local address of that family only; any other ``host_ip`` matches that
  destination address exactly (prerouting and output, no local check, as the reference).
* ``snat`` (default on) masquerades three kinds of DNATed connections, so that the reply
  comes back through the host's conntrack: (1) one leaving through the interface it came
  in by (a container reaching a published port through the host, routed back out of its
  bridge; ``iifname`` is set in postrouting for forwarded packets only); (2) one from a
  container to itself (source = destination = a registered address: with br_netfilter
  on, the DNATed packet is bridged straight back and postrouting sees no input
  interface; a neighbour's connection needs nothing then, br_netfilter de-NATs the
  bridged reply and the neighbour's address is kept); (3) one from 127.0.0.0/8 (IPv4
  localhost). With ``masq_all`` every DNATed connection leaving through the container's
  interface is masqueraded (macvlan/ipvlan style). The interface is the one the route to
  the container address uses (the bridge), found with one RTM_GETROUTE. These entries
  are per interface: the packet path holds no per-container masquerade rule or verdict;
  two networks sharing one bridge share them too (the most permissive setting wins).
  (The reference marks "source in the container's subnet" instead.)
* route_localnet: IPv4 localhost needs ``route_localnet=1`` on that interface (the
  reference sets it and never resets it). splice sets it when it was 0, records the
  interface in ``@localnet``, drops packets to 127.0.0.0/8 arriving there that are not
  replies of a DNATed connection (the CVE-2020-8558 guard kube-proxy also installs), and
  switches it back to 0 when the last container needing it is gone. An interface whose
  route_localnet was already 1 is left alone. IPv6 has no route_localnet: ``::1`` cannot
  be DNATed to another host, so IPv6 mappings are reachable from every other address.
* Reference counts kept by the kernel: each container with snat registers its address
  in ``refs4``/``refs6`` with a named counter of its interface as data; the object's
  use count (one nfnetlink dump, ~0.1 ms) is the number of containers needing the
  interface's ``hairpin``/``localhost``/``masq_all`` entries and route_localnet. (Object
  maps, not verdict maps: an element jumping to a chain makes the kernel re-validate
  every reachable verdict map at commit, O(N) - measured 0.59 ms per update at 10,000
  elements against 0.17 ms for an object map.)
* Conflicts. A port already published on the same key by another owner, and a port
  published on every address vs. on a given address of the same family, are refused
  with :class:`PortConflict` naming the owner, and nothing changes: the elements are
  written with ``create`` (EEXIST) and the claims with ``create``/``add`` (a wildcard
  claim is ``create 1``; a given-address claim is ``add 2``, which fails on a 1), all in
  one transaction. The reference silently shadows instead.
* Ownership. Element comments carry the owner (<= 127 bytes); the kernel ignores
  comments when comparing, so, as in masq.py, each element has an ownership pair
  ``digest(map, key) . digest(owner)`` in ``@owners``: deleting pair and element in one
  transaction deletes nothing unless the element is still the owner's.

Costs (the common paths never list the table, perf-notes 4a):

* publish: one transaction of ``create``/``add`` elements. When it fails: ``list chains``
  (cheap) finds missing scaffolding/chains (created once with ``create``, concurrency
  safe) and the transaction is retried with them; otherwise (a conflict, a repeated call,
  a stale entry for a reused container address) the table is listed (O(N)) and
  converged in one transaction, or :class:`PortConflict` is raised.
* unpublish with mappings and addresses: one compare-and-delete transaction; a repeated
  call fails it and a create-then-delete probe of the pairs says "none of ours left".
  Without them (no prevResult) the table is listed. Afterwards: a claim of a port
  published on given addresses is released when no such mapping is left (lists the
  ``dnat*_ip`` maps, which only hold given-address mappings), and when a ``refs``
  element went, the interface entries are re-counted (object dump, ~0.1 ms) and the
  unneeded ones removed (re-counted after removal: a concurrent publish is restored).
* Conditions: a mapping of a network with conditions also gets a ``cond*`` verdict
  element; adding one re-validates the reachable verdict maps (the ``cond*`` maps only),
  so conditioned mappings cost O(number of conditioned mappings) per conditioned ADD.
* check, owners, gc list the table.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address, ip_interface
from typing import Any, Callable, Iterable

from . import nft as N
from .errors import NetError, NftError, NotSupported

FAMILY = "inet"
TABLE = "splice_portmap"
NFPROTO_INET = 1
PROTOCOLS = ("tcp", "udp", "sctp")
_PROTO_NUMBERS = {6: "tcp", 17: "udp", 132: "sctp"}
DSTNAT, SRCNAT, FILTER = -100, 100, 0
WILDCARD, SPECIFIC = 1, 2  # claim values
OWNERS = "owners"
LOCALNET = "localnet"
HAIRPIN = "hairpin"
LOCALHOST = "localhost"
MASQ_ALL = "masq_all"
MEMBER_SETS = (HAIRPIN, LOCALHOST, MASQ_ALL, LOCALNET)
HOSTPORTS = "hostports"
GUARD = "localnet_guard"
BASE_CHAINS = ("prerouting", "output", HOSTPORTS, "postrouting", GUARD)
_ADDR = {4: "ipv4_addr", 6: "ipv6_addr"}
_IP = {4: "ip", 6: "ip6"}
_NFPROTO = {4: "ipv4", 6: "ipv6"}
_ATTEMPTS = 5
_CONDITION_FORBIDDEN = (";", "\n", "\r", "\0", "#")

IPAddr = IPv4Address | IPv6Address

try:  # CPython's builtin SHA-256: hashlib would first load OpenSSL (~2-6 ms per process)
    from _sha256 import sha256 as _sha256  # 3.11
except ImportError:  # pragma: no cover - other interpreters
    try:
        from _sha2 import sha256 as _sha256  # 3.12+
    except ImportError:
        from hashlib import sha256 as _sha256


def sha256_hex(text: str) -> str:
    return _sha256(text.encode("utf-8")).hexdigest()


class PortConflict(NetError):
    """A host port is already published by another owner.

    ``what``: the port asked for; ``owner``: the owner holding it (its element comment);
    ``held``: how the owner holds it when that differs (on every address vs. on one).
    """

    def __init__(self, what: str, owner: str | None, held: str | None = None) -> None:
        self.what, self.owner, self.held = what, owner, held
        by = f"by {owner!r}" if owner else "by another owner"
        if held:
            super().__init__(f"{what} conflicts with {held}, already published {by}")
        else:
            super().__init__(f"{what} is already published {by}")


class PortMappingError(ValueError):
    """The mappings contradict each other (same port twice with different targets...)."""


# -- model ---------------------------------------------------------------------------------
class _Value:
    """Small immutable value objects without ``dataclasses`` (whose class creation costs
    ~0.5 ms each at import time, paid by every short-lived CNI process)."""

    __slots__: tuple[str, ...] = ()

    def _tuple(self) -> tuple:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._tuple() == other._tuple()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__,) + self._tuple())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({args})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")


class PortMapping(_Value):
    """``-p [host_ip:]host_port:container_port/protocol``."""

    __slots__ = ("host_port", "container_port", "protocol", "host_ip")
    host_port: int
    container_port: int
    protocol: str
    host_ip: IPAddr | None

    def __init__(self, host_port: int, container_port: int, protocol: str = "tcp",
                 host_ip: IPAddr | str | None = None) -> None:
        for name, v in (("host_port", host_port), ("container_port", container_port)):
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 65535:
                raise PortMappingError(f"invalid {name} {v!r}: must be 1-65535")
        proto = protocol.lower() if isinstance(protocol, str) else protocol
        if proto not in PROTOCOLS:
            raise PortMappingError(f"invalid protocol {protocol!r}: must be one of {', '.join(PROTOCOLS)}")
        if isinstance(host_ip, str):
            try:
                host_ip = ip_address(host_ip)
            except ValueError:
                raise PortMappingError(f"invalid hostIP {host_ip!r}") from None
        elif host_ip is not None and not isinstance(host_ip, (IPv4Address, IPv6Address)):
            raise PortMappingError(f"invalid hostIP {host_ip!r}")
        for k, v in (("host_port", host_port), ("container_port", container_port), ("protocol", proto),
                     ("host_ip", host_ip)):
            object.__setattr__(self, k, v)


class Published(_Value):
    """One DNAT element: ``protocol``/``host_port`` on ``host_ip`` (None: every local
    address of the family) -> ``address``:``container_port``."""

    __slots__ = ("protocol", "host_port", "host_ip", "address", "container_port")
    protocol: str
    host_port: int
    host_ip: IPAddr | None
    address: IPAddr
    container_port: int

    def __init__(self, protocol: str, host_port: int, host_ip: IPAddr | None, address: IPAddr,
                 container_port: int) -> None:
        for k, v in (("protocol", protocol), ("host_port", host_port), ("host_ip", host_ip),
                     ("address", address), ("container_port", container_port)):
            object.__setattr__(self, k, v)

    @property
    def version(self) -> int:
        return self.address.version

    @property
    def specific(self) -> bool:
        return self.host_ip is not None

    @property
    def map(self) -> str:
        return dnat_map(self.version, self.specific)

    def key(self) -> Any:
        if self.host_ip is not None:
            return N.concat(str(self.host_ip), self.protocol, self.host_port)
        return N.concat(self.protocol, self.host_port)

    def data(self) -> Any:
        return N.concat(str(self.address), self.container_port)

    def port_key(self) -> Any:
        return N.concat(self.protocol, self.host_port)

    def describe(self) -> str:
        where = str(self.host_ip) if self.host_ip is not None else f"every IPv{self.version} address"
        return f"host port {self.protocol}/{self.host_port} on {where}"

    def __str__(self) -> str:
        host = f"[{self.host_ip}]" if self.version == 6 and self.host_ip else (str(self.host_ip or "*"))
        dest = f"[{self.address}]" if self.version == 6 else str(self.address)
        return f"{host}:{self.host_port}/{self.protocol} -> {dest}:{self.container_port}"


class _Masq:
    """The masquerade registration of one container address (snat on): its ``refs``
    element and the entries of its interface it needs."""

    __slots__ = ("address", "iface", "masq_all")

    def __init__(self, address: IPAddr, iface: str | None, masq_all: bool) -> None:
        self.address = address
        self.iface = iface  # the interface the route to the container uses (None: no route)
        self.masq_all = masq_all

    @property
    def map(self) -> str:
        return refs_map(self.address.version)

    @property
    def counter(self) -> str:
        return users_counter(self.address.version, self.iface, self.masq_all)

    def key(self) -> dict:
        return N.concat(str(self.address), str(self.address))

    def members(self) -> list[tuple[str, Any]]:
        """(set, element) of the interface entries this container needs."""
        if not self.iface:
            return []
        out: list[tuple[str, Any]] = [(HAIRPIN, N.concat(self.iface, self.iface))]
        if self.masq_all:
            out.append((MASQ_ALL, self.iface))
        elif self.address.version == 4:
            out.append((LOCALHOST, self.iface))
        return out


def dnat_map(version: int, specific: bool) -> str:
    return f"dnat{version}" + ("_ip" if specific else "")


def cond_map(version: int, specific: bool) -> str:
    return f"cond{version}" + ("_ip" if specific else "")


def claim_map(version: int) -> str:
    return f"claim{version}"


def refs_map(version: int) -> str:
    return f"refs{version}"


def users_counter(version: int, iface: str | None, masq_all: bool) -> str:
    """``users4:<iface>`` / ``all4:<iface>`` (masqAll) and the IPv6 ones (``:`` cannot
    occur in an interface name, so the interface is what follows it)."""
    return f"{'all' if masq_all else 'users'}{version}:{iface or ''}"


def interface_needs(uses: dict[str, int], iface: str) -> dict[str, bool]:
    """Which entries of ``iface`` some container still needs, from the counters' use counts."""
    u = {k: uses.get(f"{k}:{iface}", 0) for k in ("users4", "users6", "all4", "all6")}
    return {
        HAIRPIN: sum(u.values()) > 0,
        LOCALHOST: u["users4"] > 0,
        MASQ_ALL: u["all4"] + u["all6"] > 0,
        LOCALNET: u["users4"] + u["all4"] > 0,  # route_localnet: IPv4 localhost
    }


def _member_iface(set_name: str, key: Any) -> str:
    return key[0] if isinstance(key, (tuple, list)) else key


def cond_chain(version: int, conditions: Iterable[str]) -> str:
    text = "\n".join(conditions)
    return f"cond{version}-" + sha256_hex(text)[:12]


def digest(text: str) -> str:
    """15 hex digits (fits the 16-byte ``ifname`` key type)."""
    return sha256_hex(text)[:15]


def _norm_key(map_name: str, key: Any) -> Any:
    """A key (as built here or as listed) in one canonical hashable form."""
    if isinstance(key, dict) and "concat" in key:
        key = tuple(key["concat"])
    if isinstance(key, (list, tuple)):
        key = tuple(key)
        proto_at = 1 if map_name.endswith("_ip") else 0
        if map_name.startswith(("dnat", "cond", "claim")) and len(key) > proto_at and isinstance(key[proto_at], int):
            key = key[:proto_at] + (_PROTO_NUMBERS.get(key[proto_at], key[proto_at]),) + key[proto_at + 1:]
    return key


def key_digest(map_name: str, key: Any) -> str:
    return digest(map_name + " " + json.dumps(_norm_key(map_name, key)))


def owner_pair(map_name: str, key: Any, owner_tag: str) -> dict:
    return N.elements(FAMILY, TABLE, OWNERS, [N.elem(N.concat(key_digest(map_name, key), digest(owner_tag)), owner_tag)])


def _elem(map_name: str, key: Any, comment: str | None = None, data: Any = None) -> dict:
    return N.elements(FAMILY, TABLE, map_name, [N.elem(key, comment, data)])


# -- expansion -----------------------------------------------------------------------------
def container_addresses(addresses: Iterable[Any]) -> dict[int, Any]:
    """version -> the first usable address of that family (an ip_interface), as the
    reference takes the first IPv4 and the first IPv6 address of the sandbox interface."""
    out: dict[int, Any] = {}
    for a in addresses:
        iface = ip_interface(a) if isinstance(a, str) else a
        if isinstance(iface, (IPv4Address, IPv6Address)):
            iface = ip_interface(iface)
        if not isinstance(iface, (IPv4Interface, IPv6Interface)):
            raise TypeError(f"container address must be an IP interface/address, got {a!r}")
        if iface.ip.is_link_local or iface.ip.is_loopback or iface.ip.is_unspecified:
            continue
        out.setdefault(iface.version, iface)
    return out


def expand(mappings: Iterable[PortMapping], addresses: Iterable[Any]) -> list[Published]:
    """The DNAT elements of ``mappings`` for a container with ``addresses``.

    A mapping without host_ip applies to each family the container has; one with host_ip
    only when the container has that family (as the reference). Raises
    :class:`PortMappingError` for the same port mapped twice to different targets, or
    published both on every address and on a given address of one family.
    """
    first = container_addresses(addresses)
    out: dict[tuple, Published] = {}
    for m in mappings:
        versions = sorted(first) if m.host_ip is None else [v for v in (m.host_ip.version,) if v in first]
        for v in versions:
            hip = None if m.host_ip is None or m.host_ip.is_unspecified else m.host_ip
            p = Published(m.protocol, m.host_port, hip, first[v].ip, m.container_port)
            k = (p.map, _norm_key(p.map, p.key()))
            if k in out and out[k] != p:
                raise PortMappingError(f"{p.describe()} is mapped twice ({out[k]} and {p})")
            out[k] = p
    ports: dict[tuple, set[bool]] = {}
    for p in out.values():
        ports.setdefault((p.version, p.protocol, p.host_port), set()).add(p.specific)
    for (v, proto, port), kinds in ports.items():
        if len(kinds) > 1:
            raise PortMappingError(f"host port {proto}/{port} is published both on every IPv{v} address "
                                   "and on a given address")
    return sorted(out.values(), key=lambda p: (p.version, p.specific, str(p.host_ip), p.protocol, p.host_port))


def check_conditions(conditions: Iterable[str]) -> tuple[str, ...]:
    """Syntactic screening of conditionsV4/V6 (the full parse happens in libnftables):
    strings without command separators or comments."""
    out = []
    for c in conditions:
        if not isinstance(c, str) or not c.strip():
            raise PortMappingError(f"invalid condition {c!r}: must be a non-empty string")
        bad = [ch for ch in _CONDITION_FORBIDDEN if ch in c]
        if bad:
            raise PortMappingError(f"invalid condition {c!r}: must not contain {bad[0]!r}")
        out.append(c.strip())
    return tuple(out)


def parse_conditions(conditions: Iterable[str]) -> list[dict]:
    """Translate nft match expressions (text) into libnftables JSON expressions.

    libnftables parses them in-process: a scratch table ``inet splice_portmap_parse_<rand>``
    gets one unhooked chain with the rule, the rule is read back as JSON and the table is
    deleted. Only ``match`` expressions are accepted (no statements or verdicts).
    """
    conds = check_conditions(conditions)
    if not conds:
        return []
    import secrets

    ctx = N._new_context()
    name = "splice_portmap_parse_" + secrets.token_hex(4)
    text = " ".join(conds)
    try:
        rc, _out, err = ctx.cmd(f"add table inet {name}\nadd chain inet {name} c\nadd rule inet {name} c {text}")
        if rc != 0:
            msg = " ".join(line.strip() for line in (err or "").splitlines() if line.strip())
            raise PortMappingError(f"invalid conditions {text!r}: {msg}")
        rc, out, err = ctx.cmd(f"list chain inet {name} c")
        if rc != 0:
            raise NftError(f"cannot read back conditions {text!r}: {err.strip()}")
        rules = [item["rule"] for item in json.loads(out).get("nftables", []) if "rule" in item]
    finally:
        ctx.cmd(f"delete table inet {name}")
    exprs = rules[0]["expr"] if rules else []
    if len(rules) != 1 or not exprs or any(set(e) != {"match"} for e in exprs):
        raise PortMappingError(f"invalid conditions {text!r}: only match expressions are allowed")
    return exprs


# -- scaffolding builders --------------------------------------------------------------------
def scaffold_text() -> str:
    """Table, maps and sets as an nft text batch (``add``: idempotent, deletes nothing).

    Text, not JSON: libnftables 1.0.6 cannot create a map with concatenated data from
    JSON (``"map": [..]`` silently makes a plain set, and a rule using it then crashes
    the JSON parser), so the table is created through :func:`apply_text`.
    """
    t = f"{FAMILY} {TABLE}"
    lines = [f"add table {t}"]
    for v in (4, 6):
        a = _ADDR[v]
        lines += [
            f"add map {t} {dnat_map(v, False)} {{ type inet_proto . inet_service : {a} . inet_service; }}",
            f"add map {t} {dnat_map(v, True)} {{ type {a} . inet_proto . inet_service : {a} . inet_service; }}",
            f"add map {t} {cond_map(v, False)} {{ type inet_proto . inet_service : verdict; }}",
            f"add map {t} {cond_map(v, True)} {{ type {a} . inet_proto . inet_service : verdict; }}",
            f"add map {t} {claim_map(v)} {{ type inet_proto . inet_service : mark; }}",
            f"add map {t} {refs_map(v)} {{ type {a} . {a} : counter; }}",
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


def _l4_key(*lead: dict) -> dict:
    return N.concat(*lead, N.meta("l4proto"), N.payload("th", "dport"))


def _hostports_rules() -> list[list[dict]]:
    rules: list[list[dict]] = []
    for v in (4, 6):
        key = _l4_key(N.payload(_IP[v], "daddr"))
        rules.append([{"vmap": {"key": key, "data": "@" + cond_map(v, True)}}])
        rules.append([{"dnat": {"family": _IP[v], "addr": {"map": {"key": key, "data": "@" + dnat_map(v, True)}}}}])
    rules.append([N.match({"fib": {"result": "type", "flags": ["daddr"]}}, "local", "!="), {"return": None}])
    for v in (4, 6):
        nfp = N.match(N.meta("nfproto"), _NFPROTO[v])
        rules.append([nfp, {"vmap": {"key": _l4_key(), "data": "@" + cond_map(v, False)}}])
        rules.append([nfp, {"dnat": {"family": _IP[v], "addr": {"map": {"key": _l4_key(), "data": "@" + dnat_map(v, False)}}}}])
    return rules


def _base_chain_specs() -> list[tuple[dict, list[list[dict]]]]:
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
            *[[ct_dnat, N.match(N.concat(N.payload(_IP[v], "saddr"), N.payload(_IP[v], "daddr")), "@" + refs_map(v)),
               {"masquerade": None}] for v in (4, 6)],
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
    for chain, rules in _base_chain_specs():
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


def build_base_chains(state: "_State | None" = None) -> list[dict]:
    """The chains created or reset to their rules where they differ (the slow path's
    self-repair; with no ``state``, all of them)."""
    cmds: list[dict] = []
    for chain, rules in _base_chain_specs():
        name = chain["name"]
        if state is not None and name in state.chains and rules_match(state.rules.get(name), rules):
            continue
        cmds += [N.add("chain", chain), N.flush("chain", N.chain(FAMILY, TABLE, name))]
        cmds += _rules(name, rules)
    return cmds


def _counter(name: str) -> dict:
    return {"family": FAMILY, "table": TABLE, "name": name}


def _cond_rules(exprs: list[dict]) -> list[list[dict]]:
    return [list(exprs) + [{"return": None}], [{"accept": None}]]


def build_chain_once(name: str, rules: list[list[dict]]) -> list[dict]:
    return [N.create("chain", N.chain(FAMILY, TABLE, name))] + _rules(name, rules)


def build_chain(name: str, rules: list[list[dict]], state: "_State | None" = None) -> list[dict]:
    """A chain created or reset to ``rules`` (nothing when ``state`` shows it as expected)."""
    if state is not None and name in state.chains and rules_match(state.rules.get(name), rules):
        return []
    return [N.add("chain", N.chain(FAMILY, TABLE, name)), N.flush("chain", N.chain(FAMILY, TABLE, name))] + _rules(name, rules)


# -- element builders --------------------------------------------------------------------------
def _claim_value(p: Published) -> int:
    return SPECIFIC if p.specific else WILDCARD


def build_publish(tag: str, entries: list[Published], masqs: list[_Masq], conds: dict[int, str],
                  localnet: Iterable[str] = ()) -> list[dict]:
    """Fast-path ADD, elements only (and the interface counters/entries, added
    idempotently): fails (changing nothing) when scaffolding or a condition chain is
    missing, when a key is taken (by anyone, us included), or a wildcard claim exists."""
    cmds: list[dict] = []
    claimed = set()
    for p in entries:
        ck = (p.version, p.protocol, p.host_port)
        if ck not in claimed:
            claimed.add(ck)
            claim = _elem(claim_map(p.version), p.port_key(), tag, _claim_value(p))
            cmds.append(N.add("element", claim) if p.specific else N.create("element", claim))
        cmds.append(N.create("element", _elem(p.map, p.key(), tag, p.data())))
        cmds.append(N.add("element", owner_pair(p.map, p.key(), tag)))
        if p.version in conds:
            cm = cond_map(p.version, p.specific)
            cmds.append(N.create("element", _elem(cm, p.key(), tag, N.jump(conds[p.version]))))
            cmds.append(N.add("element", owner_pair(cm, p.key(), tag)))
    for m in masqs:
        cmds.append(N.add("counter", _counter(m.counter)))
        cmds.append(N.create("element", _elem(m.map, m.key(), tag, m.counter)))
        cmds.append(N.add("element", owner_pair(m.map, m.key(), tag)))
        cmds += [N.add("element", _elem(name, key)) for name, key in m.members()]
    for iface in localnet:
        cmds.append(N.add("element", _elem(LOCALNET, iface)))
    return cmds


def build_unpublish(tag: str, entries: list[Published], masq_addrs: list[IPAddr], cond_versions: Iterable[int]) -> list[dict]:
    """Fast-path DEL: compare-and-delete; fails (removing nothing) unless all are ours."""
    cmds: list[dict] = []
    cv = set(cond_versions)
    released = set()
    for p in entries:
        cmds.append(N.delete("element", owner_pair(p.map, p.key(), tag)))
        cmds.append(N.delete("element", _elem(p.map, p.key())))
        if p.version in cv:
            cm = cond_map(p.version, p.specific)
            cmds.append(N.delete("element", owner_pair(cm, p.key(), tag)))
            cmds.append(N.delete("element", _elem(cm, p.key())))
        ck = (p.version, p.protocol, p.host_port)
        if not p.specific and ck not in released:
            released.add(ck)
            cmds.append(N.delete("element", _elem(claim_map(p.version), p.port_key())))
    for a in masq_addrs:
        m, key = refs_map(a.version), N.concat(str(a), str(a))
        cmds.append(N.delete("element", owner_pair(m, key, tag)))
        cmds.append(N.delete("element", _elem(m, key)))
    return cmds


def build_none_owned(tag: str, entries: list[Published], masq_addrs: list[IPAddr]) -> list[dict]:
    """Probe: succeeds (changing nothing) iff none of these keys carries this owner's pair."""
    cmds: list[dict] = []
    for p in entries:
        cmds += N.absent_probe("element", owner_pair(p.map, p.key(), tag))
    for a in masq_addrs:
        cmds += N.absent_probe("element", owner_pair(refs_map(a.version), N.concat(str(a), str(a)), tag))
    return cmds


# -- state read back from a listing -----------------------------------------------------------
class _Elem:
    __slots__ = ("map", "key", "data", "comment")

    def __init__(self, map_name: str, key: Any, data: Any, comment: str | None) -> None:
        self.map = map_name
        self.key = key  # as listed (JSON)
        self.data = data
        self.comment = comment


class _State:
    """The table as listed: elements per map (by canonical key), ownership pairs, chains."""

    def __init__(self, listing: list[dict] | None) -> None:
        self.exists = listing is not None
        listing = listing or []
        sets = N.sets_in(listing)
        self.chains = N.chains_in(listing)
        self.rules = {name: N.rules_in(listing, name) for name in self.chains}
        self.elems: dict[str, dict[Any, _Elem]] = {}
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
                    self.elems.setdefault(name, {})[_norm_key(name, key)] = _Elem(name, raw, data, comment)

    def get(self, map_name: str, key: Any) -> _Elem | None:
        return self.elems.get(map_name, {}).get(_norm_key(map_name, key))

    def has_pair(self, e: _Elem, tag: str | None) -> bool:
        return tag is not None and digest(tag) in self.pairs.get(key_digest(e.map, e.key), {})

    def owned(self, pred: Callable[[str | None], bool]) -> list[_Elem]:
        """Elements (claims excluded) whose comment satisfies ``pred``."""
        return [e for name, elems in self.elems.items() if not name.startswith("claim")
                for e in elems.values() if pred(e.comment)]

    def published(self) -> list[tuple[str | None, Published]]:
        out = []
        for v in (4, 6):
            for specific in (False, True):
                for e in self.elems.get(dnat_map(v, specific), {}).values():
                    p = _published_from(e, v, specific)
                    if p is not None:
                        out.append((e.comment, p))
        return out


def _published_from(e: _Elem, version: int, specific: bool) -> Published | None:
    try:
        key = _norm_key(e.map, e.key)
        data = e.data["concat"] if isinstance(e.data, dict) else e.data
        hip = ip_address(key[0]) if specific else None
        proto, port = (key[1], key[2]) if specific else (key[0], key[1])
        return Published(str(proto), int(port), hip, ip_address(data[0]), int(data[1]))
    except (TypeError, ValueError, KeyError, IndexError):
        return None


def _delete_elem(state: _State, e: _Elem) -> list[dict]:
    """Remove ``e`` as listed, with its owner's pair when present (strict: a concurrent
    change makes the transaction fail and the caller re-reads)."""
    cmds = []
    if state.has_pair(e, e.comment):
        cmds.append(N.delete("element", owner_pair(e.map, e.key, e.comment)))  # type: ignore[arg-type]
    cmds.append(N.delete("element", _elem(e.map, e.key)))
    return cmds


def _orphan_pairs(state: _State, pred: Callable[[str | None], bool], keep: set[tuple[str, str]]) -> list[dict]:
    """Delete pairs of owners matching ``pred`` whose element is gone or someone else's.
    ``keep`` holds (key digest, owner digest) pairs that stay."""
    cmds = []
    for kd, owners in state.pairs.items():
        for od, comment in owners.items():
            if pred(comment) and (kd, od) not in keep:
                cmds += N.delete_quietly("element", N.elements(FAMILY, TABLE, OWNERS, [N.concat(kd, od)]))
    return cmds


def _claims_fix(state: _State, after: dict[str, dict[Any, _Elem]]) -> list[dict]:
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
                cmds.append(N.delete("element", _elem(claim_map(v), e.key)))
        for nk, (value, comment) in need.items():
            e = have.get(nk)
            if e is None or e.data != value:
                cmds.append(N.add("element", _elem(claim_map(v), N.concat(*nk), comment, value)))
    return cmds


# -- the publisher ---------------------------------------------------------------------------
class PortPublisher:
    """Host ports of containers, keyed by owner (see the module docstring)."""

    def __init__(self, nft: N.Nft | None = None) -> None:
        self.nft = nft or N.Nft()
        self.warnings: list[str] = []  # best-effort steps that failed (the caller logs them)

    # -- ADD ----------------------------------------------------------------------
    def publish(self, owner: str, mappings: Iterable[PortMapping], addresses: Iterable[Any], *,
                snat: bool = True, masq_all: bool = False, conditions_v4: Iterable[str] = (),
                conditions_v6: Iterable[str] = (), flush_udp: bool = True) -> list[Published]:
        """Publish ``mappings`` to the container at ``addresses`` (ip_interface objects,
        ip addresses or strings; the first of each family is used).

        Returns the DNAT elements now in place. Idempotent for the same owner (a repeated
        call converges the owner's elements to exactly these). Raises
        :class:`PortConflict` (nothing changed) when another owner has one of the ports,
        :class:`PortMappingError` for contradictory mappings or conditions.
        """
        tag = N.tag(owner)
        addrs = container_addresses(addresses)
        entries = expand(mappings, addrs.values())
        if not entries:
            return []
        conditions = {4: check_conditions(conditions_v4), 6: check_conditions(conditions_v6)}
        versions = {p.version for p in entries}
        conds = {v: cond_chain(v, conditions[v]) for v in versions if conditions[v]}
        masqs = self._masqs(addrs, versions, masq_all) if snat else []
        localnet = self._localnet_to_enable(masqs)
        nft = self.nft
        fast = build_publish(tag, entries, masqs, conds, localnet)
        if not nft.try_apply(fast):
            chains = nft.chain_names(FAMILY, TABLE)
            setup: list[dict] = []
            if not set(BASE_CHAINS) <= chains:
                apply_text(scaffold_text())
                setup += build_base_chains_once()
            for v, name in conds.items():
                if name not in chains:
                    setup += build_chain_once(name, _cond_rules(parse_conditions(conditions[v])))
            if not (setup and nft.try_apply(setup + fast)):
                self._publish_slow(tag, entries, masqs, conds, conditions, localnet)
        self._enable_localnet(localnet)
        if flush_udp:
            self._flush_udp(entries)
        return entries

    def _masqs(self, addrs: dict[int, Any], versions: set[int], masq_all: bool) -> list[_Masq]:
        return [_Masq(addrs[v].ip, _route_iface(addrs[v].ip), masq_all) for v in sorted(versions)]

    def _localnet_to_enable(self, masqs: list[_Masq]) -> list[str]:
        from . import sysctl

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
        from . import sysctl

        for iface in ifaces:
            sysctl.try_ensure(f"ipv4/conf/{iface}/route_localnet", 1)

    def _flush_udp(self, entries: list[Published]) -> None:
        ports: dict[int, set[int]] = {}
        for p in entries:
            if p.protocol == "udp":
                ports.setdefault(p.version, set()).add(p.host_port)
        if not ports:
            return
        from . import conntrack

        for v, ps in sorted(ports.items()):
            try:  # as the reference: informative only, the mapping is in place
                conntrack.flush_udp(ps, v)
            except NetError as e:
                self.warnings.append(f"failed to delete stale UDP conntrack entries for IPv{v} ports "
                                     f"{sorted(ps)}: {e}")

    def _publish_slow(self, tag: str, entries: list[Published], masqs: list[_Masq], conds: dict[int, str],
                      conditions: dict[int, tuple[str, ...]], localnet: list[str]) -> None:
        cond_exprs = {v: parse_conditions(conditions[v]) for v in conds}

        apply_text(scaffold_text())

        def build(state: _State) -> list[dict]:
            cmds = build_base_chains(state)
            for v, name in conds.items():
                cmds += build_chain(name, _cond_rules(cond_exprs[v]), state)
            want: dict[tuple[str, Any], tuple[Any, Any]] = {}  # (map, canonical key) -> (key, data)
            what: dict[tuple[str, Any], Published] = {}
            for p in entries:
                maps = [p.map] + ([cond_map(p.version, p.specific)] if p.version in conds else [])
                for m in maps:
                    k = (m, _norm_key(m, p.key()))
                    want[k] = (p.key(), p.data() if m == p.map else N.jump(conds[p.version]))
                    what[k] = p
            takeover = set()
            for m in masqs:
                k = (m.map, _norm_key(m.map, m.key()))
                want[k] = (m.key(), m.counter)
                takeover.add(k)
                cmds.append(N.add("counter", _counter(m.counter)))
                cmds += [N.add("element", _elem(name, key)) for name, key in m.members()]
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
                k = (e.map, _norm_key(e.map, e.key))
                if k not in want:  # ours from an earlier call with other mappings
                    cmds += _delete_elem(state, e)
                    after[e.map].pop(k[1], None)
                    handled.add((key_digest(e.map, e.key), digest(tag)))
            for k, (key, data) in want.items():
                e = state.elems.get(k[0], {}).get(k[1])
                if e is not None and e.comment == tag and e.data == data:
                    if not state.has_pair(e, tag):
                        cmds.append(N.add("element", owner_pair(k[0], key, tag)))
                else:
                    if e is not None:
                        cmds += _delete_elem(state, e)
                        if e.comment and state.has_pair(e, e.comment):
                            handled.add((key_digest(e.map, e.key), digest(e.comment)))
                    cmds.append(N.add("element", _elem(k[0], key, tag, data)))
                    cmds.append(N.add("element", owner_pair(k[0], key, tag)))
                handled.add((key_digest(k[0], key), digest(tag)))
                after.setdefault(k[0], {})[k[1]] = _Elem(k[0], key, data, tag)
            cmds += _orphan_pairs(state, lambda c: c == tag, handled)
            cmds += _claims_fix(state, after)
            for iface in localnet:
                cmds.append(N.add("element", _elem(LOCALNET, iface)))
            return cmds

        self._converge(build)

    def _check_overlap(self, state: _State, tag: str, p: Published) -> None:
        """Raise PortConflict when ``p`` overlaps a live mapping of another owner published
        on every address vs. on a given address (or the other way round)."""
        if p.specific:
            e = state.get(dnat_map(p.version, False), p.port_key())
            if e is not None and e.comment != tag:
                raise PortConflict(p.describe(), e.comment, f"the same port on every IPv{p.version} address")
            return
        for e in state.elems.get(dnat_map(p.version, True), {}).values():
            k = _norm_key(e.map, e.key)
            if (k[1], k[2]) == (p.protocol, p.host_port) and e.comment != tag:
                raise PortConflict(p.describe(), e.comment, f"the same port on {k[0]}")

    # -- DEL ----------------------------------------------------------------------
    def unpublish(self, owner: str, mappings: Iterable[PortMapping] | None = None,
                  addresses: Iterable[Any] | None = None, *, snat: bool = True,
                  conditions_v4: Iterable[str] = (), conditions_v6: Iterable[str] = ()) -> list[Published]:
        """Remove ``owner``'s elements; idempotent; never touches another owner's.

        With ``mappings`` and ``addresses`` (what publish got) this is one transaction;
        without them (``None``: e.g. a DEL without prevResult) the table is listed and
        every element of the owner goes. Returns what was removed when known.
        """
        tag = N.tag(owner)
        removed: list[Published] = []
        masq_removed = False
        specific_released: set[tuple[int, str, int]] = set()
        listed = True
        if mappings is not None and addresses is not None:
            addrs = container_addresses(addresses)
            entries = expand(mappings, addrs.values())
            if not entries:
                return []
            versions = {p.version for p in entries}
            masq_addrs = [addrs[v].ip for v in sorted(versions)] if snat else []
            cv = [v for v, c in ((4, conditions_v4), (6, conditions_v6)) if v in versions and tuple(c)]
            if self.nft.try_apply(build_unpublish(tag, entries, masq_addrs, cv)):
                listed = False
                removed = entries
                masq_removed = bool(masq_addrs)
                specific_released = {(p.version, p.protocol, p.host_port) for p in entries if p.specific}
            else:
                # a repeated DEL, a partial ADD, or nothing here at all
                if not self.nft.chain_names(FAMILY, TABLE):
                    return []
                if self.nft.try_apply(build_none_owned(tag, entries, masq_addrs)):
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

        def build(state: _State) -> list[dict]:
            cmds: list[dict] = []
            drop = state.owned(stale)
            out["published"] = [p for c, p in state.published() if stale(c)]
            out["masq"] = any(e.map.startswith("refs") for e in drop)
            out["owners"] = sorted({e.comment for e in drop if e.comment is not None}
                                   | {c for owners in state.pairs.values() for c in owners.values()
                                      if c is not None and stale(c)})
            after = {m: dict(elems) for m, elems in state.elems.items()}
            for e in drop:
                cmds += _delete_elem(state, e)
                after.get(e.map, {}).pop(_norm_key(e.map, e.key), None)
            keep = {(key_digest(e.map, e.key), digest(e.comment)) for e in drop if e.comment and state.has_pair(e, e.comment)}
            cmds += _orphan_pairs(state, stale, keep)
            cmds += _claims_fix(state, after)
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
                    k = _norm_key(dnat_map(v, True), key)
                    live.add((v, k[1], k[2]))
        for v, proto, port in sorted(released - live):
            dummy = N.concat("0.0.0.0" if v == 4 else "::", 0)
            probe = N.absent_probe("element", _elem(dnat_map(v, False), N.concat(proto, port), None, dummy))
            self.nft.try_apply(probe + [N.delete("element", _elem(claim_map(v), N.concat(proto, port)))])

    # -- interface entries and route_localnet --------------------------------------
    def _members(self) -> dict[str, set]:
        """The interface entry sets (each small: one element per interface)."""
        out: dict[str, set] = {name: set() for name in MEMBER_SETS}
        for name in MEMBER_SETS:
            try:
                listing = self.nft.list_json({"set": {"family": FAMILY, "table": TABLE, "name": name}})
            except NftError:
                continue
            out[name] = _State(listing).members[name]
        return out

    def sync_interfaces(self) -> list[str]:
        """Remove the ``hairpin``/``localhost``/``masq_all`` entries no container needs any
        more, and switch route_localnet back to 0 on the ``@localnet`` interfaces none
        needs (counted by the kernel: use counts of the interface counters). Returns the
        interfaces changed. Safe against a concurrent publish: after the removal it counts
        again and restores what a new user needs."""
        from . import conntrack, sysctl

        members = self._members()
        ifaces = sorted({_member_iface(n, k) for n, keys in members.items() for k in keys})
        if not ifaces:
            return []
        uses = conntrack.nft_object_uses(NFPROTO_INET, TABLE)
        drop: list[tuple[str, Any, str]] = []  # (set, element key, iface)
        for iface in ifaces:
            needs = interface_needs(uses, iface)
            for name, keys in members.items():
                for k in keys:
                    if _member_iface(name, k) == iface and not needs[name]:
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
            cmds += N.delete_quietly("element", _elem(name, k))
        self.nft.try_apply(cmds)
        # a publish may have registered a container meanwhile: give back what it needs
        again = conntrack.nft_object_uses(NFPROTO_INET, TABLE)
        restore = [(name, k, iface) for name, k, iface in drop if interface_needs(again, iface)[name]]
        if restore:
            self.nft.try_apply([N.add("element", _elem(name, k)) for name, k, _i in restore])
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

    def check(self, owner: str, mappings: Iterable[PortMapping], addresses: Iterable[Any], *,
              snat: bool = True, masq_all: bool = False, conditions_v4: Iterable[str] = (),
              conditions_v6: Iterable[str] = ()) -> list[str]:
        """Human-readable problems with ``owner``'s elements; [] when all are in place."""
        from . import sysctl

        tag = N.tag(owner)
        addrs = container_addresses(addresses)
        entries = expand(mappings, addrs.values())
        if not entries:
            return []
        state = self._state()
        where = f"table {FAMILY} {TABLE}"
        if not state.exists:
            return [f"{where} does not exist"]
        problems = []
        for chain, rules in _base_chain_specs():
            if chain["name"] not in state.chains:
                problems.append(f"{where}: chain {chain['name']} is missing")
            elif not rules_match(state.rules.get(chain["name"]), rules):
                problems.append(f"{where}: chain {chain['name']} does not hold the expected rules")
        conds = {4: tuple(conditions_v4), 6: tuple(conditions_v6)}

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
            if c is None or c.data != _claim_value(p):
                problems.append(f"{p}: claim in {claim_map(p.version)} is missing or wrong")
            if conds[p.version]:
                expect(cond_map(p.version, p.specific), p.key(), N.jump(cond_chain(p.version, conds[p.version])), str(p))
        if snat:
            for m in self._masqs(addrs, {p.version for p in entries}, masq_all):
                expect(m.map, m.key(), m.counter, f"masquerade of {m.address}")
                for name, key in m.members():
                    k = _norm_key(name, key)
                    if k not in state.members[name]:
                        problems.append(f"masquerade of {m.address}: {name} has no entry {k!r}")
                if m.iface and m.address.version == 4:
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
        from . import conntrack

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
            if obj_uses.get(name, 0) <= 0 and self.nft.try_apply([N.delete("counter", _counter(name))]):
                gone.append(name)
        return gone

    # -- internals ----------------------------------------------------------------
    def _state(self) -> _State:
        return _State(self.nft.list_table(FAMILY, TABLE))

    def _converge(self, build: Callable[[_State], list[dict]]) -> None:
        N.converge(self.nft, self._state, build, _ATTEMPTS)


def _route_iface(address: IPAddr) -> str | None:
    """Name of the interface the route to ``address`` leaves through (None: no route)."""
    from . import conntrack

    oif = conntrack.route_oif(address)
    name = conntrack.ifname(oif) if oif else None
    return None if name == "lo" else name
