"""Issue 9 "Hardening": who the client trusts, whom the agent serves, and in which context
(root, throwaway namespaces, sockets and directories)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from splice.conformance import oracle
from splice.plugins.agent import client as wire

from ..conftest import bin_dir, require_tool
from .conftest import SPLICE, agent_runtime, bridge_conflist, count_leases

pytestmark = pytest.mark.root

NOBODY = 65534


def _public_dir(owner: int = 0, mode: int = 0o755) -> str:
    d = tempfile.mkdtemp(prefix="spt-hard-", dir="/tmp")
    os.chown(d, owner, owner)
    os.chmod(d, mode)
    return d


def _run_client(client_bin, socket_path: str, command: str = "ADD", conf: bytes = b'{"cniVersion": "1.0.0", "name": "n"}',
                extra: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {"CNI_COMMAND": command, "SPLICE_AGENT_SOCKET": socket_path, "PATH": "/usr/bin:/bin", **(extra or {})}
    return subprocess.run([str(client_bin / "splice-bridge")], input=conf, env=env, capture_output=True,
                          timeout=timeout)


# -- item 7: the client checks whom it talks to ------------------------------------------------
def test_client_sends_nothing_to_an_untrusted_listener(client_bin):
    """A socket served by `nobody` gets no byte (no environment, no namespace fd); the client
    runs in-process with its one-line notice."""
    require_tool("setpriv")
    d = _public_dir(NOBODY, 0o755)
    try:
        path = os.path.join(d, "agent.sock")
        server = textwrap.dedent(f"""\
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind({path!r}); s.listen(4)
            import os; os.chmod({path!r}, 0o666)
            print("ready", flush=True)
            s.settimeout(30)
            c, _ = s.accept()
            c.settimeout(5)
            got, fds = 0, 0
            try:
                while True:
                    msg, anc, _, _ = c.recvmsg(1 << 16, socket.CMSG_SPACE(16))
                    fds += len(anc)
                    if not msg:
                        break
                    got += len(msg)
            except OSError:
                pass
            print(got, fds, flush=True)
            """)
        fake = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                 "/usr/bin/python3", "-IS", "-c", server], stdout=subprocess.PIPE, text=True)
        try:
            assert fake.stdout.readline().strip() == "ready"
            p = _run_client(client_bin, path)
            out, _ = fake.communicate(timeout=30)
        finally:
            if fake.poll() is None:
                fake.kill()
                fake.wait()
        assert out.split() == ["0", "0"], out  # nothing sent, no fd passed
        err = p.stderr.decode()
        assert err.startswith(f"splice-bridge: no splice agent at {path} (") and "uid 65534" in err.splitlines()[0], err
        assert json.loads(p.stdout)["code"] == 4  # in-process: the missing CNI_* variables
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _agent_refuses(socket_path: str, ns) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={ns.path}", SPLICE, "agent", "--socket", socket_path],
                          capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("owner,mode", [(0, 0o777), (0, 0o1777), (0, 0o770), (NOBODY, 0o700)])
def test_agent_refuses_an_unsafe_socket_directory(owner, mode, make_ns):
    d = _public_dir(owner, mode)
    try:
        p = _agent_refuses(os.path.join(d, "agent.sock"), make_ns())
        assert p.returncode == 1 and "refusing to serve there" in p.stderr, p
        assert "Traceback" not in p.stderr
        assert os.listdir(d) == []
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_agent_does_not_follow_a_symlinked_lock(make_ns, tmp_path):
    d = _public_dir(0, 0o700)
    try:
        target = tmp_path / "target"
        target.write_text("keep")
        os.chmod(target, 0o644)
        os.symlink(target, os.path.join(d, "agent.sock.lock"))
        p = _agent_refuses(os.path.join(d, "agent.sock"), make_ns())
        assert p.returncode == 1 and "symbolic link" in p.stderr, p
        assert "Traceback" not in p.stderr
        assert target.read_text() == "keep" and os.stat(target).st_mode & 0o777 == 0o644
        assert not os.path.exists(os.path.join(d, "agent.sock"))
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- item 4: the agent gives no caller a capability it lacks -------------------------------------
@pytest.mark.parametrize("exe", ["installed", "console-script"])
def test_capless_root_caller_runs_in_process(exe, agent, client_bin, host_ns, sandbox_ns, ipam_dir, tmp_path):
    """uid 0 with every capability dropped: the agent declines (one stderr line), the call
    runs in-process where the kernel refuses it; no bridge, no veth, no lease, and the
    caller's CNI_PATH delegate is not executed by the agent."""
    require_tool("setpriv")
    if exe == "console-script":  # the pip console script: cni.main runs in-process on the restored stdin
        client_bin = bin_dir()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    marker = tmp_path / "delegate-ran"
    (plugins / "evil-ipam").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        grep CapEff /proc/self/status >> {marker}
        echo '{{"cniVersion": "1.0.0", "ips": [{{"address": "10.77.0.9/24"}}]}}'
        """))
    (plugins / "evil-ipam").chmod(0o755)
    conf = bridge_conflist(ipam_dir, "1.0.0", ipam_type="evil-ipam")["plugins"][0] | {"cniVersion": "1.0.0",
                                                                                      "name": "spt-net"}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "capless", "CNI_NETNS": sandbox_ns.path, "CNI_IFNAME": "eth0",
           "CNI_PATH": f"{client_bin}:{plugins}", "SPLICE_AGENT_SOCKET": agent.socket, "PATH": "/usr/bin:/bin"}
    p = subprocess.run(["nsenter", f"--net={host_ns.path}", "setpriv", "--inh-caps=-all", "--bounding-set=-all",
                        str(client_bin / "splice-bridge")], input=json.dumps(conf).encode(), env=env,
                       capture_output=True, timeout=60)
    err = p.stderr.decode()
    assert p.returncode == 1, (p.stdout, err)
    first = err.splitlines()[0]
    assert first.startswith("splice-bridge: the splice agent does not serve this call (") and "cap_net_admin" in first
    assert "running in-process" in first
    assert json.loads(p.stdout)["code"] != 0
    assert agent.status()["served"] == 0
    links = oracle.link_names(host_ns.name)
    assert "sptbr0" not in links and not any(n.startswith("veth") for n in links), links
    for line in (marker.read_text().splitlines() if marker.exists() else []):
        assert int(line.split()[1], 16) == 0, line  # only ever ran with the caller's (no) capabilities
    assert count_leases(ipam_dir, "spt-net") == 0
    # a caller with its capabilities is served as before
    p = subprocess.run(["nsenter", f"--net={host_ns.path}", str(client_bin / "splice-bridge")],
                       input=json.dumps({**conf, "ipam": {"type": "splice-ipam", "dataDir": str(ipam_dir),
                                                          "ranges": [[{"subnet": "10.77.0.0/24"}]]}}).encode(),
                       env={**env, "CNI_PATH": str(client_bin)}, capture_output=True, timeout=60)
    assert p.returncode == 0, p
    assert agent.status()["served"] == 1


# -- item 5: the agent never resolves the caller's paths in its own context ----------------------
def test_netns_is_opened_by_the_caller(agent, client_bin, host_ns, tmp_path, ipam_dir):
    """CNI_NETNS=/proc/self/ns/net names the caller's own namespace: code 8, as in-process;
    the agent's namespace is never used as the sandbox."""
    conf = bridge_conflist(ipam_dir, "1.0.0")["plugins"][0] | {"cniVersion": "1.0.0", "name": "spt-net"}
    local = agent_runtime(host_ns, tmp_path / "local", client_bin, "off")
    via = agent_runtime(host_ns, tmp_path / "via", client_bin, agent.socket)
    for netns in ("/proc/self/ns/net", "/proc/thread-self/ns/net"):
        a = local.call("splice-bridge", "ADD", conf, netns=netns, container_id="c", ifname="eth0")
        b = via.call("splice-bridge", "ADD", conf, netns=netns, container_id="c", ifname="eth0")
        assert (b.rc, b.stdout, b.stderr) == (a.rc, a.stdout, a.stderr), netns
        assert json.loads(b.stdout)["code"] == 8
    assert agent.status()["served"] == 2
    assert oracle.link_names(agent.ns.name) == {"lo"}
    assert not oracle.link_names(host_ns.name) - {"lo", "sptbr0"}


def test_sandbox_path_reads_as_the_callers(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir, leaks):
    """The result and CHECK's prevResult name the caller's CNI_NETNS, not the fd the agent used."""
    link = tmp_path / "sandbox-link"
    os.symlink(sandbox_ns.path, link)
    conf = bridge_conflist(ipam_dir, "1.1.0")
    via = agent_runtime(host_ns, tmp_path / "via", client_bin, agent.socket)
    result = via.add(conf, "ctr-s", str(link))
    assert [i.get("sandbox") for i in result["interfaces"]] == [None, None, str(link)]
    via.check(conf, "ctr-s", str(link))
    via.delete(conf, "ctr-s", str(link))
    assert agent.status()["served"] == 3
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def _call_in(cwd, client_bin, host_ns, socket_path, env: dict, conf: dict) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "SPLICE_AGENT_SOCKET": socket_path, **env}
    return subprocess.run(["nsenter", f"--net={host_ns.path}", f"--wd={cwd}", str(client_bin / "splice-bridge")],
                          input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60)


def test_relative_paths_are_resolved_by_the_caller(agent, client_bin, host_ns, sandbox_ns, tmp_path):
    """A relative dataDir or CNI_PATH means the caller's cwd: the agent declines and the call
    runs in-process there (the store lands under the caller's cwd, not the agent's)."""
    caller = tmp_path / "caller"
    caller.mkdir()
    conf = {**bridge_conflist(caller, "1.0.0")["plugins"][0], "cniVersion": "1.0.0", "name": "spt-net"}
    conf["ipam"] = {**conf["ipam"], "dataDir": "rel-store"}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-rel", "CNI_NETNS": sandbox_ns.path, "CNI_IFNAME": "eth0",
           "CNI_PATH": str(client_bin)}
    p = _call_in(caller, client_bin, host_ns, agent.socket, env, conf)
    assert p.returncode == 0, p
    assert "relative path in dataDir" in p.stderr.decode().splitlines()[0]
    assert (caller / "rel-store" / "spt-net").is_dir()
    assert not (agent.log.parent / "rel-store").exists()  # the agent's cwd
    p = _call_in(caller, client_bin, host_ns, agent.socket, {**env, "CNI_COMMAND": "DEL", "CNI_PATH": f"bin:{client_bin}"},
                 conf)
    assert p.returncode == 0, p
    assert "relative path in CNI_PATH" in p.stderr.decode().splitlines()[0]
    assert agent.status()["served"] == 0
    relative_netns = os.path.relpath(sandbox_ns.path, caller)
    p = _call_in(caller, client_bin, host_ns, agent.socket, {**env, "CNI_NETNS": relative_netns}, conf)
    assert "relative path in CNI_NETNS" in p.stderr.decode().splitlines()[0], p
    assert agent.status()["served"] == 0


# -- item 2: idle and slow clients cannot starve real calls ---------------------------------------
def _idle_connections(path: str, n: int) -> list:
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        out.append(s)
    return out


def _add_then_del(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir, limit: float = 15.0) -> float:
    conf = bridge_conflist(ipam_dir, "1.0.0")
    rt = agent_runtime(host_ns, tmp_path, client_bin, agent.socket)
    rt.timeout = limit
    t0 = time.monotonic()
    rt.add(conf, "ctr-starve", sandbox_ns.path)
    took = time.monotonic() - t0
    rt.delete(conf, "ctr-starve", sandbox_ns.path)
    return took


def test_idle_connections_do_not_starve_calls(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir, leaks):
    idle = _idle_connections(agent.socket, 200)
    try:
        took = _add_then_del(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir)
        assert took < 3.0, took
        assert agent.status()["served"] == 2
        # the agent closes what sends no request within its deadline (declined: in-process)
        idle[0].settimeout(15)
        reply = wire.read_message(idle[0])
        assert reply[1] == wire.IN_PROCESS and b"no complete request" in reply[3], reply
    finally:
        for s in idle:
            s.close()
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_slow_clients_do_not_starve_calls(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir, leaks):
    """32 clients sending one byte of a request now and then: real calls are still served."""
    import threading

    stop = threading.Event()
    slow = _idle_connections(agent.socket, 32)
    for s in slow:
        s.send((1000).to_bytes(4, "big"))  # a request of 1000 bytes, coming one byte at a time

    def drip():
        while not stop.wait(0.5):
            for s in slow:
                try:
                    s.send(b"\x00")
                except OSError:
                    pass

    t = threading.Thread(target=drip, daemon=True)
    t.start()
    try:
        time.sleep(1.0)
        took = _add_then_del(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir)
        assert took < 3.0, took
    finally:
        stop.set()
        t.join()
        for s in slow:
            s.close()
    assert agent.status()["served"] == 2
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_connection_cap_declines_to_in_process(start_agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir,
                                               leaks):
    agent = start_agent(extra_args=["--max-connections", "8"])
    idle = _idle_connections(agent.socket, 8)
    try:
        conf = bridge_conflist(ipam_dir, "1.0.0")
        rt = agent_runtime(host_ns, tmp_path, client_bin, agent.socket)
        rt.timeout = 15
        call = rt.call("splice-bridge", "ADD", {**conf["plugins"][0], "cniVersion": "1.0.0", "name": "spt-net"},
                       netns=sandbox_ns.path, container_id="ctr-cap", ifname="eth0")
        assert call.rc == 0, call
        assert "8 connections open" in call.stderr.splitlines()[0] and "in-process" in call.stderr, call
    finally:
        for s in idle:
            s.close()
    time.sleep(0.5)
    rt.delete(conf, "ctr-cap", sandbox_ns.path)  # the cap is free again: through the agent
    assert agent.status()["served"] >= 1
    leaks.assert_clean([sandbox_ns], [ipam_dir])


def test_busy_workers_decline_after_the_queue_deadline(start_agent, client_bin, host_ns, sandbox_ns, tmp_path,
                                                       ipam_dir):
    """One worker, held by a slow delegate: a second call waits at most the queue deadline,
    then runs in-process."""
    import concurrent.futures

    agent = start_agent(extra_args=["--workers", "1"])
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slow-ipam").write_text(
        '#!/bin/sh\nsleep 8\necho \'{"cniVersion": "1.0.0", "code": 11, "msg": "slow"}\'\nexit 1\n')
    (plugins / "slow-ipam").chmod(0o755)
    conf = {**bridge_conflist(ipam_dir, "1.0.0", ipam_type="slow-ipam")["plugins"][0], "cniVersion": "1.0.0",
            "name": "spt-net"}
    rt = agent_runtime(host_ns, tmp_path, client_bin, agent.socket)
    rt.cni_path = [str(client_bin), str(plugins)]
    rt.timeout = 30
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(rt.call, "splice-bridge", "ADD", conf, netns=sandbox_ns.path, container_id="ctr-slow",
                           ifname="eth0")
        time.sleep(1.0)
        t0 = time.monotonic()
        call = rt.call("splice-bridge", "ADD", conf, container_id="ctr-2", ifname="eth0")  # no CNI_NETNS: code 4
        took = time.monotonic() - t0
        assert json.loads(call.stdout)["code"] == 4, call
        assert "workers busy" in call.stderr.splitlines()[0] and "in-process" in call.stderr, call
        assert took < 8.0, took
        assert json.loads(slow.result().stdout)["msg"] == "slow"


# -- item 3: calls whose caller is gone ------------------------------------------------------------
def _slow_ipam(plugins, name: str, sleep: float, marker=None) -> None:
    """An IPAM delegate that takes ``sleep`` s on ADD (an address in 10.77.0.0/24) and
    notes each of its commands in ``marker``."""
    note = f'echo "$CNI_COMMAND $CNI_CONTAINERID" >> {marker}\n' if marker else ""
    (plugins / name).write_text(
        "#!/bin/sh\n" + note
        + f'if [ "$CNI_COMMAND" = ADD ]; then\n    sleep {sleep}\n'
        + """    echo '{"cniVersion": "1.0.0", "ips": [{"address": "10.77.0.9/24", "gateway": "10.77.0.1"}]}'\nfi\n""")
    (plugins / name).chmod(0o755)


def _client(host_ns, client_bin, socket_path, cid, sandbox_ns, plugins, conf) -> subprocess.Popen:
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid, "CNI_NETNS": sandbox_ns.path, "CNI_IFNAME": "eth0",
           "CNI_PATH": f"{client_bin}:{plugins}", "SPLICE_AGENT_SOCKET": socket_path, "PATH": "/usr/bin:/bin"}
    p = subprocess.Popen(["nsenter", f"--net={host_ns.path}", str(client_bin / "splice-bridge")], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(json.dumps(conf).encode())
    p.stdin.close()
    return p


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_add_whose_caller_left_is_undone(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir, leaks):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    _slow_ipam(plugins, "slow-ipam", 2)
    conf = {**bridge_conflist(ipam_dir, "1.0.0", ipam_type="slow-ipam")["plugins"][0], "cniVersion": "1.0.0",
            "name": "spt-net"}
    p = _client(host_ns, client_bin, agent.socket, "ctr-gone", sandbox_ns, plugins, conf)
    time.sleep(0.8)
    p.kill()  # the runtime gave up on it
    p.wait()
    assert _wait_for(lambda: "undone by DEL" in agent.log.read_text()), agent.log.read_text()
    leaks.assert_clean([sandbox_ns])
    assert not any(n.startswith("veth") for n in oracle.link_names(host_ns.name))


def test_call_whose_caller_left_is_not_started(start_agent, client_bin, host_ns, make_ns, tmp_path, ipam_dir,
                                               leaks):
    agent = start_agent(extra_args=["--workers", "1"])
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    marker = tmp_path / "ran"
    _slow_ipam(plugins, "slow-ipam", 2.5, marker)
    conf = {**bridge_conflist(ipam_dir, "1.0.0", ipam_type="slow-ipam")["plugins"][0], "cniVersion": "1.0.0",
            "name": "spt-net"}
    sb1, sb2 = make_ns(), make_ns()
    first = _client(host_ns, client_bin, agent.socket, "ctr-1", sb1, plugins, conf)  # holds the only worker
    time.sleep(0.5)
    second = _client(host_ns, client_bin, agent.socket, "ctr-2", sb2, plugins, conf)  # queued
    time.sleep(0.5)
    second.kill()
    second.wait()
    first.wait(timeout=30)
    out, err = first.stdout.read(), first.stderr.read()
    assert first.returncode == 0, (out, err)
    assert _wait_for(lambda: "not started" in agent.log.read_text(), 5), agent.log.read_text()
    assert marker.read_text().split("\n")[:1] == ["ADD ctr-1"] and "ctr-2" not in marker.read_text()
    assert oracle.link_names(sb2.name) == {"lo"}
    rt = agent_runtime(host_ns, tmp_path, client_bin, agent.socket)
    rt.cni_path = [str(client_bin), str(plugins)]
    rt.call("splice-bridge", "DEL", conf, netns=sb1.path, container_id="ctr-1", ifname="eth0")
    leaks.assert_clean([sb1, sb2])


def test_caller_with_another_root_is_declined(agent, tmp_path):
    """A caller chrooted elsewhere resolves its paths elsewhere: declined (in-process)."""
    empty = tmp_path / "empty-root"
    empty.mkdir()
    probe = textwrap.dedent(f"""\
        import os, sys
        sys.path.insert(0, {os.path.dirname(wire.__file__)!r})
        import client
        nsfd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        s = client.connect({agent.socket!r}.encode())
        if {{chroot}}:
            os.chroot({str(empty)!r})
        env = b"CNI_COMMAND=ADD\\0CNI_CONTAINERID=c\\0CNI_IFNAME=eth0"
        rc, out, err = client.request(s, b"bridge", env, b'{{"cniVersion": "1.0.0"}}', (nsfd,))
        print(rc, err.decode().strip())
        """)
    for chroot, want in ((True, "None splice-bridge: the splice agent does not serve this call"), (False, "1 ")):
        p = subprocess.run([sys.executable, "-I", "-c", probe.replace("{chroot}", str(chroot))],
                           capture_output=True, text=True, timeout=30)
        assert p.stdout.startswith(want), p
        if chroot:
            assert "another root directory" in p.stdout, p
    assert agent.status()["served"] == 1


def test_large_requests_do_not_grow_the_agent_without_bound(agent, client_bin, host_ns, sandbox_ns, tmp_path,
                                                            ipam_dir, leaks):
    """Issue 9 item 8: 40 clients each announcing a 4 MiB request and sending 3.5 MiB of it
    (140 MiB in all): the agent holds at most HELD_MAX (64 MiB) of them and declines the
    others at once (before any deadline), its memory stays bounded, and it still serves a
    real call."""
    import time

    def rss_kib() -> int:
        with open(f"/proc/{agent.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    before = rss_kib()
    t0 = time.monotonic()
    big = _idle_connections(agent.socket, 40)
    chunk = b"\x00" * (1 << 20)
    gone = 0
    try:
        for s in big:
            s.settimeout(5)
            try:
                s.sendall((4 << 20).to_bytes(4, "big"))
                for _ in range(3):
                    s.sendall(chunk)
                s.sendall(chunk[: 1 << 19])
            except OSError:
                gone += 1  # declined and closed by the agent already
        declined = 0
        for s in big:
            s.settimeout(0.2)
            try:
                reply = wire.read_message(s)
            except (OSError, ValueError):
                continue
            if reply and reply[1] == wire.IN_PROCESS and b"too many large requests" in reply[3]:
                declined += 1
        assert time.monotonic() - t0 < 4.5  # all of this before the 5 s request deadline
        assert declined + gone >= 40 - (64 << 20) // (7 << 19), (declined, gone)
        grown = rss_kib() - before
        assert grown < 100 * 1024, f"agent RSS grew by {grown} KiB"
        took = _add_then_del(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir)
        assert took < 5.0, took
    finally:
        for s in big:
            s.close()
    leaks.assert_clean([sandbox_ns], [ipam_dir])
