"""Malformed agent frames (issue 9's fuzz corpus, the agent's part): whatever a client sends,
the agent answers an error (or closes) without a traceback, makes nothing, and keeps
serving real calls."""

from __future__ import annotations

import json
import os
import socket

import pytest

from splice.plugins.agent import client as wire

from .test_hardening import _add_then_del

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

ENV_ADD = b"\0".join([b"CNI_COMMAND=ADD", b"CNI_CONTAINERID=fz", b"CNI_IFNAME=eth0", b"CNI_NETNS=/run/netns/none",
                      b"CNI_PATH=/opt/cni/bin"])
CONF = json.dumps({"cniVersion": "1.0.0", "name": "fz", "type": "splice-bridge"}).encode()


def frame(*fields: bytes) -> bytes:
    return wire.encode(list(fields))


def raw_len(n: int) -> bytes:
    return n.to_bytes(4, "big")


CASES = {
    "empty message": raw_len(0),
    "length only": raw_len(4),
    "more than announced": raw_len(4) + raw_len(0) + b"extra-bytes",
    "field longer than the message": raw_len(8) + raw_len(100) + b"abcd",
    "truncated field header": raw_len(2) + b"\x00\x01",
    "announced over the cap": raw_len(1 << 30),
    "unknown protocol": frame(b"9", b"bridge", ENV_ADD, CONF),
    "no kind": frame(wire.PROTOCOL),
    "unknown kind": frame(wire.PROTOCOL, b"no-such-plugin", ENV_ADD, CONF),
    "kind with a path": frame(wire.PROTOCOL, b"../../bin/sh", ENV_ADD, CONF),
    "no stdin field": frame(wire.PROTOCOL, b"bridge", ENV_ADD),
    "extra fields": frame(wire.PROTOCOL, b"bridge", ENV_ADD, CONF, b"x", b"y"),
    "env without =": frame(wire.PROTOCOL, b"bridge", b"CNI_COMMAND", CONF),
    "env not UTF-8": frame(wire.PROTOCOL, b"bridge", b"CNI_COMMAND=ADD\0CNI_IFNAME=\xff\xfe", CONF),
    "env with NUL runs": frame(wire.PROTOCOL, b"bridge", b"\0\0\0" + ENV_ADD + b"\0\0", CONF),
    "stdin not JSON": frame(wire.PROTOCOL, b"bridge", ENV_ADD, b"\xff{"),
    "stdin deep": frame(wire.PROTOCOL, b"bridge", ENV_ADD, b"[" * 100_000),
    "stdin with dataDir, deep": frame(wire.PROTOCOL, b"bridge", ENV_ADD, b'{"dataDir": ' + b"[" * 100_000),
    "command unknown": frame(wire.PROTOCOL, b"bridge", ENV_ADD.replace(b"ADD", b"EXPLODE", 1), CONF),
}


# well-framed requests that reach the plugin (with the caller's netns fd): the CNI code
PLUGIN_CODES = {"env not UTF-8": 4, "env with NUL runs": 3, "stdin not JSON": 6, "stdin deep": 6,
                "stdin with dataDir, deep": 6, "command unknown": 4}


def _exchange(path: str, data: bytes, fds=()) -> list[bytes] | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    try:
        s.connect(path)
        if fds:
            s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(memoryview(bytearray(
                b"".join(int(fd).to_bytes(4, "little", signed=True) for fd in fds)))))])
        else:
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        try:
            return wire.read_message(s)
        except (OSError, ValueError, EOFError):
            return None  # closed without an answer: allowed for garbage
    finally:
        s.close()


def _check_reply(reply: list[bytes] | None, code: int | None = None) -> None:
    if reply is None:
        assert code is None
        return
    assert reply[0] == wire.PROTOCOL
    if reply[1] == wire.IN_PROCESS:
        return
    assert reply[1] != b"0", reply  # never "success"
    text = b"".join(reply[2:]).decode(errors="replace")
    assert "Traceback" not in text, text
    err = json.loads(reply[2])
    assert isinstance(err.get("code"), int) and err.get("msg"), err
    if code is not None:
        assert err["code"] == code, err


def test_malformed_frames(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir, leaks):
    """Every case twice: without file descriptors, and with the throwaway host namespace's
    (as a client passes its own), so that well-framed garbage reaches the plugin's checks."""
    tried = handled = 0
    host_fd = os.open(host_ns.path, os.O_RDONLY)
    try:
        for name, data in CASES.items():
            for fds in ((), (host_fd,)):
                tried += 1
                _check_reply(_exchange(agent.socket, data, fds), PLUGIN_CODES.get(name) if fds else None)
                assert agent.alive, f"the agent died on {name!r}"
                handled += 1
    finally:
        os.close(host_fd)
    # file descriptors that are no network namespace, too many of them
    r, w = os.pipe()
    try:
        for fds in ([r], [r] * 8):
            tried += 1
            _check_reply(_exchange(agent.socket, frame(wire.PROTOCOL, b"bridge", ENV_ADD, CONF), fds))
            assert agent.alive
            handled += 1
    finally:
        os.close(r)
        os.close(w)
    assert (tried, handled) == (2 * len(CASES) + 2, 2 * len(CASES) + 2)
    assert host_ns.links() == {"lo"}  # nothing made in the host
    assert _add_then_del(agent, client_bin, host_ns, sandbox_ns, tmp_path, ipam_dir) < 5.0  # still serving
    leaks.assert_clean([sandbox_ns], [ipam_dir])
