"""splice demo: two containers on a splice bridge, a masqueraded flow, a clean teardown.

Everything happens inside network namespaces this script creates (spd-<id>-host,
-c1, -c2, -world) and deletes at the end; the machine's own interfaces, routes,
sysctls and nftables are never touched. The CNI executables run inside the "host"
namespace, driven through a conflist exactly as libcni does.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for sub in ("libnet", "ipam", "plugins", "conformance"):
    sys.path.insert(0, str(REPO / sub))

from splice.conformance import oracle  # noqa: E402
from splice.conformance.runtime import Runtime  # noqa: E402

BIN = Path(sys.executable).parent


def say(text: str = "") -> None:
    print(text, flush=True)


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise SystemExit(f"demo: {' '.join(argv)} failed: {p.stderr.strip()}")
    return p


def in_ns(ns: str, *argv: str, **kw) -> subprocess.CompletedProcess:
    return sh("nsenter", f"--net=/run/netns/{ns}", *argv, **kw)


def show(title: str, ns: str, *argv: str) -> None:
    say(f"$ {' '.join(argv)}    # in {ns}")
    say(textwrap.indent(in_ns(ns, *argv).stdout.rstrip(), "  "))


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("demo: run as root (it creates network namespaces)")
    tag = secrets.token_hex(2)
    host, c1, c2, world = (f"spd-{tag}-{n}" for n in ("host", "c1", "c2", "world"))
    made: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="splice-demo-"))
    try:
        say("== 1. throwaway namespaces: a host, two containers, and an 'outside world'")
        for ns in (host, c1, c2, world):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # host <-> world link; world has no route back to the container subnet,
        # so replies only come back if the host masquerades.
        sh("ip", "-n", host, "link", "add", "uplink", "type", "veth", "peer", "name", "wan0", "netns", world)
        sh("ip", "-n", host, "addr", "add", "203.0.113.1/24", "dev", "uplink")
        sh("ip", "-n", host, "link", "set", "uplink", "up")
        sh("ip", "-n", world, "addr", "add", "203.0.113.2/24", "dev", "wan0")
        sh("ip", "-n", world, "link", "set", "wan0", "up")
        say(f"   {host} {c1} {c2} {world}")

        conflist = {
            "cniVersion": "1.1.0",
            "name": "demo-net",
            "plugins": [
                {
                    "type": "splice-bridge",
                    "bridge": "splice0",
                    "isDefaultGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "splice-ipam",
                        "ranges": [[{"subnet": "10.88.0.0/24"}]],
                        "dataDir": str(tmp / "ipam"),
                    },
                }
            ],
        }
        (tmp / "demo.conflist").write_text(json.dumps(conflist, indent=2))
        say("\n== 2. the conflist (" + str(tmp / "demo.conflist") + ")")
        say(textwrap.indent(json.dumps(conflist, indent=2), "  "))

        rt = Runtime(cni_path=[str(BIN)], cache_dir=str(tmp / "cache"), prefix=["nsenter", f"--net=/run/netns/{host}"])
        say("\n== 3. CNI ADD for both containers (splice-bridge + splice-ipam, run like libcni)")
        results = {}
        for cid, ns in (("demo-c1", c1), ("demo-c2", c2)):
            results[ns] = rt.add(conflist, cid, f"/run/netns/{ns}", "eth0")
            ips = [ip["address"] for ip in results[ns]["ips"]]
            say(f"   ADD {cid}: {ips}  ({rt.log[-1].seconds * 1000:.0f} ms)")
        show("c1", c1, "ip", "-br", "addr", "show", "dev", "eth0")
        show("c2", c2, "ip", "-br", "addr", "show", "dev", "eth0")
        show("routes", c1, "ip", "route")

        c2_ip = results[c2]["ips"][0]["address"].split("/")[0]
        say("\n== 4. c1 pings c2 across the bridge")
        say(textwrap.indent(in_ns(c1, "ping", "-c", "2", "-W", "2", c2_ip).stdout.rstrip(), "  "))

        say("\n== 5. a TCP flow from c1 to the outside world (203.0.113.2:8080)")
        server = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{world}", sys.executable, "-c", textwrap.dedent("""
                import socket
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("203.0.113.2", 8080)); s.listen(1); s.settimeout(10)
                c, peer = s.accept(); c.sendall(f"hello {peer[0]}".encode()); c.close()
                print(peer[0], flush=True)
            """)],
            stdout=subprocess.PIPE, text=True,
        )
        client = in_ns(c1, sys.executable, "-c", textwrap.dedent("""
            import socket, time
            for _ in range(50):
                try:
                    s = socket.create_connection(("203.0.113.2", 8080), timeout=3); break
                except ConnectionRefusedError:
                    time.sleep(0.05)
            print(s.recv(100).decode())
        """))
        peer = server.communicate(timeout=15)[0].strip()
        say(f"   the world says: {client.stdout.strip()!r}")
        say(f"   the world saw the connection coming from {peer} (the host), not from "
            f"{results[c1]['ips'][0]['address'].split('/')[0]}: masqueraded by nftables")
        show("nft", host, "nft", "list", "table", "inet", "splice_nat")

        say("\n== 6. CNI DEL for both containers")
        for cid, ns in (("demo-c1", c1), ("demo-c2", c2)):
            rt.delete(conflist, cid, f"/run/netns/{ns}", "eth0")
            say(f"   DEL {cid}  ({rt.log[-1].seconds * 1000:.0f} ms)")

        say("\n== 7. nothing is left")
        show("host links", host, "ip", "-br", "link")
        for ns in (c1, c2):
            show("container links", ns, "ip", "-br", "link")
        elements = oracle.nft_map_elements(host)
        say(f"   nftables map elements in the host: {len(elements)}")
        leases = sorted(p.name for p in (tmp / "ipam").rglob("*") if p.is_file())
        from splice.ipam.allocator import Ipam
        from splice.ipam.config import parse_ipam_config

        ipam = Ipam(parse_ipam_config(conflist["plugins"][0]["ipam"], conflist["name"]))
        left = [ipam.get(cid, "eth0") for cid in ("demo-c1", "demo-c2")]
        say(f"   IPAM reservations left: {sum(len(x) for x in left)} (store files: {leases})")
        ok = not elements and not any(left) and oracle.link_names(c1) == {"lo"} and oracle.link_names(c2) == {"lo"}

        say("\n== 8. the same calls through the resident agent (splice agent)")
        sock = tmp / "agent.sock"
        # the thin clients users install (#!/usr/bin/python3 -IS, stdlib only), with their own
        # copy of splice in cni-bin/.splice, whose `splice agent` runs the agent
        sh(str(BIN / "splice"), "install-cni", "--dir", str(tmp / "cni-bin"), "--socket", str(sock))
        agent = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{host}", str(tmp / "cni-bin" / ".splice" / "splice"), "agent",
             "--socket", str(sock)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                if sock.exists():
                    break
                time.sleep(0.05)
            rt = Runtime(cni_path=[str(tmp / "cni-bin")], cache_dir=str(tmp / "cache"),
                         prefix=["nsenter", f"--net=/run/netns/{host}"])
            rt.add(conflist, "demo-c1", f"/run/netns/{c1}", "eth0")  # the first call warms the agent's caches
            rt.delete(conflist, "demo-c1", f"/run/netns/{c1}", "eth0")
            rt.add(conflist, "demo-c1", f"/run/netns/{c1}", "eth0")
            say(f"   ADD demo-c1 via the agent: {rt.log[-1].seconds * 1000:.0f} ms "
                "(the executable hands its call and its network namespace to the agent)")
            ok = ok and oracle.ping(c1, "10.88.0.1")
            rt.delete(conflist, "demo-c1", f"/run/netns/{c1}", "eth0")
            say(f"   DEL demo-c1 via the agent: {rt.log[-1].seconds * 1000:.0f} ms")
            ok = ok and oracle.link_names(c1) == {"lo"} and not oracle.nft_map_elements(host)
        finally:
            agent.terminate()
            agent.wait(timeout=10)
        say("\n== demo " + ("OK" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
