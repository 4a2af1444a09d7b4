"""A thin runner for libnftables JSON, plus pure builders of JSON command fragments.

Model: firewalld's nftables backend (src/firewall/core/nftables.py). Builders are pure functions that
return ``{"add": {...}}``-shaped dicts; a caller gathers the fragments of one operation
and hands them to :meth:`Nft.apply`, which sends them as **one** ``{"nftables": [...]}``
batch, i.e. one kernel transaction: all of it happens or none of it.

Context rules (python3-nftables 1.0.6, libnftables 1.0.6):

* ``Nftables()`` opens its netlink socket in the network namespace of the *calling
  thread* and keeps using that namespace. :class:`Nft` therefore creates the context
  lazily, on first use, remembers the namespace it was created in, and refuses to be used
  from another one (create and use it inside the same ``Netns.run``).
* Output flags are set once, explicitly: ``json`` on (``json_cmd`` would otherwise flip
  it on and off around every call; with it on, libnftables parses our input as JSON
  first), ``echo`` off (echo makes libnftables fetch the full rule/element cache, O(N)),
  ``handle`` off (JSON listings carry handles anyway), ``reversedns`` and
  ``service`` off (no DNS or /etc/services lookups while listing), ``terse`` off (we
  need set elements in listings).
* libnftables 1.0.6 reports errors as text only (no errno). We never parse it: an
  :class:`NftError` carries the message for humans; code that must tell "absent" from
  "failed" asks the kernel again (e.g. :meth:`Nft.list_table`).
* 1.0.6 has no ``destroy`` verb: idempotent deletes are "add, then delete" in the same
  batch (:func:`delete_quietly`).
* 1.0.6 has no JSON ``get element`` (JSON rejects it; ``nft -j get element`` prints
  text) and every JSON way to ask about one element lists the whole set: O(N). (The
  text ``get element`` is no way out: cheap for a present element, O(N) for an absent
  one, where libnftables fetches the whole set.) Callers therefore try the transaction
  they expect to succeed and fall back on failure.
  Costs to design around (figures in docs/perf.md): a transaction the kernel rejects
  takes the abort path, which costs far more than a commit; a context that committed a
  deletion (even a chain flush, or a create+delete probe) or had a transaction rejected
  waits when it is freed (its netlink socket close waits for the kernel's deferred
  destruction); a context that only added things is freed at once. ``list chains`` is
  cheap (no rules or elements are fetched); ``list tables``, ``list sets`` and
  ``list chain`` are not (they fetch the whole cache, elements included).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Iterable, TypeVar

from .errors import NetError, NftError

# Element/rule comments are NFT_USERDATA comments limited to 128 bytes (with the NUL).
COMMENT_MAX = 127


def _thread_netns() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return (st.st_dev, st.st_ino)


def _new_context() -> Any:
    try:
        from nftables import Nftables  # Debian python3-nftables
    except ImportError as e:  # pragma: no cover - packaging problem
        raise NftError(f"python3-nftables is not available: {e}") from None
    ctx = Nftables()
    ctx.set_json_output(True)
    ctx.set_echo_output(False)
    ctx.set_handle_output(False)
    ctx.set_reversedns_output(False)
    ctx.set_service_output(False)
    ctx.set_terse_output(False)
    return ctx


# -- shared contexts (a long-lived process: the agent) -------------------------
# Freeing a context whose socket committed a deletion waits for the kernel's deferred
# destruction (module doc); a resident process that makes one Nft per call pays that on
# every DEL (the agent's figures are in docs/perf.md). share_contexts() switches every Nft of this process to one context
# per network namespace, kept open between calls and reused by all threads of that
# namespace (one lock per context). A kept context's socket holds its namespace alive, so
# its key (the namespace inode) cannot be reused while it is kept; prune_contexts() closes
# the ones idle for a while (off the callers' path).
class _Shared:
    """A kept context. ``users`` (changed under ``_shared_lock``) counts the callers that
    got it from :func:`_shared_context` and have not given it back: only an entry nobody
    uses is evicted or pruned, so contexts are freed by the janitor or the evicting
    caller, never under a thread running a command on them."""

    __slots__ = ("ctx", "lock", "last", "users")

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.users = 0


_shared: dict[tuple[int, int], _Shared] | None = None
_shared_lock = threading.Lock()
SHARED_MAX = 64  # kept contexts; exceeded while every kept one is in use


def share_contexts(enabled: bool = True) -> None:
    """Turn per-namespace shared contexts on (or off, closing them; a context in use is
    freed when its user is done)."""
    global _shared
    with _shared_lock:
        old, _shared = _shared, ({} if enabled else None)
    if old and not enabled:
        old.clear()


def prune_contexts(idle_s: float) -> int:
    """Close the shared contexts unused for ``idle_s`` seconds; how many were closed."""
    now = time.monotonic()
    dropped = []
    with _shared_lock:
        if not _shared:
            return 0
        for key, entry in list(_shared.items()):
            if now - entry.last >= idle_s and not entry.users:
                dropped.append(_shared.pop(key))
    n = len(dropped)
    dropped.clear()  # frees the contexts here, in the caller's (janitor's) thread
    return n


def _shared_context(here: tuple[int, int]) -> _Shared | None:
    """The kept context of namespace ``here`` (made if missing), counted as in use until
    :func:`_give_back`. At the cap the least recently used context nobody uses is freed
    (none: the table grows past the cap)."""
    if _shared is None:
        return None
    victim = None
    with _shared_lock:
        table = _shared
        if table is None:
            return None
        entry = table.get(here)
        if entry is None:
            if len(table) >= SHARED_MAX:
                idle = [k for k, e in table.items() if not e.users]
                if idle:
                    victim = table.pop(min(idle, key=lambda k: table[k].last))
            entry = table[here] = _Shared(_new_context())  # created in `here` (this thread)
        entry.users += 1
        entry.last = time.monotonic()
    del victim  # freed here, outside the lock
    return entry


def _give_back(entry: _Shared) -> None:
    with _shared_lock:
        entry.users -= 1


class Nft:
    """One libnftables context, created lazily in the namespace of its first use.

    Not shareable between namespaces; safe to share between threads of one namespace
    (calls are serialised by a lock: a libnftables context is not thread-safe). With
    :func:`share_contexts` on, the context is the process-wide one of that namespace.
    """

    def __init__(self) -> None:
        self._ctx: Any = None
        self._netns: tuple[int, int] | None = None
        self._lock = threading.Lock()

    # -- context ------------------------------------------------------------
    def _context(self) -> Any:
        here = _thread_netns()
        if self._ctx is None:
            self._ctx, self._netns = _new_context(), here
        elif here != self._netns:
            raise _wrong_netns()
        return self._ctx

    def _run(self, cmds: list[dict]) -> list[dict]:
        shared = None
        if self._ctx is None:
            here = _thread_netns()
            if self._netns is None:
                self._netns = here
            elif here != self._netns:
                raise _wrong_netns()
            shared = _shared_context(here)
        if shared is not None:
            try:
                with shared.lock:
                    rc, out, err = shared.ctx.json_cmd({"nftables": cmds})
            finally:
                _give_back(shared)
        else:
            with self._lock:
                ctx = self._context()
                rc, out, err = ctx.json_cmd({"nftables": cmds})
        if rc != 0:
            msg = " ".join(line.strip() for line in (err or "").splitlines() if line.strip())
            raise NftError(msg or f"libnftables failed (rc={rc})")
        if not out:
            return []
        return [item for item in out.get("nftables", []) if "metainfo" not in item]

    # -- API ----------------------------------------------------------------
    def apply(self, cmds: list[dict]) -> None:
        """Run ``cmds`` as one transaction; raise :class:`NftError` with nft's message."""
        if cmds:
            self._run(list(cmds))

    def try_apply(self, cmds: list[dict]) -> bool:
        """:meth:`apply`, returning False instead of raising (for probes and fast paths
        whose failure sends the caller down a path that re-detects real errors)."""
        try:
            self.apply(cmds)
            return True
        except NftError:
            return False

    def chain_names(self, family: str, table: str) -> set[str]:
        """Names of the chains of one table (cheap: ``list chains`` fetches no rules or
        set elements); empty when the table is missing."""
        out = set()
        for item in self._run([{"list": {"chains": {"family": family}}}]):
            c = item.get("chain")
            if c and c.get("table") == table and c.get("family") == family:
                out.add(c["name"])
        return out

    def list_json(self, obj: dict) -> list[dict]:
        """``{"list": obj}``: the listed objects (metainfo dropped), e.g. ``[{"table": ..}, {"map": ..}]``.

        ``obj`` is e.g. ``{"table": {"family": "inet", "name": "t"}}``. A missing object
        raises :class:`NftError` (see :meth:`list_table` for "None when absent").
        """
        return self._run([{"list": obj}])

    def list_table(self, family: str, name: str) -> list[dict] | None:
        """Everything in one table (chains, rules, sets with elements), None when absent. O(N)."""
        try:
            return self.list_json({"table": {"family": family, "name": name}})
        except NftError:
            if self.chain_names(family, name):  # the table is there: a real error
                raise
            return None


def _wrong_netns() -> NetError:
    return NetError(
        "nftables context used outside the network namespace it was created in; "
        "create Nft() inside the Netns.run() that uses it"
    )


# -- pure builders ------------------------------------------------------------
S = TypeVar("S")


def converge(nft: "Nft", read: Callable[[], S], build: Callable[[S], list[dict]], attempts: int = 5) -> None:
    """Read the state, build one transaction from it, apply it; when a concurrent writer
    made it fail, read again and rebuild (at most ``attempts`` times)."""
    err: NftError | None = None
    for _ in range(attempts):
        cmds = build(read())
        if not cmds:
            return
        try:
            nft.apply(cmds)
            return
        except NftError as e:
            err = e
    assert err is not None
    raise err


def stale_owners(prefix: str, keep: Callable[[str], bool]) -> Callable[[str | None], bool]:
    """The GC predicate on owner comments: under ``prefix`` and not kept (asked once each)."""
    verdicts: dict[str, bool] = {}

    def stale(owner: str | None) -> bool:
        if owner is None or not owner.startswith(prefix):
            return False
        if owner not in verdicts:
            verdicts[owner] = not keep(owner)
        return verdicts[owner]

    return stale


def add(kind: str, obj: dict) -> dict:
    return {"add": {kind: obj}}


def create(kind: str, obj: dict) -> dict:
    """Like add, but fails (EEXIST) when the object or element already exists."""
    return {"create": {kind: obj}}


def delete(kind: str, obj: dict) -> dict:
    return {"delete": {kind: obj}}


def flush(kind: str, obj: dict) -> dict:
    return {"flush": {kind: obj}}


def delete_quietly(kind: str, obj: dict) -> list[dict]:
    """Delete that does not fail when the object is missing (add, then delete, one batch).

    For map elements ``obj`` must carry the data the element has (or would have):
    adding an existing key with different data fails with EEXIST.
    """
    return [add(kind, obj), delete(kind, obj)]


def absent_probe(kind: str, obj: dict) -> list[dict]:
    """Create, then delete: a batch that succeeds (changing nothing) iff ``obj`` is absent."""
    return [create(kind, obj), delete(kind, obj)]


def table(family: str, name: str) -> dict:
    return {"family": family, "name": name}


def chain(family: str, tbl: str, name: str) -> dict:
    return {"family": family, "table": tbl, "name": name}


def base_chain(family: str, tbl: str, name: str, *, type: str, hook: str, prio: int, policy: str = "accept") -> dict:
    return {"family": family, "table": tbl, "name": name, "type": type, "hook": hook, "prio": prio, "policy": policy}


def rule(family: str, tbl: str, chain_name: str, expr: list[dict], comment: str | None = None) -> dict:
    r: dict = {"family": family, "table": tbl, "chain": chain_name, "expr": expr}
    if comment is not None:
        r["comment"] = tag(comment)
    return r


def set_(family: str, tbl: str, name: str, type: str | list[str], flags: list[str] | None = None) -> dict:
    s: dict = {"family": family, "table": tbl, "name": name, "type": type}
    if flags:
        s["flags"] = flags
    return s


def map_(family: str, tbl: str, name: str, type: str | list[str], data: str) -> dict:
    return {"family": family, "table": tbl, "name": name, "type": type, "map": data}


def elements(family: str, tbl: str, name: str, elems: list[Any]) -> dict:
    return {"family": family, "table": tbl, "name": name, "elem": elems}


def elem(val: Any, comment: str | None = None, data: Any = None) -> Any:
    """One set element (``data`` is None) or map element ``[key, data]``, with a comment."""
    key = {"elem": {"val": val, "comment": tag(comment)}} if comment is not None else val
    return key if data is None else [key, data]


def payload(protocol: str, field: str) -> dict:
    return {"payload": {"protocol": protocol, "field": field}}


def meta(key: str) -> dict:
    return {"meta": {"key": key}}


def match(left: Any, right: Any, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def prefix_or_addr(network: Any) -> Any:
    """An ipaddress network as an nft prefix (a plain address for /32 and /128)."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def concat(*parts: Any) -> dict:
    return {"concat": list(parts)}


def jump(target: str) -> dict:
    return {"jump": {"target": target}}


def split_elem(e: Any) -> tuple[Any, Any, str | None]:
    """(key, data, comment) of one element as nft -j lists it (data None for sets).

    Keys come back as a plain value, or ``{"elem": {"val": .., "comment": ..}}`` when the
    element has a comment/timeout; concatenations as ``{"concat": [...]}``.
    """
    data = None
    if isinstance(e, list) and len(e) == 2:
        e, data = e
    comment = None
    if isinstance(e, dict) and "elem" in e:
        comment = e["elem"].get("comment")
        e = e["elem"]["val"]
    if isinstance(e, dict) and "concat" in e:
        e = tuple(e["concat"])
    return e, data, comment


def tag(owner: str | None) -> str:
    """An owner string as stored in a comment: at most 127 UTF-8 bytes, cut on a character."""
    if owner is None:
        return ""
    raw = owner.encode("utf-8")
    if len(raw) <= COMMENT_MAX:
        return owner
    return raw[:COMMENT_MAX].decode("utf-8", errors="ignore")


def sets_in(listing: Iterable[dict]) -> dict[str, dict]:
    """name -> set/map object, from a table listing."""
    out: dict[str, dict] = {}
    for item in listing:
        for kind in ("set", "map"):
            if kind in item:
                out[item[kind]["name"]] = item[kind]
    return out


def chains_in(listing: Iterable[dict]) -> dict[str, dict]:
    return {item["chain"]["name"]: item["chain"] for item in listing if "chain" in item}


def rules_in(listing: Iterable[dict], chain_name: str) -> list[dict]:
    return [item["rule"] for item in listing if "rule" in item and item["rule"].get("chain") == chain_name]
