"""802.1Q sub-interfaces made on demand, shared, and removed by their last user.

A macvlan/ipvlan master written ``<parent>.<vid>`` (or ``master`` + ``vlan``) names an 802.1Q
sub-interface of ``parent``. When it exists splice uses it, whoever made it (Docker's
libnetwork macvlan driver does the same, ``parentExists``); when it is missing splice creates
it (802.1Q, up, the parent's MTU) and tags it with the alias ``splice-vlan:<name>``. Only a
sub-interface with that alias is ever deleted, and only once nothing uses it.

Users. The kernel has no count of a link's users that a process can read: a macvlan or
ipvlan moved into (or created in) a sandbox keeps IFLA_LINK to its parent but is not in the
host's link dump, and deleting the parent silently deletes it. So splice counts its users
itself, one registration per user (an opaque string, e.g. the attachment's owner tag, or a
Docker network id), as a file under ``/run/splice/vlans`` (``SPLICE_VLAN_DIR`` overrides):
``<netns cookie>-<ifindex>-<name>/<sha256(user)[:32]>``. The netns cookie (SO_NETNS_COOKIE)
is never reused within a boot and the ifindex changes when the link is re-created, so a
registration can only ever count for the link it was made for; a reboot empties ``/run``
together with the links. Before deleting, the host namespace is also dumped for links whose
parent is the sub-interface (a user made by someone else in the host keeps it), and a
sub-interface enslaved to a bridge or bond is in use too.

Concurrency: :func:`ensure` (find or create, then register the user) and :func:`release`
(unregister, then decide and delete) each run under ``link_lock(<name>, exclusive=True)``
in the caller's namespace, so a release never sees an ADD half-way: either the ADD's user is
registered (the sub-interface stays) or the ADD has not looked yet (it will create it again).
A process that dies after registering leaves a registration: its DEL (idempotent) or the
driver's GC (:func:`users` + :func:`release`) removes it.

Everything here runs on the thread that owns ``rt`` (inside the namespace, see
``rtnl.run``): the lock and the netns cookie are those of the calling thread.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from splice.libnet import locks
from splice.libnet.errors import LinkExists, NotSupported
from splice.libnet.linkinfo import ETH_P_8021Q, Vlan
from splice.libnet.names import ifname_problem
from splice.libnet.rtnl import Link, Rtnl

from .errors import ConfigError
from .owners import sha256_hex

ALIAS_PREFIX = "splice-vlan:"
DEFAULT_DIR = "/run/splice/vlans"
IFF_LOOPBACK = 0x8
SO_NETNS_COOKIE = getattr(socket, "SO_NETNS_COOKIE", 71)  # Linux 5.14+
USER_KINDS = ("macvlan", "macvtap", "ipvlan", "ipvtap", "vlan")


# -- names and configuration --------------------------------------------------------------------
def subif_name(parent: str, vid: int) -> str:
    """``<parent>.<vid>`` (the name iproute2 and Docker give an 802.1Q sub-interface)."""
    return f"{parent}.{vid}"


def alias_of(name: str) -> str:
    return ALIAS_PREFIX + name


def is_ours(link: Link) -> bool:
    """Made by splice: its alias is ``splice-vlan:<its name>``."""
    return link.kind == "vlan" and link.alias == alias_of(link.name)


def _vid(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit() and value.isascii():
            value = int(value)
        else:
            raise ConfigError(f"{what}: VLAN id {value!r} is not an integer in 1-4094")
    if not 1 <= value <= 4094:
        raise ConfigError(f"{what}: VLAN id {value} is outside 1-4094 (0 and 4095 are reserved by 802.1Q)")
    return value


def parse_master(master: str, vlan: int | None = None) -> tuple[str, int | None]:
    """``(parent, vid)`` from a master written ``<parent>.<vid>`` and/or ``vlan``.

    ``eth0`` → ``("eth0", None)``; ``eth0.10`` or ``eth0`` + ``vlan=10`` → ``("eth0", 10)``;
    ``eth0.10`` + ``vlan=10`` agrees; ``eth0.10`` + ``vlan=20`` is a contradiction. A suffix
    that is not a number (``br.lan``) is part of the name. ConfigError for bad names, VLAN ids
    out of 1-4094, and a sub-interface name longer than 15 bytes.
    """
    problem = ifname_problem(master)
    if problem:
        raise ConfigError(f"master {master!r} {problem}")
    parent, vid = master, None
    head, dot, tail = master.rpartition(".")
    if dot and head and tail.isdigit() and tail.isascii():
        if tail != str(int(tail)):
            raise ConfigError(f"master {master!r}: write the VLAN id without leading zeros ({head}.{int(tail)})")
        parent, vid = head, _vid(int(tail), f"master {master!r}")
    if vlan is not None:
        v = _vid(vlan, "vlan")
        if vid is not None and v != vid:
            raise ConfigError(f"master {master!r} names VLAN {vid} but vlan is {v}: give one of them")
        vid = v
    if vid is None:
        return parent, None
    problem = ifname_problem(parent)
    if problem:
        raise ConfigError(f"parent {parent!r} of the VLAN sub-interface {problem}")
    name = subif_name(parent, vid)
    problem = ifname_problem(name)
    if problem:
        raise ConfigError(f"VLAN sub-interface name {name!r} {problem} (shorten the parent's name)")
    return parent, vid


# -- the registry of users ------------------------------------------------------------------------
def _dir() -> str:
    return os.environ.get("SPLICE_VLAN_DIR") or DEFAULT_DIR


def _cookie() -> str:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0) as s:
        return f"{struct.unpack('Q', s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]:x}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in name)


def _entries(cookie: str, name: str) -> list[tuple[int, str]]:
    """``(ifindex, path)`` of every registry directory of ``name`` in this namespace."""
    d, prefix, suffix = _dir(), f"{cookie}-", f"-{_safe(name)}"
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    out = []
    for entry in names:
        if entry.startswith(prefix) and entry.endswith(suffix):
            index = entry[len(prefix):len(entry) - len(suffix)]
            if index.isdigit():
                out.append((int(index), os.path.join(d, entry)))
    return out


def _users_of(path: str) -> set[str]:
    out = set()
    try:
        files = os.listdir(path)
    except FileNotFoundError:
        return out
    for f in files:
        try:
            with open(os.path.join(path, f), encoding="utf-8", errors="replace") as fh:
                out.add(fh.read())
        except FileNotFoundError:
            pass
    return out


def _prune(cookie: str, name: str, keep: int | None) -> None:
    """Drop the registrations of ``name`` that belong to no existing link (index ≠ ``keep``)."""
    for index, path in _entries(cookie, name):
        if index != keep:
            import shutil  # rare (a registration directory to drop): not on every ADD's import

            shutil.rmtree(path, ignore_errors=True)


def _register(cookie: str, link: Link, user: str) -> None:
    path = os.path.join(_dir(), f"{cookie}-{link.index}-{_safe(link.name)}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(path, sha256_hex(user)[:32]),
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, user.encode())
    finally:
        os.close(fd)


def _unregister(cookie: str, name: str, user: str) -> None:
    leaf = sha256_hex(user)[:32]
    for _index, path in _entries(cookie, name):
        try:
            os.unlink(os.path.join(path, leaf))
        except FileNotFoundError:
            pass
        try:
            os.rmdir(path)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise


def users(rt: Rtnl, name: str) -> set[str]:
    """The users registered on the sub-interface ``name`` as it exists now (empty when it
    does not exist)."""
    link = rt.get_link(name)
    if link is None:
        return set()
    cookie = _cookie()
    return set().union(*(_users_of(p) for i, p in _entries(cookie, name) if i == link.index))


def _host_users(rt: Rtnl, link: Link) -> list[str]:
    """Links of this namespace stacked on ``link`` (one dump: only before a deletion)."""
    return [u.name for u in rt.dump_links()
            if u.parent_index == link.index and u.peer_netnsid is None and u.index != link.index
            and u.kind in USER_KINDS]


# -- ensure / release / gc -------------------------------------------------------------------------
def _check_existing(link: Link, parent: Link | None, parent_name: str, vid: int) -> Link:
    data = link.data if link.kind == "vlan" else None
    if (data is None or not isinstance(data, Vlan) or data.id != vid or data.protocol != ETH_P_8021Q
            or parent is None or link.parent_index != parent.index or link.peer_netnsid is not None):
        what = f"a {link.kind or 'link'}" if link.kind != "vlan" else (
            f"VLAN {getattr(data, 'id', '?')} (protocol {getattr(data, 'protocol', 0):#x}) of link #{link.parent_index}")
        raise ConfigError(f"link {link.name!r} exists but is not the 802.1Q sub-interface of {parent_name!r} "
                          f"with VLAN id {vid}: it is {what}")
    return link


def _ensure_locked(rt: Rtnl, parent_name: str, vid: int, name: str) -> tuple[Link, bool]:
    for _attempt in range(2):
        parent = rt.get_link(parent_name)
        link = rt.get_link(name)
        if link is not None:
            return _check_existing(link, parent, parent_name, vid), False
        if parent is None:
            raise ConfigError(f"parent link {parent_name!r} of the VLAN sub-interface {name!r} not found")
        if parent.flags & IFF_LOOPBACK:
            raise ConfigError(f"parent link {parent_name!r} is the loopback: it cannot carry 802.1Q VLANs")
        try:
            link = rt.add_link("vlan", name, parent=parent.index, mtu=parent.mtu, up=True, data=Vlan(vid))
        except LinkExists:
            continue  # made by someone outside splice meanwhile: check it as an existing one
        except NotSupported as e:
            raise NotSupported(f"cannot create the 802.1Q sub-interface {name!r} on {parent_name!r}: "
                               f"the kernel refused VLANs (no 8021q module, or {parent_name!r} cannot "
                               f"carry VLANs)") from e
        try:
            rt.set_link(link.index, alias=alias_of(name))
        except BaseException:
            rt.delete_link(index=link.index)
            raise
        return rt.require_link(name), True
    raise ConfigError(f"link {name!r} keeps appearing and disappearing: created by another program?")


def ensure(rt: Rtnl, parent: str, vid: int, user: str | None = None) -> tuple[Link, bool]:
    """The 802.1Q sub-interface ``<parent>.<vid>``, created (up, the parent's MTU, alias
    ``splice-vlan:<name>``) when missing; ``created`` says whether this call made it.

    ``user``: register this user of it in the same locked step, so that no concurrent
    :func:`release` can delete it before the caller's macvlan/ipvlan link exists. Pass it
    whenever a user link will follow (and :func:`release` it with the same string).

    ConfigError: a bad VLAN id or name, a missing parent (named), a link of that name that is
    not that VLAN of that parent. NotSupported: the kernel refused to make a VLAN link.
    """
    vid = _vid(vid, f"VLAN of {parent!r}")
    name = subif_name(parent, vid)
    problem = ifname_problem(name)
    if problem:
        raise ConfigError(f"VLAN sub-interface name {name!r} {problem}")
    with locks.link_lock(name, exclusive=True):
        link, created = _ensure_locked(rt, parent, vid, name)
        if user is not None:
            cookie = _cookie()
            _prune(cookie, name, link.index)
            _register(cookie, link, user)
    return link, created


def release(rt: Rtnl, name: str, user: str | None = None) -> bool:
    """Unregister ``user`` (when given), then delete the sub-interface ``name`` if splice made
    it and nothing uses it any more: no registered user, no link of this namespace on top of
    it, no master (a bridge or bond it was added to). True when it was deleted now. Idempotent; never deletes a sub-interface without
    splice's alias."""
    with locks.link_lock(name, exclusive=True):
        cookie = _cookie()
        if user is not None:
            _unregister(cookie, name, user)
        link = rt.get_link(name)
        if link is None:
            _prune(cookie, name, None)
            return False
        if not is_ours(link):
            return False
        if link.master is not None:  # enslaved (a bridge or bond port): in use
            return False
        if any(_users_of(p) for i, p in _entries(cookie, name) if i == link.index):
            return False
        if _host_users(rt, link):
            return False
        rt.delete_link(index=link.index)
        _prune(cookie, name, None)
        return True


def registry_dir() -> str:
    """Where the registrations are (``$SPLICE_VLAN_DIR``, else ``/run/splice/vlans``)."""
    return _dir()


def registrations() -> list[str]:
    """The entry names of the registry directory (every namespace's); [] when it does not exist."""
    try:
        return os.listdir(_dir())
    except FileNotFoundError:
        return []


def stale_registrations(entries: list[str], links: list[Link]) -> list[str]:
    """Of ``entries`` (:func:`registrations`), those of this namespace whose link is not in
    ``links`` (a dump of this namespace's links taken after the listing)."""
    cookie = _cookie()
    present = {(link.index, _safe(link.name)) for link in links}
    stale = []
    for entry in entries:
        head, _, rest = entry.partition("-")
        index, _, safe = rest.partition("-")
        if head == cookie and index.isdigit() and (int(index), safe) not in present:
            stale.append(entry)
    return stale


def gc(rt: Rtnl, in_use: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Delete every splice-made sub-interface of this namespace that is not in ``in_use``
    (e.g. the masters of existing Docker networks) and that nothing uses (as
    :func:`release`); drop registrations of links that are gone. Returns the deleted names.
    Stale users (attachments that no longer exist) are the caller's: :func:`users`, then
    ``release(rt, name, user)``."""
    entries = registrations()  # listed before the dump: a directory whose link is not in the dump is stale
    links = rt.dump_links()
    for entry in stale_registrations(entries, links):
        import shutil

        shutil.rmtree(os.path.join(_dir(), entry), ignore_errors=True)
    deleted = []
    for link in links:
        if is_ours(link) and link.name not in in_use and release(rt, link.name):
            deleted.append(link.name)
    return deleted
