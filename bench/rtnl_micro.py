#!/usr/bin/env python3
"""Micro-benchmark of the rtnetlink primitives one bridge ADD uses, in throwaway namespaces.

Each cycle does what the bridge driver does for one attachment, timing every call on its
own (wall time, ``perf_counter``, and the calling thread's CPU time, ``thread_time``):

* host namespace: ``open`` (a new :class:`Rtnl`), ``get_link`` (the bridge),
  ``addresses`` (the bridge's), ``add_veth`` (host end enslaved and up, peer created in
  the sandbox), ``set_brport`` (alias + hairpin);
* sandbox namespace: ``open``, ``add_address``, ``set_link`` (rename + up), ``add_route``
  (default route via the gateway);
* host again: ``delete_link`` (the host veth, taking its peer along).

With an implementation that has ``Rtnl.batch`` a second mode, ``batched``, runs the same
cycle with the host-side creation + port options in one batch and the whole sandbox side
in another (one round trip each) and times the two batches (building the requests included).

``--baseline REV`` loads ``libnet/splice/libnet/rtnl.py`` of git revision REV (e.g. the
pyroute2 implementation) as a second module and interleaves its cycles with the current
one's, round by round, so a busy machine hurts both alike.

Usage (root): ``.venv/bin/python bench/rtnl_micro.py [-n 300] [--baseline REV] [--json]``
Namespaces: ``spb-rtnl-<hex>`` (created with ``ip netns add``, deleted at the end).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
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
for sub in ("libnet", "ipam", "plugins", "conformance"):
    sys.path.insert(0, str(REPO / sub))

from splice.libnet import rtnl as current  # noqa: E402
from splice.libnet.netns import Netns  # noqa: E402

GW = ipaddress.ip_interface("10.77.0.1/16")
DEFAULT = ipaddress.ip_network("0.0.0.0/0")


def load_baseline(rev: str):
    """rtnl.py of git revision ``rev`` as module ``splice.libnet._rtnl_baseline``, with the
    netlink.py and linkinfo.py of that revision when it has them (``_rtnl_baseline_*``)."""
    tmp = Path(tempfile.mkdtemp(prefix="rtnl-bench-"))

    def source(name: str) -> str | None:
        p = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:libnet/splice/libnet/{name}.py"],
                           capture_output=True, text=True)
        return p.stdout if p.returncode == 0 else None

    def load(name: str, src: str):
        path = tmp / f"{name}.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(f"splice.libnet.{name}", path)
        mod = importlib.util.module_from_spec(spec)
        mod.__package__ = "splice.libnet"
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod

    src = source("rtnl")
    for dep in ("netlink", "linkinfo"):  # dependencies first, under private names
        dep_src = source(dep)
        if dep_src is None:
            continue
        alias = f"_rtnl_baseline_{dep}"
        dep_src = dep_src.replace("from . import netlink as nl", "from . import _rtnl_baseline_netlink as nl")
        load(alias, dep_src)
        src = (src.replace(f"from . import {dep} as", f"from . import {alias} as")
                  .replace(f"from .{dep} import", f"from .{alias} import")
                  .replace(f"from . import {dep}\n", f"from . import {alias} as {dep}\n"))
    return load("_rtnl_baseline", src)


class Timer:
    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def __call__(self, key: str, fn, *a, **kw):
        c0, w0 = time.thread_time(), time.perf_counter()
        out = fn(*a, **kw)
        w1, c1 = time.perf_counter(), time.thread_time()
        self.wall.setdefault(key, []).append((w1 - w0) * 1e3)
        self.cpu.setdefault(key, []).append((c1 - c0) * 1e3)
        return out


def cycle(mod, t: Timer, host: Netns, sandbox: Netns, i: int, batched: bool) -> None:
    veth = f"vb{i:08x}"
    tmp = f"sp{i:08x}"
    mac, peer_mac = "02:00:00:aa:00:01", "02:00:00:aa:00:02"
    addr = ipaddress.ip_interface(f"10.77.{1 + i // 250 % 250}.{1 + i % 250}/16")

    def host_part():
        rt = t("open (host)", mod.Rtnl)
        try:
            br = t("get_link", rt.get_link, "brb0")
            t("addresses", rt.addresses, br.index)
            if batched:
                def host_batch():
                    b = rt.batch()
                    b.add_veth(veth, tmp, peer_netns_fd=sandbox.fd, master=br.index, mtu=1500, mac=mac,
                               peer_mac=peer_mac, up=True)
                    b.set_brport(veth, alias=f"splice:bench:{i}:eth0", hairpin=True)
                    return b.run()

                res = t("batch(add_veth+set_brport)", host_batch)
                return res[0].peer_index
            v = t("add_veth", rt.add_veth, veth, tmp, peer_netns_fd=sandbox.fd, master=br.index, mtu=1500,
                  mac=mac, peer_mac=peer_mac, up=True)
            t("set_brport", rt.set_brport, v.index, alias=f"splice:bench:{i}:eth0", hairpin=True)
            return v.peer_index
        finally:
            rt.close()

    def sandbox_part(idx):
        rt = t("open (sandbox)", mod.Rtnl)
        try:
            if batched:
                def sandbox_batch():
                    b = rt.batch()
                    b.add_address(idx, addr, nodad=True)
                    b.set_link(idx, name="eth0", up=True)
                    b.add_route(DEFAULT, gw=GW.ip, oif=idx)
                    return b.run()

                t("batch(addr+rename+route)", sandbox_batch)
                return
            t("add_address", rt.add_address, idx, addr, nodad=True)
            t("set_link", rt.set_link, idx, name="eth0", up=True)
            t("add_route", rt.add_route, DEFAULT, gw=GW.ip, oif=idx)
        finally:
            rt.close()

    def delete():
        with mod.Rtnl() as rt:
            t("delete_link", rt.delete_link, name=veth)

    idx = host.run(host_part)
    sandbox.run(sandbox_part, idx)
    host.run(delete)


def summary(t: Timer) -> dict:
    out = {}
    for key in t.wall:
        w, c = sorted(t.wall[key]), sorted(t.cpu[key])
        out[key] = {"wall_p50": statistics.median(w), "wall_p90": w[int(len(w) * 0.9)],
                    "cpu_p50": statistics.median(c), "n": len(w)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=300, help="cycles per mode (after 20 warm-up cycles)")
    ap.add_argument("--baseline", metavar="REV", help="also time rtnl.py of this git revision, interleaved")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    mods = {"current": current}
    if args.baseline:
        mods = {f"baseline {args.baseline}": load_baseline(args.baseline), **mods}
    modes = [(label, mod, False) for label, mod in mods.items()]
    modes += [(f"{label} batched", mod, True) for label, mod in mods.items() if hasattr(mod.Rtnl, "batch")]

    names = [f"spb-rtnl-{secrets.token_hex(3)}" for _ in range(2)]
    for n in names:
        subprocess.run(["ip", "netns", "add", n], check=True)
        subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
    timers = {label: Timer() for label, _, _ in modes}
    try:
        host, sandbox = Netns.open(f"/run/netns/{names[0]}"), Netns.open(f"/run/netns/{names[1]}")
        # the bridge with its gateway address, and the sandbox route target
        subprocess.run(["ip", "-n", names[0], "link", "add", "brb0", "up", "type", "bridge"], check=True)
        subprocess.run(["ip", "-n", names[0], "addr", "add", str(GW), "dev", "brb0"], check=True)
        i = 0
        for rnd in range(args.n + 20):
            for label, mod, batched in modes:
                t = timers[label] if rnd >= 20 else Timer()
                cycle(mod, t, host, sandbox, i, batched)
                i += 1
        host.close()
        sandbox.close()
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)

    report = {label: summary(timers[label]) for label, _, _ in modes}
    for label, rows in report.items():
        total_wall = sum(r["wall_p50"] for r in rows.values())
        total_cpu = sum(r["cpu_p50"] for r in rows.values())
        rows["(sum of p50)"] = {"wall_p50": total_wall, "wall_p90": float("nan"), "cpu_p50": total_cpu, "n": 0}
    if args.json:
        print(json.dumps({"n": args.n, "kernel": os.uname().release, "report": report}, indent=1))
        return 0
    print(f"rtnl micro-benchmark, {args.n} cycles per mode, kernel {os.uname().release}; milliseconds")
    for label, rows in report.items():
        print(f"\n{label}")
        print(f"  {'call':<28}{'wall p50':>10}{'wall p90':>10}{'cpu p50':>10}")
        for key, r in rows.items():
            print(f"  {key:<28}{r['wall_p50']:>10.3f}{r['wall_p90']:>10.3f}{r['cpu_p50']:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
