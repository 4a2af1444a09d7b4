#!/usr/bin/env python3
"""splice port mapping at scale: ADD/DEL with 0 / 1,000 / 10,000 existing mappings.

For each scale this creates a throwaway host namespace (spb-<id>), pre-populates it with
N synthetic published ports in ONE nftables transaction (realistic elements, built with
the library's own builders: claim, DNAT element, masquerade registration on the
benchmark's bridge, ownership pairs; host ports 30000+i, container addresses
10.233.200.0+i, outside the IPAM allocations), then measures, in that namespace:

* ``chain``: the whole conflist splice-bridge + splice-ipam + splice-portmap through the
  harness cnibench.py (like bench/compare.py: installed thin clients, with a private
  ``splice agent`` and/or without), N attachments, every check on (address, ping to the
  gateway, TCP through 127.0.0.1:<hostPort>, clean after DEL): ADD/DEL p50 of the chain and
  of the splice-portmap call alone;
* ``inproc``: PortPublisher.publish / unpublish of one container (one TCP mapping, one
  IPv4 address) in a resident process with one reused libnftables context and netfilter
  socket: the kernel and libnftables cost of an update, without process start-up. (With
  0 existing mappings each unpublish is the last user of route_localnet on the bridge and
  switches it off again: two sysctl writes and one more transaction.)

The Go reference is not re-run here at scale: it was measured once (one container
ADD 65 ms with no mappings, 300 ms with 1,000, 6.5 s with 10,000).

Usage (root):  .venv/bin/python bench/portmap_scale.py [--scales 0,1000,10000] [-n 50] [--repeat 1]
               [--impl splice-agent --impl splice-noagent] [--inproc-ops 300] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as C  # noqa: E402  (install_clients, start_agent, stop_agent: the same agent handling)

VENV_PY = str(Path(sys.executable))
NET = "pfbench-pm-scale"
BRIDGE = "pfbr1"
SUBNET = "10.233.0.0/16"
IMPLS = ("splice-agent", "splice-noagent")


def conflist(data_dir: str) -> dict:
    return {"cniVersion": "1.0.0", "name": NET, "plugins": [
        {"type": "splice-bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "splice-ipam", "ranges": [[{"subnet": SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": data_dir}},
        {"type": "splice-portmap", "capabilities": {"portMappings": True}, "snat": True},
    ]}


# -- run inside the namespace (this file re-executed with --populate / --inproc) ---------------
def populate(n: int) -> dict:
    """N synthetic mappings in one transaction; returns timings."""
    from ipaddress import ip_address

    from splice.libnet import nft as N
    from splice.libnet.portmap import builders as B
    from splice.libnet.portmap import model as M
    from splice.plugins.portmap.driver import owner_tag

    t0 = time.perf_counter()
    B.apply_text(B.scaffold_text())
    nft = N.Nft()
    if not set(M.BASE_CHAINS) <= nft.chain_names(M.FAMILY, M.TABLE):
        nft.apply(B.build_base_chains_once())
    cmds: list[dict] = []
    base = int(ip_address("10.233.200.0"))
    for i in range(n):
        addr = ip_address(base + i)
        tag = owner_tag(NET, f"synthetic-{i:05d}", "eth0")
        p = M.Published("tcp", 30000 + i, None, addr, 80)
        cmds += B.build_publish(tag, [p], [M.Masq(addr, BRIDGE, False)], {}, [])
    t1 = time.perf_counter()
    if cmds:
        nft.apply(cmds)
    t2 = time.perf_counter()
    return {"mappings": n, "commands": len(cmds), "build_s": round(t1 - t0, 3), "apply_s": round(t2 - t1, 3)}


def inproc(ops: int) -> dict:
    """publish + unpublish of one fresh container, ``ops`` times, one resident context."""
    from ipaddress import ip_interface

    from splice.libnet import conntrack
    from splice.libnet import nft as N
    from splice.libnet.portmap.publisher import PortPublisher
    from splice.plugins.portmap.mapping import PortMapping, expand

    conntrack.share_sockets(True)  # as in a resident process (the agent): one netfilter socket kept
    pub = PortPublisher(N.Nft())
    add, rm = [], []
    for i in range(ops):
        owner = f"inproc c{i} eth0"
        addr = [ip_interface(f"10.233.250.{2 + i % 250}/16")]
        m = [PortMapping(45000 + i, 80)]
        t = time.perf_counter()
        pub.publish(owner, expand(m, addr))
        add.append(time.perf_counter() - t)
        t = time.perf_counter()
        pub.unpublish(owner, expand(m, addr))
        rm.append(time.perf_counter() - t)

    def p(v, q):
        v = sorted(v)
        return round(1000 * v[min(len(v) - 1, int(q * len(v)))], 3)

    return {"ops": ops, "publish_ms_p50": p(add, 0.5), "publish_ms_p99": p(add, 0.99),
            "unpublish_ms_p50": p(rm, 0.5), "unpublish_ms_p99": p(rm, 0.99)}


def in_ns(ns: str, *argv: str) -> dict:
    p = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", VENV_PY, __file__, *argv], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{argv} in {ns} failed: {p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def count_elements(ns: str) -> int:
    out = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "nft", "-j", "list", "map", "inet", "splice_portmap",
                          "dnat4"], capture_output=True, text=True).stdout
    for item in json.loads(out or '{"nftables": []}')["nftables"]:
        if "map" in item:
            return len(item["map"].get("elem", []))
    return 0


# -- the driver ----------------------------------------------------------------------------
def run_scale(args, scale: int) -> dict:
    ns = f"spb-{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix="splice-pmscale-"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    out: dict = {"scale": scale}
    agents = []
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        out["populate"] = in_ns(ns, "--populate", str(scale))
        out["dnat4_elements_before"] = count_elements(ns)
        bin_dir = tmp / "bin"
        C.install_clients(bin_dir)
        conf = tmp / "splice.conflist"
        conf.write_text(json.dumps(conflist(str(tmp / "ipam"))))
        for impl in args.impl or list(IMPLS):
            env = dict(os.environ)
            sock = tmp / f"{impl}.sock"
            env["SPLICE_AGENT_SOCKET"] = str(sock)  # no agent: nothing listens there
            if impl == "splice-agent":
                agents.append(C.start_agent(ns, sock, tmp / "agent.log"))
            argv = ["nsenter", f"--net=/run/netns/{ns}", "/usr/bin/python3", args.cnibench,
                    "--plugin-dir", f"{bin_dir}:{C.GO_BIN}", "--conflist", str(conf), "-n", str(args.n),
                    "-w", "1", "--repeat", str(args.repeat), "--prefix", "pfps", "--label", f"{impl}-{scale}"]
            p = subprocess.run(argv, capture_output=True, text=True, env=env)
            sys.stderr.write(p.stderr)
            if p.returncode != 0:
                raise SystemExit(f"cnibench failed for {impl} at {scale}: rc={p.returncode}")
            out[impl] = summarize(json.loads(p.stdout))
            if agents:
                C.stop_agent(agents.pop())
        out["inproc"] = in_ns(ns, "--inproc", str(args.inproc_ops))
        out["dnat4_elements_after"] = count_elements(ns)
    finally:
        for a in agents:
            C.stop_agent(a)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["rm", "-rf", str(tmp)])
    return out


def summarize(report: dict) -> dict:
    """Chain and per-plugin p50 (median over rounds), checks and errors."""
    rounds = report.get("rounds", [])

    def med(vals):
        vals = [v for v in vals if v is not None]
        return round(statistics.median(vals), 2) if vals else None

    s = {"add_ms_p50": med([r["add_ms"].get("p50") for r in rounds]),
         "del_ms_p50": med([r["del_ms"].get("p50") for r in rounds]),
         "add_ms_p99": med([r["add_ms"].get("p99") for r in rounds]),
         "del_ms_p99": med([r["del_ms"].get("p99") for r in rounds])}
    for cmd in ("ADD", "DEL"):
        for plugin in ("splice-bridge", "splice-portmap"):
            s[f"{plugin}_{cmd}_p50"] = med([(r["per_plugin_ms"].get(cmd, {}).get(plugin) or {}).get("p50")
                                            for r in rounds])
    checks: dict = {}
    for r in rounds:
        for k, v in (r.get("checks") or {}).items():
            c = checks.setdefault(k, [0, 0])
            c[0] += v["ok"]
            c[1] += v["fail"]
    s["checks"] = {k: f"{a}/{b}" for k, (a, b) in checks.items()}
    s["errors"] = sum(r.get("errors_total", 0) for r in rounds)
    return s


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--populate":
        print(json.dumps(populate(int(sys.argv[2]))))
        return 0
    if len(sys.argv) > 2 and sys.argv[1] == "--inproc":
        print(json.dumps(inproc(int(sys.argv[2]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="0,1000,10000")
    ap.add_argument("-n", type=int, default=50, help="attachments per cnibench round")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--impl", action="append", choices=IMPLS)
    ap.add_argument("--inproc-ops", type=int, default=300)
    ap.add_argument("--cnibench", default=str(REPO.parent / "shared" / "bench" / "cnibench.py"))
    ap.add_argument("--out")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    results = [run_scale(args, int(s)) for s in args.scales.split(",")]
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    impls = args.impl or list(IMPLS)
    base = results[0]
    print(f"splice port mapping at scale (N={args.n} attachments per round, repeats={args.repeat}; ms, p50)")
    head = ["existing mappings", "populate (1 txn) s"]
    for impl in impls:
        head += [f"{impl} chain ADD", f"{impl} chain DEL", f"{impl} portmap ADD", f"{impl} portmap DEL"]
    head += ["in-process publish", "in-process unpublish"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        cells = [f"{r['scale']:,}", f"{r['populate']['apply_s']:.2f}"]
        for impl in impls:
            s = r[impl]
            for k in ("add_ms_p50", "del_ms_p50", "splice-portmap_ADD_p50", "splice-portmap_DEL_p50"):
                v, b = s.get(k), base[impl].get(k)
                cells.append(f"{v:.1f} ({v / b:.2f}x)" if v and b else str(v))
        for k in ("publish_ms_p50", "unpublish_ms_p50"):
            v, b = r["inproc"][k], base["inproc"][k]
            cells.append(f"{v:.3f} ({v / b:.2f}x)")
        print("| " + " | ".join(cells) + " |")
    for r in results:
        print(f"{r['scale']:,}: " + "; ".join(f"{i} checks {r[i]['checks']} errors {r[i]['errors']}" for i in impls)
              + f"; dnat4 elements {r['dnat4_elements_before']} before, {r['dnat4_elements_after']} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
