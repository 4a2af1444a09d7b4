"""Session fixtures that run real container clients against splice, each in a throwaway host.

Isolation (nothing here touches the machine's own interfaces, routes, sysctls or nftables):
- Each client runs inside its own throwaway "host" network namespace (``spt-<pid>-*``, from
  tests/conftest.py): podman and ctr are started with ``nsenter --net=<host>``, containerd too.
  The CNI plugins a client execs inherit that namespace, so the bridge, the host veths and any
  sysctl writes land there; the containers get fresh namespaces of their own.
- Private bridges and subnets (``spcb0`` 10.213.0.0/24 for podman, ``spcb1`` 10.213.1.0/24 for
  containerd), ``ipMasq: false``, splice-ipam ``dataDir`` in the fixture's temporary directory.
- Private state: podman reads ``CONTAINERS_CONF`` / ``CONTAINERS_STORAGE_CONF`` (graphroot,
  runroot, tmp dir, ``network_backend = "cni"``, ``network_config_dir``, ``cni_plugin_dirs``);
  containerd gets its own ``--config`` (root, state, gRPC/ttrpc sockets, opt dir; CRI disabled).
- containerd 1.6's ``ctr run --cni`` only reads the first file in /etc/cni/net.d and looks for
  plugins in /opt/cni/bin:/usr/lib/cni. Instead of writing there, every ``ctr run`` runs in a
  private mount namespace (``unshare --mount --propagation private``) in which our directories
  are bind-mounted over those paths (and over /var/lib/cni, libcni's cache); a path that does
  not exist is created inside an overlay of its nearest existing parent, so the machine's
  filesystem is not changed.
- Podman itself runs in the machine's mount namespace (as people run it), so what it writes
  outside its configured directories (libcni's cache in /var/lib/cni/results, the blob-info
  cache in /var/lib/containers/cache) and the cgroups both clients create are removed
  afterwards by a PathJanitor, which only removes what did not exist before.
- Only processes we started are stopped, by PID: the containerd daemon, and in teardown any
  leftover process whose command line names our private directory (conmon, shims).

The CNI plugins are reached through a pass-through logging wrapper (cniwrap.py), so a failing
test can show what the client sent and what splice answered.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from splice.conformance import oracle

from ..conftest import Namespace, _del_ns, _new_ns, bin_dir, require, require_root, require_tool
from . import cniwrap, hostenv, image

PID = os.getpid()
IMAGE = "localhost/splice-busybox:latest"

PODMAN_NET = f"spc-pod-{PID}"
PODMAN_BRIDGE = "spcb0"
PODMAN_SUBNET = "10.213.0.0/24"

CTR_NET = f"spc-ctr-{PID}"
CTR_BRIDGE = "spcb1"
CTR_SUBNET = "10.213.1.0/24"
CTR_NAMESPACE = f"spc{PID}"  # containerd namespace: also the containers' cgroup parent

CMD_TIMEOUT = 90  # seconds for one client command (they take ~0.1-1 s here)


def splice_conflist(name: str, bridge: str, subnet: str, data_dir: Path) -> dict:
    """A 1.0.0 conflist (podman 4.3 and containerd 1.6 reject 1.1.0 results)."""
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{
            "type": "splice-bridge",
            "bridge": bridge,
            "isGateway": True,
            "ipMasq": False,
            "ipam": {"type": "splice-ipam", "dataDir": str(data_dir), "ranges": [[{"subnet": subnet}]]},
        }],
    }


def machine_state() -> dict:
    """What a CNI bridge could change in the machine's own namespace besides links (read only)."""
    return {
        "sysctl": {k: oracle.sysctl(None, k) for k in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")},
        "routes": sorted((r.get("dst", ""), r.get("dev", "")) for r in oracle.routes(None)),
        "nft_tables": sorted((t["family"], t["name"]) for t in oracle.nft_objects(None, "table")),
    }


def _best_effort(fn, *args, **kwargs) -> None:
    """A teardown step that must not stop the steps after it (a hung client, a timeout)."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported, teardown goes on
        print(f"tests/clients teardown: {getattr(fn, '__name__', fn)} failed: {exc!r}")


def _require(*binaries: str) -> None:
    require_root()
    require_tool(*binaries)
    require(image.find_busybox() is not None, "a static busybox for the test image (Debian package busybox-static)")


NO_AGENT_SOCKET = "no-agent.sock"


def _install_plugins(cni_bin: Path, calls_log: Path) -> None:
    """splice-bridge and splice-ipam (behind the logging wrapper) in a private plugin dir."""
    real = {name: str(bin_dir() / name) for name in ("splice-bridge", "splice-ipam")}
    for path in real.values():
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{path} not installed (pip install -e .)")
    # no agent (a socket path nobody listens on): every call runs in-process and writes the
    # one-line "no splice agent" notice on stderr, which the clients must tolerate (they log it)
    cniwrap.install(cni_bin, real, calls_log, env={"SPLICE_AGENT_SOCKET": str(cni_bin / NO_AGENT_SOCKET)})


def _nofile_nproc() -> tuple[int, int]:
    """ulimits podman may set here (no CAP_SYS_RESOURCE on these VMs: stay within the hard limits)."""
    import resource

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else nofile
    nproc = 32768 if nproc == resource.RLIM_INFINITY or nproc > 32768 else nproc
    return nofile, nproc


@dataclass
class ClientEnv:
    """What the tests of one client need: its host namespace, network and splice's state."""

    host: Namespace
    base: Path
    network: str
    bridge: str
    subnet: str
    data_dir: Path
    calls_log: Path
    root_links_before: set[str] = field(default_factory=set)
    root_state_before: dict = field(default_factory=dict)
    calls_mark: int = 0  # calls before this index belong to earlier tests

    def mark(self) -> None:
        self.calls_mark = len(cniwrap.read_calls(self.calls_log))

    @property
    def ipam_conf(self) -> dict:
        return {"type": "splice-ipam", "dataDir": str(self.data_dir), "ranges": [[{"subnet": self.subnet}]]}

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    def calls(self) -> list[dict]:
        """The CNI calls made since the current test started (see ``mark``)."""
        return cniwrap.read_calls(self.calls_log)[self.calls_mark:]

    def describe_calls(self, cid: str | None = None) -> str:
        calls = self.calls()
        if cid is not None:
            calls = [c for c in calls if cid in c.get("env", {}).get("CNI_CONTAINERID", "")]
        return cniwrap.describe(calls)

    def calls_for(self, cid: str, command: str | None = None) -> list[dict]:
        return [c for c in self.calls() if c["env"].get("CNI_CONTAINERID") == cid
                and (command is None or c["env"].get("CNI_COMMAND") == command)]

    def assert_calls_ok(self, cids: list[str]) -> None:
        """Every call the client made (VERSION included) and every call for ``cids`` succeeded;
        every ADD answered a 1.0.0 result, as the 1.0.0 conflist asked."""
        calls = self.calls()
        bad = [c for c in calls if c["rc"] != 0]
        assert not bad, f"failed CNI calls:\n{cniwrap.describe(bad, skip_version=False)}"
        # ... although every call but VERSION wrote the no-agent line on stderr
        quiet = [c for c in calls if c["env"].get("CNI_COMMAND") != "VERSION"
                 and "no splice agent at " not in c["stderr"]]
        assert not quiet, f"calls without the no-agent notice:\n{cniwrap.describe(quiet, skip_version=False)}"
        for cid in cids:
            adds = self.calls_for(cid, "ADD")
            assert adds, f"no ADD for {cid}:\n{self.describe_calls()}"
            for c in adds:
                assert json.loads(c["stdout"]).get("cniVersion") == "1.0.0", cniwrap.describe([c])

    def leases(self) -> list[tuple[str, str]]:
        return hostenv.lease_rows(self.data_dir, self.network)

    def lease_addresses(self, cid: str, ifname: str = "eth0") -> list[str]:
        return hostenv.lease_addresses(self.ipam_conf, self.network, cid, ifname)

    def host_links(self) -> set[str]:
        return oracle.link_names(self.host.name)

    def assert_machine_untouched(self) -> None:
        """The machine's own namespace gained neither our bridge nor a host veth, and its
        forwarding sysctls and nftables tables are as they were."""
        new = oracle.link_names(None) - self.root_links_before
        ours = {n for n in new if n == self.bridge or n.startswith("veth")}
        assert not ours, f"links appeared in the machine's own namespace: {sorted(ours)}"
        assert machine_state() == self.root_state_before

    def assert_clean(self, cids: list[str]) -> None:
        """After removal: host keeps lo + bridge, no reservation, nothing in the machine's netns."""
        left = self.host_links() - {"lo", self.bridge}
        assert not left, f"links left in the host namespace: {left}\n{self.describe_calls()}"
        for cid in cids:
            veth = hostenv.host_veth_name(self.network, cid)
            assert veth not in self.host_links()
        leases = self.leases()
        assert not leases, f"splice-ipam reservations left: {leases}\n{self.describe_calls()}"
        assert not oracle.nft_map_elements(self.host.name)
        self.assert_machine_untouched()


def inet4(ip_o_addr: str) -> str:
    """The one IPv4 CIDR in ``ip -o -4 addr show eth0`` output (busybox or iproute2)."""
    found = [w[i + 1] for w in (line.split() for line in ip_o_addr.splitlines()) for i, t in enumerate(w)
             if t == "inet"]
    assert len(found) == 1, f"expected one IPv4 address in: {ip_o_addr!r}"
    return found[0]


def link_mac(ip_o_link: str) -> str:
    words = ip_o_link.split()
    return words[words.index("link/ether") + 1]


# --------------------------------------------------------------------------------- podman


@dataclass
class Podman(ClientEnv):
    env: dict = field(default_factory=dict)
    cgroup_parent: str = ""

    def __call__(self, *args: str, check: bool = True, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess:
        argv = ["nsenter", f"--net={self.host.path}", "podman", *args]
        p = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(
                f"{shlex.join(argv[2:])} failed ({p.returncode}):\n{p.stdout}{p.stderr}\n"
                f"CNI calls:\n{self.describe_calls()}"
            )
        return p

    def run_args(self, *args: str) -> list[str]:
        """``podman run`` arguments on our network (under our private cgroup parent)."""
        return ["run", f"--cgroup-parent={self.cgroup_parent}", "--network", self.network, *args]


@pytest.fixture(scope="session")
def podman():
    """A private podman 4.3 configuration (CNI backend) whose network is splice, in a throwaway host."""
    _require("podman", "conmon", "runc", "nsenter")
    base = Path(tempfile.mkdtemp(prefix="spc-podman-"))
    cgroup_parent = f"/spc-pod-{PID}"
    janitor = hostenv.PathJanitor(
        files=["/var/lib/containers/cache/blob-info-cache-v1.boltdb"],
        dirs=["/var/lib/containers/cache", "/var/lib/containers", "/var/lib/cni/results", "/var/lib/cni",
              *map(str, hostenv.cgroup_dirs(cgroup_parent)),
              *map(str, hostenv.cgroup_dirs("libpod_parent"))],
        owned_globs=[("/var/lib/cni/results", f"{PODMAN_NET}-*")],
    )
    host = None
    env = None
    try:
        host = _new_ns()
        for d in ("cni-bin", "net.d", "tmp", "run", "root", "ipam"):
            (base / d).mkdir()
        _install_plugins(base / "cni-bin", base / "cni-calls.jsonl")
        (base / "net.d" / f"{PODMAN_NET}.conflist").write_text(
            json.dumps(splice_conflist(PODMAN_NET, PODMAN_BRIDGE, PODMAN_SUBNET, base / "ipam"), indent=2))
        nofile, nproc = _nofile_nproc()
        (base / "containers.conf").write_text(f"""\
[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["{base}/cni-bin"]
network_config_dir = "{base}/net.d"
default_network = "{PODMAN_NET}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{base}/events.log"
tmp_dir = "{base}/tmp"
runtime = "runc"
""")
        # overlay cannot stack on overlayfs (a containerised CI): fall back to vfs there
        driver = "vfs" if hostenv.fs_type(base) == "overlay" else "overlay"
        (base / "storage.conf").write_text(f"""\
[storage]
driver = "{driver}"
runroot = "{base}/run"
graphroot = "{base}/root"
""")
        env = dict(os.environ, CONTAINERS_CONF=str(base / "containers.conf"),
                   CONTAINERS_STORAGE_CONF=str(base / "storage.conf"))
        env.pop("CONTAINER_HOST", None)
        pm = Podman(host=host, base=base, network=PODMAN_NET, bridge=PODMAN_BRIDGE, subnet=PODMAN_SUBNET,
                    data_dir=base / "ipam", calls_log=base / "cni-calls.jsonl",
                    root_links_before=oracle.link_names(None), root_state_before=machine_state(),
                    env=env, cgroup_parent=cgroup_parent)
        image.rootfs_tar(base / "rootfs.tar")
        pm("import", "-q", str(base / "rootfs.tar"), IMAGE)
        yield pm
    finally:
        if env is not None:
            _best_effort(subprocess.run, ["nsenter", f"--net={host.path}", "podman", "rm", "-af", "-t", "0"],
                         env=env, capture_output=True, timeout=120)
        hostenv.kill_pids(hostenv.pids_with_cmdline(str(base)))  # conmon left behind by a failure
        hostenv.umount_under(base)
        shutil.rmtree(base, ignore_errors=True)
        if host is not None:
            _del_ns(host)
        janitor.cleanup()


@pytest.fixture
def podman_clean(podman):
    """Per test: remove every container afterwards, even when the test failed half-way."""
    podman.mark()
    yield podman
    podman("rm", "-af", "-t", "0", check=False)


# ----------------------------------------------------------------------------- containerd


@dataclass
class Containerd(ClientEnv):
    socket: Path = Path()
    namespace: str = CTR_NAMESPACE
    view_script: str = ""
    snapshotter: str = "overlayfs"

    def ctr_argv(self, *args: str) -> list[str]:
        return ["ctr", "-a", str(self.socket), "-n", self.namespace, *args]

    def ctr(self, *args: str, check: bool = True, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess:
        p = subprocess.run(self.ctr_argv(*args), capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"ctr {shlex.join(args)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
        return p

    def cni_argv(self, *args: str) -> list[str]:
        """argv running ``ctr`` in the host namespace and in a private mount namespace where
        /etc/cni/net.d, the CNI_PATH dirs and /var/lib/cni are our directories."""
        return ["nsenter", f"--net={self.host.path}", "unshare", "--mount", "--propagation", "private",
                "sh", "-ec", self.view_script, "sh", *self.ctr_argv(*args)]

    def run_cni(self, cid: str, *cmd: str, log: Path) -> subprocess.Popen:
        """``ctr run --cni IMAGE cid cmd...`` in the foreground, as a background process: ctr
        itself runs ADD before starting the task, and DEL (without a netns) once it exits."""
        argv = self.cni_argv("run", "--cni", "--snapshotter", self.snapshotter,
                             "--fifo-dir", str(self.base / "fifo"), "--runc-root", str(self.base / "runc"),
                             IMAGE, cid, *cmd)
        with open(log, "wb") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def exec(self, cid: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.ctr("task", "exec", "--exec-id", f"x{os.urandom(4).hex()}", cid, *cmd, check=check)

    def remove_all(self) -> None:
        ids = self.ctr("containers", "list", "-q", check=False).stdout.split()
        for cid in ids:
            self.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
        for cid in ids:
            self.ctr("task", "delete", "-f", cid, check=False)
            self.ctr("containers", "delete", cid, check=False)


@pytest.fixture
def containerd_clean(containerd):
    """Per test: remove every container of our namespace afterwards, even after a failure."""
    containerd.mark()
    yield containerd
    _best_effort(containerd.remove_all)


def _view_script(base: Path, binds: list[tuple[Path, str, bool]]) -> str:
    """Shell run inside the private mount namespace before exec'ing ctr (see module doc).

    ``binds``: (our dir, path ctr uses, optional). A missing path is created inside an overlay
    of its nearest existing parent (fresh upper/work dirs per invocation, so concurrent ``ctr
    run``s do not share them); an optional bind that fails is skipped (the janitor then cleans
    what ctr writes there).
    """
    q = shlex.quote
    (base / "ovl").mkdir(exist_ok=True)
    lines: list[str] = []

    def emit(step: list[str], optional: bool) -> None:
        if optional:
            lines.append("( " + " && ".join(step) + " ) 2>/dev/null || true")
        else:
            lines.extend(step)

    # overlays first: an overlay mounted later on a parent would hide earlier binds below it
    overlaid: set[str] = set()
    for _src, target, optional in binds:
        if os.path.isdir(target):
            continue
        parent = os.path.dirname(target)
        while not os.path.isdir(parent):
            parent = os.path.dirname(parent)
        if parent == "/":
            raise RuntimeError(f"cannot provide {target}: no existing parent below /")
        step = []
        if parent not in overlaid:
            step += [f"d=$(mktemp -d {q(str(base / 'ovl'))}/XXXXXX)", 'mkdir "$d/u" "$d/w"',
                     f'mount -t overlay overlay -o "lowerdir={parent},upperdir=$d/u,workdir=$d/w" {q(parent)}']
            overlaid.add(parent)
        emit(step + [f"mkdir -p {q(target)}"], optional)
    for src, target, optional in binds:
        emit([f"mount --bind {q(str(src))} {q(target)}"], optional)
    lines.append('exec "$@"')
    return "\n".join(lines)


@pytest.fixture(scope="session")
def containerd():
    """A private containerd 1.6 daemon in a throwaway host, with the busybox image imported."""
    _require("containerd", "ctr", "runc", "containerd-shim-runc-v2", "nsenter", "unshare")
    base = Path(tempfile.mkdtemp(prefix="spc-ctd-"))
    janitor = hostenv.PathJanitor(
        dirs=["/run/containerd/s", "/run/containerd/fifo", "/run/containerd/runc", "/run/containerd",
              "/var/lib/cni/results", "/var/lib/cni", *map(str, hostenv.cgroup_dirs(CTR_NAMESPACE))],
        owned_globs=[("/var/lib/cni/results", f"{CTR_NET}-*")],
    )
    host = None
    proc = None
    cd = None
    try:
        host = _new_ns()
        for d in ("root", "state", "opt", "net.d", "cni-bin", "cni-cache", "ipam", "fifo", "runc"):
            (base / d).mkdir()
        _install_plugins(base / "cni-bin", base / "cni-calls.jsonl")
        (base / "net.d" / f"10-{CTR_NET}.conflist").write_text(
            json.dumps(splice_conflist(CTR_NET, CTR_BRIDGE, CTR_SUBNET, base / "ipam"), indent=2))
        sock = base / "containerd.sock"
        (base / "config.toml").write_text(f"""\
version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
""")
        binds = [(base / "net.d", "/etc/cni/net.d", False), (base / "cni-bin", "/usr/lib/cni", False),
                 (base / "cni-cache", "/var/lib/cni", True)]
        if os.path.isdir("/opt/cni/bin"):  # first in ctr's fixed CNI_PATH: hide whatever is there
            binds.append((base / "cni-bin", "/opt/cni/bin", False))
        cd = Containerd(host=host, base=base, network=CTR_NET, bridge=CTR_BRIDGE, subnet=CTR_SUBNET,
                        data_dir=base / "ipam", calls_log=base / "cni-calls.jsonl",
                        root_links_before=oracle.link_names(None), root_state_before=machine_state(),
                        socket=sock, view_script=_view_script(base, binds),
                        snapshotter="native" if hostenv.fs_type(base) == "overlay" else "overlayfs")
        with open(base / "containerd.log", "wb") as log:
            proc = subprocess.Popen(
                ["nsenter", f"--net={host.path}", "containerd", "--config", str(base / "config.toml")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def up():
            if proc.poll() is not None:
                raise AssertionError(f"containerd exited: {(base / 'containerd.log').read_text()[-3000:]}")
            return cd.ctr("version", check=False, timeout=10).returncode == 0

        hostenv.wait_until(up, timeout=30, interval=0.1, what="containerd to serve")
        image.oci_archive(image.rootfs_tar(base / "rootfs.tar"), base / "image.tar", IMAGE)
        cd.ctr("images", "import", "--snapshotter", cd.snapshotter, str(base / "image.tar"))
        yield cd
    finally:
        if cd is not None and proc is not None and proc.poll() is None:
            _best_effort(cd.remove_all)
        if proc is not None:
            _best_effort(hostenv.stop_process, proc)
        hostenv.kill_pids(hostenv.pids_with_cmdline(str(base)))  # shims / ctr left behind by a failure
        hostenv.umount_under(base)
        shutil.rmtree(base, ignore_errors=True)
        if host is not None:
            _del_ns(host)
        janitor.cleanup()
