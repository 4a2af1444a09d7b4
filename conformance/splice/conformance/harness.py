"""Throwaway network namespaces for the conformance kit (standard library + iproute2 only).

Every namespace the kit makes is called ``spc-<pid>-<hex>`` and lives in a
:class:`NamespaceSet` whose ``close()`` (always called from a ``finally``) deletes it.
A check gets one "host" namespace, in which the plugin executables run (via
``nsenter --net=<host>``), and as many sandbox namespaces as it needs; the machine's
own interfaces, routes, sysctls and nftables ruleset are never touched.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass

PREFIX = "spc-"
NETNS_DIR = "/run/netns"


def _ip(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)} failed: {p.stderr.strip()}")
    return p


@dataclass(frozen=True)
class Namespace:
    """A named network namespace under /run/netns."""

    name: str

    @property
    def path(self) -> str:
        return f"{NETNS_DIR}/{self.name}"

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def nsenter(self) -> list[str]:
        """argv prefix running a command inside this namespace."""
        return ["nsenter", f"--net={self.path}"]

    def sh(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        p = subprocess.run([*self.nsenter(), *argv], capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {self.name} failed: {(p.stderr or p.stdout).strip()}")
        return p

    def delete(self) -> None:
        if self.exists():
            _ip("netns", "del", self.name, check=False)


def new_name() -> str:
    return f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


def create() -> Namespace:
    ns = Namespace(new_name())
    _ip("netns", "add", ns.name)
    _ip("-n", ns.name, "link", "set", "lo", "up")
    return ns


class NamespaceSet:
    """Namespaces made for one check; ``close()`` deletes every one of them."""

    def __init__(self) -> None:
        self.made: list[Namespace] = []

    def new(self) -> Namespace:
        ns = create()
        self.made.append(ns)
        return ns

    def close(self) -> None:
        for ns in reversed(self.made):
            try:
                ns.delete()
            except Exception:  # noqa: BLE001 - best effort, keep deleting the others
                pass
        self.made.clear()

    def __enter__(self) -> "NamespaceSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> list[str]:
    """Delete ``spc-<pid>-*`` namespaces whose creating process is gone (a killed kit run)."""
    removed = []
    try:
        entries = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.startswith(PREFIX):
            continue
        parts = entry[len(PREFIX):].split("-")
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        pid = int(parts[0])
        if pid != os.getpid() and not _alive(pid):
            _ip("netns", "del", entry, check=False)
            removed.append(entry)
    return removed
