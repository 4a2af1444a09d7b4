"""Fixtures for end-to-end tests: the installed executables driven like libcni."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from splice.conformance import oracle
from splice.conformance.runtime import Runtime

from ..conftest import bin_dir

ALL_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def vt(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


@pytest.fixture
def ipam_dir(tmp_path) -> Path:
    d = tmp_path / "ipam"
    d.mkdir()
    return d


@pytest.fixture
def runtime(host_ns, tmp_path) -> Runtime:
    """A libcni-like runtime whose plugin execs run inside host_ns."""
    return Runtime(
        cni_path=[str(bin_dir()), "/usr/lib/cni"],
        cache_dir=str(tmp_path / "cache"),
        prefix=["nsenter", f"--net={host_ns.path}"],
    )


def bridge_conflist(ipam_dir: Path, version: str = "1.0.0", *, subnet: str = "10.77.0.0/24",
                    name: str = "spt-net", ipam_type: str = "splice-ipam", **bridge_opts) -> dict:
    plugin = {
        "type": "splice-bridge",
        "bridge": "sptbr0",
        "isGateway": True,
        "ipMasq": True,
        "ipam": {"type": ipam_type, "ranges": [[{"subnet": subnet}]], "dataDir": str(ipam_dir)},
    }
    plugin.update(bridge_opts)
    return {"cniVersion": version, "name": name, "plugins": [plugin]}


class Leaks:
    """After-test leak check: host keeps only lo (+ the bridges and extra links allowed),
    sandboxes only lo, no nft map elements, no IPAM reservation files holding leases."""

    def __init__(self, host_ns, allow: set[str]):
        self.host_ns = host_ns
        self.allow = set(allow)

    def assert_clean(self, sandboxes=(), ipam_dirs=(), network: str = "spt-net") -> None:
        host_links = oracle.link_names(self.host_ns.name) - {"lo"} - self.allow
        assert not host_links, f"links left in host: {host_links}"
        for sb in sandboxes:
            if sb is None:
                continue
            left = oracle.link_names(sb.name) - {"lo"}
            assert not left, f"links left in sandbox {sb.name}: {left}"
        elements = oracle.nft_map_elements(self.host_ns.name)
        assert not elements, f"nft elements left: {elements}"
        for d in ipam_dirs:
            assert count_leases(d, network) == 0, f"IPAM reservations left in {d}"


def count_leases(ipam_dir: Path, network: str) -> int:
    """Count reservations in the splice-ipam store (read with sqlite3 directly)."""
    import sqlite3

    total = 0
    netdir = Path(ipam_dir) / network
    if not netdir.exists():
        return 0
    for db in netdir.glob("*.db"):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
            for t in tables:
                if "lease" in t:
                    total += con.execute(f"select count(*) from {t}").fetchone()[0]
        finally:
            con.close()
    return total


@pytest.fixture
def leaks(host_ns):
    return Leaks(host_ns, allow={"sptbr0"})


def with_version(conflist: dict, version: str) -> dict:
    c = copy.deepcopy(conflist)
    c["cniVersion"] = version
    return c
