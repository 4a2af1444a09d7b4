"""Issue 9 "Hardening": who the client trusts, whom the agent serves, and in which context
(root, throwaway namespaces, sockets and directories)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import time

import pytest

from ..conftest import require_tool
from .conftest import SPLICE

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
