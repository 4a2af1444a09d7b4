#!/usr/bin/env python3
"""Side-by-side port-mapping benchmark: splice vs the Go reference, bridge + IPAM + portmap.

The Go chain is the shared conflist /work/shared/bench/conf/bridge-portmap.conflist
(bridge + host-local + portmap, snat); splice runs the same conflist with the plugin types
swapped (splice-bridge + splice-ipam + splice-portmap). As bench/compare.py does, each
implementation runs the plugin-agnostic harness cnibench.py inside a throwaway host
namespace (spb-<id>), so bridges, veths, nftables/iptables rules and sysctls never touch
the machine. cnibench checks every attachment: address on the interface, ping to the
gateway, a TCP exchange through 127.0.0.1:<hostPort> into the container (localhost DNAT:
route_localnet and the masquerade), and a clean sandbox after DEL.

Implementations (the splice ones as in bench/compare.py, whose helpers this reuses):

* ``go``: /usr/lib/cni (bridge + host-local + portmap 1.1.1, iptables backend);
* ``splice-agent``: thin clients written by ``splice install-cni``, served by a private
  ``splice agent`` started inside the benchmark namespace (stopped by pid at the end);
* ``splice-noagent``: the same thin clients with nothing on their socket (each call runs
  the plugin in-process after the client finds no agent);
* ``splice-direct``: the console scripts of the venv (``splice-bridge`` etc., what
  ``pip install`` provides), in-process, no agent lookup.

Prints, per worker count, chain and per-plugin (the portmap call alone) ADD/DEL p50/p99
and throughput, with splice/Go ratios. Targets: ADD p50 and DEL p50 of the
chain <= 0.5x the reference's.

Usage (root):  .venv/bin/python bench/portmap_compare.py [-n 200] [-w 1 -w 8] [--repeat 3]
               [--impl go --impl splice-agent ...] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as C  # noqa: E402  (install_clients, start_agent, stop_agent, GO_BIN)

GO_CONF = REPO.parent / "shared" / "bench" / "conf" / "bridge-portmap.conflist"
IMPLS = ("go", "splice-agent", "splice-noagent", "splice-direct")
SPLICE_TYPES = {"bridge": "splice-bridge", "host-local": "splice-ipam", "portmap": "splice-portmap"}


def conflist(impl: str, data_dir: str) -> dict:
    conf = json.loads(GO_CONF.read_text())
    for plugin in conf["plugins"]:
        if impl != "go":
            plugin["type"] = SPLICE_TYPES[plugin["type"]]
        if "ipam" in plugin:
            if impl != "go":
                plugin["ipam"]["type"] = SPLICE_TYPES[plugin["ipam"]["type"]]
            plugin["ipam"]["dataDir"] = data_dir
    return conf


def run_one(args, impl: str, workers: int) -> dict:
    return C.run_cnibench(args, lambda data_dir: conflist(impl, data_dir), impl, workers, f"{impl}-w{workers}",
                          prefix="pfpm")


def med(vals) -> float:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else float("nan")


def metrics(report: dict) -> dict[str, float]:
    rounds = report.get("rounds", [])
    out = {
        "chain ADD p50": med([r["add_ms"].get("p50") for r in rounds]),
        "chain ADD p99": med([r["add_ms"].get("p99") for r in rounds]),
        "chain DEL p50": med([r["del_ms"].get("p50") for r in rounds]),
        "chain DEL p99": med([r["del_ms"].get("p99") for r in rounds]),
        "ADD/s": med([r.get("add_throughput_per_s") for r in rounds]),
        "DEL/s": med([r.get("del_throughput_per_s") for r in rounds]),
    }
    for cmd in ("ADD", "DEL"):
        for role, names in (("bridge", ("bridge", "splice-bridge")), ("portmap", ("portmap", "splice-portmap"))):
            vals = []
            for r in rounds:
                per = r["per_plugin_ms"].get(cmd, {})
                for n in names:
                    if n in per:
                        vals.append(per[n].get("p50"))
            out[f"{role} {cmd} p50"] = med(vals)
    return out


def checks(report: dict) -> str:
    total: dict[str, list[int]] = {}
    for r in report.get("rounds", []):
        for k, v in (r.get("checks") or {}).items():
            c = total.setdefault(k, [0, 0])
            c[0] += v["ok"]
            c[1] += v["fail"]
    errs = sum(r.get("errors_total", 0) for r in report.get("rounds", []))
    peers = sorted({p for r in report.get("rounds", []) for p in r.get("portmap_peer_addrs_seen", [])})
    return (", ".join(f"{k} {a}/{b}" for k, (a, b) in total.items()) + f"; errors {errs}; "
            f"peers seen by the container via 127.0.0.1: {peers[:3]}")


def table(reports: dict, impls: list[str], workers: int, args) -> str:
    rows = ["chain ADD p50", "chain ADD p99", "chain DEL p50", "chain DEL p99", "ADD/s", "DEL/s",
            "portmap ADD p50", "portmap DEL p50", "bridge ADD p50", "bridge DEL p50"]
    m = {i: metrics(reports[(i, workers)]) for i in impls}
    lines = [f"bridge + IPAM + portmap, N={args.n}, workers={workers}, repeats={args.repeat} (ms; medians of rounds)"]
    head = ["metric"] + impls + [f"{i}/go" for i in impls if i != "go" and "go" in impls]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for row in rows:
        vals = [m[i][row] for i in impls]
        cells = [row] + [f"{v:.1f}" for v in vals]
        if "go" in impls:
            g = m["go"][row]
            cells += [f"{v / g:.2f}" for i, v in zip(impls, vals) if i != "go"]
        lines.append("| " + " | ".join(cells) + " |")
    for i in impls:
        lines.append(f"{i}: {checks(reports[(i, workers)])}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("-w", type=int, action="append", help="worker counts (repeatable; default 1)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--impl", action="append", choices=IMPLS, help="implementations (repeatable; default all)")
    ap.add_argument("--cnibench", default=str(REPO.parent / "shared" / "bench" / "cnibench.py"))
    ap.add_argument("--out", help="write the raw reports as JSON here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    workers = args.w or [1]
    impls = args.impl or list(IMPLS)
    reports = {}
    for w in workers:
        for impl in impls:
            reports[(impl, w)] = run_one(args, impl, w)
    if args.out:
        Path(args.out).write_text(json.dumps({f"{i}-w{w}": r for (i, w), r in reports.items()}, indent=1))
    for w in workers:
        print(table(reports, impls, w, args))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
