#!/usr/bin/env python3
"""splice-vxlan at scale: H simulated hosts x C containers on one VXLAN network, on etcd.

Everything lives in throwaway namespaces (never the machine's own interfaces): the 3-member
etcd cluster of tests/cluster/harness.py (10.231.0.1-3, each member in a namespace of its
own on a bridge in an "underlay" namespace) and H hosts made as tests/overlay/conftest.py
makes them (a namespace with ``eth0`` on that bridge at 10.231.0.(20+i), a default route to
nobody, its own IPAM dataDir and state directory), each with its own ``splice agent --node
hostN --state-dir D --socket S``. Unlike the tests, the CNI calls go through the thin clients
of ``splice install-cni --dir TMP`` and the agents are that installation's ``TMP/.splice/splice``
(what a user runs). One network, vni 42, clusterCIDR 10.244.0.0/16 in /24s, ipMasq on.

Phases:

1. joins, one host at a time: while host k's first ADD runs, one thread per host (inside its
   namespace, woken by rtnetlink route/neighbour events, then one dump) waits until the host has one route, one
   permanent neighbour and one FDB entry on the VXLAN device per peer. Join convergence =
   from the start of k's first ADD until every other host has k's entries (the slowest of
   them); also reported: until k has everyone's;
2. the other C-1 containers of every host (``--workers`` ADDs at a time, hosts interleaved);
3. checks: every host's route/neighbour/FDB entries are exactly the other hosts' (subnet, VTEP
   MAC, underlay address); the etcd subnet keys are H distinct subnets of H distinct nodes;
   no address twice, each inside its host's subnet; ``--pairs`` random container pairs on
   different hosts ping each other (one echo, 2 s; every one must answer);
4. teardown: agents SIGTERM by PID, etcd members killed by PID, namespaces deleted, tmp
   directories removed; then verified: no namespace of this run, no process of it, no new
   link in the machine's namespace, no tmp directory left.

Limit of the simulation: the kernel's IPv4 neighbour table is one for all namespaces, and its
machine-wide gc_thresh3 (1024 by default; left alone here) bounds the ARP entries of every
simulated host and container together (a real host has a table of its own). Each pinged pair
adds ~4 entries (container -> gateway, the underlay both ways, bridge -> container): past ~1000
(e.g. 50 x 20 with 200 pairs, unflushed) some first echoes are dropped ("table_fulls" in
/proc/net/stat/arp_cache grows), for this run and for anything else on the machine. So the
pings go in batches of ``--batch`` pairs, the batch's ARP entries flushed after it (permanent
entries stay); the script prints the counts.

Prints join convergence p50/max, ADD p50/p99 (thin client + agent, wall clock of the
executable under nsenter; the joins' first ADDs apart), the checks and the total wall time.
Exit status 1 when a check fails.

Usage (root):  .venv/bin/python bench/overlay_scale.py [--hosts 20] [--containers 20]
               [--workers 1] [--pairs 200] [--batch 50] [--out report.json] [--logs DIR]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the tests package: its etcd harness and simulated hosts

from tests.cluster.conftest import ETCD  # noqa: E402
from tests.cluster.harness import EtcdCluster  # noqa: E402
from tests.overlay.conftest import NET, VNI, Host, Overlay  # noqa: E402

from splice.libnet.netns import Netns  # noqa: E402
from splice.libnet.rtnl import Rtnl  # noqa: E402

DEV = f"spvx{VNI}"
SUBNET_LEN = 24


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def ms(v: float) -> str:
    return f"{v * 1000:.0f} ms" if v >= 0.1 else f"{v * 1000:.1f} ms"


class BenchHost(Host):
    """A tests/overlay host whose agent and CNI executable are the installed ones."""

    def start_agent(self, timeout: float = 60.0) -> "BenchHost":
        splice = str(self.o.install / ".splice" / "splice")
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={self.ns.path}", splice, "agent", "--node", self.node, "--state-dir", self.state,
             "--socket", self.socket],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "a"), cwd=self.dir)
        self.o.pids.append(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent of {self.node} exited: {self.log.read_text()[-2000:]}")
            if subprocess.run([splice, "status", "--socket", self.socket], capture_output=True,
                              timeout=10).returncode == 0:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"agent of {self.node} did not come up: {self.log.read_text()[-2000:]}")

    def config(self, **kw) -> dict:
        conf = super().config(**kw)
        conf.pop("leaseTTL", None)  # the default (20 s), not the tests' 3 s
        return conf

    cni_timeout = 120

    def plugin_dir(self) -> Path:
        return self.o.install

    def cni(self, command: str, *args, **kw) -> tuple[int, dict | None, str]:
        t0 = time.monotonic()
        res = super().cni(command, *args, **kw)
        if command == "ADD":
            self.o.add_times.append((self.node, t0, time.monotonic() - t0))
        return res

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        cid = next(iter(self.containers))
        return ipaddress.ip_interface(self.o.results[cid]["ips"][0]["address"]).network.supernet(
            new_prefix=SUBNET_LEN)


class BenchOverlay(Overlay):
    host_class = BenchHost
    stop_signal = signal.SIGTERM

    def __init__(self, cluster, tmp: Path, install: Path) -> None:
        super().__init__(cluster, tmp)
        self.install = install
        self.pids: list[int] = []
        self.add_times: list[tuple[str, float, float]] = []


# -- kernel state of one host, read inside its namespace -----------------------------------------
def peer_entries(rt: Rtnl) -> tuple[set, set, set] | None:
    """(routes {dst}, neighbours {(ip, mac)}, fdb {(mac, dst)}) on the VXLAN device; None: no device."""
    link = rt.get_link(DEV)
    if link is None:
        return None
    routes = {str(r.dst) for r in rt.routes(socket.AF_INET) if r.oif == link.index and r.gw is not None}
    neigh = {(str(n.ip), n.mac) for n in rt.neigh_dump(link.index, socket.AF_INET) if n.permanent}
    fdb = {(f.mac, str(f.dst)) for f in rt.fdb_dump(link.index)
           if f.dst is not None and f.mac != "00:00:00:00:00:00"}
    return routes, neigh, fdb


def read_state(h: BenchHost) -> tuple[str | None, tuple[set, set, set] | None]:
    def fn():
        with Rtnl() as rt:
            link = rt.get_link(DEV)
            return (link.mac if link else None), peer_entries(rt)
    with Netns.open(h.ns.path) as ns:
        return ns.run(fn)


RTMGRP_NEIGH, RTMGRP_IPV4_ROUTE = 0x4, 0x40  # FDB entries are AF_BRIDGE neighbours: same group


class Watcher(threading.Thread):
    """Inside ``host``'s namespace: the first time it has ``want`` peers' entries of each kind.
    Event-driven (no polling load on the machine): a netlink socket subscribed to route and
    neighbour changes wakes it, then one dump of the device's entries counts them; the time
    is the wake-up's."""

    def __init__(self, host: BenchHost, want: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.host, self.want, self.deadline = host, want, deadline
        self.ready = threading.Event()
        self.at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Netns.open(self.host.ns.path) as ns:
                ns.run(self._loop)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            self.error = e
        finally:
            self.ready.set()

    def _loop(self) -> None:
        mon = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        mon.bind((0, RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE))
        mon.setblocking(False)
        try:
            with Rtnl() as rt:
                now = time.monotonic()
                self.ready.set()
                while True:
                    e = peer_entries(rt)
                    if e is not None and all(len(x) >= self.want for x in e):
                        self.at = now
                        return
                    left = self.deadline - time.monotonic()
                    if left <= 0:
                        return
                    select.select([mon], [], [], min(left, 0.5))  # 0.5 s: a missed event (ENOBUFS) costs no more
                    now = time.monotonic()
                    try:
                        while mon.recv(65536):
                            pass
                    except (BlockingIOError, OSError):
                        pass
        finally:
            mon.close()


# -- phases ----------------------------------------------------------------------------------
def join(o: BenchOverlay, h: BenchHost) -> tuple[float, float, float]:
    """Host h's first ADD while the others watch: (ADD seconds, others converged, h converged)."""
    others = [x for x in o.hosts if x is not h and x.containers]
    deadline = time.monotonic() + 30
    watchers = [Watcher(x, len(others), deadline) for x in others] + [Watcher(h, len(others), deadline)]
    for p in watchers:
        p.start()
    for p in watchers:
        p.ready.wait(10)
    t0 = time.monotonic()
    h.add(f"{h.node}-c1")
    t_add = time.monotonic() - t0
    for p in watchers:
        p.join(35)
    bad = [p.host.node for p in watchers if p.at is None]
    if bad:
        errs = [repr(p.error) for p in watchers if p.error]
        raise RuntimeError(f"{h.node} joined: no entries for every peer on {bad} within 30 s {errs}")
    others_at = max((p.at for p in watchers[:-1]), default=t0)
    return t_add, others_at - t0, watchers[-1].at - t0


def fill(o: BenchOverlay, containers: int, workers: int) -> None:
    jobs = [(h, f"{h.node}-c{i}") for i in range(2, containers + 1) for h in o.hosts]  # hosts interleaved
    errors: list[str] = []

    def one(job):
        h, cid = job
        try:
            h.add(cid)
        except BaseException as e:  # noqa: BLE001
            errors.append(f"{cid}: {e}"[:2000])
    with ThreadPoolExecutor(max(1, workers)) as ex:
        list(ex.map(one, jobs))
    if errors:
        raise RuntimeError(f"{len(errors)} ADDs failed; first: {errors[0]}")


def check_entries(o: BenchOverlay) -> list[str]:
    """Every host's peer entries are exactly the others' (subnet, VTEP MAC, underlay)."""
    state = {h.node: read_state(h) for h in o.hosts}
    problems = []
    for h in o.hosts:
        _mac, entries = state[h.node]
        others = [x for x in o.hosts if x is not h]
        want = ({str(x.subnet) for x in others},
                {(str(x.subnet.network_address), state[x.node][0]) for x in others},
                {(state[x.node][0], x.underlay_ip) for x in others})
        if entries is None:
            problems.append(f"{h.node}: no {DEV}")
        elif entries != want:
            problems.append(f"{h.node}: routes/neighbours/fdb differ from the peers' "
                            f"(missing {[sorted(w - e) for w, e in zip(want, entries)]}, "
                            f"extra {[sorted(e - w) for w, e in zip(want, entries)]})")
    return problems


def check_unique(o: BenchOverlay) -> tuple[list[str], int, int]:
    problems = []
    subnets = [h.subnet for h in o.hosts]
    if len(set(subnets)) != len(subnets):
        problems.append(f"duplicate host subnets: {sorted(map(str, subnets))}")
    addrs = []
    for h in o.hosts:
        for cid in h.containers:
            a = ipaddress.ip_interface(o.results[cid]["ips"][0]["address"]).ip
            addrs.append(a)
            if a not in h.subnet:
                problems.append(f"{cid}: {a} outside {h.node}'s subnet {h.subnet}")
    if len(set(addrs)) != len(addrs):
        problems.append(f"{len(addrs) - len(set(addrs))} duplicate container addresses")

    def keys():
        c = o.cluster.client()
        try:
            kvs, _rev = c.range(f"{o.prefix}/{NET}/subnets/", prefix=True)
            return [(kv.key.decode(), json.loads(kv.value)) for kv in kvs]
        finally:
            c.close()
    kvs = o.cluster.run(keys)
    nodes = [v.get("node") for _k, v in kvs]
    etcd_subnets = {k.rsplit("/", 1)[1].replace("-", "/") for k, _v in kvs}
    if len(kvs) != len(o.hosts) or len(set(nodes)) != len(nodes):
        problems.append(f"etcd holds {len(kvs)} subnet keys for {len(set(nodes))} nodes, {len(o.hosts)} hosts")
    if etcd_subnets != {str(s) for s in subnets}:
        problems.append(f"etcd subnets {sorted(etcd_subnets)} are not the hosts' {sorted(map(str, subnets))}")
    return problems, len(set(subnets)), len(set(addrs))


def reachability(o: BenchOverlay, pairs: int, seed: int, batch: int) -> tuple[int, list[str], list[str]]:
    """(pairs, pairs whose one echo got no answer within 2 s, of those: no answer again 1 s later)"""
    rng = random.Random(seed)
    all_c = [(h, cid) for h in o.hosts for cid in h.containers]
    sample = []
    cross = len(o.hosts) > 1
    while len(sample) < pairs:
        a, b = rng.sample(all_c, 2)
        if cross and a[0] is b[0]:
            continue
        sample.append((a, b))

    def ping(pair):
        (ha, ca), (hb, cb) = pair
        p = subprocess.run(["nsenter", f"--net={ha.containers[ca].path}", "ping", "-c1", "-W2", "-q", hb.address(cb)],
                           capture_output=True, text=True, timeout=30)
        return None if p.returncode == 0 else ping_name(pair)
    def flush(pairs) -> None:
        # the kernel's neighbour table is one for the whole machine (gc_thresh3): the ARP
        # entries these pings made (~4 a pair) go after each batch, permanent ones stay
        paths = {x for (ha, ca), (hb, cb) in pairs
                 for x in (ha.ns.path, hb.ns.path, ha.containers[ca].path, hb.containers[cb].path)}
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda path: subprocess.run(["nsenter", f"--net={path}", "ip", "neigh", "flush", "all"],
                                                    capture_output=True), paths))
    failed = []
    with ThreadPoolExecutor(8) as ex:
        for i in range(0, len(sample), batch):
            part = sample[i:i + batch]
            failed += [pair for pair, r in zip(part, ex.map(ping, part)) if r]
            if batch < len(sample):
                flush(part)
    time.sleep(1)
    still = [r for r in map(ping, failed) if r]  # once more, one at a time: lost, or not routed?
    return len(sample), [ping_name(p) for p in failed], still


def ping_name(pair) -> str:
    (_ha, ca), (hb, cb) = pair
    return f"{ca} -> {cb} ({hb.address(cb)})"


def dynamic_neighbours(o: BenchOverlay) -> int:
    """Neighbour entries that are not permanent, summed over this run's namespaces: the kernel's
    IPv4 neighbour table is one for all namespaces, and its gc_thresh3 (a machine-wide sysctl,
    left alone here) bounds them together; real hosts each have their own."""
    def count(ns: str) -> int:
        out = subprocess.run(["ip", "-n", ns, "-4", "neigh", "show"], capture_output=True, text=True).stdout
        return sum(1 for line in out.splitlines() if line.strip() and "PERMANENT" not in line)
    with ThreadPoolExecutor(4) as ex:
        return sum(ex.map(count, [o.cluster.underlay, *(m.ns for m in o.cluster.members), *o.namespaces]))


def table_fulls() -> int:
    """The kernel's IPv4 neighbour table "full" count (machine-wide, since boot; per CPU rows)."""
    rows = Path("/proc/net/stat/arp_cache").read_text().split("\n")
    col = rows[0].split().index("table_fulls")
    return sum(int(r.split()[col], 16) for r in rows[1:] if r.strip())


# -- leftovers ---------------------------------------------------------------------------------
def snapshot() -> tuple[set, set]:
    """This run's namespaces (spt-<pid>-..., the harness's and the hosts' naming) and the
    machine's own links (other engineers' runs may make namespaces of their own meanwhile)."""
    mine = f"spt-{os.getpid()}-"
    netns = {n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else []) if n.startswith(mine)}
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout
    links = {link["ifname"] for link in json.loads(out or "[]")}
    return netns, links


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours still answers kill 0
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--containers", type=int, default=20, help="per host")
    ap.add_argument("--workers", type=int, default=1, help="concurrent ADDs after the joins")
    ap.add_argument("--pairs", type=int, default=200, help="random container pairs pinged")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=50,
                    help="pairs pinged between flushes of the ARP entries they made (0: no flush)")
    ap.add_argument("--out", help="write the figures as JSON")
    ap.add_argument("--logs", help="after a failure, copy the agents' logs here")
    args = ap.parse_args()
    args.batch = args.batch if args.batch > 0 else max(1, args.pairs)
    if os.geteuid() != 0:
        raise SystemExit("root needed (network namespaces)")
    if not 1 <= args.hosts <= 200 or args.containers < 1 or args.containers > 250:
        raise SystemExit("--hosts 1-200 (underlay 10.231.0.21-220), --containers 1-250 (a /24 per host)")
    if not os.access(ETCD, os.X_OK):
        raise SystemExit(f"no etcd at {ETCD} (Debian etcd-server; SPLICE_ETCD=path for another)")

    t_start = time.monotonic()
    load0 = os.getloadavg()
    netns0, links0 = snapshot()
    tmp = Path(tempfile.mkdtemp(prefix="splice-ovlscale-"))
    tmp.chmod(0o700)
    install = tmp / "cni"
    subprocess.run([str(Path(sys.executable).parent / "splice"), "install-cni", "--dir", str(install)], check=True,
                   stdout=subprocess.DEVNULL)
    cluster = EtcdCluster(tmp / "etcd", etcd=ETCD)
    o: BenchOverlay | None = None
    report: dict = {"hosts": args.hosts, "containers": args.containers, "workers": args.workers,
                    "load_before": load0}
    failures: list[str] = []
    etcd_pids: list[int] = []
    try:
        cluster.setup()
        etcd_pids = [m.proc.pid for m in cluster.members]
        print(f"etcd: 3 members up ({time.monotonic() - t_start:.1f} s)", flush=True)
        o = BenchOverlay(cluster, tmp, install)
        t = time.monotonic()
        for _ in range(args.hosts):
            o.host(start=True)
        print(f"{args.hosts} hosts + agents up ({time.monotonic() - t:.1f} s)", flush=True)

        joins = []
        t = time.monotonic()
        for h in o.hosts:
            t_add, others, own = join(o, h)
            joins.append({"node": h.node, "add": t_add, "others": others, "own": own})
            if len(joins) % 10 == 0 and len(joins) < len(o.hosts):
                print(f"  {len(joins)} joined ({time.monotonic() - t:.1f} s)", flush=True)
        conv = [j["others"] for j in joins[1:]]
        own = [j["own"] for j in joins[1:]]
        first_adds = [j["add"] for j in joins]
        print(f"joins: {len(joins)} hosts ({time.monotonic() - t:.1f} s)", flush=True)

        t = time.monotonic()
        n_first = len(o.add_times)
        fill(o, args.containers, args.workers)
        adds = [dt for _node, _t0, dt in o.add_times[n_first:]]
        fill_s = time.monotonic() - t
        print(f"ADDs: {len(adds)} more ({fill_s:.1f} s)", flush=True)

        time.sleep(0.2)
        failures += check_entries(o)
        uniq, n_subnets, n_addrs = check_unique(o)
        failures += uniq
        neigh_before, fulls0 = dynamic_neighbours(o), table_fulls()
        t = time.monotonic()
        n_pairs, failed, still = reachability(o, args.pairs, args.seed, args.batch)
        ping_s = time.monotonic() - t
        fulls = table_fulls() - fulls0
        neigh_after = dynamic_neighbours(o)
        failures += [f"no answer: {f}" + (" (nor 1 s later)" if f in still else " (answered 1 s later)")
                     for f in failed]

        report.update({
            "join_convergence": {"p50": pct(conv, 50), "max": max(conv)} if conv else None,
            "joiner_has_all": {"p50": pct(own, 50), "max": max(own)} if own else None,
            "first_add": {"p50": pct(first_adds, 50), "max": max(first_adds)},
            "add": {"n": len(adds), "p50": pct(adds, 50), "p99": pct(adds, 99), "max": max(adds)} if adds else None,
            "fill_seconds": fill_s,
            "subnets": n_subnets, "addresses": n_addrs,
            "pairs": n_pairs, "pairs_failed": len(failed), "pairs_failed_twice": len(still),
            "ping_seconds": ping_s, "load_pings": os.getloadavg(),
            "dynamic_neighbours": [neigh_before, neigh_after], "table_fulls_during_pings": fulls,
            "gc_thresh3": int(Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3").read_text()),
            "joins": joins,
        })
    except BaseException as e:  # noqa: BLE001 - reported, then torn down
        failures.append(f"run aborted: {type(e).__name__}: {e}"[:3000])
    finally:
        t = time.monotonic()
        agent_pids = list(o.pids) if o else []
        if o is not None:
            o.close()
            if failures and args.logs:
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                for h in o.hosts:
                    shutil.copy(h.log, Path(args.logs) / f"{h.node}.log")
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
        teardown_s = time.monotonic() - t
    # verify nothing is left
    netns1, links1 = snapshot()
    left = []
    if netns1 - netns0:
        left.append(f"namespaces: {sorted(netns1 - netns0)}")
    new_links = sorted(x for x in links1 - links0 if x.startswith(("spvx", "veth", "eth0")))  # what this run makes
    if new_links:
        left.append(f"links in the machine's namespace: {new_links}")
    if [p for p in agent_pids + etcd_pids if alive(p)]:
        left.append(f"processes: {[p for p in agent_pids + etcd_pids if alive(p)]}")
    if tmp.exists():
        left.append(f"directory {tmp}")
    failures += [f"left behind: {x}" for x in left]
    total = time.monotonic() - t_start
    report.update({"teardown_seconds": teardown_s, "wall_seconds": total, "load_after": os.getloadavg(),
                   "leftovers": left, "failures": failures})

    hc = f"{args.hosts} hosts x {args.containers} containers"
    print(f"\nsplice-vxlan, {hc} ({args.hosts * args.containers} containers), 3-member etcd, "
          f"load {load0[0]:.2f} -> {report['load_after'][0]:.2f}")
    if report.get("join_convergence"):
        c, w = report["join_convergence"], report["joiner_has_all"]
        print(f"  join convergence (first ADD start -> every other host has route+neigh+fdb), "
              f"{len(o.hosts) - 1} joins: p50 {ms(c['p50'])}, max {ms(c['max'])}")
        print(f"  joining host has every peer's entries:  p50 {ms(w['p50'])}, max {ms(w['max'])}")
    if "first_add" in report:
        f = report["first_add"]
        print(f"  first ADD of a host (overlay start: claim, VTEP, publish, watch): p50 {ms(f['p50'])}, "
              f"max {ms(f['max'])}")
    if report.get("add"):
        a = report["add"]
        print(f"  ADD (thin client + agent, {args.workers} at a time), n={a['n']}: p50 {ms(a['p50'])}, "
              f"p99 {ms(a['p99'])}, max {ms(a['max'])}")
    if "pairs" in report:
        print(f"  reachability: {report['pairs'] - report['pairs_failed']}/{report['pairs']} random cross-host "
              f"pairs answered one echo within 2 s ({report['ping_seconds']:.1f} s, 8 at a time); "
              f"no answer on a second try: {report['pairs_failed_twice']}")
        print(f"  dynamic neighbour entries of the run's namespaces before/after the pings (batches of {args.batch}): "
              f"{report['dynamic_neighbours'][0]}/{report['dynamic_neighbours'][1]} "
              f"(one kernel table for all namespaces: gc_thresh3 {report['gc_thresh3']}; "
              f"table-full events during the pings, machine-wide: {report['table_fulls_during_pings']})")
        print(f"  {report['subnets']} distinct host subnets, {report['addresses']} distinct addresses")
    print(f"  teardown {report['teardown_seconds']:.1f} s; left behind: {', '.join(left) or 'nothing'}")
    print(f"  total wall time {total:.1f} s")
    for f in failures:
        print(f"FAIL: {f}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
