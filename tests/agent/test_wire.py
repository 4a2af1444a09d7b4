"""The agent's wire format, the thin client's pure parts and the CLI (no root needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splice.plugins.agent import client as wire
from splice.plugins.cli import main as cli

from ..conftest import bin_dir


def test_encode_decode_round_trip():
    fields = [b"1", b"bridge", b"A=1\0B=x=y", b"", bytes(range(256)) * 10]
    msg = wire.encode(fields)
    assert int.from_bytes(msg[:4], "big") == len(msg) - 4
    assert wire.decode(msg[4:]) == fields


@pytest.mark.parametrize("body", [b"\x00\x00\x00", b"\x00\x00\x00\x05abc", b"\x00\x00\x00\x02a"])
def test_decode_rejects_truncated_bodies(body):
    with pytest.raises(ValueError):
        wire.decode(body)


def test_socket_path_from_environment(monkeypatch):
    import posix

    monkeypatch.delitem(posix.environ, b"SPLICE_AGENT_SOCKET", raising=False)
    assert wire.socket_path() == wire.DEFAULT_SOCKET.encode()
    assert wire.socket_path("/x/y.sock") == b"/x/y.sock"
    for value, want in ((b"/tmp/a.sock", b"/tmp/a.sock"), (b"", None), (b"off", None)):
        monkeypatch.setitem(posix.environ, b"SPLICE_AGENT_SOCKET", value)
        assert wire.socket_path("/x/y.sock") == want


def test_connect_without_agent_is_none(tmp_path):
    assert wire.connect(str(tmp_path / "nothing.sock").encode()) is None


def test_client_module_is_stdlib_only():
    """The thin client imports nothing but interpreter built-ins at module level."""
    p = subprocess.run([sys.executable, "-IS", "-c",
                        f"import sys; sys.path.insert(0, {os.path.dirname(wire.__file__)!r}); "
                        "before = set(sys.modules); import client; "
                        "print(sorted(set(sys.modules) - before))"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert set(eval(p.stdout)) <= {"client", "_socket"}


def test_install_cni_writes_launchers(tmp_path):
    paths = cli.install_cni(str(tmp_path), socket="/run/x/agent.sock", mode="linked")
    assert [os.path.basename(p) for p in paths] == ["splice-bridge", "splice-ipam", "splice-portmap", "splice-macvlan",
                                                         "splice-ipvlan", "splice-vxlan"]
    text = (tmp_path / "splice-ipam").read_text()
    assert text.startswith(f"#!{cli.base_interpreter()} -IS\n")
    assert "from client import standalone" in text and "'/run/x/agent.sock'" in text
    assert "in_process" in text and "'ipam'" in text
    compile(text, "splice-ipam", "exec")
    inline = cli.install_cni(str(tmp_path / "inline"), mode="client-only", names=["splice-bridge"])
    body = open(inline[0]).read()
    assert "def standalone(" in body and "from client import" not in body
    compile(body, "splice-bridge", "exec")


def test_launcher_without_splice_prints_cni_error(tmp_path):
    cli.install_cni(str(tmp_path), names=["splice-bridge"], mode="linked")
    exe = tmp_path / "splice-bridge"
    exe.write_text(exe.read_text().replace(os.path.dirname(wire.__file__), str(tmp_path / "gone")))
    p = subprocess.run([str(exe)], input=b"{}", capture_output=True, env={"CNI_COMMAND": "ADD"})
    assert p.returncode == 1
    assert json.loads(p.stdout)["code"] == 100


def test_cli_commands():
    ap = cli.parser()
    assert {"agent", "status", "install-cni"} <= set(cli.COMMANDS)
    args = ap.parse_args(["agent", "--socket", "/tmp/s.sock", "--workers", "4"])
    assert (args.command, args.socket, args.workers) == ("agent", "/tmp/s.sock", 4)
    p = subprocess.run([str(bin_dir() / "splice")], capture_output=True, text=True)
    assert p.returncode == 2 and "install-cni" in p.stderr


def test_status_without_agent(tmp_path):
    p = subprocess.run([str(bin_dir() / "splice"), "status", "--socket", str(tmp_path / "x.sock")],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "no agent" in p.stderr


@pytest.mark.parametrize("command, socket, notices", [
    ("ADD", "missing", 1),      # no agent: one line on stderr, then in-process
    ("DEL", "stale", 1),        # a socket file nobody listens on (a killed agent)
    ("VERSION", "missing", 0),  # VERSION does no work: no notice
    ("ADD", "off", 0),          # the agent disabled on purpose: no notice
])
def test_no_agent_notice_once_per_call(tmp_path, command, socket, notices):
    import socket as socket_mod

    cli.install_cni(str(tmp_path / "bin"), names=["splice-bridge"], mode="linked")
    path = str(tmp_path / "agent.sock")
    if socket == "stale":
        s = socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_STREAM)
        s.bind(path)
        s.close()
    env = {"CNI_COMMAND": command, "SPLICE_AGENT_SOCKET": "off" if socket == "off" else path, "PATH": "/usr/bin:/bin"}
    p = subprocess.run([str(tmp_path / "bin" / "splice-bridge")], input=b'{"cniVersion": "1.0.0", "name": "n"}',
                       env=env, capture_output=True, timeout=60)
    err = p.stderr.decode()
    lines = [line for line in err.splitlines() if "no splice agent" in line]
    assert len(lines) == notices, err
    if notices:
        assert lines[0].startswith(f"splice-bridge: no splice agent at {path} (") and "in-process" in lines[0]
        assert err.startswith(lines[0])  # first, before anything the plugin says
    out = json.loads(p.stdout)  # stdout stays exactly the CNI JSON
    assert ("supportedVersions" in out) if command == "VERSION" else (out["code"] == 4)


def test_install_bundle_reuses_and_prunes(tmp_path, monkeypatch):
    """One bundle per content: the same sources reuse it, new ones add one, the previous is
    kept (calls in flight), older ones go."""
    import shutil

    frozen = tmp_path / "src"
    sources = []
    for src, rel in cli._bundle_sources():
        dst = frozen / rel
        if os.path.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        sources.append((str(dst), rel))
    monkeypatch.setattr(cli, "_bundle_sources", lambda: sources)
    lib = tmp_path / "lib"
    python = cli.base_interpreter()

    def bundles() -> set[str]:
        return {p.name for p in lib.iterdir() if p.is_dir()}

    first = cli.install_bundle(str(lib), python)
    assert cli.install_bundle(str(lib), python) == first and bundles() == {os.path.basename(first)}
    assert list((Path(first) / "splice" / "plugins" / "agent" / "__pycache__").glob("client.*.pyc"))
    marker = frozen / "splice" / "plugins" / "__init__.py"
    marker.write_text(marker.read_text() + "\n# changed 1\n")
    second = cli.install_bundle(str(lib), python)
    assert second != first and bundles() == {os.path.basename(first), os.path.basename(second)}
    os.utime(first, (1, 1))
    os.utime(second, (2, 2))
    marker.write_text(marker.read_text() + "# changed 2\n")
    third = cli.install_bundle(str(lib), python)
    assert bundles() == {os.path.basename(second), os.path.basename(third)}  # the oldest went


def test_client_stdin_limit_is_the_plugins():
    """The client sends at most one byte more than a plugin accepts (skel answers code 6)."""
    from splice.plugins.cni import skel

    assert wire.MAX_STDIN == skel.MAX_REQUEST_BYTES


@pytest.mark.parametrize("peerpidfd", [True, False])
def test_peer_facts_name_the_connected_process(monkeypatch, peerpidfd):
    """The pid, capabilities, mount namespace and root of the peer, via SO_PEERPIDFD or
    (older kernels) SO_PEERCRED + pidfd_open; a peer that hung up is refused."""
    import socket

    from splice.plugins.agent import server

    if not peerpidfd:
        monkeypatch.setattr(server, "SO_PEERPIDFD", 0x7FFF)  # ENOPROTOOPT: the fallback
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        facts = server.peer_facts(a)
        assert facts == {**server.own_facts(), "pid": os.getpid()}
        b.close()
        if not peerpidfd:
            with pytest.raises(server.PeerGone):
                server.peer_facts(a)
    finally:
        a.close()
        b.close()
