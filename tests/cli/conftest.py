"""Fixtures of the operator CLI tests: ``.venv/bin/splice`` run as a user runs it, inside a
throwaway "host" namespace (``nsenter --net=``), with a temp config directory, result
cache and IPAM dataDir, and the venv's executables as the CNI path. Nothing of the
machine is touched; the kernel is read with ``ip -j``/``nft -j`` (the conformance oracle).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import Namespace, bin_dir, require_nft, require_tool


@dataclass
class Run:
    rc: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


@dataclass
class Cli:
    """``splice ...`` with this test's locations (and, with ``host``, inside it)."""

    root: Path
    host: Namespace | None = None

    @property
    def config_dir(self) -> Path:
        return self.root / "net.d"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    @property
    def flags(self) -> list[str]:
        return ["--config-dir", str(self.config_dir), "--cache-dir", str(self.cache_dir),
                "--cni-path", str(bin_dir())]

    def __call__(self, *argv: str, locations: bool = True, check: int | None = None, env: dict | None = None,
                 timeout: float = 60) -> Run:
        cmd = [str(bin_dir() / "splice"), *argv, *(self.flags if locations else [])]
        if self.host is not None:
            cmd = ["nsenter", f"--net={self.host.path}", *cmd]
        e = {k: v for k, v in os.environ.items() if k not in ("SPLICE_CONFIG_DIR", "SPLICE_CNI_CACHE_DIR", "CNI_PATH")}
        e.update({"SPLICE_AGENT_SOCKET": "off", **(env or {})})
        p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)
        r = Run(p.returncode, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr, f"a traceback reached the operator: {p.stderr}"
        if check is not None:
            assert r.rc == check, f"splice {' '.join(argv)}: exit {r.rc}, expected {check}\n{r.out}\n{r.err}"
        return r

    def create_bridge(self, name: str = "web", subnet: str = "10.98.0.0/24", *extra: str) -> Run:
        return self("net", "create", name, "--driver", "bridge", "--subnet", subnet, "-o", "bridge=sptcli0",
                    "-o", f"ipam.dataDir={self.ipam_dir}", *extra, check=0)

    def lease_rows(self, network: str) -> list[tuple]:
        db = self.ipam_dir / network / "store.db"
        if not db.exists():
            return []
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT container_id, ifname FROM lease").fetchall()
        finally:
            con.close()

    def drop_lease(self, network: str, cid: str) -> None:
        """An operator's mistake: a lease deleted behind splice's back."""
        con = sqlite3.connect(str(self.ipam_dir / network / "store.db"))
        try:
            con.execute("DELETE FROM lease WHERE container_id=?", (cid,))
            con.commit()
        finally:
            con.close()


@pytest.fixture
def cli_offline(tmp_path) -> Cli:
    """The CLI with temp locations, in the test's own namespace (commands that touch no
    kernel object: parsing, files, errors)."""
    return Cli(tmp_path)


@pytest.fixture
def cli(host_ns, tmp_path) -> Cli:
    """The CLI inside a throwaway host namespace, with temp locations."""
    require_tool("nsenter", "ip", "nft")
    require_nft(host_ns)
    return Cli(tmp_path, host_ns)


def run_root(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True)
