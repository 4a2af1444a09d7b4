#!/usr/bin/env python3
"""What a link deletion costs, and when the kernel says the link is gone (docs/perf.md,
"Early link deletion"; docs/design.md, "rtnetlink").

In a throwaway namespace (``spb-*``, deleted at the end; nothing else is touched), ``-n``
times each, interleaved, p50 / p90 in ms:

* ``notify`` vs ``ack``: one ``RTM_DELLINK`` sent from a thread; the time until a second
  socket, subscribed to ``RTMGRP_LINK`` before the request, reads the link's ``RTM_DELLINK``
  notification, and until the request's own ACK. For a macvlan (up, one address) on a veth
  and for a veth that is a bridge port (both ends go).
* ``move``: moving the same link to another namespace instead (``IFLA_NET_NS_FD`` with a new
  name), the "graveyard" alternative.
* ``early`` vs ``plain``: ``splice.libnet.rtnl.Rtnl.delete_link(early=True)`` against the
  plain call.

Usage (root): ``.venv/bin/python bench/dellink.py [-n 30]``
"""

from __future__ import annotations

import argparse
import os
import secrets
import select
import socket
import statistics
import subprocess
import threading
import time

from splice.libnet import rtnl
from splice.libnet.netns import Netns


def _sh(ns: str, *argv: str) -> None:
    subprocess.run(["ip", "-n", ns, *argv], check=True, capture_output=True)


def _wait_notification(mon: socket.socket, index: int) -> float:
    while not rtnl._announced(mon.recv(1 << 16), index, None):  # the parser early deletion uses
        pass
    return time.perf_counter()


def _make(ns: str, kind: str) -> None:
    if kind == "macvlan":
        _sh(ns, "link", "add", "mv0", "link", "lower0", "type", "macvlan", "mode", "bridge")
        _sh(ns, "addr", "add", "10.77.0.2/24", "dev", "mv0")
        _sh(ns, "link", "set", "mv0", "up")
    else:
        _sh(ns, "link", "add", "vh0", "type", "veth", "peer", "name", "vc0")
        _sh(ns, "link", "set", "vh0", "master", "br0", "up")
        _sh(ns, "link", "set", "vc0", "up")
    time.sleep(0.05)  # as in life, the deletion does not follow the creation within microseconds


NAME = {"macvlan": "mv0", "veth": "vh0"}


def notify_vs_ack(h: Netns, kind: str) -> tuple[float, float]:
    def body() -> tuple[float, float]:
        mon = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        mon.bind((0, 1))  # RTMGRP_LINK
        rt = rtnl.Rtnl()
        try:
            index = rt.get_link(NAME[kind]).index
            while select.select([mon], [], [], 0)[0]:
                mon.recv(1 << 16)
            acked: dict[str, float] = {}
            t0 = time.perf_counter()
            th = threading.Thread(target=lambda: (rt.delete_link(index=index), acked.setdefault("t", time.perf_counter())))
            th.start()
            seen = _wait_notification(mon, index)
            th.join()
            return (seen - t0) * 1000, (acked["t"] - t0) * 1000
        finally:
            rt.close()
            mon.close()

    return h.run(body)


def move(h: Netns, kind: str, grave_fd: int, i: int) -> float:
    def body() -> float:
        with rtnl.Rtnl() as rt:
            link = rt.get_link(NAME[kind])
            t0 = time.perf_counter()
            rt.move_link(link.index, grave_fd, f"g{kind[0]}{i}")
            if kind == "veth":
                peer = rt.get_link("vc0")
                rt.move_link(peer.index, grave_fd, f"gp{i}")
            return (time.perf_counter() - t0) * 1000

    return h.run(body)


def delete(h: Netns, kind: str, early: bool) -> float:
    def body() -> float:
        with rtnl.Rtnl() as rt:
            t0 = time.perf_counter()
            assert rt.delete_link(name=NAME[kind], early=early) is True
            return (time.perf_counter() - t0) * 1000

    return h.run(body)


def p50_p90(v: list[float]) -> str:
    v = sorted(v)
    return f"{statistics.median(v):7.2f} {v[int(len(v) * 0.9)]:7.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=30)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    tag = secrets.token_hex(3)
    host, grave = f"spb-dl{tag}", f"spb-dg{tag}"
    made: list[str] = []
    try:
        for ns in (host, grave):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
        _sh(host, "link", "add", "lower0", "type", "veth", "peer", "name", "lower1")
        _sh(host, "link", "set", "lower0", "up")
        _sh(host, "link", "add", "br0", "type", "bridge")
        _sh(host, "link", "set", "br0", "up")
        res: dict[str, list[float]] = {}
        grave_fd = os.open(f"/run/netns/{grave}", os.O_RDONLY)
        with Netns.open(f"/run/netns/{host}") as h:
            for i in range(args.n):
                for kind in ("macvlan", "veth"):
                    _make(host, kind)
                    n, a = notify_vs_ack(h, kind)
                    res.setdefault(f"{kind} notify", []).append(n)
                    res.setdefault(f"{kind} ack", []).append(a)
                    _make(host, kind)
                    res.setdefault(f"{kind} move", []).append(move(h, kind, grave_fd, i))
                    for early in (True, False):
                        _make(host, kind)
                        res.setdefault(f"{kind} {'early' if early else 'plain'}", []).append(delete(h, kind, early))
                        rtnl.wait_deletions(10)  # the next one starts from a quiet kernel
        os.close(grave_fd)
        print(f"link deletion, {args.n} runs each (ms)\n\n| what | p50 | p90 |\n|---|---|---|")
        for key, v in res.items():
            a, b = p50_p90(v).split()
            print(f"| {key} | {a} | {b} |")
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
