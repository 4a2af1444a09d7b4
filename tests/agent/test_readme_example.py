"""README's "One call by hand" block, run as written (only the CNI directory and the
namespace names swapped for the test's own) against executables from `splice install-cni`."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from ..conftest import NS_PREFIX, REPO, require_tool
from .conftest import install_clients

pytestmark = pytest.mark.root

MARKER = "<!-- by-hand example (tests/agent/test_readme_example.py runs this block) -->"


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    assert MARKER in text, "README lost its by-hand example"
    m = re.search(r"```sh\n(.*?)\n```", text[text.index(MARKER):], re.S)
    assert m, "no ```sh block after the marker"
    return m.group(1)


def test_readme_by_hand_example(tmp_path):
    require_tool("ip", "nsenter", "ping")
    cni_dir = install_clients(tmp_path / "cni-bin")
    tag = f"{NS_PREFIX}{os.getpid()}-rd"
    host, ctr = f"{tag}h", f"{tag}c"
    block = readme_block()
    for name in ("ex-host", "ex-ctr", "/opt/cni/bin"):
        assert name in block
    script = block.replace("/opt/cni/bin", str(cni_dir)).replace("ex-host", host).replace("ex-ctr", ctr)
    sock = str(tmp_path / "no-agent.sock")
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "SPLICE_AGENT_SOCKET": sock, "TMPDIR": str(tmp_path)})
    print(p.stdout + p.stderr)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    result = json.loads(out[:out.index("CHECK: ok")])  # the ADD result, as the runtime reads it
    assert result["cniVersion"] == "1.0.0"
    assert [i["name"] for i in result["interfaces"]][0::2] == ["splice0", "eth0"]
    assert result["interfaces"][2]["sandbox"] == f"/run/netns/{ctr}"
    assert result["ips"][0]["gateway"] == "10.88.0.1" and result["ips"][0]["address"].startswith("10.88.")
    assert out.rstrip().endswith("CHECK: ok\nping 10.88.0.1: ok\nDEL: ok"), out
    notices = [line for line in p.stderr.splitlines() if line.startswith("splice-bridge: no splice agent at ")]
    assert len(notices) == 3 and sock in notices[0], p.stderr  # ADD, CHECK, DEL: in-process, said once each
    assert not {host, ctr} & set(os.listdir("/run/netns")), "the example must delete its namespaces"
