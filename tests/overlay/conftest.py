"""Hosts of a VXLAN overlay simulated on one machine: each host is a network namespace with
``eth0`` on the underlay bridge of the tests/cluster etcd harness (10.231.0.0/24, inside
namespaces only), its own ``splice agent --node hostN --state-dir ... --socket ...`` run with
``nsenter --net=``, and its own IPAM ``dataDir`` (real hosts do not share a disk). Containers
are namespaces too; the CNI executable ``splice-vxlan`` runs inside the host namespace and
hands the call to that host's agent (SPLICE_AGENT_SOCKET)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ..cluster import conftest as cluster_conftest
from ..cluster.harness import _ip
from ..conftest import Namespace, bin_dir, require_tool

etcd_cluster = cluster_conftest.etcd_cluster  # the session's 3-member etcd (tests/cluster/harness.py)

SPLICE = str(bin_dir() / "splice")
NET = "ovl"
VNI = 42
CIDR = "10.244.0.0/16"


class Host:
    """One simulated host: namespace, underlay port, agent, CNI calls."""

    def __init__(self, overlay: "Overlay", index: int) -> None:
        self.o = overlay
        self.index = index
        self.node = f"host{index}"
        self.ns = Namespace(f"spt-{os.getpid()}-{secrets.token_hex(2)}h{index}")
        self.underlay_ip = f"10.231.0.{20 + index}"
        self.dir = overlay.tmp / self.node
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.socket = str(self.dir / "agent.sock")
        self.state = str(self.dir / "state")
        self.ipam = str(self.dir / "ipam")
        self.log = self.dir / "agent.log"
        self.proc: subprocess.Popen | None = None
        self.containers: dict[str, Namespace] = {}
        _ip("netns", "add", self.ns.name)
        overlay.namespaces.append(self.ns.name)
        _ip("-n", self.ns.name, "link", "set", "lo", "up")
        port = f"h{index}{secrets.token_hex(2)}"
        _ip("-n", overlay.cluster.underlay, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", self.ns.name)
        _ip("-n", overlay.cluster.underlay, "link", "set", port, "master", "br0", "up")
        _ip("-n", self.ns.name, "addr", "add", f"{self.underlay_ip}/24", "dev", "eth0")
        _ip("-n", self.ns.name, "link", "set", "eth0", "up")
        # a default route inside the host namespace only (the VTEP interface's default);
        # 10.231.0.254 is nobody: nothing leaves the underlay bridge
        _ip("-n", self.ns.name, "route", "add", "default", "via", "10.231.0.254")

    # -- agent ---------------------------------------------------------------------------
    def start_agent(self, timeout: float = 30.0) -> "Host":
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={self.ns.path}", SPLICE, "agent", "--node", self.node, "--state-dir", self.state,
             "--socket", self.socket, "--workers", "8", "-v"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "a"), cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent of {self.node} exited: {self.log.read_text()}")
            p = subprocess.run([SPLICE, "status", "--socket", self.socket], capture_output=True, timeout=10)
            if p.returncode == 0:
                return self
            time.sleep(0.05)
        raise AssertionError(f"agent of {self.node} did not come up: {self.log.read_text()}")

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # -- CNI -----------------------------------------------------------------------------
    cni_timeout = 60

    def plugin_dir(self) -> Path:
        """CNI_PATH, where ``splice-vxlan`` is."""
        return bin_dir()

    def config(self, **kw) -> dict:
        conf = {"cniVersion": "1.1.0", "name": NET, "type": "splice-vxlan", "vni": VNI, "clusterCIDR": CIDR,
                "subnetLen": 24, "ipMasq": True, "leaseTTL": 3,
                "etcd": {"endpoints": self.o.cluster.endpoints, "prefix": self.o.prefix},
                "ipam": {"type": "splice-ipam", "dataDir": self.ipam}}
        conf.update(kw)
        return conf

    def cni(self, command: str, cid: str = "", conf: dict | None = None, *, agent: bool = True,
            ifname: str = "eth0") -> tuple[int, dict | None, str]:
        plugins = self.plugin_dir()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_PATH": str(plugins),
               "SPLICE_AGENT_SOCKET": self.socket if agent else "off"}
        if cid:
            env.update(CNI_CONTAINERID=cid, CNI_IFNAME=ifname)
            if cid in self.containers:
                env["CNI_NETNS"] = self.containers[cid].path
        p = subprocess.run(["nsenter", f"--net={self.ns.path}", str(plugins / "splice-vxlan")],
                           input=json.dumps(conf or self.config()), env=env, capture_output=True, text=True,
                           timeout=self.cni_timeout)
        out = json.loads(p.stdout) if p.stdout.strip() else None
        return p.returncode, out, p.stderr

    def container(self, cid: str) -> Namespace:
        """The namespace of container ``cid`` (made at first use, removed with the overlay)."""
        if cid not in self.containers:
            name = f"{self.ns.name}-{cid[-6:]}"
            _ip("netns", "add", name)
            self.o.namespaces.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
            self.containers[cid] = Namespace(name)
        return self.containers[cid]

    def add(self, cid: str | None = None, conf: dict | None = None) -> tuple[str, dict]:
        cid = cid or f"c{self.index}-{secrets.token_hex(3)}"
        self.container(cid)
        rc, out, err = self.cni("ADD", cid, conf)
        assert rc == 0, (out, err, self.log.read_text()[-3000:])
        self.o.results[cid] = out
        return cid, out

    def delete(self, cid: str, conf: dict | None = None) -> None:
        conf = dict(conf or self.config())
        if cid in self.o.results:
            conf["prevResult"] = self.o.results[cid]
        rc, out, err = self.cni("DEL", cid, conf)
        assert rc == 0, (out, err)

    def address(self, cid: str) -> str:
        return self.o.results[cid]["ips"][0]["address"].split("/")[0]

    def sh(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        return self.ns.sh(*argv, **kw)


class Overlay:
    host_class: type = Host  # bench/overlay_scale.py runs its own hosts
    stop_signal = signal.SIGKILL  # how close() ends the agents

    def __init__(self, cluster, tmp: Path) -> None:
        self.cluster = cluster
        self.tmp = tmp
        self.prefix = f"/t-{secrets.token_hex(4)}"
        self.hosts: list[Host] = []
        self.namespaces: list[str] = []
        self.results: dict[str, dict] = {}

    def host(self, start: bool = True) -> Host:
        h = self.host_class(self, len(self.hosts) + 1)
        self.hosts.append(h)
        return h.start_agent() if start else h

    def close(self) -> None:
        for h in self.hosts:
            h.stop_agent(self.stop_signal)
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def overlay(etcd_cluster, tmp_path):
    require_tool("ping", "nsenter")
    tmp_path.chmod(0o700)
    o = Overlay(etcd_cluster, tmp_path)
    yield o
    o.close()
    if any(not m.running for m in etcd_cluster.members):
        etcd_cluster.restore()
