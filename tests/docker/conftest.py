"""Session fixtures: one private dockerd 20.10 per session and the ``splice driver`` it calls.

See harness.py for how both are kept away from the machine's own network and Docker. The tests
talk to dockerd with /usr/bin/docker and read the kernel only with ``ip -j`` / ``nft -j`` run in
the throwaway host namespace (splice.conformance.oracle).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from splice.conformance import oracle

from ..clients import hostenv, image
from ..conftest import Namespace, _del_ns, _new_ns, bin_dir, require, require_root, require_tool
from .harness import DOCKER, DOCKERD, Dockerd, Driver, Holder, cgroup_pids

PID = os.getpid()
IMAGE = "splice-busybox:latest"
SLEEP = ("sleep", "3600")


# Names of what dockerd or splice would make if they ran in the machine's own namespace: the
# check looks at these only, so unrelated activity elsewhere on the machine cannot fail it.
OUR_LINK_PREFIXES = ("br-", "veth", "sp", "docker")
OUR_NFT_TABLE_MARKERS = ("splice", "docker", "DOCKER")


def machine_state() -> dict:
    """What dockerd or the driver could change in the machine's own namespace (read only)."""
    links = {n for n in oracle.link_names(None) if n.startswith(OUR_LINK_PREFIXES)}
    return {
        "links": sorted(links),
        "sysctl": {k: oracle.sysctl(None, k) for k in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                                                       "net.ipv4.conf.all.route_localnet")
                   if os.path.exists("/proc/sys/" + k.replace(".", "/"))},  # the UML guest has no IPv6
        "routes": sorted((r.get("dst", ""), r.get("dev", "")) for r in oracle.all_routes(None)
                         if r.get("dev") in links or r.get("dst", "").startswith("10.214.")),
        "nft_tables": sorted((t["family"], t["name"]) for t in oracle.nft_objects(None, "table")
                             if any(m in t["name"] for m in OUR_NFT_TABLE_MARKERS)),
        "docker_plugins": sorted(os.listdir("/run/docker/plugins")) if os.path.isdir("/run/docker/plugins") else None,
    }


def _best_effort(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported, teardown goes on
        print(f"tests/docker teardown: {getattr(fn, '__name__', fn)} failed: {exc!r}")


def require_docker() -> None:
    require_root()
    require_tool("nsenter", "unshare", "ip", "nft", "containerd", "runc")
    require(os.access(DOCKERD, os.X_OK) and os.access(DOCKER, os.X_OK),
            f"{DOCKERD} and {DOCKER} (Debian package docker.io 20.10; scripts/setup.sh installs it)")
    require(image.find_busybox() is not None, "a static busybox for the test image (Debian package busybox-static)")


def splice_driver_available() -> tuple[bool, str]:
    splice = bin_dir() / "splice"
    if not os.access(splice, os.X_OK):
        return False, f"{splice} not installed (pip install -e .)"
    p = subprocess.run([str(splice), "driver", "--help"], capture_output=True, text=True, timeout=60)
    return p.returncode == 0, (p.stdout + p.stderr).strip()[-300:]


@dataclass
class DockerEnv:
    """What the tests need: the host namespace, dockerd, the driver and the session's bookkeeping."""

    host: Namespace
    base: Path
    holder: Holder
    dockerd: Dockerd
    cgroup_parent: str
    driver: Driver | None = None
    machine_before: dict = field(default_factory=dict)
    driver_mark: int = 0

    # ---- docker CLI
    def __call__(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess:
        p = self.dockerd.cli(*args, check=False, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({p.returncode}):\n{p.stdout}{p.stderr}"
                                 f"\n--- splice driver log:\n{self.driver_log()}")
        return p

    def driver_log(self) -> str:
        return self.driver.calls_since(self.driver_mark) if self.driver else "(no driver)"

    def inspect(self, name: str) -> dict:
        return json.loads(self("inspect", name).stdout)[0]

    def net_inspect(self, name: str) -> dict:
        return json.loads(self("network", "inspect", name).stdout)[0]

    def network_create(self, name: str, *opts: str, driver: str = "splice-bridge",
                       ipam: str | None = "splice-bridge") -> str:
        args = ["network", "create", "-d", driver, *(["--ipam-driver", ipam] if ipam else []), *opts, name]
        return self(*args).stdout.strip()

    def run(self, name: str, network: str | None, *opts: str, cmd: tuple[str, ...] = SLEEP) -> str:
        net = ["--network", network] if network else []
        return self("run", "-d", "--name", name, *net, *opts, IMAGE, *cmd).stdout.strip()

    def exec(self, name: str, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return self("exec", name, *cmd, check=check, timeout=timeout)

    def container_ip(self, name: str, network: str) -> str:
        return self.inspect(name)["NetworkSettings"]["Networks"][network]["IPAddress"]

    def ping(self, name: str, address: str, count: int = 1) -> bool:
        # -w: one echo a second until a reply or 6 s (a first reply lost on a loaded machine)
        return self.exec(name, "ping", "-c", str(count), "-W", "2", "-w", "6", address, check=False).returncode == 0

    def remove_all(self) -> None:
        """Every container, then every network that is not built in (needs the driver up)."""
        ids = self("ps", "-aq", check=False).stdout.split()
        if ids:
            self("rm", "-f", *ids, check=False)
        nets = self("network", "ls", "-q", "--filter", "type=custom", check=False).stdout.split()
        for n in nets:
            self("network", "rm", n, check=False, timeout=30)

    # ---- kernel oracle (host namespace)
    def links(self) -> set[str]:
        return oracle.link_names(self.host.name)

    def link(self, name: str) -> dict | None:
        return oracle.link(self.host.name, name)

    def nft_elements(self) -> list:
        return oracle.nft_map_elements(self.host.name)

    def leftovers(self, allow_links: set[str] = frozenset()) -> dict:
        """What is left in the host namespace besides ``lo`` (and ``allow_links``)."""
        left = {}
        links = self.links() - {"lo"} - set(allow_links)
        if links:
            left["links"] = sorted(links)
        addrs = [f"{a['local']}/{a['prefixlen']} on {item['ifname']}"
                 for item in oracle.ip_json(self.host.name, "addr", "show")
                 if item["ifname"] != "lo" and item["ifname"] not in allow_links
                 for a in item.get("addr_info", []) if not (a.get("family") == "inet6" and a.get("scope") == "link")]
        if addrs:
            left["addresses"] = addrs
        elems = self.nft_elements()
        if elems:
            left["nft elements"] = elems
        routes = [r for r in oracle.all_routes(self.host.name) if r.get("dev") not in allow_links]
        if routes:
            left["routes"] = routes
        return left

    def assert_clean(self, allow_links: set[str] = frozenset(), timeout: float = 0.0) -> None:
        """Leak check: nothing of ours in the host namespace, none in the machine's."""
        if timeout:
            try:
                hostenv.wait_until(lambda: not self.leftovers(allow_links), timeout=timeout, what="a clean host namespace")
            except AssertionError:
                pass
        left = self.leftovers(allow_links)
        assert not left, f"left in the host namespace {self.host.name}: {left}\n--- driver log:\n{self.driver_log()}"
        assert self("ps", "-aq").stdout.split() == []
        self.assert_machine_untouched()

    def assert_machine_untouched(self) -> None:
        """The machine's own namespace is as the session found it (see machine_state)."""
        now = machine_state()
        # a key that appeared meanwhile is a module loaded (ipv6 in the UML guest), not a change
        now["sysctl"] = {k: v for k, v in now["sysctl"].items() if k in self.machine_before["sysctl"]}
        assert now == self.machine_before

    # ---- addresses
    @staticmethod
    def gateway(subnet: str) -> str:
        return str(next(ipaddress.ip_network(subnet).hosts()))


@pytest.fixture(scope="session")
def docker_env():
    """A private dockerd 20.10 in a throwaway host namespace + private mount namespace, with the
    busybox image ``splice-busybox:latest`` imported (no registry)."""
    require_docker()
    # short (not $TMPDIR): --exec-root holds containerd's unix sockets (108-byte limit)
    base = Path(tempfile.mkdtemp(prefix="spd-", dir="/tmp" if os.path.isdir("/tmp") else None))
    cgroup_parent = f"/spd-{PID}"
    janitor = hostenv.PathJanitor(dirs=[str(d) for d in hostenv.cgroup_dirs(cgroup_parent)])
    host = holder = dockerd = None
    env = None
    try:
        machine_before = machine_state()
        host = _new_ns()
        holder = Holder(base, host.path)
        holder.start()
        storage = "vfs" if hostenv.fs_type(base) == "overlay" else "overlay2"
        dockerd = Dockerd(holder, base, cgroup_parent, storage)
        dockerd.start(timeout=60)
        env = DockerEnv(host=host, base=base, holder=holder, dockerd=dockerd, cgroup_parent=cgroup_parent,
                        machine_before=machine_before)
        env("import", str(image.rootfs_tar(base / "rootfs.tar")), IMAGE)
        yield env
    finally:
        if env is not None and dockerd.running():
            _best_effort(env.remove_all)
        if dockerd is not None:
            _best_effort(dockerd.stop)
        if env is not None and env.driver is not None:
            _best_effort(env.driver.stop)
        # containers a failed run left (live-restore keeps them past dockerd), then shims
        hostenv.kill_pids(cgroup_pids(cgroup_parent))
        hostenv.kill_pids(hostenv.pids_with_cmdline(str(base)))
        if holder is not None:
            _best_effort(holder.stop)
        hostenv.umount_under(base)
        shutil.rmtree(base, ignore_errors=True)
        if host is not None:
            _del_ns(host)
        for _ in range(20):  # a killed task leaves its cgroup busy for a moment
            janitor.cleanup()
            if not any(d.exists() for d in hostenv.cgroup_dirs(cgroup_parent)):
                break
            time.sleep(0.1)


@pytest.fixture(scope="session")
def driver_session(docker_env):
    """``splice driver`` for the session (restartable through ``docker_env.driver``)."""
    ok, out = splice_driver_available()
    require(ok, f"`splice driver` (the Docker remote driver daemon, issue 11): {out}")
    docker_env.driver = Driver(docker_env.holder, docker_env.base, str(bin_dir() / "splice"))
    docker_env.driver.start()
    yield docker_env.driver
    # stopped by docker_env's teardown, after dockerd removed what it could through it


@pytest.fixture
def dk(docker_env, driver_session):
    """Per test: the driver running; afterwards every container and network removed (a test that
    passed must already have left nothing: it calls ``dk.assert_clean()`` itself)."""
    env = docker_env
    if not env.driver.running():
        env.driver.start()
    if not env.dockerd.running():
        env.dockerd.start(timeout=60)
    env.driver_mark = env.driver.log_size()
    yield env
    if env.driver.extra_env:  # a failpoint test: back to a plain driver
        env.driver.extra_env = {}
        _best_effort(env.driver.stop)
    if not env.driver.running():
        _best_effort(env.driver.start)
    if not env.dockerd.running():
        _best_effort(env.dockerd.start, timeout=60)
    _best_effort(env.remove_all)
