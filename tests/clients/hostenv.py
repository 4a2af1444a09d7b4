"""Helpers shared by the client fixtures: leftovers outside the private dirs, processes, leases.

The clients write a few things outside any directory we can configure (podman 4.3's libcni cache
``/var/lib/cni/results``, its blob-info cache ``/var/lib/containers/cache``, containerd 1.6's
shim socket dir ``/run/containerd/s``, cgroups). ``PathJanitor`` records what existed before and
removes afterwards only what did not: files we name explicitly and directories once empty.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

CGROUP_ROOT = Path("/sys/fs/cgroup")


def wait_until(pred: Callable[[], object], timeout: float = 15.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``pred`` until it returns a truthy value; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def cgroup_dirs(name: str) -> list[Path]:
    """``<hierarchy>/<name>`` for every mounted cgroup hierarchy (v1 controllers and v2)."""
    name = name.strip("/")
    out = []
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure cgroup v2
        out.append(CGROUP_ROOT / name)
    elif CGROUP_ROOT.is_dir():
        for h in CGROUP_ROOT.iterdir():
            if h.is_dir() and not h.is_symlink():
                out.append(h / name)
    return out


class PathJanitor:
    """Remove afterwards what a client created outside our private directories.

    ``files``: paths removed at cleanup only if they did not exist before; ``dirs``: removed
    (bottom-up, only while empty; cgroup directories work the same way) if they did not exist
    before; ``owned_globs``: (dir, pattern) pairs of files that are ours by name, always removed.
    """

    def __init__(self, files: Iterable[str] = (), dirs: Iterable[str] = (),
                 owned_globs: Iterable[tuple[str, str]] = ()):
        self.files = [Path(p) for p in files]
        self.dirs = [Path(p) for p in dirs]
        self.owned_globs = [(Path(d), pat) for d, pat in owned_globs]
        self.existed = {p: os.path.lexists(p) for p in self.files + self.dirs}

    def cleanup(self) -> None:
        for d, pat in self.owned_globs:
            for f in d.glob(pat) if d.is_dir() else []:
                try:
                    f.unlink()
                except OSError:
                    pass
        for f in self.files:
            if not self.existed[f] and f.is_file():
                try:
                    f.unlink()
                except OSError:
                    pass
        # deepest first, so a parent is tried after its children
        for d in sorted(self.dirs, key=lambda p: len(p.parts), reverse=True):
            if not self.existed[d] and d.is_dir() and not d.is_symlink():
                _rmdir_tree_if_empty(d)


def _rmdir_tree_if_empty(top: Path) -> None:
    """rmdir every directory under ``top`` (and top) that holds no files; never unlinks files."""
    for root, dirs, _files in os.walk(top, topdown=False):
        try:
            os.rmdir(root)
        except OSError:
            pass


def pids_with_cmdline(marker: str) -> list[int]:
    """PIDs whose command line contains ``marker`` (a unique private path of ours)."""
    out = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            out.append(int(entry))
    return out


def kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process we started (by its PID), SIGKILL if it lingers, reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def fs_type(path: Path) -> str:
    """Filesystem type of the mount holding ``path`` (longest matching mount point)."""
    path = os.path.realpath(path)
    best, kind = "", ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mp = left.split()[4].replace("\\040", " ")
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, kind = mp, right.split()[0]
    return kind


def umount_under(base: Path) -> None:
    """Lazily unmount every mount point below ``base`` (deepest first)."""
    prefix = str(base).rstrip("/") + "/"
    targets = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(prefix):
                targets.append(mp)
    for mp in sorted(set(targets), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


def host_veth_name(network: str, cid: str, ifname: str = "eth0") -> str:
    """splice's deterministic host veth name (docs/design.md, "Kernel objects and owners")."""
    return "veth" + hashlib.sha256(f"{network}\0{cid}\0{ifname}".encode()).hexdigest()[:10]


def lease_rows(data_dir: Path, network: str) -> list[tuple[str, str]]:
    """(container_id, ifname) of every reservation in splice-ipam's store, read with sqlite3."""
    db = Path(data_dir) / network / "store.db"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return [(r[0], r[1]) for r in con.execute("SELECT container_id, ifname FROM lease")]
    finally:
        con.close()


def lease_addresses(ipam_conf: dict, network: str, cid: str, ifname: str = "eth0") -> list[str]:
    """Addresses (CIDR strings) splice-ipam holds for (cid, ifname), through its own API."""
    from splice.ipam.allocator import Ipam
    from splice.ipam.config import parse_ipam_config

    with Ipam(parse_ipam_config(ipam_conf, network)) as ipam:
        return [str(lease.address) for lease in ipam.get(cid, ifname)]
