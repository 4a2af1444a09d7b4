"""Shared fixtures: throwaway network namespaces, the installed executables, leak checks.

Every namespace a test makes is called ``spt-<random>`` and deleted by the fixture that
made it, so nothing touches the machine's own interfaces, routes, sysctls or nftables.
A "host" is itself such a namespace: the CNI executables run inside it (via nsenter).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from splice.conformance import oracle
from splice.conformance.runtime import Runtime

REPO = Path(__file__).resolve().parent.parent
NS_PREFIX = "spt-"
IS_ROOT = os.geteuid() == 0


def bin_dir() -> Path:
    """Directory holding the installed splice-* executables (the venv running pytest)."""
    return Path(sys.executable).parent


# -- prerequisites: one policy -------------------------------------------------------------
# SPLICE_STRICT=1 (set by scripts/test.sh, hence by CI via .ci/run): a missing prerequisite
# (root, a Python module, a usable nft, a tool, IPv6, the reference plugins) FAILS the test
# that needs it, so a CI machine that lacks one cannot go green by skipping. Unset (a
# developer's plain `pytest`), the same tests skip with the same message.
STRICT = os.environ.get("SPLICE_STRICT", "") not in ("", "0")


def require(condition: object, what: str) -> None:
    """Stop the test unless ``condition`` holds: skip it, or fail it under SPLICE_STRICT=1.
    ``what`` names the missing prerequisite and how to get it."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"missing prerequisite (SPLICE_STRICT=1 makes this a failure): {what}", pytrace=False)
    pytest.skip(f"missing prerequisite: {what} (SPLICE_STRICT=1 would fail)")


def require_root() -> None:
    require(IS_ROOT, "root (network namespaces): run as root, e.g. scripts/test.sh")


def require_tool(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    require(not missing, f"tool(s) not on PATH: {', '.join(missing)} (scripts/setup.sh installs them)")


def require_module(name: str):
    """``import name`` (the module), or stop the test (see :func:`require`)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        require(False, f"Python module {name} ({exc.__class__.__name__}: {exc})")


IPV6_MISSING = "IPv6 (/proc/sys/net/ipv6 is absent: kernel without IPv6 or ipv6.disable=1)"


def has_ipv6() -> bool:
    """For a test that checks IPv6 *as well*: True when the kernel has IPv6. Without it the
    test drops its IPv6 assertions and goes on (a local run), or fails under SPLICE_STRICT=1
    (those assertions never ran)."""
    if os.path.exists("/proc/sys/net/ipv6"):
        return True
    if STRICT:
        require(False, IPV6_MISSING)
    return False


def require_ipv6() -> None:
    """For a test about IPv6: skip it without IPv6 (fail under SPLICE_STRICT=1)."""
    require(os.path.exists("/proc/sys/net/ipv6"), IPV6_MISSING)


def nft_usable(ns: "Namespace") -> bool:
    return ns.sh("nft", "list", "ruleset", check=False).returncode == 0


def require_nft(ns: "Namespace") -> None:
    require(nft_usable(ns), f"a usable nft in namespace {ns.name} (nftables package, nf_tables kernel module)")


def pytest_runtest_setup(item):
    """Tests marked ``root`` need root even when no namespace fixture asks for it."""
    if item.get_closest_marker("root") is not None:
        require_root()


IN_VM = bool(os.environ.get("SPLICE_VM"))  # set inside the guest by scripts/vm-run.sh


def vlan_filtering_supported(ns: "Namespace") -> bool:
    """Probe (not a version check): can a bridge with vlan_filtering 1 be made in ``ns``?"""
    p = ns.sh("ip", "link", "add", "br-probe", "type", "bridge", "vlan_filtering", "1", check=False)
    if p.returncode == 0:
        ns.sh("ip", "link", "del", "br-probe")
    return p.returncode == 0


def missing_kernel_feature(what: str) -> None:
    """A ``needs_vm`` test whose feature the kernel lacks: skip on the host (scripts/test.sh
    runs it again in the UML guest), but fail in the guest, where a skip would hide that
    the test never ran."""
    if IN_VM:
        pytest.fail(f"kernel feature missing inside the VM guest: {what}")
    pytest.skip(f"kernel without {what} (runs in the VM: scripts/vm-run.sh)")


@dataclass
class Namespace:
    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def sh(self, *argv: str, check: bool = True, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        p = subprocess.run(
            ["nsenter", f"--net={self.path}", *argv], capture_output=True, text=True, input=input, timeout=timeout
        )
        if check and p.returncode != 0:
            raise AssertionError(f"{argv} in {self.name} failed: {p.stdout}{p.stderr}")
        return p

    def links(self) -> set[str]:
        return oracle.link_names(self.name)


def _new_ns() -> Namespace:
    name = f"{NS_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
    return Namespace(name)


def _del_ns(ns: Namespace) -> None:
    subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)


@pytest.fixture
def make_ns():
    """Factory of throwaway namespaces, all deleted after the test."""
    require_root()
    require_tool("ip", "nsenter")
    made: list[Namespace] = []

    def make() -> Namespace:
        ns = _new_ns()
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        _del_ns(ns)


@pytest.fixture
def host_ns(make_ns) -> Namespace:
    """A namespace standing for the host the CNI executables run on."""
    return make_ns()


@pytest.fixture
def sandbox_ns(make_ns) -> Namespace:
    """A namespace standing for a container."""
    return make_ns()


@dataclass
class CniResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self):
        return json.loads(self.stdout) if self.stdout.strip() else None


@dataclass
class CniRunner:
    """Runs one CNI executable the way a runtime does: env vars, config on stdin.

    The executable runs inside ``host`` (via nsenter) so its host-side work lands
    in the throwaway host namespace.
    """

    host: Namespace
    cni_path: list[str] = field(default_factory=lambda: [str(bin_dir())])

    def run(
        self,
        plugin: str,
        command: str,
        conf: dict | str | bytes,
        *,
        container_id: str | None = "c0ffee",
        netns: str | None = None,
        ifname: str | None = "eth0",
        args: str | None = None,
        extra_env: dict | None = None,
        timeout: float = 60,
    ) -> CniResult:
        rt = Runtime(cni_path=self.cni_path, prefix=["nsenter", f"--net={self.host.path}"], timeout=timeout)
        p = rt.run_raw(plugin, command, conf, container_id=container_id, netns=netns, ifname=ifname,
                       cni_args=args, extra_env=extra_env)
        return CniResult(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))


@pytest.fixture
def cni(host_ns) -> CniRunner:
    runner = CniRunner(host_ns)
    if os.path.isdir("/usr/lib/cni"):
        runner.cni_path.append("/usr/lib/cni")
    return runner


REFERENCE_PLUGINS = "/usr/lib/cni"


@pytest.fixture
def reference_plugins() -> str:
    require(os.access(os.path.join(REFERENCE_PLUGINS, "bridge"), os.X_OK),
            f"the Go reference plugins in {REFERENCE_PLUGINS} (Debian containernetworking-plugins)")
    return REFERENCE_PLUGINS


def pytest_sessionfinish(session, exitstatus):
    """Janitor: remove any namespace this test process made and did not delete."""
    if not IS_ROOT or not shutil.which("ip"):
        return
    for entry in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        if entry.startswith(f"{NS_PREFIX}{os.getpid()}-"):
            subprocess.run(["ip", "netns", "del", entry], capture_output=True)


def rtnl_in(ns: "Namespace", fn, *args):
    """``fn(rt, *args)`` with a splice Rtnl inside the test namespace ``ns`` (library tests)."""
    from splice.libnet import rtnl
    from splice.libnet.netns import Netns

    with Netns.open(ns.path) as n:
        return rtnl.run(n, fn, *args)


def only_lo(*nss: "Namespace") -> None:
    """Leak check: the namespaces hold nothing but ``lo``."""
    for ns in nss:
        assert ns.links() == {"lo"}, f"leftover links in {ns.name}: {ns.links()}"


def vlan_supported(ns: "Namespace") -> bool:
    """Probe (not a version check): can ``ip link add`` make an 802.1Q link in ``ns``?"""
    ns.sh("ip", "link", "add", "probe1", "type", "veth", "peer", "name", "probe2")
    try:
        return ns.sh("ip", "link", "add", "link", "probe1", "name", "probe0", "type", "vlan", "id", "5",
                     check=False).returncode == 0
    finally:
        ns.sh("ip", "link", "del", "probe1")


def make_switch(host_ns: "Namespace", make_ns, master: str, address: str) -> "Namespace":
    """A "switch" namespace on the other end of a veth wire: ``master`` (up) in the host,
    ``sw0`` with ``address``/24 in the switch."""
    sw = make_ns()
    host_ns.sh("ip", "link", "add", master, "type", "veth", "peer", "name", "sw0", "netns", sw.name)
    host_ns.sh("ip", "link", "set", master, "up")
    sw.sh("ip", "link", "set", "sw0", "up")
    sw.sh("ip", "addr", "add", f"{address}/24", "dev", "sw0")
    return sw
