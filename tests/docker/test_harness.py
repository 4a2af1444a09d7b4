"""The dockerd harness itself (no splice): private namespaces, plugin discovery, no leaks.

These run even without ``splice driver``: they show that a failure in test_docker_*.py is
about the driver, not about how dockerd is run here.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from .conftest import IMAGE

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _ns(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def test_dockerd_runs_in_private_namespaces(docker_env):
    d = docker_env
    links_before = d.links()
    pid = d.dockerd.proc.pid
    assert _ns(pid, "net") == os.readlink(f"/proc/{d.holder.proc.pid}/ns/net")
    assert os.stat(d.host.path).st_ino == os.stat(f"/proc/{pid}/ns/net").st_ino, "dockerd is not in the host netns"
    assert _ns(pid, "mnt") != _ns("self", "mnt"), "dockerd shares the machine's mount namespace"
    # dockerd's plugin directory is ours
    marker = d.base / "plugins" / "harness-marker"
    marker.write_text("x")
    try:
        assert os.path.exists(d.holder.path("/run/docker/plugins/harness-marker"))
    finally:
        marker.unlink()
    out = d("run", "--rm", "--network", "none", IMAGE, "ip", "-o", "link").stdout
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]
    assert d.links() == links_before
    d.assert_machine_untouched()


class _Stub(BaseHTTPRequestHandler):
    """The least a NetworkDriver must answer for ``network create/rm`` with the null IPAM."""

    protocol_version = "HTTP/1.1"
    calls: list[str] = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.calls.append(self.path)
        reply = {"/Plugin.Activate": {"Implements": ["NetworkDriver"]},
                 "/NetworkDriver.GetCapabilities": {"Scope": "local", "ConnectivityScope": "local"}}.get(self.path, {})
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def test_dockerd_discovers_plugins_in_our_directory(docker_env):
    """A remote driver socket in <base>/plugins is what dockerd finds at /run/docker/plugins."""
    d = docker_env
    links_before = d.links()
    sock = d.base / "plugins" / "spdstub.sock"
    srv = _Server(str(sock), _Stub)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        d("network", "create", "-d", "spdstub", "--ipam-driver", "null", "stubnet")
        assert d("network", "inspect", "-f", "{{.Driver}}", "stubnet").stdout.strip() == "spdstub"
        d("network", "rm", "stubnet")
        assert "/NetworkDriver.CreateNetwork" in _Stub.calls and "/NetworkDriver.DeleteNetwork" in _Stub.calls
    finally:
        d("network", "rm", "stubnet", check=False)
        srv.shutdown()
        srv.server_close()
        sock.unlink(missing_ok=True)
    assert d.links() == links_before
    d.assert_machine_untouched()
