#!/usr/bin/env python3
"""splice masquerade at scale: Masquerade.add / remove with 0 / 1,000 / 10,000 existing entries.

For each scale and layout this creates a throwaway namespace (spb-<id>), fills its
``inet splice_nat`` table with N synthetic entries in ONE transaction (the layout's own
builders; sources 10.200.0.0/16 on ``br0``), then measures, in a resident process with one
libnftables context, ``ops`` add + remove cycles of one fresh owner with one IPv4 source:
the kernel and libnftables cost of one update, without process start-up.

Layouts:

* ``current``: splice.libnet.masq as checked out (sets keyed by interface . address);
* ``vmap``: the earlier layout keyed by address alone (``address : jump masq-<subnet>``
  in a verdict map), loaded from git (commit ``VMAP_COMMIT``), for the comparison.

Usage (root):  .venv/bin/python bench/masq_scale.py [--scales 0,1000,10000] [--ops 200]
               [--layout current --layout vmap] [--out report.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_PY = str(Path(sys.executable))
VMAP_COMMIT = "37acae9"  # the last masq.py of the address-keyed layout
IFACE = "br0"


def load_layout(layout: str):
    if layout == "current":
        from splice.libnet import masq
        return masq
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{VMAP_COMMIT}:libnet/splice/libnet/masq.py"],
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="splice-masqbench-")) / "vmap_masq.py"
    path.write_text(src.replace("from . import", "from splice.libnet import").replace("from .", "from splice.libnet."))
    spec = importlib.util.spec_from_file_location("vmap_masq", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def source(i: int):
    from ipaddress import ip_interface
    return ip_interface(f"10.200.{(i >> 8) & 255}.{i & 255}/16")


# -- run inside the namespace (this file re-executed with --inner) ------------------------------
def inner(layout: str, n: int, ops: int) -> dict:
    from splice.libnet import nft as N

    M = load_layout(layout)
    nft = N.Nft()
    t0 = time.perf_counter()
    if layout == "current":
        cmds = M.build_scaffold_once(fresh=True) + M.build_net_once(4, 16)
        cmds += M.build_add("seed", [(IFACE, source(0))])
        for i in range(1, n):
            cmds += M.build_add(f"n1 synthetic-{i:05d} eth0", [(IFACE, source(i))])
    else:
        cmds = M.build_scaffold() + M.build_base_chain_once() + M.build_subnet_chain_once(source(0).network)
        for i in range(n):
            cmds += M.build_add(f"n1 synthetic-{i:05d} eth0", [source(i)])
    nft.apply(cmds)
    populate_s = time.perf_counter() - t0
    m = M.Masquerade(nft)
    kw = {"iface": IFACE} if layout == "current" else {}
    add, rm = [], []
    for k in range(ops):
        owner, src = f"n1 bench-{k} eth0", [source(50000 + k % 250)]
        t = time.perf_counter()
        m.add(owner, src, **kw)
        add.append(time.perf_counter() - t)
        t = time.perf_counter()
        m.remove(owner, src, **kw)
        rm.append(time.perf_counter() - t)

    def p(v, q):
        v = sorted(v)
        return round(1000 * v[min(len(v) - 1, int(q * len(v)))], 3)

    return {"layout": layout, "entries": n, "ops": ops, "populate_s": round(populate_s, 3),
            "add_ms_p50": p(add, 0.5), "add_ms_p99": p(add, 0.99),
            "remove_ms_p50": p(rm, 0.5), "remove_ms_p99": p(rm, 0.99)}


# -- the driver -------------------------------------------------------------------------------
def run(layout: str, n: int, ops: int) -> dict:
    ns = f"spb-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        p = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", VENV_PY, __file__, "--inner", layout, str(n), str(ops)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"{layout} {n} failed: {p.stderr}")
        return json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        print(json.dumps(inner(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="0,1000,10000")
    ap.add_argument("--ops", type=int, default=200)
    ap.add_argument("--layout", action="append", choices=("current", "vmap"))
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.scales.split(",")):
        for layout in args.layout or ["current", "vmap"]:
            row = run(layout, n, args.ops)
            rows.append(row)
            print(f"{layout:8} {n:6} entries: add p50 {row['add_ms_p50']:.3f} ms p99 {row['add_ms_p99']:.3f} ms, "
                  f"remove p50 {row['remove_ms_p50']:.3f} ms p99 {row['remove_ms_p99']:.3f} ms", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
