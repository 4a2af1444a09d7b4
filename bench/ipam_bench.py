#!/usr/bin/env python3
"""IPAM store benchmark: allocate / release latency as a /16 fills up.

    .venv/bin/python bench/ipam_bench.py [--levels 0,30000,60000] [--samples 400] [--dir DIR]
                                         [--real-fill]

For every fill level it measures, on a 10.100.0.0/16 pool (65,533 usable addresses):

* ``alloc`` / ``release``: one ``Ipam.allocate`` of a new owner, then one ``Ipam.release``
  of a random existing owner (so the level stays constant), on an open store ("warm");
* ``alloc+open`` / ``release+open``: the same through a fresh ``Ipam`` each time (open
  connection, operation, close), i.e. what one CNI executable pays for the store part;
* ``worst``: allocate when the round-robin cursor sits right before a run of ``level``
  occupied addresses (the gap query must walk the whole run) - after a wrap-around.

Levels are filled with one bulk transaction through the store (the same rows
``allocate`` writes; ``--real-fill`` fills through ``allocate`` instead and reports its
throughput). Also reports the import cost of ``splice.ipam.allocator``.

The same for the pool-keyed API (``splice.ipam.pools.PoolIpam``, Docker's IPAM calls) on a
10.101.0.0/16 pool (``--no-pools`` skips it):

* ``request_address`` (lowest free) / ``release_address`` (a random held address), warm;
* ``explicit run``: the first next-free request when ``level`` addresses right after the
  pool's search position were requested explicitly (the gap query walks them once).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
for portion in ("ipam", "plugins", "libnet"):
    p = str(HERE / portion)
    if p not in sys.path:
        sys.path.insert(0, p)

from splice.ipam.allocator import Ipam  # noqa: E402
from splice.ipam.config import parse_ipam_config  # noqa: E402

SUBNET = "10.100.0.0/16"
POOL_SUBNET = "10.101.0.0/16"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def fmt(xs: list[float]) -> str:
    return f"p50 {pct(xs, 0.5) * 1e3:7.3f} ms  p99 {pct(xs, 0.99) * 1e3:7.3f} ms"


def make_cfg(data_dir: str, network: str):
    return parse_ipam_config({"subnet": SUBNET, "dataDir": data_dir}, network)


def bulk_fill(ipam: Ipam, n: int, cursor_at_start: bool = False) -> list[str]:
    """n leases from the start of the range (gateway skipped), cursor after the last."""
    r = ipam.cfg.range_sets[0].ranges[0]
    gw = int(r.gateway)
    owners = []
    with ipam.store.write() as tx:
        a, i = r.start, 0
        while i < n:
            if a != gw:
                tx.insert(4, a, r.subnet.prefixlen, str(r.gateway), 0, f"fill{i}", "eth0")
                owners.append(f"fill{i}")
                i += 1
                last = a
            a += 1
        if n:
            tx.set_cursor(0, 4, r.start if cursor_at_start else last)
    return owners


def measure_level(base: str, level: int, samples: int, real_fill: bool) -> dict:
    net = f"bench{level}"
    cfg = make_cfg(base, net)
    ipam = Ipam(cfg)
    t0 = time.perf_counter()
    if real_fill:
        owners = []
        for i in range(level):
            ipam.allocate(f"fill{i}", "eth0")
            owners.append(f"fill{i}")
    else:
        owners = bulk_fill(ipam, level)
    fill_s = time.perf_counter() - t0
    rnd = random.Random(level)
    out: dict = {"fill_s": fill_s}
    for mode in ("warm", "cold"):
        alloc, rel = [], []
        for i in range(samples):
            cid = f"{mode}{i}"
            ip = ipam if mode == "warm" else Ipam(cfg)
            t = time.perf_counter()
            ip.allocate(cid, "eth0")
            if mode == "cold":
                ip.close()
            alloc.append(time.perf_counter() - t)
            owners.append(cid)
            victim = owners.pop(rnd.randrange(len(owners)))
            ip = ipam if mode == "warm" else Ipam(cfg)
            t = time.perf_counter()
            got = ip.release(victim, "eth0")
            if mode == "cold":
                ip.close()
            rel.append(time.perf_counter() - t)
            assert len(got) == 1
        out[mode] = (alloc, rel)
    ipam.close()
    return out


def measure_worst(base: str, level: int, reps: int = 5) -> list[float]:
    """Cursor at the range start, `level` occupied addresses right after it."""
    if level == 0:
        return []
    times = []
    for k in range(reps):
        cfg = make_cfg(base, f"worst{level}-{k}")
        ipam = Ipam(cfg)
        bulk_fill(ipam, level, cursor_at_start=True)
        t = time.perf_counter()
        (lease,) = ipam.allocate("probe", "eth0")
        times.append(time.perf_counter() - t)
        ipam.close()
    return times


def pool_fill(p, pid: str, n: int, move_top: bool = True) -> list[int]:
    """n leases from the pool's first host address on (one transaction); with
    ``move_top`` as next-free requests leave them, else as explicit requests do."""
    import ipaddress

    first = int(ipaddress.ip_network(POOL_SUBNET).network_address) + 1
    store = p._store("bench")
    with store.write() as tx:
        for a in range(first, first + n):
            tx.insert_lease(4, a, pid, None)
        if n and move_top:
            tx.set_top(pid, first + n)
    return list(range(first, first + n))


def measure_pools(base: str, level: int, samples: int) -> dict:
    import ipaddress

    from splice.ipam.pools import PoolIpam

    p = PoolIpam(os.path.join(base, f"pools{level}"), default_pools=[])
    pid = p.request_pool("bench", POOL_SUBNET).id
    held = pool_fill(p, pid, level)
    rnd = random.Random(level)
    req, rel = [], []
    for _ in range(samples):
        t = time.perf_counter()
        lease = p.request_address(pid)
        req.append(time.perf_counter() - t)
        held.append(int(lease.address.ip))
        victim = held.pop(rnd.randrange(len(held)))
        t = time.perf_counter()
        got = p.release_address(pid, ipaddress.IPv4Address(victim))
        rel.append(time.perf_counter() - t)
        assert got is not None
    p.close()
    run = []
    if level:
        for k in range(3):
            q = PoolIpam(os.path.join(base, f"poolrun{level}-{k}"), default_pools=[])
            qid = q.request_pool("bench", POOL_SUBNET).id
            pool_fill(q, qid, level, move_top=False)
            t = time.perf_counter()
            q.request_address(qid)
            run.append(time.perf_counter() - t)
            q.close()
    return {"request": req, "release": rel, "run": run}


def import_cost() -> tuple[float, float, float]:
    """(-X importtime cumulative us of splice.ipam.allocator, wall ms of `python -c import`,
    wall ms of `python -c pass`), best of 5."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(HERE / p) for p in ("ipam", "plugins", "libnet"))
    cum = []
    for _ in range(5):
        p = subprocess.run([sys.executable, "-X", "importtime", "-c", "import splice.ipam.allocator"],
                           capture_output=True, text=True, env=env)
        line = [ln for ln in p.stderr.splitlines() if ln.rstrip().endswith("splice.ipam.allocator")][-1]
        cum.append(int(line.split("|")[1]))

    def wall(code: str) -> float:
        best = 1e9
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            best = min(best, time.perf_counter() - t)
        return best * 1e3

    return min(cum), wall("import splice.ipam.allocator"), wall("pass")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="0,30000,60000")
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--dir", default=None, help="data dir (default: a temp dir, removed afterwards)")
    ap.add_argument("--real-fill", action="store_true", help="fill through allocate() (slow)")
    ap.add_argument("--no-import", action="store_true")
    ap.add_argument("--no-pools", action="store_true", help="skip the pool-keyed API")
    opts = ap.parse_args()
    levels = [int(x) for x in opts.levels.split(",") if x]
    base = opts.dir or tempfile.mkdtemp(prefix="splice-ipam-bench-")
    try:
        import sqlite3

        print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, pool {SUBNET}, "
              f"{opts.samples} samples/level, store in {base}")
        if not opts.no_import:
            cum, imp, bare = import_cost()
            print(f"import splice.ipam.allocator: {cum / 1e3:.1f} ms (-X importtime cumulative); "
                  f"python -c import {imp:.1f} ms vs -c pass {bare:.1f} ms")
        for level in levels:
            res = measure_level(base, level, opts.samples, opts.real_fill)
            fill = f"(filled in {res['fill_s']:.2f} s" + (
                f", {level / res['fill_s']:.0f} allocs/s)" if opts.real_fill and level else ")")
            print(f"\n{level:>6} existing {fill}")
            a, r = res["warm"]
            print(f"  alloc         {fmt(a)}")
            print(f"  release       {fmt(r)}")
            a, r = res["cold"]
            print(f"  alloc+open    {fmt(a)}")
            print(f"  release+open  {fmt(r)}")
            w = measure_worst(base, level)
            if w:
                print(f"  worst (cursor before a {level}-address run): median {statistics.median(w) * 1e3:.1f} ms")
            if not opts.no_pools:
                pr = measure_pools(base, level, opts.samples)
                print(f"  pools: request_address  {fmt(pr['request'])}")
                print(f"  pools: release_address  {fmt(pr['release'])}")
                if pr["run"]:
                    print(f"  pools: explicit run of {level} above the search position: "
                          f"median {statistics.median(pr['run']) * 1e3:.1f} ms")
    finally:
        if opts.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
