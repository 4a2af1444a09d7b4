#!/usr/bin/env python3
"""Operator CLI benchmark: the listing commands on a big network, doctor on many attachments.

    .venv/bin/python bench/cli_bench.py [--leases 10000] [--attachments 1000] [--runs 7]
                                        [--skip-doctor] [--namespaces 100]

1. ``splice ipam ls NAME`` and ``splice net ls`` (and their ``--json``) as a user runs them
   (a new ``.venv/bin/splice`` process each time, output to a pipe), on a network whose
   store holds ``--leases`` leases (a /16, filled in one transaction through the store)
   and whose result cache holds as many files. Target: under 100 ms.
2. ``splice doctor NAME`` on ``--attachments`` real attachments: a throwaway host
   namespace, ``--namespaces`` sandbox namespaces holding ``attachments / namespaces``
   interfaces each (eth0, eth1, ...), made with ``splice attach`` semantics (the conflist's
   chain through the executables and a ``splice agent``, libcni's result cache), so the
   doctor reads 1,000 host veths, 1,000 sandbox interfaces, 1,000 masquerade entries,
   1,000 leases and 1,000 cached results. Target: under 2 s.

Root (namespaces); touches nothing outside its namespaces and temp directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
for portion in ("ipam", "plugins", "libnet", "conformance"):
    p = str(HERE / portion)
    if p not in sys.path:
        sys.path.insert(0, p)

BIN = Path(sys.executable).parent
SPLICE = str(BIN / "splice")


def timed(argv: list[str], runs: int, env: dict) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        out.append(time.perf_counter() - t0)
        if p.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    return out


def fmt(xs: list[float]) -> str:
    return f"p50 {statistics.median(xs) * 1e3:7.1f} ms  min {min(xs) * 1e3:7.1f} ms  max {max(xs) * 1e3:7.1f} ms"


def bench_listing(root: Path, n: int, runs: int, env: dict) -> None:
    from splice.ipam.config import parse_ipam_config
    from splice.ipam.store import Store

    conf_dir, cache, ipam_dir = root / "net.d", root / "cache", root / "ipam"
    subprocess.run([SPLICE, "net", "create", "big", "--driver", "bridge", "--subnet", "10.120.0.0/16",
                    "-o", f"ipam.dataDir={ipam_dir}", "--config-dir", str(conf_dir)], check=True,
                   stdout=subprocess.DEVNULL)
    for i in range(5):  # a few more networks in the directory
        subprocess.run([SPLICE, "net", "create", f"small{i}", "--driver", "bridge", "--subnet", f"10.121.{i}.0/24",
                        "-o", f"ipam.dataDir={ipam_dir}", "--config-dir", str(conf_dir)], check=True,
                       stdout=subprocess.DEVNULL)
    cfg = parse_ipam_config({"type": "splice-ipam", "ranges": [[{"subnet": "10.120.0.0/16"}]],
                             "dataDir": str(ipam_dir)}, "big")
    store = Store(cfg.store_dir)
    base = int(cfg.range_sets[0].ranges[0].range_start)
    t0 = time.perf_counter()
    with store.write() as tx:
        for i in range(n):
            tx.insert(4, base + 1 + i, 16, "10.120.0.1", 0, f"ctr{i:06d}", "eth0")
    store.close()
    results = cache / "results"
    results.mkdir(parents=True)
    for i in range(n):  # what libcni leaves per attachment (the doctor reads them; ls counts them)
        (results / f"big-ctr{i:06d}-eth0").write_text(json.dumps({
            "kind": "cniCacheV1", "containerId": f"ctr{i:06d}", "ifName": "eth0", "networkName": "big",
            "result": {"cniVersion": "1.0.0", "ips": [{"address": f"10.120.{(i + 2) // 256}.{(i + 2) % 256}/16"}]}}))
    print(f"filled {n} leases and {n} cache files in {time.perf_counter() - t0:.1f} s")
    loc = ["--config-dir", str(conf_dir), "--cache-dir", str(cache)]
    empty = ["--config-dir", str(root / "empty"), "--cache-dir", str(root / "empty")]
    xs = timed([sys.executable, "-c", "pass"], runs, env)
    print(f"baseline: venv python -c pass     {fmt(xs)}")
    xs = timed([SPLICE, "net", "ls", *empty], runs, env)
    print(f"baseline: splice net ls (empty)   {fmt(xs)}")
    for argv in (["ipam", "ls", "big"], ["ipam", "ls", "big", "--json"], ["net", "ls"], ["net", "ls", "--json"],
                 ["--version"]):
        xs = timed([SPLICE, *argv, *(loc if argv[0] != "--version" else [])], runs, env)
        print(f"splice {' '.join(argv):22s} {fmt(xs)}")
    # the same through the `splice` that install-cni writes (LIB/splice: /usr/bin/python3 -I on
    # the bundle, no venv site or editable finder): what an operator runs on a host
    inst = root / "cni-bin"
    subprocess.run([SPLICE, "install-cni", "--dir", str(inst)], check=True, stdout=subprocess.DEVNULL)
    for argv in (["ipam", "ls", "big"], ["net", "ls"]):
        xs = timed([str(inst / ".splice" / "splice"), *argv, *loc], runs, env)
        print(f"installed splice {' '.join(argv):12s} {fmt(xs)}")
    # the command's own work, without the interpreter's start-up (imports warm, output to /dev/null)
    import contextlib

    from splice.plugins.cli.main import main as cli_main

    for argv in (["ipam", "ls", "big"], ["net", "ls"]):
        xs = []
        for _ in range(runs):
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                t0 = time.perf_counter()
                cli_main([*argv, *loc])
                xs.append(time.perf_counter() - t0)
        print(f"in-process: {' '.join(argv):18s} {fmt(xs)}")


def bench_doctor(root: Path, n: int, n_ns: int, runs: int, env: dict) -> None:
    from splice.conformance.runtime import Runtime
    from splice.plugins.cli import common

    tag = f"spb-{os.getpid()}"
    host = f"{tag}-h"
    sandboxes = [f"{tag}-{i}" for i in range(n_ns)]
    conf_dir, cache, ipam_dir = root / "dnet.d", root / "dcache", root / "dipam"
    made = []
    agent = None
    try:
        for ns in [host, *sandboxes]:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
        subprocess.run(["ip", "-n", host, "link", "set", "lo", "up"], check=True)
        sock = root / "agent.sock"
        agent = subprocess.Popen(["nsenter", f"--net=/run/netns/{host}", SPLICE, "agent", "--socket", str(sock)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not sock.exists():
            if time.monotonic() > deadline:
                raise SystemExit("the agent did not start")
            time.sleep(0.05)
        subprocess.run([SPLICE, "net", "create", "doc", "--driver", "bridge", "--subnet", "10.122.0.0/16",
                        "-o", "bridge=spbbr0", "-o", f"ipam.dataDir={ipam_dir}", "--config-dir", str(conf_dir)],
                       check=True, stdout=subprocess.DEVNULL)
        net = common.find_network(argparse.Namespace(config_dir=str(conf_dir)), "doc")
        rt = Runtime(cni_path=[str(BIN)], prefix=["nsenter", f"--net=/run/netns/{host}"],
                     extra_env={"SPLICE_AGENT_SOCKET": str(sock)})
        args = argparse.Namespace(config_dir=str(conf_dir), cache_dir=str(cache))
        per = max(1, n // n_ns)

        def one(i: int) -> None:
            netns = f"/run/netns/{sandboxes[i // per % n_ns]}"
            cid, ifname = f"c{i:05d}", f"eth{i % per}"
            result = rt.add(net.conf, cid, netns, ifname)
            common.write_cached(args, net, cid, ifname, netns, [], {}, result)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(n)))
        print(f"made {n} attachments in {n_ns} namespaces in {time.perf_counter() - t0:.1f} s")
        argv = ["nsenter", f"--net=/run/netns/{host}", SPLICE, "doctor", "doc", "--config-dir", str(conf_dir),
                "--cache-dir", str(cache), "--cni-path", str(BIN)]
        p = subprocess.run(argv, capture_output=True, text=True)
        print("doctor says:", p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.stderr.strip())
        xs = timed(argv, runs, env)
        print(f"splice doctor ({n} attachments)   {fmt(xs)}")
        xs = timed([*argv, "--json"], max(3, runs // 2), env)
        print(f"splice doctor --json              {fmt(xs)}")
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=30)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leases", type=int, default=10000)
    ap.add_argument("--attachments", type=int, default=1000)
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--skip-doctor", action="store_true")
    ap.add_argument("--skip-listing", action="store_true")
    a = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("SPLICE_CONFIG_DIR", "SPLICE_CNI_CACHE_DIR", "CNI_PATH")}
    env["NO_COLOR"] = "1"
    root = Path(tempfile.mkdtemp(prefix="splice-cli-bench-"))
    try:
        if not a.skip_listing:
            bench_listing(root, a.leases, a.runs, env)
        if not a.skip_doctor:
            if os.geteuid() != 0:
                raise SystemExit("the doctor benchmark needs root (network namespaces)")
            bench_doctor(root, a.attachments, a.namespaces, a.runs, env)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
