"""``splice install-cni`` installs a self-contained copy: the executables (in-process and
through an agent started from the copy) keep working where the checkout and its .venv are
invisible. And the agent's lock file: gone after a clean exit, a stale one taken over."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from splice.conformance import oracle
from splice.conformance.runtime import Runtime

from ..conftest import REPO, require_tool
from .conftest import SPLICE, Agent, agent_runtime, bridge_conflist

pytestmark = pytest.mark.root

CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def hidden_checkout(*argv: str, empty: str) -> list[str]:
    """``argv`` in a private mount namespace where the checkout (and the .venv inside it)
    is covered by an empty directory: what a moved or deleted checkout looks like."""
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", empty, str(REPO), *argv]


def required_top_levels() -> set[str]:
    """Top-level packages of the installed distributions splice's metadata requires."""
    import importlib.metadata as md

    out = set()
    for req in md.requires("splice") or []:
        if ";" in req:
            continue
        name = re.split(r"[\s<>=!~\[(]", req, maxsplit=1)[0]
        try:
            files = md.distribution(name).files or []
        except md.PackageNotFoundError:
            continue
        out |= {f.parts[0] for f in files if f.parts[0] != ".." and not f.parts[0].endswith(".dist-info")
                and f.parts[0] != "__pycache__"}
    return out


@pytest.fixture
def installed(tmp_path) -> Path:
    d = tmp_path / "opt-cni-bin"
    p = subprocess.run([SPLICE, "install-cni", "--dir", str(d)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(d / n) for n in ("splice-bridge", "splice-ipam", "splice-portmap", "splice-macvlan",
                                                    "splice-ipvlan", "splice-vxlan")] + \
        [str(d / ".splice" / "splice")]
    return d


def test_installed_files_name_nothing_of_the_checkout(installed):
    venv = os.path.dirname(os.path.dirname(SPLICE))
    for path in [*installed.iterdir(), installed / ".splice" / "splice"]:
        if path.is_file():
            text = path.read_text()
            assert str(REPO) not in text and venv not in text, (path, text)
    bundles = [p for p in (installed / ".splice").iterdir() if p.is_dir()]
    assert len(bundles) == 1
    assert (bundles[0] / "splice" / "plugins" / "agent" / "client.py").is_file()
    for dep in required_top_levels():  # whatever splice requires travels along
        assert (bundles[0] / dep).exists(), dep


def test_in_process_without_the_checkout(installed, host_ns, sandbox_ns, tmp_path, ipam_dir, leaks):
    require_tool("unshare", "mount")
    empty = tempfile.mkdtemp(prefix="spt-empty-")
    try:
        rt = Runtime(cni_path=[str(installed)], cache_dir=str(tmp_path / "cache"),
                     prefix=hidden_checkout("nsenter", f"--net={host_ns.path}", empty=empty),
                     extra_env={"PATH": CLEAN_PATH, "SPLICE_AGENT_SOCKET": str(tmp_path / "no-agent.sock")})
        # the cover works: the checkout is not visible to what runs under the prefix
        p = subprocess.run(hidden_checkout("ls", "-A", str(REPO), empty=empty), capture_output=True, text=True)
        assert p.returncode == 0 and p.stdout == "", p
        conf = bridge_conflist(ipam_dir, "1.0.0", isDefaultGateway=True)
        result = rt.add(conf, "ctr-moved", sandbox_ns.path)
        assert oracle.addresses(sandbox_ns.name, "eth0") == [result["ips"][0]["address"]]
        assert oracle.ping(sandbox_ns.name, "10.77.0.1")
        rt.check(conf, "ctr-moved", sandbox_ns.path)
        rt.delete(conf, "ctr-moved", sandbox_ns.path)
        assert rt.version("splice-ipam")["cniVersion"]
        leaks.assert_clean([sandbox_ns], [ipam_dir])
    finally:
        os.rmdir(empty)


def test_agent_from_the_copy_without_the_checkout(installed, make_ns, host_ns, sandbox_ns, tmp_path, ipam_dir, leaks):
    """`LIB/splice agent` (what contrib/systemd runs) serves the executables."""
    require_tool("unshare", "mount")
    empty = tempfile.mkdtemp(prefix="spt-empty-")
    agent_ns = make_ns()
    sock = str(tmp_path / "run" / "agent.sock")
    log = open(tmp_path / "agent.log", "w")
    proc = subprocess.Popen(hidden_checkout("nsenter", f"--net={agent_ns.path}", str(installed / ".splice" / "splice"),
                                            "agent", "--socket", sock, empty=empty),
                            stdout=subprocess.DEVNULL, stderr=log, env={"PATH": CLEAN_PATH})
    try:
        a = Agent(socket=sock, ns=agent_ns, log=tmp_path / "agent.log", proc=proc)
        deadline = time.monotonic() + 60
        while a.status() is None:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "agent.log").read_text()
            time.sleep(0.05)
        rt = agent_runtime(host_ns, tmp_path, installed, sock)
        rt.extra_env["PATH"] = CLEAN_PATH
        conf = bridge_conflist(ipam_dir, "1.0.0")
        plugin_conf = {"cniVersion": "1.0.0", "name": conf["name"], **conf["plugins"][0]}
        # a caller in another mount namespace (here: ours) is declined: its paths are not the agent's
        call = rt.call("splice-bridge", "ADD", plugin_conf, container_id="ctr-a", ifname="eth0")  # no CNI_NETNS
        assert json.loads(call.stdout)["code"] == 4 and "in another mount namespace" in call.stderr, call
        assert rt.call("splice-bridge", "VERSION", {"cniVersion": "1.0.0"}).stderr == ""  # VERSION: served
        # callers share the agent's mount namespace (the checkout hidden from them too)
        rt.prefix = ["nsenter", f"--mount=/proc/{proc.pid}/ns/mnt", f"--net={host_ns.path}"]
        call = rt.call("splice-bridge", "ADD", plugin_conf, container_id="ctr-a", netns=sandbox_ns.path, ifname="eth0")
        assert call.rc == 0 and call.stderr == "", call  # served by the agent: no "no agent" notice
        assert oracle.ping(sandbox_ns.name, "10.77.0.1")
        rt.delete(conf, "ctr-a", sandbox_ns.path)
        assert a.status()["served"] == 3  # VERSION, ADD, DEL
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        leaks.assert_clean([sandbox_ns], [ipam_dir])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        os.rmdir(empty)


# -- the lock file ------------------------------------------------------------------------------
def test_clean_exit_removes_socket_and_lock(agent):
    assert os.path.exists(agent.socket + ".lock")
    assert agent.stop() == 0
    assert not os.path.exists(agent.socket) and not os.path.exists(agent.socket + ".lock")


def test_killed_agent_leaves_stale_files_that_the_next_one_takes_over(start_agent, make_ns):
    first = start_agent()
    first.kill()  # SIGKILL: no clean-up
    assert os.path.exists(first.socket) and os.path.exists(first.socket + ".lock")
    second = start_agent(ns=first.ns, socket=first.socket)
    assert second.status()["pid"] == second.proc.pid
    assert second.stop() == 0
    assert not os.path.exists(first.socket + ".lock")


def test_refused_second_agent_leaves_the_lock_alone(agent):
    p = subprocess.run(["nsenter", f"--net={agent.ns.path}", SPLICE, "agent", "--socket", agent.socket],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "another agent" in p.stderr
    assert os.path.exists(agent.socket + ".lock") and agent.status() is not None
