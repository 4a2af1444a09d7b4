"""The agent path and the fallback path of the CNI executables (root, throwaway namespaces).

Each agent runs in a namespace of its own; the executables run in the test's host
namespace (via nsenter), so the host-side objects showing up in ``host_ns`` and never in
the agent's namespace prove that the work lands in the caller's namespace.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from splice.conformance import oracle
from splice.conformance.runtime import CniCallError
from splice.plugins.agent import client as wire

from ..conftest import bin_dir, require_tool
from .conftest import SPLICE, Agent, agent_runtime, bridge_conflist, count_leases

pytestmark = pytest.mark.root


def ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def agent_thread_namespaces(agent: Agent) -> set[int]:
    pid = agent.proc.pid
    out = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out.add(os.stat(f"/proc/{pid}/task/{tid}/ns/net").st_ino)
        except FileNotFoundError:
            pass
    return out


def normalize(result: dict) -> dict:
    """A result without what legitimately differs between two ADDs (MACs, host address part)."""
    r = json.loads(json.dumps(result))
    for itf in r.get("interfaces", []):
        itf.pop("mac", None)
    for ip in r.get("ips", []):
        ip["address"] = re.sub(r"\.\d+/", ".X/", ip["address"])
    return r


def no_agent_runtime(host_ns, tmp_path, client_bin):
    return agent_runtime(host_ns, tmp_path, client_bin, str(tmp_path / "nobody-listens.sock"))


# -- the installed executables ------------------------------------------------------------
def test_install_cni_writes_lean_launchers(client_bin):
    for name in ("splice-bridge", "splice-ipam", "splice-portmap"):
        exe = client_bin / name
        assert os.access(exe, os.X_OK)
        first = exe.read_text().splitlines()[0]
        assert first.startswith("#!/") and first.endswith(" -IS"), first
        interpreter = first[2:].split()[0]
        assert "shims" not in interpreter and ".venv" not in interpreter  # the base interpreter, on purpose


def test_client_imports_only_the_standard_library(agent, client_bin):
    """On the agent path an executable loads nothing but stdlib modules and ``client``."""
    env = {"CNI_COMMAND": "VERSION", "SPLICE_AGENT_SOCKET": agent.socket, "PATH": "/usr/bin:/bin"}
    shebang = (client_bin / "splice-bridge").read_text().splitlines()[0][2:].split()
    before = agent.status()["served"]
    p = subprocess.run([*shebang, "-X", "importtime", str(client_bin / "splice-bridge")], env=env,
                       input=b'{"cniVersion": "1.0.0"}', capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["cniVersion"] == "1.0.0"
    assert agent.status()["served"] == before + 1  # the agent answered, not the fallback
    mods = [line.split("|")[-1].strip() for line in p.stderr.decode().splitlines() if line.startswith("import time:")]
    mods = [m for m in mods if m and m != "imported package"]
    assert "client" in mods
    foreign = [m for m in mods if m != "client" and m.split(".")[0] not in sys.stdlib_module_names]
    assert not foreign, foreign
    assert not any(m in mods for m in ("json", "socket", "os", "splice", "pyroute2"))  # lean: not even these


# -- ADD/CHECK/DEL through the agent --------------------------------------------------------
def test_add_check_del_through_agent_equal_in_process(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir,
                                                       leaks):
    conf = bridge_conflist(ipam_dir, "1.1.0", isDefaultGateway=True)
    local = no_agent_runtime(host_ns, tmp_path / "local", client_bin)
    via = agent_runtime(host_ns, tmp_path / "via", client_bin, agent.socket)

    in_process = local.add(conf, "ctr-1", sandbox_ns.path)
    local.check(conf, "ctr-1", sandbox_ns.path)
    local.delete(conf, "ctr-1", sandbox_ns.path)
    assert agent.status()["served"] == 0

    result = via.add(conf, "ctr-1", sandbox_ns.path)
    assert normalize(result) == normalize(in_process)
    assert agent.status()["served"] == 1
    # the host side is in the caller's namespace, nothing in the agent's
    veth = result["interfaces"][1]["name"]
    assert {"sptbr0", veth} <= oracle.link_names(host_ns.name)
    assert oracle.link_names(agent.ns.name) == {"lo"}
    assert oracle.nft_ruleset(agent.ns.name) == [] or not oracle.nft_objects(agent.ns.name, "table")
    assert oracle.nft_map_elements(host_ns.name)
    assert oracle.addresses(sandbox_ns.name, "eth0") == [result["ips"][0]["address"]]
    assert oracle.ping(sandbox_ns.name, "10.77.0.1")
    via.check(conf, "ctr-1", sandbox_ns.path)
    via.status(conf)
    via.delete(conf, "ctr-1", sandbox_ns.path)
    assert agent.status()["served"] == 4
    # every worker is back in the agent's own namespace
    assert agent_thread_namespaces(agent) == {ns_inode(agent.ns.path)}
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_errors_through_agent_equal_in_process(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir):
    conf = bridge_conflist(ipam_dir, "1.0.0")["plugins"][0] | {"cniVersion": "1.0.0", "name": "spt-net"}
    local = no_agent_runtime(host_ns, tmp_path / "local", client_bin)
    via = agent_runtime(host_ns, tmp_path / "via", client_bin, agent.socket)
    cases = [
        dict(command="ADD", conf={**conf, "mtu": "big"}, netns=sandbox_ns.path, container_id="c", ifname="eth0"),
        dict(command="ADD", conf="{not json", netns=sandbox_ns.path, container_id="c", ifname="eth0"),
        dict(command="ADD", conf=conf, netns="/run/netns/does-not-exist", container_id="c", ifname="eth0"),
        dict(command="ADD", conf=conf, netns=host_ns.path, container_id="c", ifname="eth0"),  # code 8
        dict(command="BOGUS", conf=conf, netns=sandbox_ns.path, container_id="c", ifname="eth0"),
        dict(command="VERSION", conf={"cniVersion": "0.4.0"}),
    ]
    for case in cases:
        kw = dict(case)
        command, body = kw.pop("command"), kw.pop("conf")
        a = local.call("splice-bridge", command, body, **kw)
        b = via.call("splice-bridge", command, body, **kw)
        assert (b.rc, b.stdout) == (a.rc, a.stdout), case
        # in-process: the same stderr after the one line saying there is no agent (none for VERSION)
        notice, _, rest = a.stderr.partition("\n") if command != "VERSION" else ("", "", a.stderr)
        assert command == "VERSION" or notice.startswith("splice-bridge: no splice agent at "), a.stderr
        assert b.stderr == rest, case
        assert "Traceback" not in b.stdout + b.stderr
    assert agent.status()["served"] == len(cases)
    assert json.loads(via.call("splice-bridge", "ADD", conf, netns=host_ns.path, container_id="c",
                               ifname="eth0").stdout)["code"] == 8


def test_one_agent_many_hosts(agent, client_bin, make_ns, tmp_path, ipam_dir):
    """Each call works in its own caller's namespace: two hosts, one agent."""
    hosts = [make_ns() for _ in range(2)]
    sbs = [make_ns() for _ in range(2)]
    conf = bridge_conflist(ipam_dir, "1.0.0")
    rts = [agent_runtime(h, tmp_path / h.name, client_bin, agent.socket) for h in hosts]
    for i in range(2):
        rts[i].add(conf, f"ctr-{i}", sbs[i].path)
    for i in range(2):
        veths = {n for n in oracle.link_names(hosts[i].name) if n.startswith("veth")}
        assert len(veths) == 1 and "sptbr0" in oracle.link_names(hosts[i].name)
        assert oracle.ping(sbs[i].name, "10.77.0.1")
    assert oracle.link_names(agent.ns.name) == {"lo"}
    for i in range(2):
        rts[i].delete(conf, f"ctr-{i}", sbs[i].path)
        assert oracle.link_names(hosts[i].name) == {"lo", "sptbr0"}
        assert not oracle.nft_map_elements(hosts[i].name)
    assert count_leases(ipam_dir, "spt-net") == 0


def test_concurrent_adds_and_dels_through_agent(start_agent, client_bin, host_ns, make_ns, tmp_path, ipam_dir,
                                                leaks):
    """More concurrent calls than workers: distinct addresses, all wired, all cleaned."""
    agent = start_agent()
    n = 24
    assert agent.status()["workers"] < n
    conf = bridge_conflist(ipam_dir, "1.0.0")
    rt = agent_runtime(host_ns, tmp_path, client_bin, agent.socket)
    sbs = [make_ns() for _ in range(n)]
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda i: rt.add(conf, f"many-{i}", sbs[i].path), range(n)))
    addrs = [r["ips"][0]["address"] for r in results]
    assert len(set(addrs)) == n
    for i in range(n):
        assert oracle.addresses(sbs[i].name, "eth0") == [addrs[i]]
    assert len([e for e in oracle.nft_map_elements(host_ns.name) if e[1] == "src4"]) == n  # masq.py: one per source
    assert count_leases(ipam_dir, "spt-net") == n
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda i: rt.delete(conf, f"many-{i}", sbs[i].path), range(n)))
    assert agent.status()["served"] == 2 * n
    leaks.assert_clean(sbs, [ipam_dir])


def test_delegate_runs_in_callers_namespace(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir, leaks):
    """A delegated IPAM plugin executed by the agent runs in the caller's namespace."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    probe = tmp_path / "probe"
    (plugins / "ns-probe-ipam").write_text(textwrap.dedent(f"""\
        #!/usr/bin/python3 -I
        import json, os, sys
        open({str(probe)!r}, "a").write(os.environ["CNI_COMMAND"] + " " + os.readlink("/proc/self/ns/net") + "\\n")
        if os.environ["CNI_COMMAND"] == "ADD":
            print(json.dumps({{"cniVersion": "1.0.0", "ips": [{{"address": "10.77.0.9/24", "gateway": "10.77.0.1"}}]}}))
        elif os.environ["CNI_COMMAND"] == "VERSION":
            print(json.dumps({{"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]}}))
        """))
    (plugins / "ns-probe-ipam").chmod(0o755)
    conf = bridge_conflist(ipam_dir, "1.0.0", ipam_type="ns-probe-ipam")
    rt = agent_runtime(host_ns, tmp_path, client_bin, agent.socket)
    rt.cni_path = [str(client_bin), str(plugins)]
    result = rt.add(conf, "ctr-d", sandbox_ns.path)
    assert result["ips"][0]["address"] == "10.77.0.9/24"
    rt.delete(conf, "ctr-d", sandbox_ns.path)
    assert agent.status()["served"] == 2
    want = f"net:[{ns_inode(host_ns.path)}]"
    assert probe.read_text().split() == ["ADD", want, "DEL", want]
    leaks.assert_clean([sandbox_ns])


# -- a crashed or restarted agent loses nothing -----------------------------------------------
@pytest.mark.parametrize("cleanup", ["del", "gc"])
@pytest.mark.parametrize("failpoint", ["ipam.allocated", "bridge.veth_created", "bridge.masq_added",
                                       "bridge.sandbox_configured"])
def test_agent_killed_mid_add_then_restarted(failpoint, cleanup, start_agent, client_bin, host_ns, sandbox_ns,
                                             tmp_path, ipam_dir, leaks):
    """SIGKILL the agent inside an ADD (its own failpoint), restart it: DEL or GC cleans up."""
    dying = start_agent(env={"SPLICE_FAILPOINT": f"{failpoint}:kill"})
    conf = bridge_conflist(ipam_dir, "1.1.0")
    rt = agent_runtime(host_ns, tmp_path, client_bin, dying.socket)
    with pytest.raises(CniCallError) as e:
        rt.add(conf, "ctr-kill", sandbox_ns.path)
    assert e.value.rc == 1 and e.value.code == 11  # "try again later", as CNI error JSON
    assert "Traceback" not in e.value.stdout + e.value.stderr
    dying.proc.wait(timeout=10)
    assert dying.proc.returncode == -signal.SIGKILL
    assert os.path.exists(dying.socket)  # a stale socket: the next agent must take over

    agent = start_agent(ns=dying.ns)
    if cleanup == "del":
        rt.delete(conf, "ctr-kill", sandbox_ns.path, use_cache=False)
        leaks.assert_clean([sandbox_ns], [ipam_dir])
    else:
        subprocess.run(["ip", "netns", "del", sandbox_ns.name], check=True)
        assert rt.gc(conf, []) == []
        leaks.assert_clean([], [ipam_dir])
    assert agent.status()["served"] >= 1


def test_agent_restarted_between_add_and_del(start_agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir,
                                             leaks):
    first = start_agent()
    conf = bridge_conflist(ipam_dir, "1.1.0")
    rt = agent_runtime(host_ns, tmp_path, client_bin, first.socket)
    rt.add(conf, "ctr-r", sandbox_ns.path)
    assert first.stop() == 0
    assert not os.path.exists(first.socket)  # a clean stop removes its socket
    second = start_agent(ns=first.ns)
    rt.check(conf, "ctr-r", sandbox_ns.path)
    assert rt.gc(conf, [("ctr-r", "eth0")]) == []  # keeps it
    rt.delete(conf, "ctr-r", sandbox_ns.path)
    assert second.status()["served"] == 3
    leaks.assert_clean([sandbox_ns], [ipam_dir])


# -- no agent: the same executables run in-process -------------------------------------------
@pytest.mark.parametrize("how", ["missing", "stale", "off"])
def test_no_agent_falls_back_in_process(how, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir, leaks):
    sock_path = str(tmp_path / "agent.sock")
    if how == "stale":  # a socket file nobody listens on (a crashed agent): ECONNREFUSED
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(sock_path)
        s.close()
    rt = agent_runtime(host_ns, tmp_path, client_bin, "off" if how == "off" else sock_path)
    conf = bridge_conflist(ipam_dir, "1.0.0")
    result = rt.add(conf, "ctr-f", sandbox_ns.path)
    assert oracle.addresses(sandbox_ns.name, "eth0") == [result["ips"][0]["address"]]
    assert oracle.ping(sandbox_ns.name, "10.77.0.1")
    rt.check(conf, "ctr-f", sandbox_ns.path)
    rt.delete(conf, "ctr-f", sandbox_ns.path)
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_console_scripts_use_the_agent_too(agent, host_ns, sandbox_ns, tmp_path, ipam_dir, leaks):
    """The pip console scripts (venv) are thin clients as well, with the same fallback."""
    conf = bridge_conflist(ipam_dir, "1.0.0")
    rt = agent_runtime(host_ns, tmp_path, bin_dir(), agent.socket)
    rt.add(conf, "ctr-c", sandbox_ns.path)
    assert agent.status()["served"] == 1
    agent.stop()
    rt.delete(conf, "ctr-c", sandbox_ns.path)  # no agent any more: in-process
    leaks.assert_clean([sandbox_ns], [ipam_dir])


# -- the socket -------------------------------------------------------------------------------
def test_socket_is_root_only(agent):
    st = os.stat(agent.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    d = os.stat(os.path.dirname(agent.socket))
    assert stat.S_IMODE(d.st_mode) == 0o700  # the agent created the directory


def _as_nobody(code: str) -> subprocess.CompletedProcess:
    require_tool("setpriv")
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-IS",
                           "-c", code], capture_output=True, text=True, timeout=30)


def test_non_root_peer_is_refused(start_agent, make_ns):
    """A non-root client cannot connect (0600); even given access, SO_PEERCRED refuses it."""
    public = tempfile.mkdtemp(prefix="spt-agent-", dir="/tmp")
    try:
        os.chmod(public, 0o755)
        agent = start_agent(socket=os.path.join(public, "agent.sock"))
        shutil.copy(wire.__file__, os.path.join(public, "client.py"))
        os.chmod(os.path.join(public, "client.py"), 0o644)
        probe = textwrap.dedent(f"""\
            import sys
            sys.path.insert(0, {public!r})
            import client
            s = client.connect({agent.socket!r}.encode())
            if s is None:
                print("NOCONNECT"); sys.exit(0)
            rc, out, err = client.request(s, b"_ping", b"", b"")
            print(rc, out.decode())
            """)
        p = _as_nobody(probe)
        assert p.stdout.strip() == "NOCONNECT", p
        os.chmod(agent.socket, 0o666)
        p = _as_nobody(probe)
        rc, _, out = p.stdout.partition(" ")
        assert rc == "1", p
        err = json.loads(out)
        assert err["code"] == 100 and "permission denied" in err["msg"]
        assert agent.status()["served"] == 0
        assert agent.stop() == 0
    finally:
        shutil.rmtree(public, ignore_errors=True)


# -- protocol errors are CNI errors -----------------------------------------------------------
def _raw(agent: Agent, data: bytes, fds=()) -> list[bytes]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(agent.socket)
    s.settimeout(30)
    try:
        if fds:
            s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"".join(fd.to_bytes(4, sys.byteorder)
                                                                             for fd in fds))])
        else:
            s.sendall(data)
        return wire.read_message(s)
    finally:
        s.close()


def test_bad_requests_get_cni_errors(agent):
    nsfd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    devnull = os.open("/dev/null", os.O_RDONLY)
    try:
        cases = [
            (wire.encode([b"9", b"bridge", b"", b"{}"]), (nsfd,), "unsupported request"),
            (wire.encode([b"1", b"bridge", b"CNI_COMMAND=ADD", b'{"cniVersion": "0.4.0"}']), (), "network namespace"),
            (wire.encode([b"1", b"nosuch", b"CNI_COMMAND=ADD", b"{}"]), (nsfd,), "unknown plugin kind"),
            (wire.encode([b"1", b"bridge", b"CNI_COMMAND=ADD", b"{}"]), (devnull,), "network namespace"),
            ((5).to_bytes(4, "big") + b"\x00\x00\x00\x09x", (), "unreadable request"),
        ]
        for data, fds, what in cases:
            proto, rc, out, err = _raw(agent, data, fds)
            assert proto == b"1" and rc == b"1", what
            e = json.loads(out)
            assert isinstance(e["code"], int) and what in e["msg"], (what, e)
        # the version of the config is kept when it is a known one
        proto, rc, out, err = _raw(agent, cases[1][0])
        assert json.loads(out)["cniVersion"] == "0.4.0"
    finally:
        os.close(nsfd)
        os.close(devnull)
    assert agent.status() is not None  # still serving


def _fake_agent(path: str, behaviour: str):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)

    def serve():
        conn, _ = srv.accept()
        try:
            conn.recv(1 << 20)
            if behaviour == "garbage":
                conn.sendall(b"\x00\x00\x00\x05hello")
        finally:
            conn.close()
            srv.close()

    import threading

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("behaviour,code", [("hangup", 11), ("garbage", 100)])
def test_client_turns_a_broken_agent_into_cni_errors(behaviour, code, client_bin, tmp_path):
    path = str(tmp_path / "fake.sock")
    t = _fake_agent(path, behaviour)
    p = subprocess.run([str(client_bin / "splice-bridge")], input=b'{"cniVersion": "0.3.1", "name": "n"}',
                       env={"CNI_COMMAND": "ADD", "SPLICE_AGENT_SOCKET": path}, capture_output=True, timeout=30)
    t.join(timeout=10)
    assert p.returncode == 1
    err = json.loads(p.stdout)
    assert err["code"] == code and err["cniVersion"] == "0.3.1", err
    assert b"Traceback" not in p.stdout + p.stderr


# -- the CLI and the lifecycle ------------------------------------------------------------------
def test_status_and_stop(agent, tmp_path):
    st = agent.status()
    assert st["agent"] == "splice" and st["pid"] == agent.proc.pid and st["socket"] == agent.socket
    p = subprocess.run([SPLICE, "status", "--socket", str(tmp_path / "none.sock")], capture_output=True, text=True)
    assert p.returncode == 1 and "no agent" in p.stderr
    assert agent.stop() == 0
    assert not os.path.exists(agent.socket)
    assert "stopped after" in agent.log.read_text()


def test_one_agent_per_socket(agent):
    p = subprocess.run(["nsenter", f"--net={agent.ns.path}", SPLICE, "agent", "--socket", agent.socket],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "another agent" in p.stderr
    assert agent.status() is not None and os.path.exists(agent.socket)


def test_socket_activation(make_ns, tmp_path, client_bin, host_ns, sandbox_ns, ipam_dir, leaks):
    """Under systemd (LISTEN_FDS) the agent serves fd 3 and leaves the socket alone."""
    ns = make_ns()
    path = str(tmp_path / "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    os.chmod(path, 0o600)
    fd = listener.fileno()
    log = open(tmp_path / "agent.log", "w")

    def activate() -> subprocess.Popen:
        script = f"exec 3<&{fd}; LISTEN_PID=$$ LISTEN_FDS=1 exec nsenter --net={ns.path} {SPLICE} agent --socket /nonexistent/x.sock"
        return subprocess.Popen(["bash", "-c", script], pass_fds=(fd,), stdout=subprocess.DEVNULL, stderr=log)

    conf = bridge_conflist(ipam_dir, "1.0.0")
    rt = agent_runtime(host_ns, tmp_path, client_bin, path)
    try:
        for round_ in range(2):  # a restarted (re-activated) agent serves the same socket
            proc = activate()
            a = Agent(socket=path, ns=ns, log=tmp_path / "agent.log")
            deadline = time.monotonic() + 30
            while a.status() is None:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "agent.log").read_text()
                time.sleep(0.05)
            if round_ == 0:
                rt.add(conf, "ctr-sa", sandbox_ns.path)
            else:
                rt.delete(conf, "ctr-sa", sandbox_ns.path)
            assert a.status()["served"] == 1
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            assert os.path.exists(path)  # systemd's socket stays
        leaks.assert_clean([sandbox_ns], [ipam_dir])
    finally:
        listener.close()
        log.close()
