#!/usr/bin/env python3
"""A/B of one ``splice-portmap`` call: source trees side by side, in one throwaway namespace.

Each tree is a directory holding splice's source layout (``libnet/``, ``plugins/``,
``ipam/``, ``conformance/``: e.g. ``git archive <rev> | tar -x -C DIR``); its code is put
first on PYTHONPATH, so the venv's editable install is bypassed. In a throwaway host
namespace (spb-<id>, and another one standing for the sandbox) with a bridge ``pabr0`` (10.240.0.1/16), every round runs, for each
tree in turn (alternating the order, so that machine noise hits all trees alike), one
process ``in_process("portmap")`` doing ADD (a chained call: prevResult with the bridge, a
host veth name and the sandbox address 10.240.x.y, one TCP mapping, snat on) and then one
doing DEL, and times each process from fork to exit. Also measures the import of the
plugin module alone (the VERSION path) with ``-X importtime``.

Usage (root):  .venv/bin/python bench/portmap_ab.py --tree before=/tmp/a --tree after=/tmp/b [-n 100]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time

CODE = "import sys; from splice.plugins.cni.main import in_process; sys.exit(in_process('portmap'))"
PARTS = ("libnet", "plugins", "ipam", "conformance")


def env_for(tree: str, command: str, i: int, sandbox: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(PYTHONPATH=":".join(os.path.join(tree, p) for p in PARTS), SPLICE_AGENT_SOCKET="off",
               CNI_COMMAND=command, CNI_CONTAINERID=f"ab{i:05d}", CNI_NETNS=f"/run/netns/{sandbox}",
               CNI_IFNAME="eth0", CNI_PATH="/nonexistent")
    return env


def conf(i: int, port: int) -> bytes:
    addr = f"10.240.{1 + i // 250}.{2 + i % 250}/16"
    prev = {"cniVersion": "1.0.0",
            "interfaces": [{"name": "pabr0"}, {"name": f"vab{i:05d}"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": addr, "interface": 2, "gateway": "10.240.0.1"}]}
    return json.dumps({"cniVersion": "1.0.0", "name": "pfbench-ab", "type": "splice-portmap", "snat": True,
                       "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80}]},
                       "prevResult": prev}).encode()


def call(ns: str, sandbox: str, tree: str, command: str, i: int, port: int) -> float:
    argv = ["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", CODE]
    t = time.perf_counter()
    p = subprocess.run(argv, input=conf(i, port), capture_output=True, env=env_for(tree, command, i, sandbox))
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{command} with {tree} failed: {p.stdout!r} {p.stderr!r}")
    return dt * 1000


def import_ms(tree: str) -> float:
    env = env_for(tree, "VERSION", 0)
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", "import splice.plugins.cni.portmap_plugin"],
                       capture_output=True, text=True, env=env)
    line = [ln for ln in p.stderr.splitlines() if ln.rstrip().endswith("splice.plugins.cni.portmap_plugin")][-1]
    return int(line.split("|")[1]) / 1000


def pct(vals: list[float], q: float) -> float:
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(q * len(vals)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", required=True, help="NAME=DIR (repeatable)")
    ap.add_argument("-n", type=int, default=100)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    trees = [t.split("=", 1) for t in args.tree]
    ns, sandbox = f"spb-{secrets.token_hex(3)}", f"spb-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "netns", "add", sandbox], check=True)
    res: dict[str, dict[str, list[float]]] = {name: {"ADD": [], "DEL": [], "import": []} for name, _ in trees}
    try:
        for cmd in ("link set lo up", "link add pabr0 type bridge", "addr add 10.240.0.1/16 dev pabr0",
                    "link add pad type veth peer name pad2", "link set pad master pabr0", "link set pad up",
                    "link set pad2 up", "link set pabr0 up"):
            subprocess.run(["ip", "-n", ns, *cmd.split()], check=True)
        for i in range(args.n):
            order = trees if i % 2 == 0 else trees[::-1]
            for k, (name, tree) in enumerate(order):
                port = 20000 + 2 * i + k
                res[name]["ADD"].append(call(ns, sandbox, tree, "ADD", i, port))
                res[name]["DEL"].append(call(ns, sandbox, tree, "DEL", i, port))
        for _ in range(15):
            for name, tree in trees:
                res[name]["import"].append(import_ms(tree))
    finally:
        for name in (ns, sandbox):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    print(f"splice-portmap, one process per call, N={args.n} (ms)")
    print("| tree | ADD p50 | ADD p90 | DEL p50 | DEL p90 | plugin module import p50 |")
    print("|---|---|---|---|---|---|")
    for name, _ in trees:
        r = res[name]
        print(f"| {name} | {pct(r['ADD'], .5):.1f} | {pct(r['ADD'], .9):.1f} | {pct(r['DEL'], .5):.1f} | "
              f"{pct(r['DEL'], .9):.1f} | {statistics.median(r['import']):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
