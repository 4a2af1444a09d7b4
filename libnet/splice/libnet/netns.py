"""Explicit network namespace handles.

A :class:`Netns` is an open file descriptor on a network namespace. Work that must
happen inside a namespace (a netlink socket, a sysctl write, an nftables transaction)
goes through :meth:`Netns.run`, which runs the callable on a short-lived helper thread
that has ``setns()``-ed into the namespace. ``setns(CLONE_NEWNET)`` changes only the
calling thread, so the caller's thread (and every other thread of a long-lived
process) never changes namespace.

``Netns.current()`` stands for the namespace of the calling thread: work runs inline,
without a helper thread (the fast path of a CNI executable, whose own namespace is
the host).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from typing import Any, Callable, Iterator, TypeVar

from .errors import NetnsNotFound, NetError

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc: ctypes.CDLL | None = None


def _libc_call(name: str, *args: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _unshare_net() -> None:
    """Move the calling thread into a new, empty network namespace."""
    if hasattr(os, "unshare"):  # Python >= 3.12
        os.unshare(CLONE_NEWNET)
    else:
        _libc_call("unshare", CLONE_NEWNET)


def on_thread(enter: Callable[[], None], what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` on a short-lived helper thread after ``enter()`` moved
    that thread (only it) into a namespace; return its result or re-raise its exception in
    the caller's thread. ``enter`` failing with OSError raises :class:`NetError` "cannot
    ``what``"."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            enter()
        except OSError as e:
            box["err"] = NetError(f"cannot {what}: {e.strerror}")
            return
        try:
            box["ok"] = fn(*args, **kwargs)
        except BaseException as e:  # re-raised in the caller's thread
            box["err"] = e

    t = threading.Thread(target=body, name="splice-netns", daemon=True)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["ok"]


def run_private(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on a helper thread inside a new, empty network namespace of its own
    (gone when the thread's last reference to it is), e.g. to let libnftables parse
    something without touching any real ruleset."""
    return on_thread(_unshare_net, "create a private network namespace", fn, *args, **kwargs)


_tl = threading.local()  # .cur: the fd of this thread's namespace under inline_switching; .broken


@contextlib.contextmanager
def inline_switching(fd: int) -> Iterator[None]:
    """On the calling thread, :meth:`Netns.run` enters other namespaces INLINE (``setns``
    there, ``fn``, ``setns`` back) instead of on a helper thread: for a long-lived worker
    thread that owns its namespace membership (the agent's), saving a thread start per
    namespace visit. ``fd`` is the namespace the thread is in now, kept open by the caller
    for the duration. Nested runs return to the namespace they left. If a return fails the
    thread is in the wrong namespace: every later :meth:`Netns.run` on it raises NetError
    (:func:`thread_broken` tells the owner to retire the thread)."""
    old = getattr(_tl, "cur", None)
    _tl.cur = fd
    try:
        yield
    finally:
        _tl.cur = old


def thread_broken() -> bool:
    """True when an inline return to a namespace failed on this thread (see
    :func:`inline_switching`): the thread must not do namespace work any more."""
    return bool(getattr(_tl, "broken", False))


def _run_inline(cur: int, fd: int, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        _setns(fd)
    except OSError as e:
        raise NetError(f"cannot {what}: {e.strerror}") from None
    _tl.cur = fd
    try:
        return fn(*args, **kwargs)
    finally:
        try:
            _setns(cur)
        except OSError as e:
            _tl.broken = True
            raise NetError(f"cannot return to the calling thread's network namespace: {e.strerror}") from None
        _tl.cur = cur


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, CLONE_NEWNET)
    else:
        _libc_call("setns", fd, CLONE_NEWNET)


class Netns:
    """A network namespace, held open by file descriptor (or the caller's own)."""

    __slots__ = ("path", "fd", "_owned", "_closed")

    def __init__(self, path: str | None, fd: int | None, owned: bool) -> None:
        self.path = path
        self.fd = fd
        self._owned = owned
        self._closed = False

    # -- constructors -------------------------------------------------------
    @classmethod
    def current(cls) -> "Netns":
        """The namespace of the calling thread; :meth:`run` executes inline."""
        return cls(None, None, False)

    @classmethod
    def open(cls, path: str) -> "Netns":
        """Open a namespace file (``/run/netns/x``, ``/proc/<pid>/ns/net``).

        Never creates anything: a missing path raises :class:`NetnsNotFound`.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NetnsNotFound(f"network namespace {path!r} does not exist") from None
        except OSError as e:
            raise NetnsNotFound(f"cannot open network namespace {path!r}: {e.strerror}") from None
        try:
            if not _is_netns_fd(fd):
                raise NetnsNotFound(f"{path!r} is not a network namespace")
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, True)

    @classmethod
    def from_fd(cls, fd: int, path: str | None = None) -> "Netns":
        """Wrap a namespace fd owned by the caller (it is not closed by :meth:`close`)."""
        return cls(path, fd, False)

    # -- identity -----------------------------------------------------------
    @property
    def is_current(self) -> bool:
        return self.fd is None and not self._closed

    def inode(self) -> tuple[int, int]:
        """(st_dev, st_ino) of the namespace: equal inodes mean the same namespace."""
        if self._closed:
            raise NetError("network namespace handle used after close()")
        if self.fd is None:
            st = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net")
        else:
            st = os.fstat(self.fd)
        return (st.st_dev, st.st_ino)

    def same_as(self, other: "Netns") -> bool:
        return self.inode() == other.inode()

    # -- work ---------------------------------------------------------------
    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` inside this namespace and return its result.

        Exceptions raised by ``fn`` propagate to the caller unchanged. A closed handle
        raises :class:`NetError` (it must never fall back to the caller's namespace).
        """
        if self._closed:
            raise NetError(f"network namespace handle {self.path or self!r} used after close()")
        if getattr(_tl, "broken", False):
            raise NetError("this thread could not return to its network namespace: it must not do namespace work")
        if self.fd is None:
            return fn(*args, **kwargs)
        fd = self.fd
        cur = getattr(_tl, "cur", None)
        if cur is not None:
            return _run_inline(cur, fd, f"enter network namespace {self.path or fd}", fn, *args, **kwargs)
        return on_thread(lambda: _setns(fd), f"enter network namespace {self.path or fd}", fn, *args, **kwargs)

    def close(self) -> None:
        """Release the handle (closing its fd when owned); any later :meth:`run` raises.
        ``Netns.current()`` stays usable: it holds nothing."""
        if self.fd is None and not self._owned:
            return  # current(): nothing to close
        if self._owned and self.fd is not None:
            os.close(self.fd)
        self.fd = None
        self._owned = False
        self._closed = True

    def __enter__(self) -> "Netns":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Netns({self.path or ('current' if self.fd is None else self.fd)!r})"


NSFS_MAGIC = 0x6E736673


def _is_netns_fd(fd: int) -> bool:
    """True when fd refers to a namespace inode (nsfs), not a plain file."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is the first word
    if _libc.fstatfs(fd, buf) != 0:
        return False
    f_type = int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], "little")
    if f_type != NSFS_MAGIC:
        return False
    # an nsfs file of another namespace type (mnt, pid, ...) is not a network namespace
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    return not target.startswith(("mnt:", "pid:", "uts:", "ipc:", "user:", "cgroup:", "time:"))
