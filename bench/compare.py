#!/usr/bin/env python3
"""Side-by-side CNI benchmark: splice vs the Go reference plugins, in one run.

For each implementation this creates a throwaway "host" namespace (spb-<id>), writes the
same conflist with only the plugin types changed, and runs the plugin-agnostic harness
cnibench.py inside that namespace (so bridges, veths and nftables rules never touch the
machine). It prints ADD/DEL p50/p99, throughput and the splice/Go ratios.

Usage (root):  .venv/bin/python bench/compare.py [-n 200] [-w 1] [--repeat 1] [--conf bridge]
               [--cnibench ../shared/bench/cnibench.py]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPLICE_BIN = Path(sys.executable).parent
GO_BIN = "/usr/lib/cni"

CONFS = {
    # bridge + IPAM + ipMasq: the reference's bench/conf/bridge.conflist
    "bridge": {
        "go": {"type": "bridge", "ipam": "host-local"},
        "splice": {"type": "splice-bridge", "ipam": "splice-ipam"},
        "plugin": {"bridge": "pfbr0", "isGateway": True, "ipMasq": True, "hairpinMode": True},
        "ipam": {"ranges": [[{"subnet": "10.231.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]},
    },
    "bridge-nomasq": {
        "go": {"type": "bridge", "ipam": "host-local"},
        "splice": {"type": "splice-bridge", "ipam": "splice-ipam"},
        "plugin": {"bridge": "pfbr0", "isGateway": True, "ipMasq": False, "hairpinMode": True},
        "ipam": {"ranges": [[{"subnet": "10.231.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]},
    },
}


def conflist(kind: str, impl: str, data_dir: str) -> dict:
    spec = CONFS[kind]
    plugin = {"type": spec[impl]["type"], **spec["plugin"]}
    plugin["ipam"] = {"type": spec[impl]["ipam"], **spec["ipam"], "dataDir": data_dir}
    return {"cniVersion": "1.0.0", "name": f"pfbench-{kind}", "plugins": [plugin]}


def run_one(args, kind: str, impl: str) -> dict:
    ns = f"spb-{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix="splice-bench-"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        conf = tmp / f"{impl}.conflist"
        conf.write_text(json.dumps(conflist(kind, impl, str(tmp / "ipam"))))
        plugin_dir = f"{SPLICE_BIN}:{GO_BIN}" if impl == "splice" else GO_BIN
        argv = [
            "nsenter", f"--net=/run/netns/{ns}", "/usr/bin/python3", args.cnibench,
            "--plugin-dir", plugin_dir, "--conflist", str(conf), "-n", str(args.n), "-w", str(args.w),
            "--repeat", str(args.repeat), "--prefix", "pfsp", "--label", f"{impl}-{kind}",
        ]
        p = subprocess.run(argv, capture_output=True, text=True)
        sys.stderr.write(p.stderr)
        if p.returncode != 0:
            raise SystemExit(f"cnibench failed for {impl}: rc={p.returncode}")
        return json.loads(p.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["rm", "-rf", str(tmp)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("-w", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--conf", default="bridge", choices=sorted(CONFS))
    ap.add_argument("--cnibench", default=str(REPO.parent / "shared" / "bench" / "cnibench.py"))
    ap.add_argument("--out", help="write both raw reports as JSON here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    reports = {impl: run_one(args, args.conf, impl) for impl in ("go", "splice")}
    if args.out:
        Path(args.out).write_text(json.dumps(reports, indent=1))

    def get(r, key):
        v = r["summary"].get(key)
        return v["median"] if v else float("nan")

    rows = [("ADD p50 ms", "add_ms_p50"), ("ADD p99 ms", "add_ms_p99"), ("DEL p50 ms", "del_ms_p50"),
            ("DEL p99 ms", "del_ms_p99"), ("ADD/s", "add_throughput_per_s"), ("DEL/s", "del_throughput_per_s")]
    print(f"conflist {args.conf}, N={args.n}, workers={args.w}, repeats={args.repeat}")
    print(f"| metric | Go reference | splice | splice/Go |\n|---|---|---|---|")
    for label, key in rows:
        g, s = get(reports["go"], key), get(reports["splice"], key)
        print(f"| {label} | {g:.1f} | {s:.1f} | {s / g:.2f} |")
    for impl, r in reports.items():
        checks = [rd.get("checks") for rd in r.get("rounds", [])]
        errs = [rd.get("errors_total") for rd in r.get("rounds", [])]
        print(f"{impl}: checks {checks} errors {errs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
