"""A throwaway etcd cluster for the cluster-store tests: N members (Debian's etcd-server),
each in a network namespace of its own on a bridge in an "underlay" namespace, plus a
"client" namespace on the same bridge where the tests' etcd clients run.

Addresses are 10.231.0.0/24, inside those namespaces only (never the machine's own
interfaces); data directories live in the test's tmp directory; members are started and
stopped by PID (no name-based kills). Every etcd call of the tests must run in the client
namespace: :meth:`EtcdCluster.run` (the conftest runs each test body through it), since a
socket made in the root namespace would route 10.231.0.x to the machine's default route.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

from splice.libnet.netns import Netns

NET = "10.231.0"
CLIENT_IP = f"{NET}.100"
CLIENT2_IP = f"{NET}.101"
CLIENT_PORT = 2379
PEER_PORT = 2380


def _ip(*argv: str) -> None:
    p = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {p.stderr.strip()}")


class Member:
    def __init__(self, cluster: "EtcdCluster", index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"m{index}"
        self.ip = f"{NET}.{index}"
        self.ns = f"{cluster.prefix}m{index}"
        self.data_dir = cluster.workdir / self.name
        self.log = cluster.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.is_cut = False

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{CLIENT_PORT}"

    def argv(self) -> list[str]:
        peers = ",".join(f"m{i}=http://{NET}.{i}:{PEER_PORT}" for i in range(1, self.cluster.size + 1))
        return [
            "nsenter", f"--net=/run/netns/{self.ns}", self.cluster.etcd,
            "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", f"http://{self.ip}:{PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{self.ip}:{PEER_PORT}",
            "--initial-cluster", peers, "--initial-cluster-state", "new",
            "--initial-cluster-token", self.cluster.token,
            # fast elections: the members share one machine, a round trip is ~0.1 ms
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-level", "warn",
        ]

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already runs"
        with open(self.log, "ab") as log:
            # nsenter execs etcd: the Popen pid is etcd's
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID (a crash)."""
        if self.running:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.running:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def cut(self) -> None:
        """Partition: the member's port on the underlay bridge goes down (no RST, timeouts)."""
        _ip("-n", self.cluster.underlay, "link", "set", f"p{self.index}", "down")
        self.is_cut = True

    def heal(self) -> None:
        if self.is_cut:
            _ip("-n", self.cluster.underlay, "link", "set", f"p{self.index}", "up")
            self.is_cut = False


class EtcdCluster:
    def __init__(self, workdir: Path, size: int = 3, etcd: str = "/usr/bin/etcd") -> None:
        self.workdir = Path(workdir)
        self.size = size
        self.etcd = etcd
        self.prefix = f"spt-{os.getpid()}-{secrets.token_hex(2)}"
        self.underlay = f"{self.prefix}u"
        self.client_ns = f"{self.prefix}c"     # the tests' etcd clients (CLIENT_IP)
        self.client2_ns = f"{self.prefix}d"    # a second host (CLIENT2_IP), to cut one off
        self.token = f"splice-test-{secrets.token_hex(4)}"
        self.members = [Member(self, i) for i in range(1, size + 1)]
        self._made: list[str] = []
        self._client: Netns | None = None
        self._client2: Netns | None = None
        self.client_cut = False

    # -- namespaces ----------------------------------------------------------------------
    def _ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _port(self, ns: str, port: str, address: str) -> None:
        _ip("-n", self.underlay, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("-n", self.underlay, "link", "set", port, "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")

    def setup(self) -> None:
        self._ns(self.underlay)
        _ip("-n", self.underlay, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.underlay, "link", "set", "br0", "up")
        for m in self.members:
            self._ns(m.ns)
            self._port(m.ns, f"p{m.index}", m.ip)
        self._ns(self.client_ns)
        self._port(self.client_ns, "pc", CLIENT_IP)
        self._client = Netns.open(f"/run/netns/{self.client_ns}")
        self._ns(self.client2_ns)
        self._port(self.client2_ns, "pd", CLIENT2_IP)
        self._client2 = Netns.open(f"/run/netns/{self.client2_ns}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for m in self.members:
            m.start()
        self.wait_healthy()

    def close(self) -> None:
        for m in self.members:
            m.kill()
        for ns in (self._client, self._client2):
            if ns is not None:
                ns.close()
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._made.clear()

    # -- use -----------------------------------------------------------------------------
    @property
    def cut_any(self) -> bool:
        return self.client_cut or any(m.is_cut for m in self.members)

    def member(self, url: str) -> Member:
        return next(m for m in self.members if m.url == url)

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    def run(self, fn, *args, **kwargs):
        """``fn`` on a thread inside the client namespace (threads it starts stay there)."""
        return self._client.run(fn, *args, **kwargs)

    def run2(self, fn, *args, **kwargs):
        """``fn`` inside the second client namespace (another host, reachable while the
        first is cut off)."""
        return self._client2.run(fn, *args, **kwargs)

    def cut_client(self, cut: bool = True) -> None:
        """Cut the first client namespace off the underlay (the cluster itself stays whole)."""
        _ip("-n", self.underlay, "link", "set", "pc", "down" if cut else "up")
        self.client_cut = cut

    def client(self, endpoints=None, **kw):
        from splice.ipam.cluster.etcd import Etcd

        return Etcd(endpoints or self.endpoints, **kw)

    def wait_healthy(self, timeout: float = 30.0) -> float:
        """Until every running member answers a linearizable read; the seconds it took."""
        from splice.ipam.cluster.errors import ClusterError

        t0 = time.monotonic()

        def probe() -> None:
            for m in self.members:
                if not m.running:
                    continue
                c = self.client([m.url], timeout=1.0)
                try:
                    while True:
                        try:
                            c.range("/health-probe", retry_for=0.5)
                            break
                        except ClusterError:
                            if not m.running:
                                raise RuntimeError(f"etcd {m.name} exited: {m.log.read_text()[-2000:]}")
                            if time.monotonic() - t0 > timeout:
                                raise
                            time.sleep(0.05)
                finally:
                    c.close()

        self.run(probe)
        return time.monotonic() - t0

    def restore(self) -> None:
        """After a test that broke things: every member up, linked and healthy."""
        if self.client_cut:
            self.cut_client(False)
        for m in self.members:
            m.heal()
            if not m.running:
                m.start()
        self.wait_healthy()
