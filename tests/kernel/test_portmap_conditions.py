"""conditionsV4/V6 parsing never touches the host's ruleset (defect 8).

libnftables parses the condition text as a rule in a private network namespace
(splice.libnet.nftexpr); the host namespace of these tests is a throwaway one, watched
with ``nft monitor`` and listed with ``nft -j`` (the oracle), never with splice code.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from splice.conformance import oracle
from splice.libnet.netns import Netns
from splice.plugins.portmap.conditions import parse_conditions
from splice.plugins.portmap.mapping import PortMappingError

pytestmark = [pytest.mark.root, pytest.mark.timeout(60)]

COND = ["ip saddr 192.0.2.0/24", 'iifname != "br0"']


def tables(ns) -> list[str]:
    return [t["name"] for t in oracle.nft_objects(ns.name, "table")]


def test_parse_translates_and_screens(host_ns):
    with Netns.open(host_ns.path) as ns:
        exprs = ns.run(parse_conditions, COND)
        assert exprs == [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": "192.0.2.0", "len": 24}}}},
            {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "br0"}}]
        for bad, msg in ((["ip saddr 1.2.3.4 drop"], "only match expressions"),
                         (["bogus thing"], "invalid conditions 'bogus thing': Error: .*bogus thing"),
                         (['iif "eth0"'], "match them by name, iifname/oifname"),
                         (["ip saddr 1.2.3.4; flush ruleset"], "must not contain ';'")):
            with pytest.raises(PortMappingError, match=msg):
                ns.run(parse_conditions, bad)
    assert tables(host_ns) == []


def test_a_process_killed_mid_parse_leaves_no_table(host_ns):
    """The process dies right after libnftables committed its scratch table (before any
    clean-up could run): the host ruleset must hold nothing."""
    code = textwrap.dedent("""
        import os, nftables
        for name in ("cmd", "json_cmd"):
            orig = getattr(nftables.Nftables, name)
            def wrapped(self, cmd, _orig=orig):
                rc, out, err = _orig(self, cmd)
                if rc == 0 and "table" in str(cmd) and ("add" in str(cmd) or "create" in str(cmd)):
                    os._exit(9)  # killed half-way
                return rc, out, err
            setattr(nftables.Nftables, name, wrapped)
        from splice.plugins.portmap.conditions import parse_conditions
        parse_conditions(["ip saddr 192.0.2.0/24"])
        print("not killed")
    """)
    p = subprocess.run(["nsenter", f"--net={host_ns.path}", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 9, p.stdout + p.stderr
    assert tables(host_ns) == []


def test_parse_never_creates_a_table_even_for_a_moment(host_ns):
    """``nft monitor`` in the host namespace sees no table come and go during a parse
    (markers before and after bracket it)."""
    mon = subprocess.Popen(["nsenter", f"--net={host_ns.path}", "nft", "monitor", "tables"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in mon.stdout], daemon=True).start()
    seen: list[str] = []

    def marker(name: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # repeated until the monitor is listening
            host_ns.sh("nft", "add", "table", "inet", name)
            host_ns.sh("nft", "delete", "table", "inet", name)
            try:
                while True:
                    line = lines.get(timeout=0.2)
                    seen.append(line)
                    if line == f"delete table inet {name}":
                        return
            except queue.Empty:
                continue
        raise AssertionError(f"nft monitor never showed {name}: {seen}")

    try:
        marker("spt_before")
        start = len(seen)
        with Netns.open(host_ns.path) as ns:
            ns.run(parse_conditions, COND)
        marker("spt_after")
        during = [line for line in seen[start:] if not line.endswith(" spt_after")]
    finally:
        mon.kill()
        mon.wait(timeout=10)
    assert during == []
    assert tables(host_ns) == []
