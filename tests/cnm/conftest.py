"""Fixtures of the CNM protocol tests: a real ``splice driver`` process inside a throwaway
"host" namespace, its plugin sockets in a tmp dir, and a Docker-like client.

The daemon runs under ``nsenter --net=<host ns>`` (the whole process lives there), with
``--plugins-dir``, ``--state-dir`` and ``--ipam-dir`` in the test's tmp dir: nothing of the
machine is touched. Kernel state is read only through ``splice.conformance.oracle``
(``ip -j`` / ``nft -j``), the independent oracle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from splice.conformance import oracle

from ..clients import hostenv
from ..conftest import Namespace, bin_dir, require_nft, require_tool
from .client import Plugin

NID = "445788ebb073b47f0bfc35f50a3343a2c2b2c3744833b1d2dbbf7b27f3737a2c"  # ids of the observed calls
NID2 = "0cde6f50c41bd9b482a7a83b5b72eee569089ac822b882f964262561218935c8"
EID1 = "25b10d8f1b1863bff9ca11e27d2a8f459cdf0c673a80121415a2eabbadc388d9"
EID2 = "4eb0f47693f36f735097560f70513d0c3eba34bee3f52da9c3d4aaba9496a70e"
EID3 = "6bc64a6963f527eef0cd619ca0d4f1390d4baaca65bd65c0965f5df8989eaec6"
SPACE = "SpliceLocal"
GW_TYPE = {"RequestAddressType": "com.docker.network.gateway"}
PORTS = [{"HostIP": "127.0.0.1", "HostPort": 18080, "HostPortEnd": 18080, "IP": "", "Port": 80, "Proto": 6}]
EXPOSED = [{"Port": 80, "Proto": 6}]


def _accepts(path: Path) -> bool:
    import socket

    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


@dataclass
class DriverProcess:
    host: Namespace
    root: Path
    env: dict = field(default_factory=dict)
    args: list = field(default_factory=list)
    proc: subprocess.Popen | None = None
    clients: list = field(default_factory=list)
    log_path: Path | None = None

    @property
    def plugins_dir(self) -> Path:
        return self.root / "plugins"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "ipam"

    def sock(self, name: str = "splice-bridge") -> str:
        return str(self.plugins_dir / f"{name}.sock")

    def start(self, wait_for: str = "splice.sock") -> "DriverProcess":
        self.log_path = self.root / f"driver-{int(time.monotonic() * 1000)}.log"
        argv = ["nsenter", f"--net={self.host.path}", str(bin_dir() / "splice"), "driver",
                "--plugins-dir", str(self.plugins_dir), "--state-dir", str(self.state_dir),
                "--ipam-dir", str(self.ipam_dir), "-v", *self.args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env})
        deadline = time.monotonic() + 15
        target = self.plugins_dir / wait_for
        while not _accepts(target):
            if self.proc.poll() is not None:
                raise AssertionError(f"splice driver exited with {self.proc.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"splice driver did not create {target} in 15 s: {self.log()}")
            time.sleep(0.02)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def client(self, name: str = "splice-bridge", timeout: float = 30.0) -> Plugin:
        c = Plugin(self.sock(name), timeout)
        self.clients.append(c)
        return c

    def stop(self, sig: int = signal.SIGTERM) -> int:
        for c in self.clients:
            c.close()
        self.clients.clear()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=20)
        self.proc = None
        return rc

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@pytest.fixture
def driver(host_ns, tmp_path):
    """A started ``splice driver`` in ``host_ns``; stopped (SIGTERM) after the test."""
    require_tool("nsenter", "ip", "nft")
    require_nft(host_ns)
    d = DriverProcess(host_ns, tmp_path).start()
    yield d
    d.stop()
    for s in ("splice-bridge", "splice-macvlan", "splice"):
        assert not os.path.exists(d.sock(s)), f"{s}.sock left behind after SIGTERM"


# -- Docker's side of a sequence ----------------------------------------------------------------
def create_network(c: Plugin, nid: str, subnet: str, *, gateway: str = "", generic: dict | None = None,
                   v6: str | None = None, internal: bool = False, space: str = SPACE) -> dict:
    """RequestPool + gateway RequestAddress (+ IPv6) + CreateNetwork, as dockerd does;
    returns {"pools": [PoolID...], "gateways": [...]}"""
    out = {"pools": [], "gateways": []}
    v4data, v6data = [], []
    for cidr, is6, gw, data in ((subnet, False, gateway, v4data), (v6, True, "", v6data)):
        if cidr is None:
            continue
        p = c.ok("IpamDriver.RequestPool", {"AddressSpace": space, "Options": {}, "Pool": cidr, "SubPool": "",
                                            "V6": is6})
        g = c.ok("IpamDriver.RequestAddress", {"Address": gw, "Options": GW_TYPE, "PoolID": p["PoolID"]})
        out["pools"].append(p["PoolID"])
        out["gateways"].append(g["Address"])
        data.append({"AddressSpace": space, "Gateway": g["Address"], "Pool": p["Pool"]})
    opts = {"com.docker.network.enable_ipv6": v6 is not None, "com.docker.network.generic": generic or {}}
    if internal:
        opts["com.docker.network.internal"] = True
    c.ok("NetworkDriver.CreateNetwork", {"IPv4Data": v4data, "IPv6Data": v6data, "NetworkID": nid, "Options": opts})
    return out


def delete_network(c: Plugin, nid: str, net: dict) -> None:
    for pid, gw in zip(net["pools"], net["gateways"]):
        c.ok("IpamDriver.ReleaseAddress", {"Address": gw.split("/")[0], "PoolID": pid})
        c.ok("IpamDriver.ReleasePool", {"PoolID": pid})
    c.ok("NetworkDriver.DeleteNetwork", {"NetworkID": nid})


def libnetwork_move_in(host: Namespace, src: str, sandbox: Namespace, ifname: str, addresses: list[str],
                       gateway: str | None = None) -> None:
    """What libnetwork does with Join's answer: move SrcName into the sandbox, rename it,
    address it, bring it up, add the default route."""
    host.sh("ip", "link", "set", src, "netns", sandbox.name)
    sandbox.sh("ip", "link", "set", src, "name", ifname)
    for a in addresses:
        sandbox.sh("ip", "addr", "add", a, "dev", ifname, *(["nodad"] if ":" in a else []))
    sandbox.sh("ip", "link", "set", ifname, "up")
    if gateway:
        sandbox.sh("ip", "route", "add", "default", "via", gateway)


def libnetwork_move_out(host: Namespace, sandbox: Namespace, ifname: str, src: str) -> None:
    """What libnetwork does when the sandbox releases the interface: down, renamed back to
    SrcName, moved back to the host namespace."""
    sandbox.sh("ip", "link", "set", ifname, "down")
    sandbox.sh("ip", "link", "set", ifname, "name", src)
    sandbox.sh("ip", "link", "set", src, "netns", host.name)


def owned_elements(ns: str) -> list:
    """nft set/map elements carrying an owner comment (what splice made for containers)."""
    return [(t, m, e) for t, m, e in oracle.nft_map_elements(ns) if oracle.element_parts(e)[2]]


def leases(ipam_dir: Path, space: str = SPACE) -> list:
    from splice.ipam.pools import PoolIpam

    with PoolIpam(str(ipam_dir)) as p:
        return [(pool.id, str(lease.address)) for pool in p.pools(space) for lease in p.leases(pool.id)]


def pools(ipam_dir: Path, space: str = SPACE) -> list:
    from splice.ipam.pools import PoolIpam

    with PoolIpam(str(ipam_dir)) as p:
        return [pool.id for pool in p.pools(space)]


def state_files(d: DriverProcess) -> list[str]:
    return sorted(str(p.relative_to(d.state_dir)) for p in d.state_dir.rglob("*.json"))


def assert_clean(d: DriverProcess) -> None:
    """Nothing leaked: links, addresses, nft elements, IPAM entries, state records."""
    ns = d.host.name
    assert oracle.link_names(ns) == {"lo"}, oracle.link_names(ns)
    assert oracle.addresses(ns) == [], oracle.addresses(ns)
    assert owned_elements(ns) == []
    assert pools(d.ipam_dir) == []
    assert state_files(d) == []


def wait_until(fn, timeout: float = 10.0, what: str = "condition") -> None:
    hostenv.wait_until(fn, timeout=timeout, interval=0.05, what=what)


def _del_ns_name(name: str) -> None:
    """Delete a namespace early (a vanished sandbox); the fixture's later delete is a no-op."""
    import subprocess

    subprocess.run(["ip", "netns", "del", name], check=True, capture_output=True)
