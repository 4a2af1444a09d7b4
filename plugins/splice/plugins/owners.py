"""Owner names, aliases and tags: how every kernel object names the attachment it belongs to.

One module for every driver (bridge, portmap, and the drivers to come), so that DEL and GC
of one driver find what another made for the same attachment, after a crash too.

An attachment is ``(network, container_id, ifname)``. From it derive:

* ``host_veth_name``: the host end of a veth, ``"veth" + 10 hex`` of
  sha256(``network\\0cid\\0ifname``): DEL and GC find it with one lookup by name.
* ``link_alias``: ``IFLA_IFALIAS`` of a link made for an attachment,
  ``"splice:<network>:<cid>:<ifname>"`` (at most 254 bytes: the kernel's attribute policy
  takes IFALIASZ - 1 = 255 bytes, which an encoder that appends a NUL counts too).
* ``owner_tag``: the comment of nftables elements/rules, ``"<net8> <cid> <ifname>"`` with
  ``net8`` = 8 hex of sha256(network), at most 127 bytes (an nft comment holds 128 bytes
  with its NUL); ``gc_prefix(network)`` is what every tag of one network starts with.

Also the best-effort step helper of DEL and GC (:class:`Steps`): run every step, keep going
on failure, then raise one error that reports all of them.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

try:  # CPython's builtin SHA-256: hashlib would first load OpenSSL (a cost per process)
    from _sha256 import sha256 as _sha256  # 3.11
except ImportError:  # pragma: no cover - other interpreters
    try:
        from _sha2 import sha256 as _sha256  # 3.12+
    except ImportError:
        from hashlib import sha256 as _sha256

ALIAS_PREFIX = "splice:"
MAX_ALIAS = 254  # IFLA_IFALIAS: IFALIASZ - 1 = 255 bytes, 254 when an encoder appends a NUL
MAX_OWNER = 127  # NFT_USERDATA_MAXLEN - 1


def sha256_hex(text: str) -> str:
    return _sha256(text.encode("utf-8")).hexdigest()


def truncate_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, never inside a character."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


def net8(network: str) -> str:
    return sha256_hex(network)[:8]


def host_veth_name(network: str, container_id: str, ifname: str) -> str:
    return "veth" + sha256_hex(f"{network}\0{container_id}\0{ifname}")[:10]


def link_alias(network: str, container_id: str, ifname: str) -> str:
    return truncate_utf8(f"{ALIAS_PREFIX}{network}:{container_id}:{ifname}", MAX_ALIAS)


def alias_prefix(network: str) -> str:
    """What the alias of every link of ``network`` starts with (GC)."""
    return f"{ALIAS_PREFIX}{network}:"


def owner_tag(network: str, container_id: str, ifname: str) -> str:
    return truncate_utf8(f"{net8(network)} {container_id} {ifname}", MAX_OWNER)


def gc_prefix(network: str) -> str:
    """Prefix of every owner tag of ``network``."""
    return net8(network) + " "


def describe_owner(owner: str | None) -> str:
    """``"<net8> <cid> <ifname>"`` -> ``container <cid> (interface <ifname>, network <net8>)``."""
    parts = (owner or "").split(" ")
    if len(parts) == 3 and all(parts):
        return f"container {parts[1]} (interface {parts[2]}, network {parts[0]})"
    return repr(owner) if owner else "another container"


class Steps:
    """Best-effort work (DEL, GC): every step runs; failures are collected and raised
    together at the end by :meth:`done`, none of them hidden.

    >>> steps = Steps("DEL of c1/eth0")
    >>> steps.run(remove_masquerade)
    >>> steps.run(rt.delete_link, name="veth...")
    >>> steps.done()   # nothing, the one error as is, or one error listing all
    """

    __slots__ = ("what", "errors")

    def __init__(self, what: str) -> None:
        self.what = what
        self.errors: list[BaseException] = []

    def run(self, fn: "Callable[..., Any]", *args: "Any", **kwargs: "Any") -> "Any":
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - collected, raised by done()
            self.errors.append(e)
            return None

    def add(self, exc: BaseException) -> None:
        self.errors.append(exc)

    def done(self) -> None:
        errors = self.errors
        if not errors:
            return
        if len(errors) == 1:
            raise errors[0]
        from splice.plugins.errors import MultipleErrors

        raise MultipleErrors(self.what, errors)
