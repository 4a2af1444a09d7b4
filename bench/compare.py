#!/usr/bin/env python3
"""Side-by-side CNI benchmark: splice (with and without its agent) vs the Go reference plugins.

For each implementation and worker count this creates a throwaway "host" namespace
(spb-<id>), writes the same conflist with only the plugin types changed, and runs the
plugin-agnostic harness cnibench.py inside that namespace (so bridges, veths and nftables
rules never touch the machine). cnibench checks every attachment after ADD (address on
the interface, ping to the gateway) and after DEL (sandbox clean), so a fast wrong answer
cannot win.

Implementations:

* ``go``: /usr/lib/cni (bridge + host-local);
* ``splice-agent``: the thin clients written by ``splice install-cni`` into a temporary
  directory (what users install), served by a ``splice agent`` this script starts inside
  the same spb-* namespace on a temporary socket, and stops (SIGTERM by pid) at the end;
* ``splice-noagent``: the same executables with no agent on their socket: each call execs
  the in-process plugin (``--in-process``, same driver code).

It prints ADD/DEL p50/p99 and throughput with the splice/Go ratios, per worker count.

Usage (root):  .venv/bin/python bench/compare.py [-n 200] [-w 1 -w 8] [--repeat 1] [--rounds 1]
               [--conf bridge|bridge-nomasq|macvlan|ipvlan]
               [--impl go --impl splice-agent --impl splice-noagent]
               [--cnibench ../shared/bench/cnibench.py] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
GO_BIN = "/usr/lib/cni"
IMPLS = ("go", "splice-agent", "splice-noagent")

CONFS = {
    # bridge + IPAM + ipMasq: the reference's bench/conf/bridge.conflist
    "bridge": {
        "go": {"type": "bridge", "ipam": "host-local"},
        "splice": {"type": "splice-bridge", "ipam": "splice-ipam"},
        "plugin": {"bridge": "pfbr0", "isGateway": True, "ipMasq": True, "hairpinMode": True},
        "ipam": {"ranges": [[{"subnet": "10.231.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]},
    },
    # macvlan/ipvlan + IPAM on a master "bm0": a veth whose peer sits in a switch namespace
    # holding the gateway, so cnibench's ping to the gateway leaves the master
    "macvlan": {
        "go": {"type": "macvlan", "ipam": "host-local"},
        "splice": {"type": "splice-macvlan", "ipam": "splice-ipam"},
        "plugin": {"master": "bm0", "mode": "bridge"},
        "ipam": {"ranges": [[{"subnet": "10.232.0.0/16", "gateway": "10.232.0.1"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]},
        "switch": "10.232.0.1/16",
    },
    "ipvlan": {  # the host kernel may lack ipvlan: run it in the guest (scripts/vm-run.sh)
        "go": {"type": "ipvlan", "ipam": "host-local"},
        "splice": {"type": "splice-ipvlan", "ipam": "splice-ipam"},
        "plugin": {"master": "bm0", "mode": "l2"},
        "ipam": {"ranges": [[{"subnet": "10.232.0.0/16", "gateway": "10.232.0.1"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]},
        "switch": "10.232.0.1/16",
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
    types = spec["go" if impl == "go" else "splice"]
    plugin = {"type": types["type"], **spec["plugin"]}
    plugin["ipam"] = {"type": types["ipam"], **spec["ipam"], "dataDir": data_dir}
    return {"cniVersion": "1.0.0", "name": f"pfbench-{kind}", "plugins": [plugin]}


def install_clients(directory: Path) -> None:
    subprocess.run([str(VENV_BIN / "splice"), "install-cni", "--dir", str(directory)], check=True,
                   stdout=subprocess.DEVNULL)


def start_agent(ns: str, sock: Path, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", str(VENV_BIN / "splice"), "agent", "--socket", str(sock)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    env = dict(os.environ, SPLICE_AGENT_SOCKET=str(sock))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"splice agent exited with {proc.returncode}: {log.read_text()}")
        if subprocess.run([str(VENV_BIN / "splice"), "status"], env=env, capture_output=True).returncode == 0:
            return proc
        time.sleep(0.05)
    stop_agent(proc)
    raise SystemExit("splice agent did not come up")


def stop_agent(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_cnibench(args, build_conf, impl: str, workers: int, label: str, prefix: str = "pfsp",
                 switch: str | None = None) -> dict:
    """One cnibench run of ``build_conf(data_dir)`` for ``impl`` in a fresh spb-* host namespace.

    ``impl``: ``go``; ``splice-agent`` (installed thin clients + an agent started here);
    ``splice-noagent`` (the same clients, nothing on their socket); ``splice-direct`` (the
    venv console scripts with the agent switched off). ``switch``: an address/prefix; the
    host namespace then gets a master ``bm0``, a veth whose peer ``bm1`` holds that address
    in a second throwaway namespace.
    """
    ns = f"spb-{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix="splice-bench-"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    agent = None
    sw = f"{ns}-sw" if switch else None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        if sw:
            subprocess.run(["ip", "netns", "add", sw], check=True)
            subprocess.run(["ip", "-n", ns, "link", "add", "bm0", "type", "veth", "peer", "name", "bm1", "netns", sw],
                           check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "bm0", "up"], check=True)
            subprocess.run(["ip", "-n", sw, "link", "set", "bm1", "up"], check=True)
            subprocess.run(["ip", "-n", sw, "addr", "add", switch, "dev", "bm1"], check=True)
        conf = tmp / f"{impl}.conflist"
        conf.write_text(json.dumps(build_conf(str(tmp / "ipam"))))
        env = dict(os.environ)
        if impl == "go":
            plugin_dir = GO_BIN
        elif impl == "splice-direct":
            plugin_dir = f"{VENV_BIN}:{GO_BIN}"
            env["SPLICE_AGENT_SOCKET"] = "off"
        else:
            bin_dir = tmp / "bin"
            install_clients(bin_dir)
            plugin_dir = f"{bin_dir}:{GO_BIN}"
            sock = tmp / "agent.sock"
            env["SPLICE_AGENT_SOCKET"] = str(sock)  # no-agent: nothing listens there
            if impl == "splice-agent":
                agent = start_agent(ns, sock, tmp / "agent.log")
        argv = [
            "nsenter", f"--net=/run/netns/{ns}", "/usr/bin/python3", args.cnibench,
            "--plugin-dir", plugin_dir, "--conflist", str(conf), "-n", str(args.n), "-w", str(workers),
            "--repeat", str(args.repeat), "--prefix", prefix, "--label", label,
        ]
        p = subprocess.run(argv, capture_output=True, text=True, env=env)
        sys.stderr.write(p.stderr)
        if p.returncode != 0:
            raise SystemExit(f"cnibench failed for {impl}: rc={p.returncode}")
        return json.loads(p.stdout)
    finally:
        if agent is not None:
            stop_agent(agent)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if sw:
            subprocess.run(["ip", "netns", "del", sw], capture_output=True)
        subprocess.run(["rm", "-rf", str(tmp)])


def run_one(args, kind: str, impl: str, workers: int) -> dict:
    return run_cnibench(args, lambda data_dir: conflist(kind, impl, data_dir), impl, workers,
                        f"{impl}-{kind}-w{workers}", switch=CONFS[kind].get("switch"))


def merge(reports: dict, key, report: dict) -> None:
    """Add one run's rounds to ``reports[key]``; the summary is the median over all rounds."""
    import statistics

    have = reports.get(key)
    if have is None:
        reports[key] = report
        return
    have["rounds"] = have.get("rounds", []) + report.get("rounds", [])
    for k, v in (report.get("summary") or {}).items():
        if isinstance(v, dict) and "median" in v:
            vals = have["summary"].setdefault(k, {}).setdefault("_all", [have["summary"][k].get("median")])
            vals.append(v["median"])
            have["summary"][k]["median"] = statistics.median(x for x in vals if x is not None)


ROWS = [("ADD p50 ms", "add_ms_p50"), ("ADD p99 ms", "add_ms_p99"), ("DEL p50 ms", "del_ms_p50"),
        ("DEL p99 ms", "del_ms_p99"), ("ADD/s", "add_throughput_per_s"), ("DEL/s", "del_throughput_per_s")]


def get(r: dict, key: str) -> float:
    v = r["summary"].get(key)
    return v["median"] if v else float("nan")


def table(reports: dict, impls: list[str], workers: int, args) -> str:
    lines = [f"conflist {args.conf}, N={args.n}, workers={workers}, repeats={args.repeat}, rounds={args.rounds}"]
    head = ["metric"] + impls + [f"{i}/go" for i in impls if i != "go" and "go" in impls]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for label, key in ROWS:
        vals = [get(reports[(i, workers)], key) for i in impls]
        cells = [label] + [f"{v:.1f}" for v in vals]
        if "go" in impls:
            g = vals[impls.index("go")]
            cells += [f"{v / g:.2f}" for i, v in zip(impls, vals) if i != "go"]
        lines.append("| " + " | ".join(cells) + " |")
    for i in impls:
        r = reports[(i, workers)]
        checks = {}
        for rd in r.get("rounds", []):
            for k, v in (rd.get("checks") or {}).items():
                c = checks.setdefault(k, [0, 0])
                c[0] += v["ok"]
                c[1] += v["fail"]
        errs = sum(rd.get("errors_total", 0) for rd in r.get("rounds", []))
        lines.append(f"{i}: checks ok/fail {', '.join(f'{k} {a}/{b}' for k, (a, b) in checks.items())}; errors {errs}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("-w", type=int, action="append", help="worker counts (repeatable; default 1 and 8)")
    ap.add_argument("--repeat", type=int, default=1, help="cnibench rounds per run")
    ap.add_argument("--rounds", type=int, default=1,
                    help="interleaved runs (go, splice, go, splice, ...); the summary is the median over all")
    ap.add_argument("--conf", default="bridge", choices=sorted(CONFS))
    ap.add_argument("--impl", action="append", choices=IMPLS, help="implementations (repeatable; default all)")
    ap.add_argument("--cnibench", default=str(REPO.parent / "shared" / "bench" / "cnibench.py"))
    ap.add_argument("--out", help="write the raw reports as JSON here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    workers = args.w or [1, 8]
    impls = args.impl or list(IMPLS)
    reports: dict = {}
    # interleaved: each repeat runs every implementation once, so drift and load hit all alike
    for _ in range(args.rounds):
        for w in workers:
            for impl in impls:
                merge(reports, (impl, w), run_one(args, args.conf, impl, w))
    if args.out:
        Path(args.out).write_text(json.dumps({f"{i}-w{w}": r for (i, w), r in reports.items()}, indent=1))
    for w in workers:
        print(table(reports, impls, w, args))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
