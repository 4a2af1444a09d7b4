"""Shared plumbing of the deliberately broken plugins (stdlib only; run by /usr/bin/python3).

Each broken plugin wraps the real ``splice-bridge`` (or the plugin it sets ``REAL`` to) found in CNI_PATH (skipping this
directory), runs it and then misbehaves in exactly one way. State that must survive
between calls lives under ``$TMPDIR/spc-broken-state`` (keys include the container id,
which the kit makes unique per check).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.realpath(__file__))
REAL = "splice-bridge"
STATE = os.path.join(tempfile.gettempdir(), "spc-broken-state")


def real_binary(name: str | None = None) -> str:
    """The wrapped plugin (``REAL``, which a wrapper may set) found in CNI_PATH."""
    name = name or REAL
    for d in os.environ.get("CNI_PATH", "").split(":"):
        if not d or os.path.realpath(d) == HERE:
            continue
        cand = os.path.join(d, name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    sys.stdout.write(json.dumps({"code": 7, "msg": f"broken plugin: {name} not found in CNI_PATH"}))
    sys.exit(1)


def read_stdin() -> bytes:
    return sys.stdin.buffer.read()


def parse(data: bytes) -> dict:
    """The config; input the real plugin must reject (not JSON) goes to it unchanged."""
    try:
        conf = json.loads(data)
    except ValueError:
        conf = None
    if not isinstance(conf, dict):
        passthrough(run_real(data))
    return conf


def run_real(stdin: bytes, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([real_binary()], input=stdin, capture_output=True, env=env or dict(os.environ))


def passthrough(p: subprocess.CompletedProcess, stdout: bytes | None = None) -> None:
    sys.stderr.buffer.write(p.stderr)
    sys.stdout.buffer.write(p.stdout if stdout is None else stdout)
    sys.stdout.flush()
    sys.exit(p.returncode)


def exec_real() -> None:
    os.execv(real_binary(), [real_binary()])


def state_file(conf: dict) -> str:
    os.makedirs(STATE, exist_ok=True)
    key = f"{conf.get('name')}-{os.environ.get('CNI_CONTAINERID')}-{os.environ.get('CNI_IFNAME')}"
    return os.path.join(STATE, key)


def host_veth(conf: dict) -> str:
    """splice-bridge's deterministic host veth name (see plugins/bridge/driver.py)."""
    text = f"{conf.get('name')}\0{os.environ.get('CNI_CONTAINERID')}\0{os.environ.get('CNI_IFNAME')}"
    return "veth" + hashlib.sha256(text.encode()).hexdigest()[:10]
