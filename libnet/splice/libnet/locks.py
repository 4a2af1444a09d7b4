"""Host-wide advisory locks on a link of one network namespace (flock on a small file).

Some decisions need to know that no other process is half-way through a change of a shared
link (a bridge, a VLAN sub-interface): GC must not take a port another ADD is still
tagging, a rollback must not remove a gateway address another ADD has just seen. Such
code holds :func:`link_lock` shared while it changes things and exclusive while it
decides; the kernel releases the lock of a process that dies, so a crashed holder never
blocks anyone, and what it left behind is then fair game.

Keyed by the network namespace of the calling thread (its inode) and the link name, so
links of the same name in different namespaces do not contend. The files live in
``/run/splice/locks`` (``SPLICE_LOCK_DIR`` overrides), mode 0700, and are never deleted
(deleting a lock file races with its next user); one per (namespace, link) ever used.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from typing import Iterator

from .errors import TryAgain

DEFAULT_DIR = "/run/splice/locks"
TIMEOUT = 10.0


def _dir() -> str:
    d = os.environ.get("SPLICE_LOCK_DIR") or DEFAULT_DIR
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def _path(name: str) -> str:
    st = os.stat("/proc/thread-self/ns/net")
    safe = "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in name)
    return os.path.join(_dir(), f"{st.st_dev:x}-{st.st_ino:x}-{safe}")


@contextlib.contextmanager
def link_lock(name: str, *, exclusive: bool = False, timeout: float = TIMEOUT) -> Iterator[None]:
    """Hold the lock of link ``name`` in the calling thread's namespace; :class:`TryAgain`
    when it cannot be had within ``timeout`` seconds."""
    fd = os.open(_path(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            deadline = time.monotonic() + timeout
            delay = 0.001
            while True:
                time.sleep(delay)
                try:
                    fcntl.flock(fd, op | fcntl.LOCK_NB)
                    break
                except OSError as e2:
                    if e2.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                if time.monotonic() > deadline:
                    raise TryAgain(f"link {name!r} is locked by another operation for more than {timeout:g} s") from None
                delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)  # releases the lock
