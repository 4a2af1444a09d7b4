"""Names of the portmap table's objects, its value objects and key digests (no kernel access).

See the package docstring (:mod:`splice.libnet.portmap`) for the table layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from .. import nft as N
from ..errors import NetError

if TYPE_CHECKING:
    from ipaddress import IPv4Address, IPv6Address

    IPAddr = IPv4Address | IPv6Address

FAMILY = "inet"
TABLE = "splice_portmap"
NFPROTO_INET = 1
PROTOCOLS = ("tcp", "udp", "sctp")
PROTO_NUMBERS = {6: "tcp", 17: "udp", 132: "sctp"}
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
ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
IP = {4: "ip", 6: "ip6"}
NFPROTO = {4: "ipv4", 6: "ipv6"}

try:  # CPython's builtin SHA-256: hashlib would first load OpenSSL (a cost per process)
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


# -- names ---------------------------------------------------------------------------------
def dnat_map(version: int, specific: bool) -> str:
    return f"dnat{version}" + ("_ip" if specific else "")


def cond_map(version: int, specific: bool) -> str:
    return f"cond{version}" + ("_ip" if specific else "")


def claim_map(version: int) -> str:
    return f"claim{version}"


def refs_map(version: int) -> str:
    """The masquerade registrations: ``ifname . addr . addr : counter``."""
    return f"ifrefs{version}"


def legacy_refs_map(version: int) -> str:
    """The registrations of tables made before the interface was part of the key
    (``addr . addr : counter``): kept, and looked up, while they hold elements."""
    return f"refs{version}"


LEGACY_REFS = (legacy_refs_map(4), legacy_refs_map(6))


def is_refs_map(name: str) -> bool:
    return name.startswith(("ifrefs", "refs"))


def users_counter(version: int, iface: str | None, masq_all: bool) -> str:
    """``users4:<iface>`` / ``all4:<iface>`` (masqAll) and the IPv6 ones (``:`` cannot
    occur in an interface name, so the interface is what follows it)."""
    return f"{'all' if masq_all else 'users'}{version}:{iface or ''}"


def cond_chain(version: int, conditions: Iterable[str]) -> str:
    """``cond<version>-<12 hex>``: one chain per distinct condition list (its text)."""
    text = "\n".join(conditions)
    return f"cond{version}-" + sha256_hex(text)[:12]


def interface_needs(uses: dict[str, int], iface: str) -> dict[str, bool]:
    """Which entries of ``iface`` some container still needs, from the counters' use counts."""
    u = {k: uses.get(f"{k}:{iface}", 0) for k in ("users4", "users6", "all4", "all6")}
    return {
        HAIRPIN: sum(u.values()) > 0,
        LOCALHOST: u["users4"] > 0,
        MASQ_ALL: u["all4"] + u["all6"] > 0,
        LOCALNET: u["users4"] + u["all4"] > 0,  # route_localnet: IPv4 localhost
    }


def member_iface(key: Any) -> str:
    """The interface of an entry of one of the :data:`MEMBER_SETS`."""
    return key[0] if isinstance(key, (tuple, list)) else key


# -- keys ----------------------------------------------------------------------------------
def norm_key(map_name: str, key: Any) -> Any:
    """A key (as built here or as listed) in one canonical hashable form."""
    if isinstance(key, dict) and "concat" in key:
        key = tuple(key["concat"])
    if isinstance(key, (list, tuple)):
        key = tuple(key)
        proto_at = 1 if map_name.endswith("_ip") else 0
        if map_name.startswith(("dnat", "cond", "claim")) and len(key) > proto_at and isinstance(key[proto_at], int):
            key = key[:proto_at] + (PROTO_NUMBERS.get(key[proto_at], key[proto_at]),) + key[proto_at + 1:]
    return key


def digest(text: str) -> str:
    """15 hex digits of sha256 (fits the 16-byte ``ifname`` key type)."""
    return sha256_hex(text)[:15]


def key_digest(map_name: str, key: Any) -> str:
    """The first half of an element's ownership pair in ``owners``; the same as
    ``OwnedTable.key_digest`` of the owned table (state.T, splice.libnet.nftowned),
    computed here so that the fast paths do not load the listing code."""
    import json

    return digest(map_name + " " + json.dumps(norm_key(map_name, key)))


# -- value objects -------------------------------------------------------------------------
class Value:
    """Small immutable value objects without ``dataclasses`` (whose class creation is paid
    at import time by every short-lived CNI process)."""

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


class Published(Value):
    """One DNAT element: ``protocol``/``host_port`` on ``host_ip`` (None: every local
    address of the family) -> ``address``:``container_port``."""

    __slots__ = ("protocol", "host_port", "host_ip", "address", "container_port")
    protocol: str
    host_port: int
    host_ip: "IPAddr | None"
    address: "IPAddr"
    container_port: int

    def __init__(self, protocol: str, host_port: int, host_ip: "IPAddr | None", address: "IPAddr",
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


class Masq:
    """The masquerade registration of one container address (snat on) on the interface
    it is reached by: its ``ifrefs`` element (``iface . address . address``, the packet
    path's ``oifname . saddr . daddr`` of a container reaching itself) and the entries of
    that interface it needs. Keyed by interface, so that two containers with the same
    address on two networks (overlapping subnets on two bridges) each keep their own."""

    __slots__ = ("address", "iface", "masq_all")

    def __init__(self, address: "IPAddr", iface: str, masq_all: bool) -> None:
        self.address = address
        self.iface = iface
        self.masq_all = masq_all

    @property
    def map(self) -> str:
        return refs_map(self.address.version)

    @property
    def counter(self) -> str:
        return users_counter(self.address.version, self.iface, self.masq_all)

    def key(self) -> dict:
        return N.concat(self.iface, str(self.address), str(self.address))

    def legacy_key(self) -> dict:
        """The key of the same registration in the legacy ``refs`` maps."""
        return N.concat(str(self.address), str(self.address))

    def members(self) -> list[tuple[str, Any]]:
        """(set, element) of the interface entries this container needs."""
        out: list[tuple[str, Any]] = [(HAIRPIN, N.concat(self.iface, self.iface))]
        if self.masq_all:
            out.append((MASQ_ALL, self.iface))
        elif self.address.version == 4:
            out.append((LOCALHOST, self.iface))
        return out


class Conditions:
    """The condition list of one family (the caller's, already screened): the chain
    ``cond<version>-<hash>`` named after its text, and its rules. The match expressions
    (libnftables JSON) come from ``parse(texts)``, called only when the chain has to be
    built or compared (the first use of the list, a repair), and at most once."""

    __slots__ = ("version", "texts", "chain", "_parse", "_exprs")

    def __init__(self, version: int, texts: Iterable[str], parse: Callable[[tuple[str, ...]], list[dict]]) -> None:
        self.version = version
        self.texts = tuple(texts)
        self.chain = cond_chain(version, self.texts)
        self._parse = parse
        self._exprs: list[dict] | None = None

    def exprs(self) -> list[dict]:
        if self._exprs is None:
            self._exprs = list(self._parse(self.texts))
        return self._exprs

    def rules(self) -> list[list[dict]]:
        """``<conditions> return; accept``: a verdict of the ``cond*`` maps jumps here."""
        return [self.exprs() + [{"return": None}], [{"accept": None}]]

    def __repr__(self) -> str:
        return f"Conditions({self.version}, {self.texts!r})"
